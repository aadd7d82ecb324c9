/* ops.c — the typed requests of libslyce (client/).
 *
 * Owns: building hello/list/stats/reload/shutdown/set_active_slice/add_slice/
 * remove_slice requests and reading their replies into the structs of
 * slyce.h, and sly_request_json for scripting. A
 * reply that lacks a field the protocol promises is SLY_E_PROTOCOL; output
 * parameters are written only once the whole reply has been read.
 */
#include "conn_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"
#include "reply.h"
#include "request.h"

/* Copies a string field into a fixed buffer. Display fields are cut to fit
 * rather than refused: a long server name is no reason to fail a call. */
static int get_str(const cJSON *obj, const char *key, char *out, size_t size,
                   const char *what, sly_error *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!cJSON_IsString(item))
    return sly__fail(err, SLY_E_PROTOCOL, "%s reply: \"%s\" is not a string",
                     what, key);
  snprintf(out, size, "%s", item->valuestring);
  return 0;
}

static int get_u64(const cJSON *obj, const char *key, uint64_t *out,
                   const char *what, sly_error *err) {
  if (proto_json_u64(obj, key, out) < 0)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "%s reply: \"%s\" is not an integer in 0..2^53-1", what,
                     key);
  return 0;
}

static int get_double(const cJSON *obj, const char *key, double *out,
                      const char *what, sly_error *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) ||
      item->valuedouble < 0)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "%s reply: \"%s\" is not a non-negative number", what,
                     key);
  *out = item->valuedouble;
  return 0;
}

static const cJSON *get_obj(const cJSON *obj, const char *key, const char *what,
                            sly_error *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!cJSON_IsObject(item))
    sly__fail(err, SLY_E_PROTOCOL, "%s reply: \"%s\" is not an object", what,
              key);
  return cJSON_IsObject(item) ? item : NULL;
}

/* Sends a request that carries no fd and frees it. A reply with fds that
 * bring no new server region has already failed in sly__call. */
static int call(sly_conn *c, cJSON *req, sly__reply *rep, sly_error *err) {
  if (req == NULL)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  int rc = sly__call(c, req, -1, rep, err);
  cJSON_Delete(req);
  if (rc < 0)
    sly__reply_free(rep);
  return rc;
}

static int parse_hello(const cJSON *r, sly_hello_info *h, sly_error *err) {
  const char *w = "hello";
  uint64_t protocol;
  int rc;
  if ((rc = get_str(r, "server", h->server, sizeof(h->server), w, err)) < 0 ||
      (rc = get_str(r, "device", h->device, sizeof(h->device), w, err)) < 0 ||
      (rc = get_u64(r, "protocol", &protocol, w, err)) < 0)
    return rc;
  if (protocol != SLY_PROTOCOL_VERSION)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "server speaks protocol %llu, this library %d",
                     (unsigned long long)protocol, SLY_PROTOCOL_VERSION);
  h->protocol = (int)protocol;
  const cJSON *limits = get_obj(r, "limits", w, err);
  if (limits == NULL)
    return SLY_E_PROTOCOL;
#define HELLO_LIMIT(key, def, lo, hi)                                          \
  if ((rc = get_u64(limits, #key, &h->key, "hello limits", err)) < 0)        \
    return rc;
  PROTO_LIMIT_MAP(HELLO_LIMIT)
#undef HELLO_LIMIT
  return 0;
}

int sly_hello(sly_conn *c, const char *client, sly_hello_info *out,
              sly_error *err) {
  if (out == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "no place for the hello reply");
  if (client == NULL)
    client = "libslyce";
  size_t n = strlen(client);
  if (n > PROTO_CLIENT_MAX || !proto_utf8_valid(client, n))
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "client name must be UTF-8 of at most %d bytes",
                     PROTO_CLIENT_MAX);
  cJSON *req = sly__request("hello");
  if (req != NULL && (!cJSON_AddNumberToObject(req, "version",
                                               SLY_PROTOCOL_VERSION) ||
                      !cJSON_AddStringToObject(req, "client", client))) {
    cJSON_Delete(req);
    req = NULL;
  }
  sly__reply rep;
  int rc = call(c, req, &rep, err);
  if (rc < 0)
    return rc;
  sly_hello_info h;
  memset(&h, 0, sizeof(h));
  rc = parse_hello(rep.json, &h, err);
  sly__reply_free(&rep);
  if (rc < 0)
    return rc;
  /* Requests over the server's frame limit are refused here from now on. */
  if (h.max_frame_bytes > 0)
    c->max_frame_bytes = h.max_frame_bytes;
  *out = h;
  return 0;
}

/* "pinned" is false, or the tier the slice is pinned at (PROTOCOL.md),
 * read into `tier` as "tier" is: verbatim, so that a tier this library
 * does not know still shows. Older daemons said true; its tier is "". */
static int get_pinned(const cJSON *obj, int *out, char tier[8],
                      sly_error *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, "pinned");
  tier[0] = '\0';
  if (cJSON_IsBool(item) || cJSON_IsNull(item)) {
    *out = cJSON_IsTrue(item);
    return 0;
  }
  if (!cJSON_IsString(item))
    return sly__fail(err, SLY_E_PROTOCOL,
                     "list reply: \"pinned\" is not a bool or a tier");
  *out = item->valuestring[0] != '\0';
  snprintf(tier, 8, "%s", item->valuestring);
  return 0;
}

