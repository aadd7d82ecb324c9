/* fuzz.h — what the libFuzzer targets in tests/fuzz/ share: the entry point's
 * prototype and FUZZ_CHECK, which turns a broken invariant into a crash that
 * libFuzzer records (the sanitizers already turn memory errors into one).
 * Header-only, for fuzz targets only.
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h" /* proto_utf8_valid */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() rather than a return value: libFuzzer saves the input that made a
 * check fail exactly as it saves one that crashed. */
#define FUZZ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__,     \
              #cond);                                                          \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* True when the NUL-terminated message in buf (max bytes) is one printable
 * line of UTF-8: messages end up in log lines and replies. */
static inline bool fuzz_one_line(const char *buf, size_t max) {
  const char *end = memchr(buf, '\0', max);
  if (end == NULL)
    return false;
  for (const char *p = buf; p < end; p++) {
    unsigned char c = (unsigned char)*p;
    if (c < 0x20 || c == 0x7f)
      return false;
  }
  return proto_utf8_valid(buf, (size_t)(end - buf));
}

/* An exact copy of the input in a buffer of exactly `size` bytes (at least
 * one), so that a read past its end is a heap overflow for ASan. */
static inline char *fuzz_dup(const uint8_t *data, size_t size) {
  char *p = malloc(size ? size : 1);
  if (p == NULL)
    abort();
  if (size)
    memcpy(p, data, size);
  return p;
}

#endif
