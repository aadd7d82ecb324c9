/* result.c — the outputs of a forward (client/).
 *
 * Owns: sly_result: reading a forward reply into tensor views (each output's
 * dtype, shape and place checked against the region it names), the lease and
 * timing, and giving the outputs back with sly_result_free(). Views into
 * server regions are read-only mappings; they stay valid until the result is
 * freed, because the server keeps a lease's bytes until it is released.
 */
#include "conn_internal.h"

#include <stdlib.h>
#include <string.h>

#include "reply.h"

/* Where output i lies, as a pointer, once its place is checked. */
static int place_output(const sly_conn *c, size_t i, const proto_tensor *t,
                        const proto_range *out, void **data, sly_error *err) {
  const char *base;
  uint64_t lo, size;
  if (out != NULL) {
    /* With "out", every output lies inside that range of the arena. */
    const sly_arena *a = sly__arena_by_region(c, t->region);
    if (t->region != out->region || a == NULL)
      return sly__fail(err, SLY_E_PROTOCOL,
                       "forward reply: outputs[%zu] is in region %llu, not "
                       "in the out region %llu",
                       i, (unsigned long long)t->region,
                       (unsigned long long)out->region);
    base = a->base;
    lo = out->offset;
    size = out->bytes;
  } else {
    const sly__region *r = sly__region_find(c, t->region);
    if (r == NULL)
      return sly__fail(err, SLY_E_PROTOCOL,
                       "forward reply: outputs[%zu] is in region %llu, not a "
                       "server region of this connection",
                       i, (unsigned long long)t->region);
    base = r->base;
    lo = 0;
    size = r->size;
  }
  /* [offset, offset + nbytes) inside [lo, lo + size), without a sum that
   * could wrap. */
  if (t->offset < lo || t->offset - lo > size ||
      t->nbytes > size - (t->offset - lo))
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: outputs[%zu] (%llu bytes at offset %llu) "
                     "extends past its range of region %llu",
                     i, (unsigned long long)t->nbytes,
                     (unsigned long long)t->offset,
                     (unsigned long long)t->region);
  *data = (void *)(base + t->offset);
  return 0;
}

/* One output descriptor into a tensor view. */
static int read_output(const sly_conn *c, const cJSON *d, size_t i,
                       const proto_range *out, sly_tensor *view,
                       uint64_t *region, sly_error *err) {
  proto_tensor t = {0};
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(d, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(d, "shape");
  if (!cJSON_IsObject(d) || !cJSON_IsString(dtype) ||
      proto_dtype_from_name(dtype->valuestring, &t.dtype) < 0)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: outputs[%zu] has no known dtype", i);
  if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > PROTO_MAX_DIMS)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: outputs[%zu].shape is not an array of "
                     "at most %d dims",
                     i, PROTO_MAX_DIMS);
  const cJSON *dim;
  cJSON_ArrayForEach(dim, shape) {
    if (!sly__json_u53(dim, &t.shape[t.ndim]))
      return sly__fail(err, SLY_E_PROTOCOL,
                       "forward reply: outputs[%zu].shape[%u] is not an "
                       "integer in 0..2^53-1",
                       i, t.ndim);
    t.ndim++;
  }
  proto_error perr;
  if (proto_json_u64(d, "region", &t.region) < 0 ||
      proto_json_u64(d, "offset", &t.offset) < 0)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: outputs[%zu] lacks an integer region or "
                     "offset",
                     i);
  if (proto_tensor_nbytes(t.dtype, t.ndim, t.shape, &t.nbytes, &perr) < 0)
    return sly__fail(err, SLY_E_PROTOCOL, "forward reply: outputs[%zu]: %s", i,
                     perr.message);
  if (t.offset % proto_dtype_size(t.dtype) != 0)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: outputs[%zu] offset %llu is not aligned "
                     "to its element size",
                     i, (unsigned long long)t.offset);
  void *data = NULL;
  int rc = place_output(c, i, &t, out, &data, err);
  if (rc < 0)
    return rc;
  memset(view, 0, sizeof(*view));
  view->dtype = (sly_dtype)t.dtype;
  view->ndim = t.ndim;
  memcpy(view->shape, t.shape, sizeof(t.shape[0]) * t.ndim);
  view->data = data;
  *region = t.region;
  return 0;
}