static int parse_slice(const cJSON *s, sly_slice_info *si, char pin[8],
                       sly_error *err) {
  const char *w = "list";
  int rc;
  if (!cJSON_IsObject(s))
    return sly__fail(err, SLY_E_PROTOCOL, "list reply: a slice is not an object");
  if ((rc = get_str(s, "name", si->name, sizeof(si->name), w, err)) < 0 ||
      (rc = get_str(s, "constructor", si->constructor,
                    sizeof(si->constructor), w, err)) < 0 ||
      (rc = get_str(s, "tier", si->tier, sizeof(si->tier), w, err)) < 0 ||
      (rc = get_str(s, "state", si->state, sizeof(si->state), w, err)) < 0 ||
      (rc = get_u64(s, "bytes", &si->bytes, w, err)) < 0 ||
      (rc = get_pinned(s, &si->pinned, pin, err)) < 0 ||
      (rc = get_u64(s, "hits", &si->hits, w, err)) < 0 ||
      (rc = get_u64(s, "loads", &si->loads, w, err)) < 0 ||
      (rc = get_double(s, "last_used", &si->last_used, w, err)) < 0)
    return rc;
  return 0;
}

/* What a list holds beyond the public struct, which comes first: the
 * caller's pointer is to it. */
typedef struct {
  sly_slice_list pub;
  char (*pin)[8]; /* per slice: the tier it is pinned at, or "" */
} slice_list;

/* The caller frees the result with sly_slice_list_free(). */
int sly_list(sly_conn *c, sly_slice_list **out, sly_error *err) {
  if (out == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "no place for the list");
  sly__reply rep;
  int rc = call(c, sly__request("list"), &rep, err);
  if (rc < 0)
    return rc;
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(rep.json, "slices");
  slice_list *l = NULL;
  if (!cJSON_IsArray(arr)) {
    rc = sly__fail(err, SLY_E_PROTOCOL, "list reply: \"slices\" is not an array");
    goto done;
  }
  l = calloc(1, sizeof(*l));
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (l == NULL ||
      (n > 0 && ((l->pub.slices = calloc(n, sizeof(*l->pub.slices))) == NULL ||
                 (l->pin = calloc(n, sizeof(*l->pin))) == NULL))) {
    rc = sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
    goto done;
  }
  const cJSON *s;
  cJSON_ArrayForEach(s, arr) {
    size_t i = l->pub.count;
    if ((rc = parse_slice(s, &l->pub.slices[i], l->pin[i], err)) < 0)
      goto done;
    l->pub.count++;
  }
  *out = &l->pub;
  l = NULL;
done:
  sly_slice_list_free(l != NULL ? &l->pub : NULL);
  sly__reply_free(&rep);
  return rc;
}

const char *sly_list_pinned_tier(const sly_slice_list *l, size_t i) {
  if (l == NULL || i >= l->count)
    return NULL;
  return l->slices[i].pinned ? ((const slice_list *)l)->pin[i] : NULL;
}

void sly_slice_list_free(sly_slice_list *l) {
  if (l == NULL)
    return;
  free(l->slices);
  free(((slice_list *)l)->pin);
  free(l);
}

