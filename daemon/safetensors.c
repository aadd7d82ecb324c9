/* safetensors.c — validating safetensors headers (see safetensors.h).
 *
 * The header is hostile input: the disk cache reads files a crash may have
 * torn, `weights` names files users made, and a fuzzer drives this code. So
 * every number is checked to be an exact non-negative integer, every size
 * product for overflow, and the data ranges must tile the data section
 * exactly (no gap, no overlap, nothing after the last tensor), as the
 * format's reference implementation requires.
 */
#include "safetensors.h"

#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest integer a double holds exactly: bigger JSON numbers are rounded. */
#define ST_MAX_EXACT 9007199254740991.0

static const struct {
  const char *name;
  proto_dtype dtype;
} st_dtypes[] = {
    {"F32", PROTO_DTYPE_FLOAT32}, {"F64", PROTO_DTYPE_FLOAT64},
    {"F16", PROTO_DTYPE_FLOAT16}, {"BF16", PROTO_DTYPE_BFLOAT16},
    {"I64", PROTO_DTYPE_INT64},   {"I32", PROTO_DTYPE_INT32},
    {"I16", PROTO_DTYPE_INT16},   {"I8", PROTO_DTYPE_INT8},
    {"U8", PROTO_DTYPE_UINT8},    {"BOOL", PROTO_DTYPE_BOOL},
};

static int st_fail(char err[ST_ERROR_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int st_fail(char err[ST_ERROR_MAX], const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ST_ERROR_MAX, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* Names and keys come from the file. A message shows at most ST_SHOWN bytes
 * of one, cut on a character boundary, with control characters as '?', so
 * that it stays one line of UTF-8 wherever it is logged or sent. */
#define ST_SHOWN 64
typedef struct {
  char s[ST_SHOWN + 4]; /* and "..." and the NUL */
} st_shown;

static const char *st_show(st_shown *out, const char *s) {
  size_t n = 0;
  for (; s[n] && n < ST_SHOWN; n++) {
    unsigned char c = (unsigned char)s[n];
    out->s[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  if (s[n]) {
    /* Back off to the start of the character the cut went through. */
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
      n--;
    memcpy(out->s + n, "...", 3);
    n += 3;
  }
  out->s[n] = '\0';
  return out->s;
}

const char *st_dtype_name(proto_dtype d) {
  for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
    if (st_dtypes[i].dtype == d)
      return st_dtypes[i].name;
  return NULL;
}

static int st_dtype_from_name(const char *name, proto_dtype *out) {
  for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
    if (strcmp(st_dtypes[i].name, name) == 0) {
      *out = st_dtypes[i].dtype;
      return 0;
    }
  return -1;
}

int st_header_len(const uint8_t prefix[8], uint64_t file_bytes,
                  uint64_t *header_len, char err[ST_ERROR_MAX]) {
  if (file_bytes < 8)
    return st_fail(err, "file of %llu bytes is shorter than the 8-byte "
                        "header length", (unsigned long long)file_bytes);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = (n << 8) | prefix[i];
  if (n == 0)
    return st_fail(err, "header length is 0");
  if (n > ST_MAX_HEADER_BYTES)
    return st_fail(err, "header length %llu is over the limit of %u bytes",
                   (unsigned long long)n, ST_MAX_HEADER_BYTES);
  if (n > file_bytes - 8)
    return st_fail(err, "header length %llu runs past the end of a file of "
                        "%llu bytes", (unsigned long long)n,
                   (unsigned long long)file_bytes);
  *header_len = n;
  return 0;
}

/* Checks that the raw header is UTF-8 without control characters other than
 * JSON's whitespace, and without a \u0000 escape: every name must survive
 * as a C string, so two names can never compare equal after truncation. */
static int st_check_text(const unsigned char *s, size_t len,
                         char err[ST_ERROR_MAX]) {
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c < 0x80) {
      if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
        return st_fail(err, "header has control byte 0x%02x at %zu", c, i);
      if (c == '\\' && i + 1 < len && s[i + 1] >= 0x20 && s[i + 1] < 0x80) {
        if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
          return st_fail(err, "header has a \\u0000 escape at %zu", i);
        i += 2; /* the escaped character cannot start another escape */
        continue;
      }
      i++;
      continue;
    }
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      cp = c & 0x07;
    } else {
      return st_fail(err, "header is not UTF-8 (byte 0x%02x at %zu)", c, i);
    }
    if (len - i < n)
      return st_fail(err, "header is not UTF-8 (truncated sequence at %zu)", i);
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return st_fail(err, "header is not UTF-8 (bad sequence at %zu)", i);
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
      return st_fail(err, "header is not UTF-8 (bad code point at %zu)", i);
    i += n;
  }
  return 0;
}

/* An exact integer in 0..2^53-1, or -1. */
static int st_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j))
    return -1;
  double v = j->valuedouble;
  if (!isfinite(v) || v < 0 || v > ST_MAX_EXACT || v != floor(v))
    return -1;
  *out = (uint64_t)v;
  return 0;
}

