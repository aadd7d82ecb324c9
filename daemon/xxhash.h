/* xxhash.h — the 64-bit xxHash (XXH64) checksum (daemon/).
 *
 * Owns: nothing but the arithmetic. Written from the public description of
 * the algorithm (Yann Collet's XXH64: four 64-bit lanes over 32-byte
 * stripes, then a merge, the tail and an avalanche), so that the disk cache
 * checksums and keys without a third-party dependency. Streaming, so a
 * reader hashes each chunk while it is still in cache. Any thread; a state
 * belongs to one thread at a time.
 */
#ifndef DAEMON_XXHASH_H
#define DAEMON_XXHASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t total; /* bytes fed so far */
  uint64_t seed;
  uint64_t lane[4];
  uint8_t buf[32]; /* a partial stripe waiting for more bytes */
  uint32_t buffered;
} xxh64_state;

void xxh64_init(xxh64_state *s, uint64_t seed);
void xxh64_update(xxh64_state *s, const void *data, size_t len);
/* The hash of everything fed so far; the state can go on being fed. */
uint64_t xxh64_digest(const xxh64_state *s);

/* One-shot XXH64 of a buffer. */
uint64_t xxh64(const void *data, size_t len, uint64_t seed);

#endif