static int parse_stats(const cJSON *r, sly_stats *st, sly_error *err) {
  const char *w = "stats";
  const cJSON *proc, *conns, *reqs;
  int rc;
  if ((proc = get_obj(r, "process", w, err)) == NULL ||
      (conns = get_obj(r, "connections", w, err)) == NULL ||
      (reqs = get_obj(r, "requests", w, err)) == NULL)
    return SLY_E_PROTOCOL;
  if ((rc = get_double(r, "uptime_s", &st->uptime_s, w, err)) < 0 ||
      (rc = get_u64(proc, "rss_bytes", &st->rss_bytes, w, err)) < 0 ||
      (rc = get_u64(proc, "mem_available_bytes", &st->mem_available_bytes, w,
                    err)) < 0 ||
      (rc = get_u64(proc, "mem_total_bytes", &st->mem_total_bytes, w, err)) <
          0 ||
      (rc = get_u64(conns, "open", &st->connections, w, err)) < 0 ||
      (rc = get_u64(reqs, "total", &st->requests, w, err)) < 0 ||
      (rc = get_u64(reqs, "errors", &st->errors, w, err)) < 0)
    return rc;
  return 0;
}

int sly_stats_get(sly_conn *c, sly_stats *out, sly_error *err) {
  if (out == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "no place for the stats");
  sly__reply rep;
  int rc = call(c, sly__request("stats"), &rep, err);
  if (rc < 0)
    return rc;
  sly_stats st;
  memset(&st, 0, sizeof(st));
  rc = parse_stats(rep.json, &st, err);
  sly__reply_free(&rep);
  if (rc == 0)
    *out = st;
  return rc;
}

/* An op that takes no fields and answers {}. */
static int simple_op(sly_conn *c, const char *op, sly_error *err) {
  sly__reply rep;
  int rc = call(c, sly__request(op), &rep, err);
  if (rc == 0)
    sly__reply_free(&rep);
  return rc;
}

int sly_reload(sly_conn *c, sly_error *err) {
  return simple_op(c, "reload", err);
}

int sly_shutdown(sly_conn *c, sly_error *err) {
  return simple_op(c, "shutdown", err);
}

/* The caller frees *reply_json with free(). A request that is not a JSON
 * object in UTF-8, or whose id is not an integer in 0..2^53-1, is refused
 * before anything is sent: the server would close the connection or answer
 * with an id of null, which this library reads as the server giving up. */
int sly_request_json(sly_conn *c, const char *request_json, char **reply_json,
                     sly_error *err) {
  if (request_json == NULL || reply_json == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "request or reply is NULL");
  int rc = sly__conn_check(c, err);
  if (rc < 0)
    return rc;
  if (!proto_utf8_valid(request_json, strlen(request_json)))
    return sly__fail(err, SLY_E_INVALID_ARG, "request is not valid UTF-8");
  const char *end = NULL;
  cJSON *req = cJSON_ParseWithOpts(request_json, &end, 1);
  if (req == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "request is not JSON (error near byte %td)",
                     end != NULL ? end - request_json : (ptrdiff_t)0);
  if (!cJSON_IsObject(req)) {
    cJSON_Delete(req);
    return sly__fail(err, SLY_E_INVALID_ARG, "request is not a JSON object");
  }
  uint64_t id;
  if (cJSON_GetObjectItemCaseSensitive(req, "id") != NULL &&
      proto_json_u64(req, "id", &id) < 0) {
    cJSON_Delete(req);
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "request id must be an integer in 0..2^53-1");
  }
  sly__reply rep;
  rc = sly__call(c, req, -1, &rep, err);
  cJSON_Delete(req);
  if (rep.body == NULL)
    return rc;
  /* The fds of new server regions were mapped by sly__call like any
   * others; the leases of a forward sent this way are the caller's to
   * release. */
  *reply_json = rep.body;
  rep.body = NULL;
  sly__reply_free(&rep);
  return rc;
}

/* A name the protocol accepts: 1..128 bytes of UTF-8 without control
 * characters. Refused here, the mistake costs no round trip. */
static int check_name(const char *name, const char *what, sly_error *err) {
  if (name == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "%s is NULL", what);
  size_t n = strlen(name);
  if (n == 0 || n > PROTO_NAME_MAX || !proto_utf8_valid(name, n))
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "%s must be 1 to %d bytes of UTF-8", what,
                     PROTO_NAME_MAX);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
      return sly__fail(err, SLY_E_INVALID_ARG,
                       "%s contains a control character", what);
  return 0;
}

