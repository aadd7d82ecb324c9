/* diskcache.h — the disk tier: one safetensors file per slice (daemon/).
 *
 * Owns: the files in disk_cache_path. A file holds one slice's weight blob
 * as a valid safetensors file: the blob's tensors under their module names,
 * each at a 4096-aligned offset of the file (gaps filled by padding tensors
 * named "__pad_N" of dtype U8), and "__metadata__" with
 *   "slyced.magic": "slyced-cache", "slyced.version": "1",
 *   "slyced.key": <hex key>, "slyced.bytes": <blob bytes>,
 *   "slyced.checksum": <hex xxh64 of the blob bytes>.
 * The file name is "<hex key>.safetensors"; the key (diskcache_key) hashes
 * everything that decides the blob's bytes, so a stale file is simply a miss.
 * Files are written once, atomically (temp file, fsync, rename, fsync the
 * folder), and read with O_DIRECT in chunks into a caller's buffer whose
 * checksum is verified on every read. A torn, truncated, corrupted or
 * mismatched file is deleted (and logged by the caller) and reported as a
 * miss. Blocking I/O: call it from the executor or loader thread, never the
 * loop thread.
 */
#ifndef DAEMON_DISKCACHE_H
#define DAEMON_DISKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#define DISKCACHE_ERROR_MAX 256
#define DISKCACHE_ALIGN 4096
#define DISKCACHE_KEY_HEX 32 /* 128-bit key as hex */

/* One tensor of the blob (mirrors shim_blob_entry, without libtorch). */
typedef struct {
  const char *name;
  proto_dtype dtype;
  uint32_t ndim;
  uint64_t shape[PROTO_MAX_DIMS];
  uint64_t offset; /* in the blob, a multiple of DISKCACHE_ALIGN */
  uint64_t nbytes;
} diskcache_entry;

typedef struct {
  char key[DISKCACHE_KEY_HEX + 1];
  const diskcache_entry *entries;
  size_t n_entries;
  uint64_t blob_bytes;
} diskcache_layout;

/* The key of a slice: a 128-bit hash, as hex, of the constructor, the
 * canonical (key-sorted, whitespace-free) JSON of its config, the source
 * file's size and mtime (for torchscript and `weights`; 0 when none), the
 * blob layout (names, dtypes, shapes, offsets), the libtorch version and the
 * cache format version. */
void diskcache_key(const char *constructor, const char *canonical_config,
                   uint64_t source_size, int64_t source_mtime_ns,
                   const diskcache_layout *layout_without_key,
                   const char *torch_version,
                   char out[DISKCACHE_KEY_HEX + 1]);

/* 64-bit xxHash of a buffer (seed 0): the blob checksum. */
uint64_t diskcache_xxh64(const void *data, size_t len);

/* Writes `blob` (layout->blob_bytes) as the file of layout->key in `dir`,
 * atomically. Returns 0, or a negative errno with err; a failure leaves no
 * file and no temp file behind. Overwrites nothing: an existing valid file
 * of the same key is kept (returns 0). */
int diskcache_write(const char *dir, const diskcache_layout *layout,
                    const void *blob, char err[DISKCACHE_ERROR_MAX]);

/* Reads the file of layout->key into `dst` (layout->blob_bytes bytes,
 * DISKCACHE_ALIGN-aligned, e.g. pinned host memory) with O_DIRECT in chunks
 * of `chunk` bytes (a multiple of DISKCACHE_ALIGN; 0: 16 MiB), and checks the
 * header against the layout and the checksum against the bytes read.
 * Returns 0; -ENOENT when there is no file (a miss); -EBADMSG when the file
 * was torn, truncated, corrupted or does not match (it has been deleted; err
 * says why); another negative errno for I/O errors (file kept). */
int diskcache_read(const char *dir, const diskcache_layout *layout, void *dst,
                   size_t chunk, char err[DISKCACHE_ERROR_MAX]);

/* Told by diskcache_read_chunks, on its caller's thread and in order, that
 * dst[offset, offset + len) has been read (len is a multiple of
 * DISKCACHE_ALIGN except at the blob's end). The bytes are not verified yet:
 * the checksum covers the whole blob, so whatever the callback starts with
 * them (a copy to the GPU) is provisional until the read returns 0. Returns
 * 0 to go on, or a negative errno that stops the read (the file is kept). */
typedef int (*diskcache_chunk_fn)(void *arg, uint64_t offset, size_t len);

/* diskcache_read that calls on_chunk (may be NULL) as the blob lands, so
 * the caller overlaps its copy out of dst with the rest of the read; the
 * disk reads run on a helper thread while the checksum and on_chunk run on
 * the caller's. Returns what diskcache_read does, or on_chunk's error. */
int diskcache_read_chunks(const char *dir, const diskcache_layout *layout,
                          void *dst, size_t chunk, diskcache_chunk_fn on_chunk,
                          void *arg, char err[DISKCACHE_ERROR_MAX]);

/* Whether a file for the key exists (no validation). */
int diskcache_exists(const char *dir, const char *key);

/* Removes temp files left by a crash ("*.tmp.*"). Returns how many. */
int diskcache_sweep(const char *dir);

#endif
