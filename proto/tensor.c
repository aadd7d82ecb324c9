/* tensor.c — dtypes and the bounds of tensor descriptors (proto/). */
#include "tensor.h"

#include <string.h>

static const struct {
  const char *name;
  unsigned size;
  bool floating;
} dtypes[PROTO_DTYPE_COUNT] = {
#define PROTO__DTYPE_ROW(e, name, size, fl) [PROTO_DTYPE_##e] = {name, size, fl},
    PROTO_DTYPE_MAP(PROTO__DTYPE_ROW)
#undef PROTO__DTYPE_ROW
};

static bool dtype_known(proto_dtype d) {
  return (unsigned)d < PROTO_DTYPE_COUNT;
}

const char *proto_dtype_name(proto_dtype d) {
  return dtype_known(d) ? dtypes[d].name : "unknown";
}

unsigned proto_dtype_size(proto_dtype d) {
  return dtype_known(d) ? dtypes[d].size : 0;
}

bool proto_dtype_is_floating(proto_dtype d) {
  return dtype_known(d) && dtypes[d].floating;
}

int proto_dtype_from_name(const char *name, proto_dtype *out) {
  if (name == NULL)
    return -1;
  for (unsigned i = 0; i < PROTO_DTYPE_COUNT; i++) {
    if (strcmp(name, dtypes[i].name) == 0) {
      *out = (proto_dtype)i;
      return 0;
    }
  }
  return -1;
}

/* A 0 dim makes the tensor empty, but the product of the other dims must
 * still fit: libtorch computes contiguous strides from them, and a tensor
 * whose strides overflow is one no slice can be handed. So the bound is
 * checked on the product with every 0 counted as 1, and nbytes is 0 when any
 * dim is 0. */
int proto_tensor_nbytes(proto_dtype d, uint32_t ndim, const uint64_t *shape,
                        uint64_t *out, proto_error *err) {
  if (!dtype_known(d))
    return proto_fail(err, SLY_E_BAD_TENSOR, "unknown dtype %d", (int)d);
  if (ndim > PROTO_MAX_DIMS)
    return proto_fail(err, SLY_E_BAD_TENSOR,
                      "shape: %u dims exceed the limit of %d", ndim,
                      PROTO_MAX_DIMS);
  uint64_t bound = dtypes[d].size;
  bool empty = false;
  for (uint32_t i = 0; i < ndim; i++) {
    if (shape[i] > PROTO_MAX_INT)
      return proto_fail(err, SLY_E_BAD_TENSOR,
                        "shape[%u]: expected an integer in 0..2^53-1", i);
    if (shape[i] == 0) {
      empty = true;
      continue;
    }
    if (__builtin_mul_overflow(bound, shape[i], &bound) || bound > PROTO_MAX_INT)
      return proto_fail(err, SLY_E_BAD_TENSOR,
                        "shape: tensor size overflows 2^53-1 bytes at dim %u",
                        i);
  }
  *out = empty ? 0 : bound;
  return 0;
}

/* [offset, offset + bytes) inside [0, region_bytes), checked without ever
 * computing a sum that could wrap. */
static bool range_inside(uint64_t offset, uint64_t bytes,
                         uint64_t region_bytes) {
  return offset <= region_bytes && bytes <= region_bytes - offset;
}

int proto_tensor_check(const proto_tensor *t, uint64_t region_bytes,
                       proto_error *err) {
  unsigned size = proto_dtype_size(t->dtype);
  if (size == 0)
    return proto_fail(err, SLY_E_BAD_TENSOR, "unknown dtype %d", (int)t->dtype);
  if (t->offset % size != 0)
    return proto_fail(err, SLY_E_BAD_TENSOR,
                      "offset %llu is not a multiple of %u, the size of %s",
                      (unsigned long long)t->offset, size, dtypes[t->dtype].name);
  if (!range_inside(t->offset, t->nbytes, region_bytes))
    return proto_fail(
        err, SLY_E_BAD_REGION,
        "tensor of %llu bytes at offset %llu extends past the end of region "
        "%llu (%llu bytes)",
        (unsigned long long)t->nbytes, (unsigned long long)t->offset,
        (unsigned long long)t->region, (unsigned long long)region_bytes);
  return 0;
}

int proto_range_check(const proto_range *r, uint64_t region_bytes,
                      proto_error *err) {
  if (!range_inside(r->offset, r->bytes, region_bytes))
    return proto_fail(
        err, SLY_E_BAD_REGION,
        "out: %llu bytes at offset %llu extend past the end of region %llu "
        "(%llu bytes)",
        (unsigned long long)r->bytes, (unsigned long long)r->offset,
        (unsigned long long)r->region, (unsigned long long)region_bytes);
  return 0;
}