/* `tier` receives where the slice lives once the reply has been read. */
int sly_set_active_slice(sly_conn *c, const char *slice, int wait,
                         char tier[8], sly_error *err) {
  int rc = check_name(slice, "slice", err);
  if (rc < 0)
    return rc;
  cJSON *req = sly__request("set_active_slice");
  if (req != NULL && (!cJSON_AddStringToObject(req, "slice", slice) ||
                      !cJSON_AddBoolToObject(req, "wait", wait != 0))) {
    cJSON_Delete(req);
    req = NULL;
  }
  sly__reply rep;
  if ((rc = call(c, req, &rep, err)) < 0)
    return rc;
  char t[8];
  const cJSON *jt = cJSON_GetObjectItemCaseSensitive(rep.json, "tier");
  if (!cJSON_IsString(jt) || strlen(jt->valuestring) >= sizeof(t))
    rc = sly__fail(err, SLY_E_PROTOCOL,
                   "set_active_slice reply: \"tier\" is not a tier name");
  else
    snprintf(t, sizeof(t), "%s", jt->valuestring);
  sly__reply_free(&rep);
  if (rc == 0 && tier != NULL)
    memcpy(tier, t, sizeof(t));
  return rc;
}

/* `config_json` is parsed here so that a typo is INVALID_ARG, not a request
 * the server must refuse. */
int sly_add_slice(sly_conn *c, const char *name, const char *constructor,
                  const char *config_json, sly_error *err) {
  int rc;
  if ((rc = check_name(name, "name", err)) < 0 ||
      (rc = check_name(constructor, "constructor", err)) < 0)
    return rc;
  cJSON *config = cJSON_ParseWithOpts(config_json != NULL ? config_json : "{}",
                                      NULL, 1);
  if (!cJSON_IsObject(config)) {
    cJSON_Delete(config);
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "config is not a JSON object");
  }
  cJSON *req = sly__request("add_slice");
  if (req == NULL || !cJSON_AddStringToObject(req, "name", name) ||
      !cJSON_AddStringToObject(req, "constructor", constructor) ||
      !cJSON_AddItemToObject(req, "config", config)) {
    cJSON_Delete(config);
    cJSON_Delete(req);
    req = NULL;
  }
  sly__reply rep;
  if ((rc = call(c, req, &rep, err)) == 0)
    sly__reply_free(&rep);
  return rc;
}

int sly_remove_slice(sly_conn *c, const char *name, sly_error *err) {
  int rc = check_name(name, "name", err);
  if (rc < 0)
    return rc;
  cJSON *req = sly__request("remove_slice");
  if (req != NULL && !cJSON_AddStringToObject(req, "name", name)) {
    cJSON_Delete(req);
    req = NULL;
  }
  sly__reply rep;
  if ((rc = call(c, req, &rep, err)) == 0)
    sly__reply_free(&rep);
  return rc;
}

/* load, evict, pin, unpin: {"slice", "tier"?}; `where` gets the reply's
 * tier when asked for. */
static int tier_op(sly_conn *c, const char *op, const char *slice,
                   const char *tier, char where[8], sly_error *err) {
  int rc = check_name(slice, "slice", err);
  if (rc < 0)
    return rc;
  if (tier != NULL && strcmp(tier, "gpu") != 0 && strcmp(tier, "cpu") != 0 &&
      strcmp(tier, "disk") != 0)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "tier must be \"gpu\", \"cpu\" or \"disk\"");
  cJSON *req = sly__request(op);
  if (req != NULL && (!cJSON_AddStringToObject(req, "slice", slice) ||
                      (tier != NULL &&
                       !cJSON_AddStringToObject(req, "tier", tier)))) {
    cJSON_Delete(req);
    req = NULL;
  }
  sly__reply rep;
  if ((rc = call(c, req, &rep, err)) < 0)
    return rc;
  if (where != NULL) {
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(rep.json, "tier");
    if (!cJSON_IsString(jt) || strlen(jt->valuestring) >= 8)
      rc = sly__fail(err, SLY_E_PROTOCOL,
                     "%s reply: \"tier\" is not a tier name", op);
    else
      snprintf(where, 8, "%s", jt->valuestring);
  }
  sly__reply_free(&rep);
  return rc;
}

int sly_load(sly_conn *c, const char *slice, const char *tier, char where[8],
             sly_error *err) {
  if (tier == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "load needs a tier");
  return tier_op(c, "load", slice, tier, where, err);
}

int sly_evict(sly_conn *c, const char *slice, const char *tier, char where[8],
              sly_error *err) {
  if (tier == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "evict needs a tier");
  return tier_op(c, "evict", slice, tier, where, err);
}

int sly_pin(sly_conn *c, const char *slice, const char *tier, sly_error *err) {
  if (tier == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "pin needs a tier");
  return tier_op(c, "pin", slice, tier, NULL, err);
}

int sly_unpin(sly_conn *c, const char *slice, sly_error *err) {
  return tier_op(c, "unpin", slice, NULL, NULL, err);
}
