/* forward.c — the forward request of libslyce (client/).
 *
 * Owns: turning sly_tensor inputs into tensor descriptors (which arena holds
 * each one: its region id and offset), the optional "out" range, and the
 * forward round trip. Everything the server would refuse about an input's
 * place in memory is refused here first, as SLY_E_INVALID_ARG, so that a
 * caller's mistake costs no round trip. The reply is read by result.c.
 */
#include "conn_internal.h"

#include <stdio.h>
#include <string.h>

#include "tensor.h"

/* Adds an integer field; false when out of memory. */
static bool add_u64(cJSON *obj, const char *key, uint64_t v) {
  return cJSON_AddNumberToObject(obj, key, (double)v) != NULL;
}

/* One input as {"dtype", "shape", "region", "offset"}, appended to `arr`. */
static int describe_input(const sly_conn *c, const sly_tensor *t, size_t i,
                          cJSON *arr, sly_error *err) {
  if ((unsigned)t->dtype >= (unsigned)PROTO_DTYPE_COUNT)
    return sly__fail(err, SLY_E_INVALID_ARG, "inputs[%zu]: unknown dtype %d", i,
                     (int)t->dtype);
  uint64_t nbytes;
  proto_error perr;
  if (proto_tensor_nbytes((proto_dtype)t->dtype, t->ndim, t->shape, &nbytes,
                          &perr) < 0)
    return sly__fail(err, SLY_E_INVALID_ARG, "inputs[%zu]: %s", i,
                     perr.message);
  if (t->data == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "inputs[%zu]: data is NULL", i);
  const sly_arena *a = nbytes <= (uint64_t)SIZE_MAX
                           ? sly__arena_holding(c, t->data, (size_t)nbytes)
                           : NULL;
  if (a == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "inputs[%zu]: its %llu bytes do not lie inside an arena "
                     "of this connection",
                     i, (unsigned long long)nbytes);
  uint64_t offset = (uint64_t)((const char *)t->data - (const char *)a->base);
  unsigned size = proto_dtype_size((proto_dtype)t->dtype);
  if (offset % size != 0)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "inputs[%zu]: offset %llu in the arena is not a multiple "
                     "of %u, the size of %s",
                     i, (unsigned long long)offset, size,
                     proto_dtype_name((proto_dtype)t->dtype));
  cJSON *d = cJSON_CreateObject();
  cJSON *shape = cJSON_CreateArray();
  bool ok = d != NULL && shape != NULL &&
            cJSON_AddStringToObject(
                d, "dtype", proto_dtype_name((proto_dtype)t->dtype)) != NULL &&
            cJSON_AddItemToObject(d, "shape", shape);
  if (!ok)
    cJSON_Delete(shape);
  for (uint32_t k = 0; ok && k < t->ndim; k++) {
    cJSON *n = cJSON_CreateNumber((double)t->shape[k]);
    ok = n != NULL && cJSON_AddItemToArray(shape, n);
    if (!ok)
      cJSON_Delete(n);
  }
  ok = ok && add_u64(d, "region", a->region) && add_u64(d, "offset", offset) &&
       cJSON_AddItemToArray(arr, d);
  if (!ok) {
    cJSON_Delete(d);
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  return 0;
}

/* Where `out` lies: the arena's region, the offset in it and the size. */
static int out_range(const sly_conn *c, const sly_forward_opts *o,
                     proto_range *r, sly_error *err) {
  const sly_arena *a = sly__arena_holding(c, o->out, o->out_bytes);
  if (a == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "out: its %zu bytes do not lie inside an arena of this "
                     "connection",
                     o->out_bytes);
  r->region = a->region;
  r->offset = (uint64_t)((const char *)o->out - (const char *)a->base);
  r->bytes = o->out_bytes;
  return 0;
}

/* The whole request, without id and release (sly__call adds those). */
static int build_request(const sly_conn *c, const sly_forward_opts *o,
                         const sly_tensor *inputs, size_t n,
                         const proto_range *out, cJSON **req, sly_error *err) {
  cJSON *r = sly__request("forward");
  cJSON *arr = NULL;
  bool ok = r != NULL;
  if (ok && o->slice != NULL)
    ok = cJSON_AddStringToObject(r, "slice", o->slice) != NULL;
  if (ok && o->pipeline != NULL)
    ok = cJSON_AddStringToObject(r, "pipeline", o->pipeline) != NULL;
  ok = ok && (arr = cJSON_AddArrayToObject(r, "inputs")) != NULL;
  if (ok && out != NULL) {
    cJSON *jo = cJSON_AddObjectToObject(r, "out");
    ok = jo != NULL && add_u64(jo, "region", out->region) &&
         add_u64(jo, "offset", out->offset) && add_u64(jo, "bytes", out->bytes);
  }
  if (!ok) {
    cJSON_Delete(r);
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    int rc = describe_input(c, &inputs[i], i, arr, err);
    if (rc < 0) {
      cJSON_Delete(r);
      return rc;
    }
  }
  *req = r;
  return 0;
}

/* On success the caller owns *out and frees it with sly_result_free(). */
int sly_forward_ex(sly_conn *c, const sly_forward_opts *opts,
                   const sly_tensor *inputs, size_t n_inputs, sly_result **out,
                   sly_error *err) {
  static const sly_forward_opts none = {0};
  const sly_forward_opts *o = opts != NULL ? opts : &none;
  int rc = sly__conn_check(c, err);
  if (rc < 0)
    return rc;
  if (out == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "no place for the result");
  if (o->slice != NULL && o->pipeline != NULL)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "a forward names a slice or a pipeline, not both");
  if (n_inputs > PROTO_MAX_TENSORS)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "%zu inputs exceed the limit of %d", n_inputs,
                     PROTO_MAX_TENSORS);
  if (n_inputs > 0 && inputs == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "inputs is NULL");
  proto_range range;
  if (o->out != NULL && (rc = out_range(c, o, &range, err)) < 0)
    return rc;
  const proto_range *outp = o->out != NULL ? &range : NULL;
  cJSON *req = NULL;
  if ((rc = build_request(c, o, inputs, n_inputs, outp, &req, err)) < 0)
    return rc;
  sly__reply rep;
  rc = sly__call(c, req, -1, &rep, err);
  cJSON_Delete(req);
  if (rc < 0) {
    sly__reply_free(&rep);
    return rc;
  }
  rc = sly__result_parse(c, rep.json, outp, out, err);
  sly__reply_free(&rep);
  /* The server holds a lease this library could not read: only closing the
   * connection gives it back. */
  if (rc == SLY_E_PROTOCOL)
    sly__conn_kill(c);
  return rc;
}

int sly_forward(sly_conn *c, const char *slice, const sly_tensor *inputs,
                size_t n_inputs, sly_result **out, sly_error *err) {
  sly_forward_opts o = {.slice = slice};
  return sly_forward_ex(c, &o, inputs, n_inputs, out, err);
}

int sly_forward_pipeline(sly_conn *c, const char *pipeline,
                         const sly_tensor *inputs, size_t n_inputs,
                         sly_result **out, sly_error *err) {
  if (pipeline == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "pipeline is NULL");
  sly_forward_opts o = {.pipeline = pipeline};
  return sly_forward_ex(c, &o, inputs, n_inputs, out, err);
}