static int read_timing(const cJSON *reply, sly_timing *t, sly_error *err) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(reply, "timing");
  if (!cJSON_IsObject(j) || proto_json_u64(j, "queue_us", &t->queue_us) < 0 ||
      proto_json_u64(j, "load_us", &t->load_us) < 0 ||
      proto_json_u64(j, "compute_us", &t->compute_us) < 0 ||
      proto_json_u64(j, "total_us", &t->total_us) < 0)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: \"timing\" lacks queue_us, load_us, "
                     "compute_us or total_us");
  return 0;
}

static void result_destroy(sly_result *r) {
  if (r == NULL)
    return;
  free(r->outputs);
  free(r->regions);
  free(r);
}

int sly__result_parse(sly_conn *c, const cJSON *reply, const proto_range *out,
                      sly_result **res, sly_error *err) {
  const cJSON *outputs = cJSON_GetObjectItemCaseSensitive(reply, "outputs");
  if (!cJSON_IsArray(outputs))
    return sly__fail(err, SLY_E_PROTOCOL,
                     "forward reply: \"outputs\" is not an array");
  sly_result *r = calloc(1, sizeof(*r));
  size_t n = (size_t)cJSON_GetArraySize(outputs);
  if (r == NULL ||
      (n > 0 && ((r->outputs = calloc(n, sizeof(*r->outputs))) == NULL ||
                 (r->regions = calloc(n, sizeof(*r->regions))) == NULL))) {
    result_destroy(r);
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  int rc = 0;
  const cJSON *d;
  cJSON_ArrayForEach(d, outputs) {
    rc = read_output(c, d, r->count, out, &r->outputs[r->count],
                     &r->regions[r->count], err);
    if (rc < 0)
      break;
    r->count++;
  }
  if (rc == 0 && proto_json_u64(reply, "lease", &r->lease) < 0)
    rc = sly__fail(err, SLY_E_PROTOCOL,
                   "forward reply: \"lease\" is not an integer in 0..2^53-1");
  if (rc == 0)
    rc = read_timing(reply, &r->timing, err);
  if (rc < 0) {
    result_destroy(r);
    return rc;
  }
  r->conn = c;
  r->next = c->results;
  if (c->results != NULL)
    c->results->prev = r;
  c->results = r;
  *res = r;
  return 0;
}

size_t sly_result_count(const sly_result *r) {
  return r != NULL ? r->count : 0;
}

const sly_tensor *sly_result_output(const sly_result *r, size_t i) {
  return r != NULL && i < r->count ? &r->outputs[i] : NULL;
}

sly_timing sly_result_timing(const sly_result *r) {
  sly_timing none = {0};
  return r != NULL ? r->timing : none;
}

uint64_t sly_result_lease(const sly_result *r) {
  return r != NULL ? r->lease : 0;
}

/* The lease goes back with the connection's next request; the views die
 * with it. A result that outlived its connection only frees memory. */
void sly_result_free(sly_result *r) {
  if (r == NULL)
    return;
  sly_conn *c = r->conn;
  if (c != NULL) {
    if (r->prev != NULL)
      r->prev->next = r->next;
    else
      c->results = r->next;
    if (r->next != NULL)
      r->next->prev = r->prev;
    sly__release_queue(c, r->lease);
  }
  result_destroy(r);
}

/* Called by sly_close(): results left open keep their memory but no longer
 * know the connection. */
void sly__results_detach(sly_conn *c) {
  for (sly_result *r = c->results; r != NULL;) {
    sly_result *next = r->next;
    r->conn = NULL;
    r->prev = r->next = NULL;
    r = next;
  }
  c->results = NULL;
}
