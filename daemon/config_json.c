/* config_json.c — JSON checking helpers for the config loader (see
 * config_json.h). */
#include "config_json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int config__fail(config__ctx *ctx, const char *path, const char *fmt, ...) {
  int n;
  if (path && *path)
    n = snprintf(ctx->err, CONFIG_ERROR_MAX, "%s: %s: ", ctx->file, path);
  else
    n = snprintf(ctx->err, CONFIG_ERROR_MAX, "%s: ", ctx->file);
  if (n < 0)
    n = 0;
  if ((size_t)n < CONFIG_ERROR_MAX - 1) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err + n, CONFIG_ERROR_MAX - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return -1;
}

const char *config__type_name(const cJSON *item) {
  if (cJSON_IsString(item))
    return "a string";
  if (cJSON_IsNumber(item))
    return "a number";
  if (cJSON_IsBool(item))
    return "a boolean";
  if (cJSON_IsNull(item))
    return "null";
  if (cJSON_IsArray(item))
    return "an array";
  if (cJSON_IsObject(item))
    return "an object";
  return "an unknown value";
}

char *config__quote(char *out, size_t n, const char *s) {
  static const char hex[] = "0123456789abcdef";
  /* Room for the closing quote, "..." and NUL after any one escape. */
  const size_t reserve = 1 + 3 + 1 + 4;
  size_t o = 0;
  if (n < reserve + 2) {
    if (n)
      out[0] = '\0';
    return out;
  }
  out[o++] = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (o + 4 + reserve > n) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    } else {
      out[o++] = (char)c;
    }
  }
  out[o++] = '"';
  out[o] = '\0';
  return out;
}

