/* fuzz_request.c — libFuzzer target: the bytes a client sends on its
 * connection, decoded the way daemon/conn.c does it (4-byte header checked
 * against max_frame_bytes, the body in an exact-size heap buffer, then
 * proto_request_parse), frame after frame until the stream ends or a frame
 * is bad enough to close the connection. Every error is then turned into the
 * reply the daemon would send and decoded again as libslyce would, so a
 * message that breaks the reply (bad UTF-8, a lost id) is a finding too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "reply.h"
#include "request.h"

#include "fuzz.h"

static bool printable_utf8(const char *s, size_t max) {
  size_t n = strnlen(s, max + 1);
  return n <= max && proto_utf8_valid(s, n) && fuzz_one_line(s, n + 1);
}

/* Element count times element size, in 128 bits: the oracle for nbytes. */
static unsigned __int128 tensor_bytes(const proto_tensor *t) {
  unsigned __int128 n = proto_dtype_size(t->dtype);
  for (uint32_t i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}

static void check_tensor(const proto_tensor *t, uint32_t i) {
  unsigned size = proto_dtype_size(t->dtype);
  FUZZ_CHECK(size != 0, "inputs[%u]: dtype %d", i, (int)t->dtype);
  FUZZ_CHECK(t->ndim <= PROTO_MAX_DIMS, "inputs[%u]: ndim %u", i, t->ndim);
  FUZZ_CHECK(t->nbytes == tensor_bytes(t), "inputs[%u]: nbytes %llu", i,
             (unsigned long long)t->nbytes);
  FUZZ_CHECK(t->nbytes <= PROTO_MAX_INT && t->region <= PROTO_MAX_INT &&
                 t->offset <= PROTO_MAX_INT,
             "inputs[%u]: a number past 2^53-1", i);
  FUZZ_CHECK(t->offset % size == 0, "inputs[%u]: offset %llu unaligned", i,
             (unsigned long long)t->offset);
  for (uint32_t d = 0; d < t->ndim; d++)
    FUZZ_CHECK(t->shape[d] <= PROTO_MAX_INT, "inputs[%u].shape[%u]", i, d);
}

static bool name_chars_ok(const char *s) {
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
      return false;
  return true;
}

/* What a parsed request promises to the dispatcher. */
static void check_request(const proto_request *req) {
  FUZZ_CHECK(req->has_id && req->id <= PROTO_MAX_INT, "id");
  FUZZ_CHECK((unsigned)req->op < PROTO_OP_COUNT, "op %d", (int)req->op);
  FUZZ_CHECK(printable_utf8(req->client, PROTO_CLIENT_MAX), "client");
  FUZZ_CHECK(printable_utf8(req->slice, PROTO_NAME_MAX), "slice");
  FUZZ_CHECK(printable_utf8(req->pipeline, PROTO_NAME_MAX), "pipeline");
  FUZZ_CHECK(printable_utf8(req->constructor, PROTO_NAME_MAX), "constructor");
  FUZZ_CHECK(!(req->slice[0] && req->pipeline[0]), "slice and pipeline");
  if (req->op == PROTO_OP_ADD_SLICE)
    FUZZ_CHECK(req->slice[0] && name_chars_ok(req->slice), "add_slice name");
  FUZZ_CHECK(req->n_release <= PROTO_MAX_IDS && req->n_leases <= PROTO_MAX_IDS,
             "ids");
  for (uint32_t i = 0; i < req->n_release; i++)
    FUZZ_CHECK(req->release[i] <= PROTO_MAX_INT, "release[%u]", i);
  for (uint32_t i = 0; i < req->n_leases; i++)
    FUZZ_CHECK(req->leases[i] <= PROTO_MAX_INT, "leases[%u]", i);
  FUZZ_CHECK(req->n_inputs <= PROTO_MAX_TENSORS, "n_inputs %u", req->n_inputs);
  FUZZ_CHECK(req->op == PROTO_OP_FORWARD || req->n_inputs == 0,
             "inputs outside forward");
  for (uint32_t i = 0; i < req->n_inputs; i++)
    check_tensor(&req->inputs[i], i);
  if (req->has_out)
    FUZZ_CHECK(req->out.region <= PROTO_MAX_INT &&
                   req->out.offset <= PROTO_MAX_INT &&
                   req->out.bytes <= PROTO_MAX_INT,
               "out");
  FUZZ_CHECK(req->config == NULL || (req->op == PROTO_OP_ADD_SLICE &&
                                     cJSON_IsObject(req->config)),
             "config");
  FUZZ_CHECK(req->version == 0 || req->version == SLY_PROTOCOL_VERSION,
             "version %llu", (unsigned long long)req->version);
}

/* The error reply the daemon sends for `e`, decoded as libslyce decodes it:
 * it must arrive with the same code, id and message. */
static void check_error_reply(bool has_id, uint64_t id, const proto_error *e) {
  FUZZ_CHECK(proto_code_wire_name(e->code) != NULL, "code %d has no wire name",
             e->code);
  FUZZ_CHECK(e->message[0] != '\0' &&
                 printable_utf8(e->message, PROTO_MESSAGE_MAX - 1),
             "message \"%.*s\"", PROTO_MESSAGE_MAX, e->message);
  cJSON *reply = proto_reply_error(has_id, id, e);
  FUZZ_CHECK(reply != NULL, "proto_reply_error");
  uint8_t *frame = NULL;
  size_t len = 0;
  proto_error perr;
  int r = proto_reply_encode(reply, &frame, &len, &perr);
  cJSON_Delete(reply);
  FUZZ_CHECK(r == 0, "encode: %s", perr.message);

  uint32_t body_len = 0;
  r = proto_frame_header_decode(frame, PROTO_MAX_REPLY_BYTES, &body_len, &perr);
  FUZZ_CHECK(r == 0 && body_len == len - PROTO_HEADER_BYTES, "reply header");
  char *body = fuzz_dup(frame + PROTO_HEADER_BYTES, body_len);
  free(frame);
  cJSON *out = NULL;
  bool id_null = false;
  uint64_t got_id = 0;
  proto_error remote;
  r = proto_reply_decode(body, body_len, &out, &id_null, &got_id, &remote);
  free(body);
  FUZZ_CHECK(r == e->code, "reply decodes to %d (%s), sent %d", r,
             remote.message, e->code);
  FUZZ_CHECK(id_null == !has_id && (!has_id || got_id == id), "reply id");
  FUZZ_CHECK(strcmp(remote.message, e->message) == 0,
             "message changed on the wire: \"%s\" -> \"%s\"", e->message,
             remote.message);
  cJSON_Delete(out);
}

/* Returns false when the daemon would close the connection after it. */
static bool one_frame(const uint8_t *data, uint32_t len) {
  /* An exact copy, freed before the request is checked: the request must not
   * point into the frame, which conn.c frees right after parsing. */
  char *body = fuzz_dup(data, len);
  proto_request req;
  proto_error err;
  memset(&err, 0, sizeof(err));
  int r = proto_request_parse(body, len, &req, &err);
  free(body);
  if (r == 0) {
    check_request(&req);
  } else {
    FUZZ_CHECK(r == err.code, "returned %d, err.code %d", r, err.code);
    FUZZ_CHECK(r == SLY_E_BAD_FRAME || r == SLY_E_UNKNOWN_OP ||
                   r == SLY_E_BAD_REQUEST || r == SLY_E_BAD_TENSOR ||
                   r == SLY_E_NO_MEMORY,
               "unexpected code %d", r);
    FUZZ_CHECK(r != SLY_E_UNKNOWN_OP || req.op == PROTO_OP_COUNT,
               "UNKNOWN_OP with op %d", (int)req.op);
    FUZZ_CHECK(!req.has_id || req.id <= PROTO_MAX_INT, "id");
    /* conn.c answers a bad frame with id null and closes. */
    if (r == SLY_E_BAD_FRAME)
      check_error_reply(false, 0, &err);
    else
      check_error_reply(req.has_id, req.id, &err);
  }
  proto_request_free(&req);
  return r != SLY_E_BAD_FRAME;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  proto_limits lim;
  proto_limits_default(&lim);
  size_t off = 0;
  while (size - off >= PROTO_HEADER_BYTES) {
    uint32_t len = 0;
    proto_error err;
    if (proto_frame_header_decode(data + off, lim.max_frame_bytes, &len,
                                  &err) < 0) {
      FUZZ_CHECK(err.code == SLY_E_BAD_FRAME, "header: code %d", err.code);
      check_error_reply(false, 0, &err);
      return 0;
    }
    FUZZ_CHECK(len >= 1 && len <= lim.max_frame_bytes, "header len %u", len);
    off += PROTO_HEADER_BYTES;
    if (len > size - off)
      return 0; /* the daemon waits for the rest until frame_timeout_ms */
    if (!one_frame(data + off, len))
      return 0;
    off += len;
  }
  return 0;
}