static int st_parse_tensor(const cJSON *j, st_tensor *t,
                           char err[ST_ERROR_MAX]) {
  st_shown shown, field;
  const char *name = st_show(&shown, j->string);
  if (!cJSON_IsObject(j))
    return st_fail(err, "tensor '%s': expected an object", name);
  const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
  for (const cJSON *f = j->child; f; f = f->next) {
    const cJSON **slot = strcmp(f->string, "dtype") == 0          ? &dtype
                         : strcmp(f->string, "shape") == 0        ? &shape
                         : strcmp(f->string, "data_offsets") == 0 ? &offsets
                                                                  : NULL;
    if (!slot)
      return st_fail(err, "tensor '%s': unknown field '%s'", name,
                     st_show(&field, f->string));
    if (*slot)
      return st_fail(err, "tensor '%s': duplicate field '%s'", name,
                     st_show(&field, f->string));
    *slot = f;
  }
  if (!cJSON_IsString(dtype))
    return st_fail(err, "tensor '%s': dtype: expected a string", name);
  if (st_dtype_from_name(dtype->valuestring, &t->dtype) != 0)
    return st_fail(err, "tensor '%s': unknown dtype '%s'", name,
                   st_show(&field, dtype->valuestring));
  if (!cJSON_IsArray(shape))
    return st_fail(err, "tensor '%s': shape: expected an array", name);
  int ndim = cJSON_GetArraySize(shape);
  if (ndim > ST_MAX_DIMS)
    return st_fail(err, "tensor '%s': %d dims, at most %d", name, ndim,
                   ST_MAX_DIMS);
  t->ndim = (uint32_t)ndim;
  uint64_t bytes = proto_dtype_size(t->dtype);
  int k = 0;
  for (const cJSON *d = shape->child; d; d = d->next, k++) {
    if (st_uint(d, &t->shape[k]) != 0)
      return st_fail(err, "tensor '%s': shape[%d]: expected a non-negative "
                          "integer", name, k);
    if (__builtin_mul_overflow(bytes, t->shape[k], &bytes))
      return st_fail(err, "tensor '%s': size overflows", name);
  }
  if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
      st_uint(offsets->child, &t->begin) != 0 ||
      st_uint(offsets->child->next, &t->end) != 0)
    return st_fail(err, "tensor '%s': data_offsets: expected [begin, end] "
                        "non-negative integers", name);
  if (t->begin > t->end)
    return st_fail(err, "tensor '%s': data_offsets [%llu, %llu] end before "
                        "they begin", name, (unsigned long long)t->begin,
                   (unsigned long long)t->end);
  if (t->end - t->begin != bytes)
    return st_fail(err, "tensor '%s': data_offsets span %llu bytes, dtype and "
                        "shape need %llu", name,
                   (unsigned long long)(t->end - t->begin),
                   (unsigned long long)bytes);
  return 0;
}

