/* diskcache_int.h — the disk cache's file format, shared by its two halves
 * (daemon/; only diskcache*.c include it).
 *
 * Owns: the plan (a layout's tensors in data order, with the padding that
 * fills its gaps) and the header bytes a plan makes. diskcache_format.c
 * builds them; diskcache.c does the I/O and checks files against them.
 */
#ifndef DAEMON_DISKCACHE_INT_H
#define DAEMON_DISKCACHE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "diskcache.h"

#define DISKCACHE__FORMAT "1"
#define DISKCACHE__MAGIC "slyced-cache"
#define DISKCACHE__PAD "__pad_"

/* One tensor of the file, in data order. */
typedef struct {
  const diskcache_entry *entry; /* NULL: padding, U8 of shape [end - begin] */
  char pad_name[32];
  uint64_t begin, end; /* in the data section, which is the blob */
} diskcache__slot;

typedef struct {
  diskcache__slot *slots; /* owned */
  size_t n;
} diskcache__plan;

/* Writes one line to err (when not NULL) and returns `code`. */
int diskcache__fail(char err[DISKCACHE_ERROR_MAX], int code, const char *fmt,
                    ...) __attribute__((format(printf, 3, 4)));

/* Whether `key` is DISKCACHE_KEY_HEX lowercase hex digits: safe in a path. */
bool diskcache__key_ok(const char *key);

static inline const char *diskcache__slot_name(const diskcache__slot *s) {
  return s->entry ? s->entry->name : s->pad_name;
}

/* Checks the layout (names, dtypes, sizes, aligned and disjoint ranges
 * inside the blob) and lays it out in the order st_header_parse leaves
 * tensors in (by range, then name), padding inserted. The caller frees
 * plan->slots. Returns 0, -EINVAL with err, or -ENOMEM. */
int diskcache__plan_make(const diskcache_layout *l, diskcache__plan *plan,
                         char err[DISKCACHE_ERROR_MAX]);

/* The header region of the file: the 8-byte length, the JSON (metadata
 * first, then the plan's tensors) and spaces up to a DISKCACHE_ALIGN
 * boundary. Its length depends on the layout only, never on `sum`. The
 * caller frees *out. Returns 0 or -ENOMEM. */
int diskcache__header_make(const diskcache_layout *l,
                           const diskcache__plan *plan, uint64_t sum,
                           char **out, uint64_t *out_len);

#endif
