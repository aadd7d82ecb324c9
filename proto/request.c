/* request.c — parsing and validating requests of protocol v1 (proto/).
 *
 * Every message names the field at fault by its path ("inputs[2].shape[1]:
 * expected an integer in 0..2^53-1"), so a client can fix its request
 * without reading the server's log.
 */
#include "request.h"

#include <stdio.h>
#include <string.h>

#include "json.h"

static const struct {
  const char *name;
  bool admin;
} ops[PROTO_OP_COUNT] = {
#define PROTO__OP_ROW(e, name, admin) [PROTO_OP_##e] = {name, admin},
    PROTO_OP_MAP(PROTO__OP_ROW)
#undef PROTO__OP_ROW
};

const char *proto_op_name(proto_op op) {
  return (unsigned)op < PROTO_OP_COUNT ? ops[op].name : "unknown";
}

bool proto_op_is_admin(proto_op op) {
  return (unsigned)op < PROTO_OP_COUNT && ops[op].admin;
}

static const char *const tiers[] = {
    [PROTO_TIER_GPU] = "gpu", [PROTO_TIER_CPU] = "cpu", [PROTO_TIER_DISK] = "disk"};

const char *proto_tier_name(proto_tier t) {
  return (unsigned)t < sizeof(tiers) / sizeof(tiers[0]) ? tiers[t] : "unknown";
}

/* The fields of a request and the ops that take them. */
typedef enum {
  F_ID, F_OP, F_RELEASE, F_VERSION, F_CLIENT, F_SLICE, F_PIPELINE, F_INPUTS,
  F_OUT, F_WAIT, F_TIER, F_LEASES, F_REGION, F_NAME, F_CONSTRUCTOR, F_CONFIG,
  F_COUNT
} field;

#define OPBIT(e) (1u << PROTO_OP_##e)
#define ALL_OPS ((1u << PROTO_OP_COUNT) - 1)

static const struct {
  const char *name;
  unsigned ops;      /* ops that accept the field */
  unsigned required; /* ops that need it */
} fields[F_COUNT] = {
    [F_ID] = {"id", ALL_OPS, ALL_OPS},
    [F_OP] = {"op", ALL_OPS, ALL_OPS},
    [F_RELEASE] = {"release", ALL_OPS, 0},
    [F_VERSION] = {"version", OPBIT(HELLO), 0},
    [F_CLIENT] = {"client", OPBIT(HELLO), 0},
    [F_SLICE] = {"slice",
                 OPBIT(FORWARD) | OPBIT(SET_ACTIVE_SLICE) | OPBIT(LOAD) |
                     OPBIT(EVICT) | OPBIT(PIN) | OPBIT(UNPIN),
                 OPBIT(SET_ACTIVE_SLICE) | OPBIT(LOAD) | OPBIT(EVICT) |
                     OPBIT(PIN) | OPBIT(UNPIN)},
    [F_PIPELINE] = {"pipeline", OPBIT(FORWARD), 0},
    [F_INPUTS] = {"inputs", OPBIT(FORWARD), OPBIT(FORWARD)},
    [F_OUT] = {"out", OPBIT(FORWARD), 0},
    [F_WAIT] = {"wait", OPBIT(SET_ACTIVE_SLICE), 0},
    [F_TIER] = {"tier", OPBIT(LOAD) | OPBIT(EVICT) | OPBIT(PIN) | OPBIT(UNPIN),
                OPBIT(LOAD) | OPBIT(EVICT) | OPBIT(PIN)},
    [F_LEASES] = {"leases", OPBIT(RELEASE), OPBIT(RELEASE)},
    [F_REGION] = {"region", OPBIT(UNMAP_REGION), OPBIT(UNMAP_REGION)},
    [F_NAME] = {"name", OPBIT(ADD_SLICE) | OPBIT(REMOVE_SLICE),
                OPBIT(ADD_SLICE) | OPBIT(REMOVE_SLICE)},
    [F_CONSTRUCTOR] = {"constructor", OPBIT(ADD_SLICE), OPBIT(ADD_SLICE)},
    [F_CONFIG] = {"config", OPBIT(ADD_SLICE), 0},
};

#define INT_RANGE "an integer in 0..2^53-1"

static int unknown_field(const char *prefix, const char *key,
                         proto_error *err) {
  char q[PROTO__QUOTE_MAX + 1];
  proto__quote(key, q, sizeof(q));
  return proto_fail(err, SLY_E_BAD_REQUEST, "%s%s: unknown field", prefix, q);
}

static int get_u53(const cJSON *item, const char *path, uint64_t *out,
                   proto_error *err) {
  if (!proto__json_u53(item, out))
    return proto_fail(err, SLY_E_BAD_REQUEST, "%s: expected " INT_RANGE, path);
  return 0;
}

