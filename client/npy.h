/* npy.h — NumPy .npy files for slyctl and the tests (client/, internal: not
 * installed, not part of slyce.h; its symbols stay out of libslyce.so's
 * exports).
 *
 * Owns: reading and writing the .npy format (versions 1.0, 2.0 and 3.0) for
 * every protocol dtype NumPy has — '<f4' '<f8' '<f2' '<i8' '<i4' '<i2' '|i1'
 * '|u1' '|b1' — and the bfloat16 <-> float32 conversions slyctl needs, since
 * NumPy has no bfloat16. Headers are checked in full before any data is
 * trusted: magic, version, header length (at most NPY_HEADER_MAX), the dict's
 * 'descr', 'fortran_order' (must be False) and 'shape' (at most SLY_MAX_DIMS
 * dims, size overflow-safe and within 2^53-1 bytes), and a data size equal
 * to what the file holds after the header. Big-endian files ('>f4') are read
 * and byte-swapped; files are always written little-endian.
 *
 * Errors: every call returns 0 or a negative sly_code with `err` filled
 * (SLY_E_INVALID_ARG for a file that is not a valid .npy of a supported
 * dtype, SLY_E_IO for a system call that failed, SLY_E_NO_MEMORY), the
 * message starting with the file's path when there is one.
 */
#ifndef CLIENT_NPY_H
#define CLIENT_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slyce.h"

/* Largest header dict accepted (bytes after the length field). NumPy itself
 * refuses headers over 10000 bytes unless told otherwise. */
#define NPY_HEADER_MAX 65536
/* Bytes before the dict: magic (6), version (2), length (2 or 4). */
#define NPY_PREAMBLE_MAX 12

typedef struct {
  sly_dtype dtype;
  uint32_t ndim;
  uint64_t shape[SLY_MAX_DIMS];
  uint64_t nbytes;      /* element count times element size */
  uint64_t data_offset; /* where the data starts in the file */
  bool swap;            /* big-endian data: swap bytes when reading */
} npy_header;

/* Parses the first `len` bytes of a .npy file of `file_size` bytes. When
 * `len` is too short to hold the whole header, fails with SLY_E_INVALID_ARG
 * "truncated". Pure: no I/O. */
int npy_header_parse(const void *buf, size_t len, uint64_t file_size,
                     npy_header *out, sly_error *err);

/* Writes the preamble and header dict of a version 1.0 file, padded so that
 * the data starts at a multiple of 64, into buf (at most `size` bytes); sets
 * *len. bfloat16 has no NumPy name: SLY_E_INVALID_ARG. Pure: no I/O. */
int npy_header_build(sly_dtype dtype, uint32_t ndim, const uint64_t *shape,
                     char *buf, size_t size, size_t *len, sly_error *err);

/* An open .npy file whose header has been read and checked. */
typedef struct {
  int fd;
  npy_header h;
  char path[256]; /* for messages; cut when longer */
} npy_file;

/* Opens `path` and reads its header. The caller closes it with npy_close(). */
int npy_open(const char *path, npy_file *f, sly_error *err);
/* Reads the data (h.nbytes bytes) into dst, in host (little-endian) order. */
int npy_read_into(npy_file *f, void *dst, sly_error *err);
/* Accepts a file that failed to open (fd -1). */
void npy_close(npy_file *f);

/* Writes a whole file: header and `data` (row-major, little-endian). A
 * failed write removes the file rather than leave half of one. */
int npy_write(const char *path, sly_dtype dtype, uint32_t ndim,
              const uint64_t *shape, const void *data, sly_error *err);

/* bfloat16 is the top half of a float32: widening is exact; narrowing rounds
 * to nearest, ties to even, as PyTorch does, and keeps NaN a NaN. */
float npy_f32_from_bf16(uint16_t b);
uint16_t npy_bf16_from_f32(float f);

#endif
