/* diskcache_format.c — the disk cache's key and file format (see
 * diskcache.h and diskcache_int.h).
 *
 * The header a layout makes is deterministic apart from the checksum's 16
 * hex digits, so a reader knows the exact header length to expect before it
 * trusts a single byte of a file. The blob's gaps (alignment holes and any
 * tail) become "__pad_N" U8 tensors, because safetensors requires the
 * tensors to tile the data section.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache_int.h"
#include "safetensors.h"
#include "xxhash.h"

#define DC_MAX_EXACT ((1ull << 53) - 1) /* JSON numbers stay exact below */
#define DC_KEY_SEED_A 0x736c79636564ull /* "slyced" */
#define DC_KEY_SEED_B 0x9E3779B97F4A7C15ull

int diskcache__fail(char err[DISKCACHE_ERROR_MAX], int code, const char *fmt,
                    ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DISKCACHE_ERROR_MAX, fmt, ap);
    va_end(ap);
  }
  return code;
}

static uint64_t dc_round_up(uint64_t n) {
  return (n + DISKCACHE_ALIGN - 1) & ~(uint64_t)(DISKCACHE_ALIGN - 1);
}

bool diskcache__key_ok(const char *key) {
  if (!key)
    return false;
  for (int i = 0; i < DISKCACHE_KEY_HEX; i++)
    if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
      return false;
  return key[DISKCACHE_KEY_HEX] == '\0';
}

/* ---- the key ---------------------------------------------------------- */

/* Every field is a tag, a length and the bytes, so no two different input
 * sets serialise alike (e.g. "ab"+"c" and "a"+"bc"). */
static void dc_key_field(xxh64_state s[2], uint8_t tag, const void *p,
                         uint64_t len) {
  uint8_t head[9] = {tag};
  for (int i = 0; i < 8; i++)
    head[1 + i] = (uint8_t)(len >> (8 * i));
  for (int k = 0; k < 2; k++) {
    xxh64_update(&s[k], head, sizeof(head));
    xxh64_update(&s[k], p, (size_t)len);
  }
}

static void dc_key_u64(xxh64_state s[2], uint8_t tag, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> (8 * i));
  dc_key_field(s, tag, b, sizeof(b));
}

/* NULL and "" hash differently: a missing field is not an empty one. */
static void dc_key_str(xxh64_state s[2], uint8_t tag, const char *str) {
  if (str)
    dc_key_field(s, tag, str, strlen(str));
  else
    dc_key_field(s, (uint8_t)(tag | 0x80), "", 0);
}

void diskcache_key(const char *constructor, const char *canonical_config,
                   uint64_t source_size, int64_t source_mtime_ns,
                   const diskcache_layout *layout_without_key,
                   const char *torch_version, char out[DISKCACHE_KEY_HEX + 1]) {
  xxh64_state s[2];
  xxh64_init(&s[0], DC_KEY_SEED_A);
  xxh64_init(&s[1], DC_KEY_SEED_B);
  dc_key_str(s, 'F', DISKCACHE__FORMAT);
  dc_key_str(s, 'C', constructor);
  dc_key_str(s, 'J', canonical_config);
  dc_key_u64(s, 'S', source_size);
  dc_key_u64(s, 'M', (uint64_t)source_mtime_ns);
  dc_key_str(s, 'T', torch_version);
  const diskcache_layout *l = layout_without_key;
  size_t n = l ? l->n_entries : 0;
  dc_key_u64(s, 'B', l ? l->blob_bytes : 0);
  dc_key_u64(s, 'N', n);
  for (size_t i = 0; i < n && l->entries; i++) {
    const diskcache_entry *e = &l->entries[i];
    /* The dtype by name: the enum's numbering is not a file format. */
    const char *dt =
        e->dtype < PROTO_DTYPE_COUNT ? proto_dtype_name(e->dtype) : NULL;
    dc_key_str(s, 'n', e->name);
    if (dt)
      dc_key_str(s, 'd', dt);
    else
      dc_key_u64(s, 'D', (uint64_t)e->dtype);
    uint32_t nd = e->ndim <= PROTO_MAX_DIMS ? e->ndim : PROTO_MAX_DIMS;
    dc_key_u64(s, 'r', e->ndim);
    for (uint32_t d = 0; d < nd; d++)
      dc_key_u64(s, 's', e->shape[d]);
    dc_key_u64(s, 'o', e->offset);
    dc_key_u64(s, 'b', e->nbytes);
  }
  snprintf(out, DISKCACHE_KEY_HEX + 1, "%016" PRIx64 "%016" PRIx64,
           xxh64_digest(&s[0]), xxh64_digest(&s[1]));
}