/* Copies a string of min..max bytes into buf (max + 1 bytes). */
static int get_string(const cJSON *item, const char *path, size_t min,
                      size_t max, char *buf, proto_error *err) {
  size_t n = cJSON_IsString(item) ? strlen(item->valuestring) : 0;
  if (!cJSON_IsString(item) || n < min || n > max)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "%s: expected a string of %zu..%zu bytes", path, min, max);
  /* Names and the client string end up in log lines: one line each. */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)item->valuestring[i];
    if (c < 0x20 || c == 0x7f)
      return proto_fail(err, SLY_E_BAD_REQUEST,
                        "%s: control characters are not allowed", path);
  }
  memcpy(buf, item->valuestring, n + 1);
  return 0;
}

/* Slices added at run time obey the rule config files do, so every name can
 * appear in a log line or a file name as it is. */
static int check_slice_name(const char *name, proto_error *err) {
  for (const char *p = name; *p; p++) {
    char c = *p;
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return proto_fail(err, SLY_E_BAD_REQUEST,
                        "name: only A-Z a-z 0-9 _ . - are allowed");
  }
  return 0;
}

static int get_ids(const cJSON *item, const char *path, uint64_t *ids,
                   uint32_t *n, proto_error *err) {
  if (!cJSON_IsArray(item))
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "%s: expected an array of at most %d ids", path,
                      PROTO_MAX_IDS);
  int count = cJSON_GetArraySize(item);
  if (count > PROTO_MAX_IDS)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "%s: %d ids exceed the limit of %d", path, count,
                      PROTO_MAX_IDS);
  uint32_t i = 0;
  for (const cJSON *c = item->child; c != NULL; c = c->next, i++) {
    if (!proto__json_u53(c, &ids[i]))
      return proto_fail(err, SLY_E_BAD_REQUEST, "%s[%u]: expected " INT_RANGE,
                        path, i);
  }
  *n = i;
  return 0;
}

static int get_tier(const cJSON *item, proto_tier *out, proto_error *err) {
  if (cJSON_IsString(item)) {
    for (unsigned t = 0; t < sizeof(tiers) / sizeof(tiers[0]); t++) {
      if (strcmp(item->valuestring, tiers[t]) == 0) {
        *out = (proto_tier)t;
        return 0;
      }
    }
  }
  return proto_fail(err, SLY_E_BAD_REQUEST,
                    "tier: expected \"gpu\", \"cpu\" or \"disk\"");
}

static int parse_tensor(const cJSON *obj, uint32_t index, proto_tensor *t,
                        proto_error *err) {
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "inputs[%u].", index);
  if (!cJSON_IsObject(obj))
    return proto_fail(err, SLY_E_BAD_TENSOR,
                      "inputs[%u]: expected a tensor descriptor object", index);
  bool has_dtype = false, has_shape = false, has_region = false,
       has_offset = false;
  char path[64];
  for (const cJSON *c = obj->child; c != NULL; c = c->next) {
    const char *k = c->string;
    if (strcmp(k, "dtype") == 0) {
      if (!cJSON_IsString(c))
        return proto_fail(err, SLY_E_BAD_TENSOR,
                          "%sdtype: expected a string such as \"float32\"",
                          prefix);
      if (proto_dtype_from_name(c->valuestring, &t->dtype) < 0) {
        char q[PROTO__QUOTE_MAX + 1];
        proto__quote(c->valuestring, q, sizeof(q));
        return proto_fail(err, SLY_E_BAD_TENSOR,
                          "%sdtype: unknown dtype \"%s\"", prefix, q);
      }
      has_dtype = true;
    } else if (strcmp(k, "shape") == 0) {
      if (!cJSON_IsArray(c))
        return proto_fail(err, SLY_E_BAD_TENSOR,
                          "%sshape: expected an array of at most %d integers",
                          prefix, PROTO_MAX_DIMS);
      int ndim = cJSON_GetArraySize(c);
      if (ndim > PROTO_MAX_DIMS)
        return proto_fail(err, SLY_E_BAD_TENSOR,
                          "%sshape: %d dims exceed the limit of %d", prefix,
                          ndim, PROTO_MAX_DIMS);
      uint32_t d = 0;
      for (const cJSON *e = c->child; e != NULL; e = e->next, d++)
        if (!proto__json_u53(e, &t->shape[d]))
          return proto_fail(err, SLY_E_BAD_TENSOR,
                            "%sshape[%u]: expected " INT_RANGE, prefix, d);
      t->ndim = d;
      has_shape = true;
    } else if (strcmp(k, "region") == 0) {
      snprintf(path, sizeof(path), "%sregion", prefix);
      if (get_u53(c, path, &t->region, err) < 0)
        return SLY_E_BAD_REQUEST;
      has_region = true;
    } else if (strcmp(k, "offset") == 0) {
      snprintf(path, sizeof(path), "%soffset", prefix);
      if (get_u53(c, path, &t->offset, err) < 0)
        return SLY_E_BAD_REQUEST;
      has_offset = true;
    } else {
      return unknown_field(prefix, k, err);
    }
  }
  if (!has_dtype)
    return proto_fail(err, SLY_E_BAD_TENSOR, "%sdtype: missing", prefix);
  if (!has_shape)
    return proto_fail(err, SLY_E_BAD_TENSOR, "%sshape: missing", prefix);
  if (!has_region)
    return proto_fail(err, SLY_E_BAD_REQUEST, "%sregion: missing", prefix);
  if (!has_offset)
    return proto_fail(err, SLY_E_BAD_REQUEST, "%soffset: missing", prefix);
  proto_error sub;
  if (proto_tensor_nbytes(t->dtype, t->ndim, t->shape, &t->nbytes, &sub) < 0)
    return proto_fail(err, sub.code, "%s%s", prefix, sub.message);
  unsigned size = proto_dtype_size(t->dtype);
  if (t->offset % size != 0)
    return proto_fail(err, SLY_E_BAD_TENSOR,
                      "%soffset: %llu is not a multiple of %u, the size of %s",
                      prefix, (unsigned long long)t->offset, size,
                      proto_dtype_name(t->dtype));
  return 0;
}

