/* dtype.c — dtypes and tensor sizes of the public API (client/).
 *
 * Owns: the mapping between sly_dtype and the protocol's dtype table
 * (proto/tensor.h), which has the same order, and sly_tensor_nbytes.
 */
#include "conn_internal.h"

#include "tensor.h"

#define SAME_DTYPE(e, name, size, fl)                                          \
  _Static_assert((int)SLY_##e == (int)PROTO_DTYPE_##e,                         \
                 "sly_dtype and proto_dtype differ at " name);
PROTO_DTYPE_MAP(SAME_DTYPE)
#undef SAME_DTYPE

static bool dtype_valid(sly_dtype d) {
  return (unsigned)d < (unsigned)PROTO_DTYPE_COUNT;
}

const char *sly_dtype_name(sly_dtype d) {
  return dtype_valid(d) ? proto_dtype_name((proto_dtype)d) : NULL;
}

int sly_dtype_from_name(const char *name, sly_dtype *out) {
  proto_dtype d;
  if (name == NULL || out == NULL || proto_dtype_from_name(name, &d) < 0)
    return SLY_E_INVALID_ARG;
  *out = (sly_dtype)d;
  return 0;
}

size_t sly_dtype_size(sly_dtype d) {
  return dtype_valid(d) ? proto_dtype_size((proto_dtype)d) : 0;
}

/* The protocol's rule: a tensor the server would refuse as too large (over
 * 2^53-1 bytes, 0 dims counted as 1) has no size here either. */
uint64_t sly_tensor_nbytes(const sly_tensor *t) {
  uint64_t n;
  if (t == NULL || !dtype_valid(t->dtype) ||
      proto_tensor_nbytes((proto_dtype)t->dtype, t->ndim, t->shape, &n, NULL) <
          0)
    return 0;
  return n;
}