void config__path_key(char out[CONFIG__PATH_MAX], const char *prefix,
                      const char *key) {
  char q[96];
  /* Keys that are not plain identifiers are quoted so the path stays one
   * unambiguous line. */
  bool plain = *key != '\0';
  for (const char *p = key; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
      plain = false;
  const char *shown = plain ? key : config__quote(q, sizeof(q), key);
  if (*prefix)
    snprintf(out, CONFIG__PATH_MAX, "%.*s.%s", CONFIG__PATH_MAX / 2, prefix,
             shown);
  else
    snprintf(out, CONFIG__PATH_MAX, "%s", shown);
}

void config__path_index(char out[CONFIG__PATH_MAX], const char *prefix,
                        size_t i) {
  snprintf(out, CONFIG__PATH_MAX, "%.*s[%zu]", CONFIG__PATH_MAX / 2, prefix,
           i);
}

int config__get_string(config__ctx *ctx, const cJSON *item, const char *path,
                       const char **out) {
  if (!cJSON_IsString(item) || !item->valuestring)
    return config__fail(ctx, path, "expected a string, got %s",
                        config__type_name(item));
  *out = item->valuestring;
  return 0;
}

int config__get_bool(config__ctx *ctx, const cJSON *item, const char *path,
                     bool *out) {
  if (!cJSON_IsBool(item))
    return config__fail(ctx, path, "expected a boolean, got %s",
                        config__type_name(item));
  *out = cJSON_IsTrue(item);
  return 0;
}

int config__get_uint(config__ctx *ctx, const cJSON *item, const char *path,
                     uint64_t lo, uint64_t hi, uint64_t *out) {
  if (!cJSON_IsNumber(item))
    return config__fail(ctx, path, "expected an integer, got %s",
                        config__type_name(item));
  double v = item->valuedouble;
  if (!isfinite(v) || v != floor(v))
    return config__fail(ctx, path, "expected an integer, got %g", v);
  /* Compare as doubles first: converting an out-of-range double to an
   * integer type is undefined. */
  if (v < (double)lo || v > (double)hi)
    return config__fail(ctx, path,
                        "%.0f is out of range (%" PRIu64 "..%" PRIu64 ")", v,
                        lo, hi);
  uint64_t u = (uint64_t)v;
  if (u < lo || u > hi)
    return config__fail(ctx, path,
                        "%.0f is out of range (%" PRIu64 "..%" PRIu64 ")", v,
                        lo, hi);
  *out = u;
  return 0;
}

int config__get_number(config__ctx *ctx, const cJSON *item, const char *path,
                       double lo_exclusive, double hi, double *out) {
  if (!cJSON_IsNumber(item))
    return config__fail(ctx, path, "expected a number, got %s",
                        config__type_name(item));
  double v = item->valuedouble;
  if (!isfinite(v) || !(v > lo_exclusive) || v > hi)
    return config__fail(ctx, path,
                        "%g is out of range (more than %g, at most %g)", v,
                        lo_exclusive, hi);
  *out = v;
  return 0;
}

int config__check_object(config__ctx *ctx, const cJSON *item, const char *path,
                         const char *const *allowed) {
  if (!cJSON_IsObject(item))
    return config__fail(ctx, path, "expected an object, got %s",
                        config__type_name(item));
  for (const cJSON *c = item->child; c; c = c->next) {
    bool known = false;
    for (const char *const *a = allowed; *a && !known; a++)
      known = strcmp(c->string, *a) == 0;
    if (!known) {
      char q[96];
      return config__fail(ctx, path, "unknown key %s",
                          config__quote(q, sizeof(q), c->string));
    }
  }
  return 0;
}

static int config__cmp_key(const void *a, const void *b) {
  const cJSON *x = *(const cJSON *const *)a;
  const cJSON *y = *(const cJSON *const *)b;
  return strcmp(x->string, y->string);
}

/* Sorting the keys makes this O(n log n), so a 4 MiB object of distinct keys
 * costs nothing noticeable. */
static int config__dups_in(config__ctx *ctx, const cJSON *item,
                           const char *path) {
  char sub[CONFIG__PATH_MAX];
  if (cJSON_IsArray(item)) {
    size_t i = 0;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
      if (!cJSON_IsArray(c) && !cJSON_IsObject(c))
        continue;
      config__path_index(sub, path, i);
      if (config__dups_in(ctx, c, sub) < 0)
        return -1;
    }
    return 0;
  }
  if (!cJSON_IsObject(item))
    return 0;
  size_t n = 0;
  for (const cJSON *c = item->child; c; c = c->next)
    n++;
  if (n > 1) {
    const cJSON **keys = malloc(n * sizeof(*keys));
    if (!keys)
      return config__fail(ctx, path, "out of memory");
    size_t i = 0;
    for (const cJSON *c = item->child; c; c = c->next)
      keys[i++] = c;
    qsort(keys, n, sizeof(*keys), config__cmp_key);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
      if (strcmp(keys[i - 1]->string, keys[i]->string) == 0)
        dup = keys[i]->string;
    free(keys);
    if (dup) {
      char q[96];
      return config__fail(ctx, path, "duplicate key %s",
                          config__quote(q, sizeof(q), dup));
    }
  }
  for (const cJSON *c = item->child; c; c = c->next) {
    if (!cJSON_IsArray(c) && !cJSON_IsObject(c))
      continue;
    config__path_key(sub, path, c->string);
    if (config__dups_in(ctx, c, sub) < 0)
      return -1;
  }
  return 0;
}

int config__check_duplicates(config__ctx *ctx, const cJSON *root) {
  return config__dups_in(ctx, root, "");
}

int config__check_text(config__ctx *ctx, const char *text, size_t len) {
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c == 0)
      return config__fail(ctx, NULL, "NUL byte at offset %zu", i);
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
      n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return config__fail(ctx, NULL, "invalid UTF-8 at offset %zu", i);
    }
    if (len - i < n)
      return config__fail(ctx, NULL, "invalid UTF-8 at offset %zu", i);
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return config__fail(ctx, NULL, "invalid UTF-8 at offset %zu", i);
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return config__fail(ctx, NULL, "invalid UTF-8 at offset %zu", i);
    i += n;
  }
  return 0;
}