static int parse_inputs(const cJSON *item, proto_request *req,
                        proto_error *err) {
  if (!cJSON_IsArray(item))
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "inputs: expected an array of tensor descriptors");
  int n = cJSON_GetArraySize(item);
  if (n > PROTO_MAX_TENSORS)
    return proto_fail(err, SLY_E_BAD_TENSOR,
                      "inputs: %d tensors exceed the limit of %d", n,
                      PROTO_MAX_TENSORS);
  uint32_t i = 0;
  for (const cJSON *c = item->child; c != NULL; c = c->next, i++) {
    int r = parse_tensor(c, i, &req->inputs[i], err);
    if (r < 0)
      return r;
  }
  req->n_inputs = i;
  return 0;
}

static int parse_out(const cJSON *item, proto_range *out, proto_error *err) {
  if (!cJSON_IsObject(item))
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "out: expected an object {\"region\", \"offset\", "
                      "\"bytes\"}");
  static const char *const keys[3] = {"region", "offset", "bytes"};
  uint64_t *dst[3] = {&out->region, &out->offset, &out->bytes};
  bool seen[3] = {false, false, false};
  for (const cJSON *c = item->child; c != NULL; c = c->next) {
    unsigned k = 0;
    while (k < 3 && strcmp(c->string, keys[k]) != 0)
      k++;
    if (k == 3)
      return unknown_field("out.", c->string, err);
    char path[16];
    snprintf(path, sizeof(path), "out.%s", keys[k]);
    if (get_u53(c, path, dst[k], err) < 0)
      return SLY_E_BAD_REQUEST;
    seen[k] = true;
  }
  for (unsigned k = 0; k < 3; k++)
    if (!seen[k])
      return proto_fail(err, SLY_E_BAD_REQUEST, "out.%s: missing", keys[k]);
  return 0;
}

/* Reads one field already known to be allowed for req->op. */
static int parse_field(field f, cJSON *item, proto_request *req,
                       cJSON **config, proto_error *err) {
  switch (f) {
  case F_ID:
  case F_OP:
    return 0; /* read before the fields */
  case F_RELEASE:
    return get_ids(item, "release", req->release, &req->n_release, err);
  case F_VERSION:
    if (get_u53(item, "version", &req->version, err) < 0)
      return SLY_E_BAD_REQUEST;
    if (req->version != SLY_PROTOCOL_VERSION)
      return proto_fail(err, SLY_E_BAD_REQUEST,
                        "unsupported protocol version %llu (this server speaks "
                        "%d)",
                        (unsigned long long)req->version, SLY_PROTOCOL_VERSION);
    req->has_version = true;
    return 0;
  case F_CLIENT:
    return get_string(item, "client", 0, PROTO_CLIENT_MAX, req->client, err);
  case F_SLICE:
    return get_string(item, "slice", 1, PROTO_NAME_MAX, req->slice, err);
  case F_PIPELINE:
    return get_string(item, "pipeline", 1, PROTO_NAME_MAX, req->pipeline, err);
  case F_INPUTS:
    return parse_inputs(item, req, err);
  case F_OUT:
    req->has_out = true;
    return parse_out(item, &req->out, err);
  case F_WAIT:
    if (!cJSON_IsBool(item))
      return proto_fail(err, SLY_E_BAD_REQUEST, "wait: expected true or false");
    req->wait = cJSON_IsTrue(item);
    return 0;
  case F_TIER:
    req->has_tier = true;
    return get_tier(item, &req->tier, err);
  case F_LEASES:
    return get_ids(item, "leases", req->leases, &req->n_leases, err);
  case F_REGION:
    return get_u53(item, "region", &req->region, err);
  case F_NAME:
    if (get_string(item, "name", 1, PROTO_NAME_MAX, req->slice, err) < 0)
      return SLY_E_BAD_REQUEST;
    return req->op == PROTO_OP_ADD_SLICE ? check_slice_name(req->slice, err) : 0;
  case F_CONSTRUCTOR:
    return get_string(item, "constructor", 1, PROTO_NAME_MAX, req->constructor,
                      err);
  case F_CONFIG:
    if (!cJSON_IsObject(item))
      return proto_fail(err, SLY_E_BAD_REQUEST, "config: expected an object");
    *config = item;
    return 0;
  case F_COUNT:
    break;
  }
  return proto_fail(err, SLY_E_INTERNAL, "unhandled field %d", (int)f);
}

