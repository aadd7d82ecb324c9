/* xxhash.c — XXH64 (see xxhash.h).
 *
 * Input words are read little-endian whatever the host, through memcpy, so
 * unaligned buffers are fine and a file written on one machine checks on
 * another.
 */
#include "xxhash.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static inline uint64_t xxh64__rotl(uint64_t x, unsigned r) {
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t xxh64__read64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static inline uint32_t xxh64__read32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

static inline uint64_t xxh64__round(uint64_t acc, uint64_t input) {
  acc += input * P2;
  acc = xxh64__rotl(acc, 31);
  return acc * P1;
}

static inline uint64_t xxh64__merge(uint64_t acc, uint64_t lane) {
  acc ^= xxh64__round(0, lane);
  return acc * P1 + P4;
}

/* Feeds whole 32-byte stripes; returns how many bytes it consumed. */
static size_t xxh64__stripes(uint64_t lane[4], const uint8_t *p, size_t len) {
  uint64_t a = lane[0], b = lane[1], c = lane[2], d = lane[3];
  size_t done = 0;
  for (; len - done >= 32; done += 32) {
    a = xxh64__round(a, xxh64__read64(p + done));
    b = xxh64__round(b, xxh64__read64(p + done + 8));
    c = xxh64__round(c, xxh64__read64(p + done + 16));
    d = xxh64__round(d, xxh64__read64(p + done + 24));
  }
  lane[0] = a, lane[1] = b, lane[2] = c, lane[3] = d;
  return done;
}

void xxh64_init(xxh64_state *s, uint64_t seed) {
  memset(s, 0, sizeof(*s));
  s->seed = seed;
  s->lane[0] = seed + P1 + P2;
  s->lane[1] = seed + P2;
  s->lane[2] = seed;
  s->lane[3] = seed - P1;
}

void xxh64_update(xxh64_state *s, const void *data, size_t len) {
  const uint8_t *p = data;
  if (len == 0)
    return;
  s->total += len;
  if (s->buffered) {
    size_t take = 32 - s->buffered;
    if (take > len)
      take = len;
    memcpy(s->buf + s->buffered, p, take);
    s->buffered += (uint32_t)take;
    p += take;
    len -= take;
    if (s->buffered < 32)
      return;
    xxh64__stripes(s->lane, s->buf, 32);
    s->buffered = 0;
  }
  size_t done = xxh64__stripes(s->lane, p, len);
  memcpy(s->buf, p + done, len - done);
  s->buffered = (uint32_t)(len - done);
}

uint64_t xxh64_digest(const xxh64_state *s) {
  uint64_t h;
  if (s->total >= 32) {
    const uint64_t *v = s->lane;
    h = xxh64__rotl(v[0], 1) + xxh64__rotl(v[1], 7) + xxh64__rotl(v[2], 12) +
        xxh64__rotl(v[3], 18);
    for (int i = 0; i < 4; i++)
      h = xxh64__merge(h, v[i]);
  } else {
    h = s->seed + P5;
  }
  h += s->total;
  const uint8_t *p = s->buf;
  size_t left = s->buffered;
  for (; left >= 8; p += 8, left -= 8) {
    h ^= xxh64__round(0, xxh64__read64(p));
    h = xxh64__rotl(h, 27) * P1 + P4;
  }
  if (left >= 4) {
    h ^= (uint64_t)xxh64__read32(p) * P1;
    h = xxh64__rotl(h, 23) * P2 + P3;
    p += 4;
    left -= 4;
  }
  for (; left > 0; p++, left--) {
    h ^= *p * P5;
    h = xxh64__rotl(h, 11) * P1;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

uint64_t xxh64(const void *data, size_t len, uint64_t seed) {
  xxh64_state s;
  xxh64_init(&s, seed);
  xxh64_update(&s, data, len);
  return xxh64_digest(&s);
}
