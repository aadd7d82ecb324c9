/* json.c — strict JSON reading shared by request.c and reply.c (proto/). */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

/* Returns the offset of the first byte that breaks UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF) or is NUL, or `len`
 * when there is none. */
static size_t utf8_bad_at(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c == 0)
      return i;
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0)
        lo = 0xa0; /* overlong */
      else if (c == 0xed)
        hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0)
        lo = 0x90; /* overlong */
      else if (c == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    } else {
      return i;
    }
    if (len - i <= n)
      return i;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return i;
    for (size_t k = 2; k <= n; k++)
      if ((s[i + k] & 0xc0) != 0x80)
        return i;
    i += n + 1;
  }
  return len;
}

bool proto_utf8_valid(const char *s, size_t len) {
  if (s == NULL)
    return len == 0;
  return utf8_bad_at((const unsigned char *)s, len) == len;
}

void proto__utf8_repair(char *s) {
  size_t len = strlen(s), i = 0;
  while (i < len) {
    size_t bad = utf8_bad_at((const unsigned char *)s + i, len - i);
    if (bad == len - i)
      break;
    s[i + bad] = '?';
    i += bad + 1;
  }
}

void proto__utf8_trim(char *s) {
  size_t len = strlen(s);
  /* Walk back over continuation bytes to the last lead byte, then drop the
   * sequence if it is shorter than its lead byte promises. */
  size_t i = len, cont = 0;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80 && cont < 4) {
    i--;
    cont++;
  }
  if (i == 0)
    return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t want;
  if (lead < 0x80)
    return;
  else if (lead >= 0xf0)
    want = 3;
  else if (lead >= 0xe0)
    want = 2;
  else if (lead >= 0xc0)
    want = 1;
  else
    return;
  if (cont < want)
    s[i - 1] = '\0';
}

void proto__quote(const char *s, char *out, size_t out_size) {
  if (out_size == 0)
    return;
  size_t max = out_size - 1;
  bool cut = false;
  if (max > PROTO__QUOTE_MAX)
    max = PROTO__QUOTE_MAX;
  size_t n = strlen(s);
  if (n > max) {
    cut = true;
    n = max >= 3 ? max - 3 : 0;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    /* Messages end up in logs: keep them on one line. */
    out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  out[n] = '\0';
  if (cut) {
    proto__utf8_trim(out);
    strncat(out, "...", out_size - strlen(out) - 1);
  }
}

/* cJSON takes any byte <= 0x20 as whitespace and a "\u0000" escape as the end
 * of a string, which would let "enc\u0000oder" name the slice "enc". JSON
 * allows neither, so one pass over the text rejects both before cJSON sees
 * it. Returns the offset of the offending byte or `len`. */
static size_t lexical_bad_at(const char *s, size_t len, const char **why) {
  bool in_string = false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      *why = "a control character";
      return i;
    }
    if (!in_string) {
      if (c == '"')
        in_string = true;
      continue;
    }
    if (c == '"') {
      in_string = false;
    } else if (c == '\\') {
      if (len - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
        *why = "an escaped NUL (\\u0000)";
        return i;
      }
      i++; /* the escaped character cannot end the string */
    }
  }
  return len;
}

static bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether `s` has only ASCII bytes from 0x20 up and no backslash: most
 * frames, which then need neither check below. Eight bytes at a time: a
 * byte's high bit marks it when it is >= 0x80, when subtracting 0x20 from a
 * byte that had its high bit clear sets it (below 0x20), or when it is a
 * backslash (xored to zero, and zero minus one sets it). A borrow can only
 * mark a byte above one marked rightly, so the word is then rechecked byte
 * by byte. */
static bool plain_ascii(const char *s, size_t len) {
  const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    uint64_t x = w ^ (ones * '\\');
    if ((w | ((w - ones * 0x20) & ~w) | ((x - ones) & ~x)) & highs)
      break;
  }
  for (; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c >= 0x80 || c == '\\')
      return false;
  }
  return true;
}

/* How many arrays and objects are open just before body[at]. */
static size_t depth_at(const char *body, size_t at) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < at; i++) {
    char ch = body[i];
    if (in_string) {
      if (ch == '\\')
        i++;
      else if (ch == '"')
        in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      depth++;
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      depth--;
    }
  }
  return depth;
}

