/* safetensors.h — reading and writing safetensors headers (daemon/).
 *
 * Owns: st_header, the validated table of one safetensors file: an 8-byte
 * little-endian header length, a JSON header {"name": {"dtype", "shape",
 * "data_offsets": [begin, end]}, "__metadata__": {string: string}}, then the
 * data. Validation rejects anything a hostile or torn file could use to make
 * a reader go out of bounds: offsets past the data, overlapping or unordered
 * ranges, sizes that disagree with dtype and shape, duplicate or empty names,
 * unknown dtypes, more than ST_MAX_TENSORS tensors or ST_MAX_DIMS dims.
 * No I/O: callers read the bytes (or map the file) and hand them over.
 */
#ifndef DAEMON_SAFETENSORS_H
#define DAEMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_HEADER_BYTES (100u << 20) /* the format's own limit */
#define ST_MAX_TENSORS 65536
#define ST_MAX_DIMS 8
#define ST_MAX_NAME 1024
#define ST_ERROR_MAX 256

typedef struct {
  char *name;        /* owned */
  proto_dtype dtype; /* F32 F64 F16 BF16 I64 I32 I16 I8 U8 BOOL */
  uint32_t ndim;
  uint64_t shape[ST_MAX_DIMS];
  uint64_t begin, end; /* byte offsets into the data section */
} st_tensor;

typedef struct {
  char *key, *value; /* owned */
} st_meta;

typedef struct {
  uint64_t header_len;  /* bytes of JSON after the 8-byte length */
  uint64_t data_offset; /* 8 + header_len: where the data section starts */
  uint64_t data_bytes;  /* the data section's size */
  st_tensor *tensors;   /* in data order */
  size_t n_tensors;
  st_meta *meta;
  size_t n_meta;
} st_header;

/* Reads the 8-byte length prefix: returns 0 and sets *header_len when it is
 * at most ST_MAX_HEADER_BYTES and fits in `file_bytes`, else -1. */
int st_header_len(const uint8_t prefix[8], uint64_t file_bytes,
                  uint64_t *header_len, char err[ST_ERROR_MAX]);

/* Parses and validates the JSON header (`json`, `len` bytes) of a file of
 * `file_bytes` bytes. The caller frees *out with st_header_free(). Returns 0
 * or -1 with one line in err. */
int st_header_parse(const char *json, size_t len, uint64_t file_bytes,
                    st_header *out, char err[ST_ERROR_MAX]);

void st_header_free(st_header *h);

const st_tensor *st_header_find(const st_header *h, const char *name);
const char *st_header_meta(const st_header *h, const char *key);

/* The safetensors dtype name ("F32") of a dtype. */
const char *st_dtype_name(proto_dtype d);

#ifdef __cplusplus
}
#endif
#endif