uint64_t diskcache_xxh64(const void *data, size_t len) {
  return xxh64(data, len, 0);
}

/* ---- the plan: the file's tensors in data order ----------------------- */

/* The order st_header_parse leaves tensors in: by range, then by name. */
static int dc_cmp_entry(const void *a, const void *b) {
  const diskcache_entry *x = *(const diskcache_entry *const *)a;
  const diskcache_entry *y = *(const diskcache_entry *const *)b;
  if (x->offset != y->offset)
    return x->offset < y->offset ? -1 : 1;
  if (x->nbytes != y->nbytes)
    return x->nbytes < y->nbytes ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int dc_check_entry(const diskcache_entry *e, uint64_t blob_bytes,
                          char err[DISKCACHE_ERROR_MAX]) {
  if (!e->name || !e->name[0])
    return diskcache__fail(err, -EINVAL, "a blob tensor has no name");
  if (strncmp(e->name, DISKCACHE__PAD, strlen(DISKCACHE__PAD)) == 0 ||
      strcmp(e->name, "__metadata__") == 0)
    return diskcache__fail(err, -EINVAL, "tensor name '%.64s' is reserved",
                           e->name);
  if (e->dtype >= PROTO_DTYPE_COUNT || !st_dtype_name(e->dtype))
    return diskcache__fail(err, -EINVAL, "tensor '%.64s': bad dtype %d",
                           e->name, (int)e->dtype);
  if (e->ndim > PROTO_MAX_DIMS || e->ndim > ST_MAX_DIMS)
    return diskcache__fail(err, -EINVAL, "tensor '%.64s': %u dims", e->name,
                           e->ndim);
  uint64_t bytes = 0;
  proto_error perr;
  if (proto_tensor_nbytes(e->dtype, e->ndim, e->shape, &bytes, &perr) != 0 ||
      bytes != e->nbytes)
    return diskcache__fail(err, -EINVAL,
                           "tensor '%.64s': %" PRIu64 " bytes do not "
                           "match its dtype and shape",
                           e->name, e->nbytes);
  if (e->offset % DISKCACHE_ALIGN != 0 || e->offset > blob_bytes ||
      e->nbytes > blob_bytes - e->offset)
    return diskcache__fail(err, -EINVAL,
                           "tensor '%.64s': [%" PRIu64 ", +%" PRIu64
                           ") is unaligned or outside the blob of %" PRIu64
                           " bytes",
                           e->name, e->offset, e->nbytes, blob_bytes);
  return 0;
}

/* Validates the layout and lays it out with padding. The caller frees
 * plan->slots. Returns 0, -EINVAL or -ENOMEM. */
int diskcache__plan_make(const diskcache_layout *l, diskcache__plan *plan,
                         char err[DISKCACHE_ERROR_MAX]) {
  if (!l || (l->n_entries && !l->entries))
    return diskcache__fail(err, -EINVAL, "no layout");
  if (l->blob_bytes > DC_MAX_EXACT || l->n_entries > ST_MAX_TENSORS)
    return diskcache__fail(err, -EINVAL,
                           "layout too large (%zu tensors, %" PRIu64 " bytes)",
                           l->n_entries, l->blob_bytes);
  for (size_t i = 0; i < l->n_entries; i++) {
    int r = dc_check_entry(&l->entries[i], l->blob_bytes, err);
    if (r != 0)
      return r;
  }
  const diskcache_entry **order = malloc((l->n_entries + 1) * sizeof(*order));
  diskcache__slot *slots = calloc(2 * l->n_entries + 1, sizeof(*slots));
  if (!order || !slots) {
    free(order);
    free(slots);
    return diskcache__fail(err, -ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < l->n_entries; i++)
    order[i] = &l->entries[i];
  qsort(order, l->n_entries, sizeof(*order), dc_cmp_entry);
  size_t n = 0, pads = 0;
  uint64_t cursor = 0;
  for (size_t i = 0; i <= l->n_entries; i++) {
    const diskcache_entry *e = i < l->n_entries ? order[i] : NULL;
    uint64_t at = e ? e->offset : l->blob_bytes;
    if (at < cursor) {
      diskcache__fail(err, -EINVAL, "tensor '%.64s' overlaps the one before it",
                      e->name);
      free(order);
      free(slots);
      return -EINVAL;
    }
    if (at > cursor) {
      diskcache__slot *p = &slots[n++];
      snprintf(p->pad_name, sizeof(p->pad_name), DISKCACHE__PAD "%zu", pads++);
      p->begin = cursor;
      p->end = at;
    }
    if (e) {
      slots[n++] = (diskcache__slot){
          .entry = e, .begin = e->offset, .end = e->offset + e->nbytes};
      cursor = e->offset + e->nbytes;
    }
  }
  free(order);
  plan->slots = slots;
  plan->n = n;
  return 0;
}

/* ---- the header ------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
  bool oom;
} dc_buf;

static void dc_put(dc_buf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void dc_puts(dc_buf *b, const char *s) { dc_put(b, s, strlen(s)); }

static void dc_putu(dc_buf *b, uint64_t v) {
  char t[24];
  dc_put(b, t, (size_t)snprintf(t, sizeof(t), "%" PRIu64, v));
}

/* A JSON string; bytes >= 0x80 pass through (st_header_parse checks UTF-8
 * when the writer parses its own header back). */
static void dc_put_json_string(dc_buf *b, const char *s) {
  dc_puts(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char t[8];
    if (c == '"' || c == '\\') {
      t[0] = '\\', t[1] = (char)c;
      dc_put(b, t, 2);
    } else if (c < 0x20) {
      dc_put(b, t, (size_t)snprintf(t, sizeof(t), "\\u%04x", c));
    } else {
      dc_put(b, s, 1);
    }
  }
  dc_puts(b, "\"");
}

/* The header region (length prefix, JSON, spaces up to a DISKCACHE_ALIGN
 * boundary) of `l` with checksum `sum`. The caller frees *out. Returns 0 or
 * -ENOMEM. */
int diskcache__header_make(const diskcache_layout *l,
                           const diskcache__plan *plan, uint64_t sum,
                           char **out, uint64_t *out_len) {
  dc_buf b = {0};
  char hex[17];
  snprintf(hex, sizeof(hex), "%016" PRIx64, sum);
  dc_put(&b, "\0\0\0\0\0\0\0\0", 8);
  dc_puts(&b, "{\"__metadata__\":{\"slyced.magic\":\"" DISKCACHE__MAGIC "\","
              "\"slyced.version\":\"" DISKCACHE__FORMAT "\",\"slyced.key\":\"");
  dc_puts(&b, l->key);
  dc_puts(&b, "\",\"slyced.bytes\":\"");
  dc_putu(&b, l->blob_bytes);
  dc_puts(&b, "\",\"slyced.checksum\":\"");
  dc_puts(&b, hex);
  dc_puts(&b, "\"}");
  for (size_t i = 0; i < plan->n; i++) {
    const diskcache__slot *s = &plan->slots[i];
    dc_puts(&b, ",");
    dc_put_json_string(&b, diskcache__slot_name(s));
    dc_puts(&b, ":{\"dtype\":\"");
    dc_puts(&b, st_dtype_name(s->entry ? s->entry->dtype : PROTO_DTYPE_UINT8));
    dc_puts(&b, "\",\"shape\":[");
    if (s->entry) {
      for (uint32_t d = 0; d < s->entry->ndim; d++) {
        if (d)
          dc_puts(&b, ",");
        dc_putu(&b, s->entry->shape[d]);
      }
    } else {
      dc_putu(&b, s->end - s->begin);
    }
    dc_puts(&b, "],\"data_offsets\":[");
    dc_putu(&b, s->begin);
    dc_puts(&b, ",");
    dc_putu(&b, s->end);
    dc_puts(&b, "]}");
  }
  dc_puts(&b, "}");
  uint64_t total = dc_round_up(b.len);
  while (!b.oom && b.len < total)
    dc_puts(&b, " ");
  if (b.oom) {
    free(b.p);
    return -ENOMEM;
  }
  uint64_t json_len = total - 8;
  for (int i = 0; i < 8; i++)
    b.p[i] = (char)(json_len >> (8 * i));
  *out = b.p;
  *out_len = total;
  return 0;
}