/* Reads "id" and "op"; sets req->has_id as soon as the id is known good, so
 * that even a request failing later is answered with its id. */
static int parse_head(cJSON *root, proto_request *req, proto_error *err) {
  const cJSON *id = NULL;
  unsigned ids = 0;
  for (const cJSON *c = root->child; c != NULL; c = c->next)
    if (strcmp(c->string, "id") == 0 && ids++ == 0)
      id = c;
  if (ids == 1 && proto__json_u53(id, &req->id))
    req->has_id = true;

  int r = proto__json_check_dups(root, SLY_E_BAD_REQUEST, err);
  if (r < 0)
    return r;
  if (id == NULL)
    return proto_fail(err, SLY_E_BAD_REQUEST, "id: missing");
  if (!req->has_id)
    return proto_fail(err, SLY_E_BAD_REQUEST, "id: expected " INT_RANGE);

  const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "op");
  if (op == NULL)
    return proto_fail(err, SLY_E_BAD_REQUEST, "op: missing");
  if (!cJSON_IsString(op))
    return proto_fail(err, SLY_E_BAD_REQUEST, "op: expected a string");
  for (unsigned i = 0; i < PROTO_OP_COUNT; i++) {
    if (strcmp(op->valuestring, ops[i].name) == 0) {
      req->op = (proto_op)i;
      return 0;
    }
  }
  char q[PROTO__QUOTE_MAX + 1];
  proto__quote(op->valuestring, q, sizeof(q));
  return proto_fail(err, SLY_E_UNKNOWN_OP, "unknown op \"%s\"", q);
}

static int parse_fields(cJSON *root, proto_request *req, cJSON **config,
                        proto_error *err) {
  unsigned bit = 1u << req->op;
  bool seen[F_COUNT] = {false};
  for (cJSON *c = root->child; c != NULL; c = c->next) {
    unsigned f = 0;
    while (f < F_COUNT && strcmp(c->string, fields[f].name) != 0)
      f++;
    if (f == F_COUNT)
      return unknown_field("", c->string, err);
    if (!(fields[f].ops & bit))
      return proto_fail(err, SLY_E_BAD_REQUEST, "%s: not a field of op %s",
                        fields[f].name, ops[req->op].name);
    int r = parse_field((field)f, c, req, config, err);
    if (r < 0)
      return r;
    seen[f] = true;
  }
  for (unsigned f = 0; f < F_COUNT; f++)
    if ((fields[f].required & bit) && !seen[f])
      return proto_fail(err, SLY_E_BAD_REQUEST, "%s: missing", fields[f].name);
  if (seen[F_SLICE] && seen[F_PIPELINE])
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "pipeline: not allowed together with slice");
  return 0;
}

int proto_request_parse(const char *body, size_t len, proto_request *req,
                        proto_error *err) {
  memset(req, 0, sizeof(*req));
  req->op = PROTO_OP_COUNT; /* until the op is known */
  req->wait = true;
  cJSON *root = NULL;
  int r = proto__json_parse(body, len, SLY_E_BAD_FRAME, &root, err);
  if (r < 0)
    return r;
  r = parse_head(root, req, err);
  cJSON *config = NULL;
  if (r == 0)
    r = parse_fields(root, req, &config, err);
  if (r == 0 && config != NULL)
    req->config = cJSON_DetachItemViaPointer(root, config);
  cJSON_Delete(root);
  return r;
}

void proto_request_free(proto_request *req) {
  if (req == NULL)
    return;
  cJSON_Delete(req->config);
  req->config = NULL;
}