static int st_cmp_meta(const void *a, const void *b) {
  return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

static int st_parse_meta(const cJSON *j, st_header *h, char err[ST_ERROR_MAX]) {
  st_shown shown;
  if (!cJSON_IsObject(j))
    return st_fail(err, "__metadata__: expected an object");
  size_t n = (size_t)cJSON_GetArraySize(j);
  if (n == 0)
    return 0;
  h->meta = calloc(n, sizeof(*h->meta));
  if (!h->meta)
    return st_fail(err, "out of memory");
  for (const cJSON *m = j->child; m; m = m->next) {
    if (!cJSON_IsString(m))
      return st_fail(err, "__metadata__.%s: expected a string",
                     st_show(&shown, m->string));
    st_meta *e = &h->meta[h->n_meta];
    e->key = strdup(m->string);
    e->value = strdup(m->valuestring);
    h->n_meta++;
    if (!e->key || !e->value)
      return st_fail(err, "out of memory");
  }
  qsort(h->meta, h->n_meta, sizeof(*h->meta), st_cmp_meta);
  for (size_t i = 1; i < h->n_meta; i++)
    if (strcmp(h->meta[i - 1].key, h->meta[i].key) == 0)
      return st_fail(err, "__metadata__: duplicate key '%s'",
                     st_show(&shown, h->meta[i].key));
  return 0;
}

static int st_cmp_range(const void *a, const void *b) {
  const st_tensor *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int st_cmp_name(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names unique; ranges sorted and tiling [0, data_bytes) exactly. */
static int st_check_layout(st_header *h, char err[ST_ERROR_MAX]) {
  st_shown shown;
  if (h->n_tensors == 0) {
    if (h->data_bytes != 0)
      return st_fail(err, "no tensors but %llu bytes of data",
                     (unsigned long long)h->data_bytes);
    return 0;
  }
  const char **names = malloc(h->n_tensors * sizeof(*names));
  if (!names)
    return st_fail(err, "out of memory");
  for (size_t i = 0; i < h->n_tensors; i++)
    names[i] = h->tensors[i].name;
  qsort(names, h->n_tensors, sizeof(*names), st_cmp_name);
  for (size_t i = 1; i < h->n_tensors; i++)
    if (strcmp(names[i - 1], names[i]) == 0) {
      st_fail(err, "duplicate tensor name '%s'", st_show(&shown, names[i]));
      free(names);
      return -1;
    }
  free(names);
  qsort(h->tensors, h->n_tensors, sizeof(*h->tensors), st_cmp_range);
  uint64_t expect = 0;
  for (size_t i = 0; i < h->n_tensors; i++) {
    const st_tensor *t = &h->tensors[i];
    if (t->end > h->data_bytes)
      return st_fail(err, "tensor '%s': data_offsets end %llu is past the "
                          "%llu bytes of data", st_show(&shown, t->name),
                     (unsigned long long)t->end,
                     (unsigned long long)h->data_bytes);
    if (t->begin < expect)
      return st_fail(err, "tensor '%s': data at %llu overlaps the previous "
                          "tensor, which ends at %llu",
                     st_show(&shown, t->name), (unsigned long long)t->begin,
                     (unsigned long long)expect);
    if (t->begin > expect)
      return st_fail(err, "tensor '%s': gap of %llu bytes before its data",
                     st_show(&shown, t->name),
                     (unsigned long long)(t->begin - expect));
    expect = t->end;
  }
  if (expect != h->data_bytes)
    return st_fail(err, "%llu bytes of data after the last tensor",
                   (unsigned long long)(h->data_bytes - expect));
  return 0;
}

static int st_parse_root(const cJSON *root, st_header *h,
                         char err[ST_ERROR_MAX]) {
  if (!cJSON_IsObject(root))
    return st_fail(err, "header is not a JSON object");
  size_t n = 0;
  bool seen_meta = false;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") != 0)
      n++;
    else if (seen_meta)
      return st_fail(err, "duplicate __metadata__");
    else
      seen_meta = true;
  }
  if (n > ST_MAX_TENSORS)
    return st_fail(err, "%zu tensors, at most %d", n, ST_MAX_TENSORS);
  if (n > 0) {
    h->tensors = calloc(n, sizeof(*h->tensors));
    if (!h->tensors)
      return st_fail(err, "out of memory");
  }
  for (const cJSON *e = root->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") == 0) {
      if (st_parse_meta(e, h, err) != 0)
        return -1;
      continue;
    }
    size_t len = strlen(e->string);
    if (len == 0)
      return st_fail(err, "empty tensor name");
    if (len > ST_MAX_NAME)
      return st_fail(err, "tensor name of %zu bytes, at most %d", len,
                     ST_MAX_NAME);
    st_tensor *t = &h->tensors[h->n_tensors];
    t->name = strdup(e->string);
    h->n_tensors++;
    if (!t->name)
      return st_fail(err, "out of memory");
    if (st_parse_tensor(e, t, err) != 0)
      return -1;
  }
  return st_check_layout(h, err);
}

int st_header_parse(const char *json, size_t len, uint64_t file_bytes,
                    st_header *out, char err[ST_ERROR_MAX]) {
  if (len == 0 || len > ST_MAX_HEADER_BYTES)
    return st_fail(err, "header of %zu bytes (1..%u allowed)", len,
                   ST_MAX_HEADER_BYTES);
  if (file_bytes < 8 || len > file_bytes - 8)
    return st_fail(err, "header of %zu bytes does not fit in a file of %llu "
                        "bytes", len, (unsigned long long)file_bytes);
  if (st_check_text((const unsigned char *)json, len, err) != 0)
    return -1;
  /* A private NUL-terminated copy: cJSON never reads past it. */
  char *text = malloc(len + 1);
  if (!text)
    return st_fail(err, "out of memory");
  memcpy(text, json, len);
  text[len] = '\0';
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
  if (!root) {
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    free(text);
    return st_fail(err, "header is not valid JSON (near byte %zu)", at);
  }
  /* Writers pad the header with spaces so the data section is aligned. */
  for (const char *p = end; *p; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
      st_fail(err, "header has bytes after the JSON object (at %zu)",
              (size_t)(p - text));
      cJSON_Delete(root);
      free(text);
      return -1;
    }
  st_header h = {0};
  h.header_len = len;
  h.data_offset = 8 + (uint64_t)len;
  h.data_bytes = file_bytes - h.data_offset;
  int r = st_parse_root(root, &h, err);
  cJSON_Delete(root);
  free(text);
  if (r != 0) {
    st_header_free(&h);
    return -1;
  }
  *out = h;
  return 0;
}

void st_header_free(st_header *h) {
  if (!h)
    return;
  for (size_t i = 0; i < h->n_tensors; i++)
    free(h->tensors[i].name);
  for (size_t i = 0; i < h->n_meta; i++) {
    free(h->meta[i].key);
    free(h->meta[i].value);
  }
  free(h->tensors);
  free(h->meta);
  memset(h, 0, sizeof(*h));
}

const st_tensor *st_header_find(const st_header *h, const char *name) {
  if (!h || !name)
    return NULL;
  for (size_t i = 0; i < h->n_tensors; i++)
    if (strcmp(h->tensors[i].name, name) == 0)
      return &h->tensors[i];
  return NULL;
}

const char *st_header_meta(const st_header *h, const char *key) {
  if (!h || !key)
    return NULL;
  for (size_t i = 0; i < h->n_meta; i++)
    if (strcmp(h->meta[i].key, key) == 0)
      return h->meta[i].value;
  return NULL;
}