int proto__json_parse(const char *body, size_t len, int code, cJSON **out,
                      proto_error *err) {
  if (body == NULL || len == 0)
    return proto_fail(err, code, "body is empty");
  bool plain = plain_ascii(body, len);
  size_t bad = plain ? len : utf8_bad_at((const unsigned char *)body, len);
  if (bad < len)
    return proto_fail(err, code,
                      body[bad] == '\0' ? "body contains a NUL byte at %zu"
                                        : "body is not valid UTF-8 at byte %zu",
                      bad);
  const char *why = "";
  if (!plain)
    bad = lexical_bad_at(body, len, &why);
  if (bad < len)
    return proto_fail(err, code, "body contains %s at byte %zu", why, bad);

  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
  if (root == NULL) {
    size_t at = end != NULL && end >= body ? (size_t)(end - body) : 0;
    /* cJSON stops at its nesting limit as at a syntax error; valid JSON
     * refused for its depth should not be called "not JSON". */
    if (at < len && (body[at] == '[' || body[at] == '{') &&
        depth_at(body, at) >= CJSON_NESTING_LIMIT)
      return proto_fail(err, code,
                        "body nests arrays and objects deeper than %d levels "
                        "(at byte %zu)",
                        CJSON_NESTING_LIMIT, at);
    return proto_fail(err, code, "body is not JSON (error near byte %zu)", at);
  }
  size_t at = (size_t)(end - body);
  while (at < len && is_ws(body[at]))
    at++;
  if (at < len) {
    cJSON_Delete(root);
    return proto_fail(err, code, "body has bytes after the JSON value at %zu",
                      at);
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return proto_fail(err, code, "body is JSON but not an object");
  }
  *out = root;
  return 0;
}

bool proto__json_u53(const cJSON *item, uint64_t *out) {
  if (!cJSON_IsNumber(item))
    return false;
  double d = item->valuedouble;
  /* The negated test also rejects NaN. */
  if (!(d >= 0.0 && d <= (double)PROTO_MAX_INT))
    return false;
  uint64_t v = (uint64_t)d;
  if ((double)v != d)
    return false;
  *out = v;
  return true;
}

/* Appends ".key" (or "key" at the root) or "[index]" to the path, clamped. */
static size_t path_push(char *path, size_t plen, const cJSON *parent,
                        const cJSON *child, size_t index) {
  if (plen >= PROTO__PATH_MAX - 1)
    return plen;
  char q[PROTO__QUOTE_MAX + 1];
  int n;
  if (cJSON_IsObject(parent)) {
    proto__quote(child->string, q, sizeof(q));
    n = snprintf(path + plen, PROTO__PATH_MAX - plen, "%s%s",
                 plen == 0 ? "" : ".", q);
  } else {
    n = snprintf(path + plen, PROTO__PATH_MAX - plen, "[%zu]", index);
  }
  if (n < 0)
    return plen;
  if ((size_t)n >= PROTO__PATH_MAX - plen) {
    proto__utf8_trim(path);
    return strlen(path);
  }
  return plen + (size_t)n;
}

static int cmp_keys(const void *a, const void *b) {
  const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
  return strcmp(x->string, y->string);
}

/* Returns the first key of `obj` that occurs twice, NULL when none, or `obj`
 * itself when out of memory. Small objects are compared pairwise; large ones
 * sorted, so that a frame full of keys costs n log n, not n^2. */
static const cJSON *find_dup(const cJSON *obj, size_t n) {
  if (n <= 16) {
    for (const cJSON *a = obj->child; a != NULL; a = a->next)
      for (const cJSON *b = a->next; b != NULL; b = b->next)
        if (strcmp(a->string, b->string) == 0)
          return b;
    return NULL;
  }
  const cJSON **keys = malloc(n * sizeof(*keys));
  if (keys == NULL)
    return obj;
  size_t i = 0;
  for (const cJSON *c = obj->child; c != NULL; c = c->next)
    keys[i++] = c;
  qsort(keys, n, sizeof(*keys), cmp_keys);
  const cJSON *dup = NULL;
  for (i = 1; i < n && dup == NULL; i++)
    if (strcmp(keys[i - 1]->string, keys[i]->string) == 0)
      dup = keys[i];
  free(keys);
  return dup;
}

static int check_dups(const cJSON *item, char *path, size_t plen, int code,
                      proto_error *err) {
  if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
    return 0;
  size_t n = 0;
  for (const cJSON *c = item->child; c != NULL; c = c->next)
    n++;
  if (cJSON_IsObject(item) && n > 1) {
    const cJSON *dup = find_dup(item, n);
    if (dup == item)
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory checking keys");
    if (dup != NULL) {
      path_push(path, plen, item, dup, 0);
      return proto_fail(err, code, "%s: duplicate key", path);
    }
  }
  size_t index = 0;
  for (const cJSON *c = item->child; c != NULL; c = c->next, index++) {
    if (!cJSON_IsObject(c) && !cJSON_IsArray(c))
      continue;
    size_t l = path_push(path, plen, item, c, index);
    int r = check_dups(c, path, l, code, err);
    path[plen] = '\0';
    if (r < 0)
      return r;
  }
  return 0;
}

/* The first pass only looks: the path that names a duplicate costs a
 * snprintf per level, and is built (by check_dups) only once one is found. */
static bool has_dups(const cJSON *item) {
  if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
    return false;
  size_t n = 0;
  for (const cJSON *c = item->child; c != NULL; c = c->next)
    n++;
  if (cJSON_IsObject(item) && n > 1 && find_dup(item, n) != NULL)
    return true; /* or out of memory: check_dups says which */
  for (const cJSON *c = item->child; c != NULL; c = c->next)
    if (has_dups(c))
      return true;
  return false;
}

int proto__json_check_dups(const cJSON *item, int code, proto_error *err) {
  if (!has_dups(item))
    return 0;
  char path[PROTO__PATH_MAX] = "";
  return check_dups(item, path, 0, code, err);
}
