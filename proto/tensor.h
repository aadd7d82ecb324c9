/* tensor.h — tensor descriptors and their bounds (proto/).
 *
 * Owns: the dtype table and proto_tensor, a validated descriptor
 * {"dtype", "shape", "region", "offset"}. All size arithmetic is checked for
 * overflow; a descriptor that passes proto_tensor_check() lies wholly inside
 * its region. No I/O.
 */
#ifndef PROTO_TENSOR_H
#define PROTO_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "errors.h"
#include "limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(enum suffix, wire name, element bytes, is_floating) */
#define PROTO_DTYPE_MAP(X)                                                     \
  X(FLOAT32, "float32", 4, 1)                                                  \
  X(FLOAT64, "float64", 8, 1)                                                  \
  X(FLOAT16, "float16", 2, 1)                                                  \
  X(BFLOAT16, "bfloat16", 2, 1)                                                \
  X(INT64, "int64", 8, 0)                                                      \
  X(INT32, "int32", 4, 0)                                                      \
  X(INT16, "int16", 2, 0)                                                      \
  X(INT8, "int8", 1, 0)                                                        \
  X(UINT8, "uint8", 1, 0)                                                      \
  X(BOOL, "bool", 1, 0)

typedef enum {
#define PROTO__DTYPE_ENUM(e, name, size, fl) PROTO_DTYPE_##e,
  PROTO_DTYPE_MAP(PROTO__DTYPE_ENUM)
#undef PROTO__DTYPE_ENUM
  PROTO_DTYPE_COUNT
} proto_dtype;

const char *proto_dtype_name(proto_dtype d);
unsigned proto_dtype_size(proto_dtype d);
bool proto_dtype_is_floating(proto_dtype d);
/* Returns 0 and sets *out, or -1 for an unknown name. */
int proto_dtype_from_name(const char *name, proto_dtype *out);

typedef struct {
  proto_dtype dtype;
  uint32_t ndim; /* 0..PROTO_MAX_DIMS; 0 is a scalar */
  uint64_t shape[PROTO_MAX_DIMS];
  uint64_t region;
  uint64_t offset;
  uint64_t nbytes; /* element count times element size, set by the parser */
} proto_tensor;

/* Element count times element size, or SLY_E_BAD_TENSOR on overflow. */
int proto_tensor_nbytes(proto_dtype d, uint32_t ndim, const uint64_t *shape,
                        uint64_t *out, proto_error *err);

/* Checks alignment (offset a multiple of the element size; BAD_TENSOR) and
 * that [offset, offset + nbytes) lies inside a region of `region_bytes`
 * (BAD_REGION), without overflow. */
int proto_tensor_check(const proto_tensor *t, uint64_t region_bytes,
                       proto_error *err);

/* A byte range in a client region ("out": {"region", "offset", "bytes"}). */
typedef struct {
  uint64_t region;
  uint64_t offset;
  uint64_t bytes;
} proto_range;

/* Checks that the range lies inside a region of `region_bytes` (BAD_REGION). */
int proto_range_check(const proto_range *r, uint64_t region_bytes,
                      proto_error *err);

#ifdef __cplusplus
}
#endif
#endif