int config__resolve_path(config__ctx *ctx, const char *dir, const char *value,
                         const char *path, char **out) {
  if (!*value)
    return config__fail(ctx, path, "expected a non-empty path");
  char *r;
  if (value[0] == '/') {
    r = strdup(value);
  } else {
    size_t dlen = strlen(dir);
    const char *v = value;
    for (;;) {
      if (v[0] == '.' && v[1] == '/') {
        v += 2;
      } else if (v[0] == '.' && v[1] == '.' && (v[2] == '/' || !v[2])) {
        while (dlen > 1 && dir[dlen - 1] != '/')
          dlen--;
        if (dlen > 1)
          dlen--; /* drop the slash too, unless it is the root */
        v += v[2] ? 3 : 2;
      } else if (v[0] == '/') {
        v++; /* "a//b" after folding "./" */
      } else {
        break;
      }
    }
    if (!strcmp(v, "."))
      v++;
    const char *sep = (dlen > 0 && dir[dlen - 1] == '/') || !*v ? "" : "/";
    if (asprintf(&r, "%.*s%s%s", (int)dlen, dir, sep, v) < 0)
      r = NULL;
  }
  if (!r)
    return config__fail(ctx, path, "out of memory");
  if (strlen(r) >= PATH_MAX) {
    free(r);
    return config__fail(ctx, path, "path is longer than %d bytes", PATH_MAX - 1);
  }
  *out = r;
  return 0;
}

int config__locate(config__ctx *ctx, config *c, const char *path) {
  if (!*path)
    return config__fail(ctx, NULL, "empty config path");
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  if (!*base)
    return config__fail(ctx, NULL, "not a file name");
  char *dir;
  if (!slash)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (!dir)
    return config__fail(ctx, NULL, "out of memory");
  c->config_dir = realpath(dir, NULL);
  int e = errno;
  free(dir);
  if (!c->config_dir) {
    char eb[128];
    return config__fail(ctx, NULL, "cannot resolve the config's folder: %s",
                        strerror_r(e, eb, sizeof(eb)));
  }
  const char *sep = strcmp(c->config_dir, "/") ? "/" : "";
  if (asprintf(&c->path, "%s%s%s", c->config_dir, sep, base) < 0) {
    c->path = NULL;
    return config__fail(ctx, NULL, "out of memory");
  }
  return 0;
}

void config__line_col(const char *text, size_t pos, size_t *line,
                             size_t *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < pos; i++) {
    if (text[i] == '\n') {
      (*line)++;
      *col = 1;
    } else {
      (*col)++;
    }
  }
}

int config__read_file(config__ctx *ctx, const char *path, size_t max,
                      char **text, size_t *len) {
  char eb[128];
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return config__fail(ctx, NULL, "cannot open: %s",
                        strerror_r(errno, eb, sizeof(eb)));
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return config__fail(ctx, NULL, "cannot stat: %s",
                        strerror_r(e, eb, sizeof(eb)));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return config__fail(ctx, NULL, "not a regular file");
  }
  if ((uint64_t)st.st_size > max) {
    close(fd);
    return config__fail(ctx, NULL, "file is larger than %zu bytes", max);
  }
  /* One byte more than allowed, to notice a file that grew since fstat. */
  char *buf = malloc(max + 1);
  if (!buf) {
    close(fd);
    return config__fail(ctx, NULL, "out of memory");
  }
  size_t n = 0;
  while (n < max + 1) {
    ssize_t r = read(fd, buf + n, max + 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      free(buf);
      return config__fail(ctx, NULL, "cannot read: %s",
                          strerror_r(e, eb, sizeof(eb)));
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  if (n > max) {
    free(buf);
    return config__fail(ctx, NULL, "file is larger than %zu bytes", max);
  }
  *text = buf;
  *len = n;
  return 0;
}
