/* reply.c — building and reading replies of protocol v1 (proto/). */
#include "reply.h"

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "json.h"

/* The caller owns the result. */
cJSON *proto_reply_ok(uint64_t id) {
  cJSON *r = cJSON_CreateObject();
  if (r == NULL)
    return NULL;
  if (cJSON_AddNumberToObject(r, "id", (double)id) == NULL ||
      cJSON_AddTrueToObject(r, "ok") == NULL) {
    cJSON_Delete(r);
    return NULL;
  }
  return r;
}

/* The caller owns the result. A code with no wire name (a client-only code
 * or a bug) goes out as INTERNAL rather than as a name the client cannot
 * read. */
cJSON *proto_reply_error(bool has_id, uint64_t id, const proto_error *e) {
  const char *name = proto_code_wire_name(e->code);
  if (name == NULL)
    name = "INTERNAL";
  /* Messages may quote libtorch or the client: keep the reply valid UTF-8. */
  char message[PROTO_MESSAGE_MAX];
  memcpy(message, e->message, sizeof(message));
  message[sizeof(message) - 1] = '\0';
  proto__utf8_repair(message);
  if (message[0] == '\0')
    strcpy(message, sly_code_message(proto_code_from_wire_name(name)));

  cJSON *r = cJSON_CreateObject();
  if (r == NULL)
    return NULL;
  cJSON *error = NULL;
  if ((has_id ? cJSON_AddNumberToObject(r, "id", (double)id)
              : cJSON_AddNullToObject(r, "id")) == NULL ||
      cJSON_AddFalseToObject(r, "ok") == NULL ||
      (error = cJSON_AddObjectToObject(r, "error")) == NULL ||
      cJSON_AddStringToObject(error, "code", name) == NULL ||
      cJSON_AddStringToObject(error, "message", message) == NULL ||
      (e->has_needed &&
       cJSON_AddNumberToObject(error, "needed", (double)e->needed) == NULL)) {
    cJSON_Delete(r);
    return NULL;
  }
  return r;
}

int proto_reply_add_limits(cJSON *obj, const proto_limits *l) {
  cJSON *limits = cJSON_CreateObject();
  if (limits == NULL)
    return SLY_E_NO_MEMORY;
#define PROTO__LIMIT_ADD(key, def, lo, hi)                                     \
  if (cJSON_AddNumberToObject(limits, #key, (double)l->key) == NULL)           \
    goto fail;
  PROTO_LIMIT_MAP(PROTO__LIMIT_ADD)
#undef PROTO__LIMIT_ADD
  if (!cJSON_AddItemToObject(obj, "limits", limits))
    goto fail;
  return 0;
fail:
  cJSON_Delete(limits);
  return SLY_E_NO_MEMORY;
}

/* The caller frees *frame with free(). */
int proto_reply_encode(const cJSON *reply, uint8_t **frame, size_t *len,
                       proto_error *err) {
  int r = proto_json_frame(reply, PROTO_MAX_REPLY_BYTES, frame, len, err);
  /* A reply too big to send is the server's fault, not the client's. */
  if (r == SLY_E_BAD_FRAME)
    return proto_fail(err, SLY_E_INTERNAL,
                      "reply exceeds the limit of %u bytes",
                      PROTO_MAX_REPLY_BYTES);
  return r;
}

static int malformed(proto_error *remote, const char *what) {
  return proto_fail(remote, SLY_E_PROTOCOL, "malformed reply: %s", what);
}

/* Reads "error" of an ok:false reply into `remote`; returns its code. */
static int decode_error(const cJSON *root, proto_error *remote) {
  const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
  if (!cJSON_IsObject(error))
    return malformed(remote, "\"error\" is not an object");
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
  const cJSON *message = cJSON_GetObjectItemCaseSensitive(error, "message");
  const cJSON *needed = cJSON_GetObjectItemCaseSensitive(error, "needed");
  if (!cJSON_IsString(code))
    return malformed(remote, "\"error.code\" is not a string");
  if (!cJSON_IsString(message))
    return malformed(remote, "\"error.message\" is not a string");
  uint64_t need = 0;
  if (needed != NULL && !proto__json_u53(needed, &need))
    return malformed(remote, "\"error.needed\" is not an integer");
  int c = proto_code_from_wire_name(code->valuestring);
  if (c == 0) {
    char q[PROTO__QUOTE_MAX + 1];
    proto__quote(code->valuestring, q, sizeof(q));
    return proto_fail(remote, SLY_E_PROTOCOL,
                      "malformed reply: unknown error code \"%s\"", q);
  }
  if (remote != NULL) {
    proto_fail(remote, c, "%s", message->valuestring);
    remote->has_needed = needed != NULL;
    remote->needed = need;
  }
  return c;
}

/* The caller frees *out with cJSON_Delete, for error replies too. */
int proto_reply_decode(const char *body, size_t len, cJSON **out,
                       bool *id_null, uint64_t *id, proto_error *remote) {
  if (len > PROTO_MAX_REPLY_BYTES)
    return malformed(remote, "longer than the reply limit");
  cJSON *root = NULL;
  int r = proto__json_parse(body, len, SLY_E_PROTOCOL, &root, remote);
  if (r < 0)
    return r;
  r = proto__json_check_dups(root, SLY_E_PROTOCOL, remote);
  if (r < 0)
    goto fail;

  const cJSON *jid = cJSON_GetObjectItemCaseSensitive(root, "id");
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(root, "ok");
  uint64_t v = 0;
  bool is_null = cJSON_IsNull(jid);
  if (!is_null && !proto__json_u53(jid, &v)) {
    r = malformed(remote, "\"id\" is neither null nor an integer");
    goto fail;
  }
  if (!cJSON_IsBool(ok)) {
    r = malformed(remote, "\"ok\" is not true or false");
    goto fail;
  }
  r = cJSON_IsTrue(ok) ? 0 : decode_error(root, remote);
  if (r == SLY_E_PROTOCOL)
    goto fail;
  *out = root;
  *id_null = is_null;
  *id = v;
  return r;
fail:
  cJSON_Delete(root);
  return r;
}

int proto_json_u64(const cJSON *obj, const char *key, uint64_t *out) {
  uint64_t v;
  if (!proto__json_u53(cJSON_GetObjectItemCaseSensitive(obj, key), &v))
    return -1;
  *out = v;
  return 0;
}
