/* fuzz_tensor.c — libFuzzer target: tensor descriptors and their bounds.
 *
 * Input: 8 bytes, little-endian, the size of the region the tensors are
 * checked against, then JSON text that becomes the value of "inputs" in
 * {"id":1,"op":"forward","slice":"s","inputs":TEXT} (so the text may also
 * close the array and add an "out"). A request that parses is checked the
 * way daemon/forward.c checks it — proto_tensor_check for every input,
 * proto_range_check for "out" — and each answer is compared with the same
 * bounds computed in 128 bits, where nothing can wrap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "tensor.h"

#include "fuzz.h"

#define PREFIX "{\"id\":1,\"op\":\"forward\",\"slice\":\"s\",\"inputs\":"

typedef unsigned __int128 u128;

static u128 tensor_bytes(const proto_tensor *t) {
  u128 n = proto_dtype_size(t->dtype);
  for (uint32_t i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}

static void check_tensor(const proto_tensor *t, uint32_t i, uint64_t region) {
  unsigned size = proto_dtype_size(t->dtype);
  FUZZ_CHECK(size != 0 && t->ndim <= PROTO_MAX_DIMS, "inputs[%u]", i);
  FUZZ_CHECK(t->nbytes == tensor_bytes(t) && t->nbytes <= PROTO_MAX_INT,
             "inputs[%u]: nbytes %llu", i, (unsigned long long)t->nbytes);

  /* proto_tensor_nbytes again, directly: the same answer. */
  uint64_t nb = 0;
  proto_error err;
  FUZZ_CHECK(proto_tensor_nbytes(t->dtype, t->ndim, t->shape, &nb, &err) == 0 &&
                 nb == t->nbytes,
             "inputs[%u]: proto_tensor_nbytes disagrees", i);

  bool aligned = t->offset % size == 0;
  bool inside = (u128)t->offset + t->nbytes <= region;
  memset(&err, 0, sizeof(err));
  int r = proto_tensor_check(t, region, &err);
  if (!aligned)
    FUZZ_CHECK(r == SLY_E_BAD_TENSOR, "inputs[%u]: unaligned, got %d", i, r);
  else if (!inside)
    FUZZ_CHECK(r == SLY_E_BAD_REGION,
               "inputs[%u]: %llu bytes at %llu pass region of %llu, got %d", i,
               (unsigned long long)t->nbytes, (unsigned long long)t->offset,
               (unsigned long long)region, r);
  else
    FUZZ_CHECK(r == 0, "inputs[%u]: rejected a tensor inside: %s", i,
               err.message);
  if (r != 0)
    FUZZ_CHECK(r == err.code && err.message[0] &&
                   fuzz_one_line(err.message, sizeof(err.message)),
               "inputs[%u]: error", i);
}

static void check_out(const proto_range *o, uint64_t region) {
  bool inside = (u128)o->offset + o->bytes <= region;
  proto_error err;
  int r = proto_range_check(o, region, &err);
  FUZZ_CHECK(inside ? r == 0 : r == SLY_E_BAD_REGION,
             "out: %llu bytes at %llu, region of %llu: got %d",
             (unsigned long long)o->bytes, (unsigned long long)o->offset,
             (unsigned long long)region, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8)
    return 0;
  uint64_t region = 0;
  for (int i = 7; i >= 0; i--)
    region = region << 8 | data[i];
  size_t plen = sizeof(PREFIX) - 1, tlen = size - 8;
  size_t len = plen + tlen + 1;
  char *body = malloc(len);
  if (body == NULL)
    abort();
  memcpy(body, PREFIX, plen);
  memcpy(body + plen, data + 8, tlen);
  body[len - 1] = '}';

  proto_request req;
  proto_error err;
  int r = proto_request_parse(body, len, &req, &err);
  free(body);
  if (r == 0) {
    FUZZ_CHECK(req.op == PROTO_OP_FORWARD && req.n_inputs <= PROTO_MAX_TENSORS,
               "request");
    for (uint32_t i = 0; i < req.n_inputs; i++)
      check_tensor(&req.inputs[i], i, region);
    if (req.has_out)
      check_out(&req.out, region);
  } else {
    FUZZ_CHECK(r == err.code && err.message[0] &&
                   fuzz_one_line(err.message, sizeof(err.message)),
               "parse error %d", r);
  }
  proto_request_free(&req);
  return 0;
}
