/* npy.c — reading and writing NumPy .npy files (client/, internal). */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host, as the protocol's tensors are"
#endif

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* Fills err without libslyce's helpers, so that the unit test can build this
 * file on its own. */
static int npy_fail(sly_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int npy_fail(sly_error *err, int code, const char *fmt, ...) {
  if (err == NULL)
    return code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof(err->message), fmt, ap);
  va_end(ap);
  err->code = code;
  err->needed = 0;
  return code;
}

/* The NumPy type string of each dtype ("f4"), without its byte order. */
static const struct {
  sly_dtype dtype;
  const char *code;
} npy_types[] = {
    {SLY_FLOAT32, "f4"}, {SLY_FLOAT64, "f8"}, {SLY_FLOAT16, "f2"},
    {SLY_INT64, "i8"},   {SLY_INT32, "i4"},   {SLY_INT16, "i2"},
    {SLY_INT8, "i1"},    {SLY_UINT8, "u1"},   {SLY_BOOL, "b1"},
};
#define NPY_NTYPES (sizeof(npy_types) / sizeof(npy_types[0]))

/* The protocol's table, not libslyce's sly_dtype_size(), so that this file
 * builds without the rest of libslyce. */
static size_t dtype_size(sly_dtype d) {
  return proto_dtype_size((proto_dtype)d);
}

/* ---- the header dict: a Python literal, read with a small scanner ---- */

typedef struct {
  const char *p, *end;
  sly_error *err;
} scan;

static void skip_ws(scan *s) {
  while (s->p < s->end &&
         (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

/* Consumes `c` after whitespace; false when it is not next. */
static bool accept(scan *s, char c) {
  skip_ws(s);
  if (s->p < s->end && *s->p == c) {
    s->p++;
    return true;
  }
  return false;
}

/* A quoted string without escapes into out (at most size-1 bytes). */
static int read_str(scan *s, char *out, size_t size, const char *what) {
  skip_ws(s);
  if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
    return npy_fail(s->err, SLY_E_INVALID_ARG, "header: %s is not a string",
                    what);
  char q = *s->p++;
  size_t n = 0;
  while (s->p < s->end && *s->p != q) {
    if (*s->p == '\\' || n + 1 >= size)
      return npy_fail(s->err, SLY_E_INVALID_ARG,
                      "header: %s is not a string this reader knows", what);
    out[n++] = *s->p++;
  }
  if (s->p >= s->end)
    return npy_fail(s->err, SLY_E_INVALID_ARG, "header: unterminated string");
  s->p++;
  out[n] = '\0';
  return 0;
}

static bool accept_word(scan *s, const char *w) {
  skip_ws(s);
  size_t n = strlen(w);
  if ((size_t)(s->end - s->p) >= n && memcmp(s->p, w, n) == 0) {
    s->p += n;
    return true;
  }
  return false;
}

/* A non-negative integer (Python 2 files may write "3L"), at most 2^53-1. */
static int read_dim(scan *s, uint64_t *out) {
  skip_ws(s);
  if (s->p >= s->end || *s->p < '0' || *s->p > '9')
    return npy_fail(s->err, SLY_E_INVALID_ARG,
                    "header: shape holds something other than an integer");
  uint64_t v = 0;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
    v = v * 10 + (uint64_t)(*s->p++ - '0');
    if (v > PROTO_MAX_INT)
      return npy_fail(s->err, SLY_E_INVALID_ARG,
                      "header: a dim of shape exceeds 2^53-1");
  }
  if (s->p < s->end && *s->p == 'L')
    s->p++;
  *out = v;
  return 0;
}

/* "(2, 3)", "(3,)" or "()". */
static int read_shape(scan *s, npy_header *h) {
  if (!accept(s, '('))
    return npy_fail(s->err, SLY_E_INVALID_ARG, "header: shape is not a tuple");
  h->ndim = 0;
  while (!accept(s, ')')) {
    if (h->ndim == SLY_MAX_DIMS)
      return npy_fail(s->err, SLY_E_INVALID_ARG,
                      "header: shape has more than %d dims", SLY_MAX_DIMS);
    int rc = read_dim(s, &h->shape[h->ndim]);
    if (rc < 0)
      return rc;
    h->ndim++;
    if (!accept(s, ',')) {
      if (!accept(s, ')'))
        return npy_fail(s->err, SLY_E_INVALID_ARG,
                        "header: shape is not a tuple of integers");
      break;
    }
  }
  return 0;
}

/* '<f4' and its kin: the dtype and whether its bytes need swapping. */
static int parse_descr(const char *d, npy_header *h, sly_error *err) {
  char order = d[0];
  const char *code = d + (order != '\0' && strchr("<>|=", order) ? 1 : 0);
  if (code == d)
    order = '=';
  for (size_t i = 0; i < NPY_NTYPES; i++) {
    if (strcmp(code, npy_types[i].code) != 0)
      continue;
    bool one = dtype_size(npy_types[i].dtype) == 1;
    if (order == '|' && !one)
      return npy_fail(err, SLY_E_INVALID_ARG,
                      "header: descr '%s' has no byte order", d);
    h->dtype = npy_types[i].dtype;
    h->swap = order == '>' && !one;
    return 0;
  }
  return npy_fail(err, SLY_E_INVALID_ARG,
                  "header: descr '%s' is not a dtype slyced knows (float32, "
                  "float64, float16, int64, int32, int16, int8, uint8, bool)",
                  d);
}

/* The dict: exactly the keys descr, fortran_order and shape, each once. */
static int parse_dict(scan *s, npy_header *h) {
  bool have_descr = false, have_order = false, have_shape = false;
  int rc;
  if (!accept(s, '{'))
    return npy_fail(s->err, SLY_E_INVALID_ARG, "header: not a dict");
  while (!accept(s, '}')) {
    char key[32], descr[32];
    if ((rc = read_str(s, key, sizeof(key), "a key")) < 0)
      return rc;
    if (!accept(s, ':'))
      return npy_fail(s->err, SLY_E_INVALID_ARG, "header: ':' missing");
    bool *have;
    if (strcmp(key, "descr") == 0) {
      have = &have_descr;
      skip_ws(s);
      if (s->p < s->end && *s->p == '[')
        return npy_fail(s->err, SLY_E_INVALID_ARG,
                        "header: structured dtypes are not supported");
      if ((rc = read_str(s, descr, sizeof(descr), "descr")) < 0 ||
          (rc = parse_descr(descr, h, s->err)) < 0)
        return rc;
    } else if (strcmp(key, "fortran_order") == 0) {
      have = &have_order;
      if (accept_word(s, "True"))
        return npy_fail(s->err, SLY_E_INVALID_ARG,
                        "header: fortran_order arrays are not supported");
      if (!accept_word(s, "False"))
        return npy_fail(s->err, SLY_E_INVALID_ARG,
                        "header: fortran_order is not True or False");
    } else if (strcmp(key, "shape") == 0) {
      have = &have_shape;
      if ((rc = read_shape(s, h)) < 0)
        return rc;
    } else {
      return npy_fail(s->err, SLY_E_INVALID_ARG, "header: unknown key '%s'",
                      key);
    }
    if (*have)
      return npy_fail(s->err, SLY_E_INVALID_ARG, "header: key '%s' twice", key);
    *have = true;
    if (!accept(s, ',')) {
      if (!accept(s, '}'))
        return npy_fail(s->err, SLY_E_INVALID_ARG,
                        "header: ',' or '}' missing");
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape)
    return npy_fail(s->err, SLY_E_INVALID_ARG, "header: '%s' missing",
                    !have_descr   ? "descr"
                    : !have_order ? "fortran_order"
                                  : "shape");
  skip_ws(s);
  if (s->p != s->end)
    return npy_fail(s->err, SLY_E_INVALID_ARG, "header: bytes after the dict");
  return 0;
}

int npy_header_parse(const void *buf, size_t len, uint64_t file_size,
                     npy_header *out, sly_error *err) {
  const unsigned char *b = buf;
  if (len < 10 || memcmp(b, npy_magic, sizeof(npy_magic)) != 0)
    return npy_fail(err, SLY_E_INVALID_ARG,
                    len < 10 ? "truncated: not a .npy file"
                             : "not a .npy file (no magic)");
  unsigned major = b[6], minor = b[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    return npy_fail(err, SLY_E_INVALID_ARG,
                    ".npy version %u.%u is not supported (1.0, 2.0, 3.0 are)",
                    major, minor);
  size_t pre = major == 1 ? 10 : 12;
  if (len < pre)
    return npy_fail(err, SLY_E_INVALID_ARG, "truncated header");
  uint64_t hlen = major == 1
                      ? (uint64_t)b[8] | (uint64_t)b[9] << 8
                      : (uint64_t)b[8] | (uint64_t)b[9] << 8 |
                            (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
  if (hlen > NPY_HEADER_MAX)
    return npy_fail(err, SLY_E_INVALID_ARG, "header of %llu bytes exceeds %d",
                    (unsigned long long)hlen, NPY_HEADER_MAX);
  if (hlen > len - pre)
    return npy_fail(err, SLY_E_INVALID_ARG, "truncated header");
  npy_header h = {0};
  scan s = {(const char *)b + pre, (const char *)b + pre + hlen, err};
  int rc = parse_dict(&s, &h);
  if (rc < 0)
    return rc;
  proto_error perr;
  if (proto_tensor_nbytes((proto_dtype)h.dtype, h.ndim, h.shape, &h.nbytes,
                          &perr) < 0)
    return npy_fail(err, SLY_E_INVALID_ARG, "header: %s", perr.message);
  h.data_offset = pre + hlen;
  if (file_size < h.data_offset || file_size - h.data_offset != h.nbytes)
    return npy_fail(err, SLY_E_INVALID_ARG,
                    "holds %llu bytes of data, its header says %llu",
                    file_size < h.data_offset
                        ? 0ull
                        : (unsigned long long)(file_size - h.data_offset),
                    (unsigned long long)h.nbytes);
  *out = h;
  return 0;
}

int npy_header_build(sly_dtype dtype, uint32_t ndim, const uint64_t *shape,
                     char *buf, size_t size, size_t *len, sly_error *err) {
  const char *code = NULL;
  for (size_t i = 0; i < NPY_NTYPES; i++)
    if (npy_types[i].dtype == dtype)
      code = npy_types[i].code;
  if (code == NULL)
    return npy_fail(err, SLY_E_INVALID_ARG, "dtype %s has no .npy form",
                    proto_dtype_name((proto_dtype)dtype));
  if (ndim > SLY_MAX_DIMS)
    return npy_fail(err, SLY_E_INVALID_ARG, "%u dims exceed %d", ndim,
                    SLY_MAX_DIMS);
  /* 8 dims of at most 16 digits: well within this buffer. */
  char dict[384];
  int n = snprintf(dict, sizeof(dict),
                   "{'descr': '%c%s', 'fortran_order': "
                   "False, 'shape': (",
                   dtype_size(dtype) == 1 ? '|' : '<', code);
  for (uint32_t i = 0; i < ndim; i++)
    n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%s%llu",
                  i > 0 ? ", " : "", (unsigned long long)shape[i]);
  n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%s), }",
                ndim == 1 ? "," : "");
  /* Pad with spaces and end with a newline so that the data starts at a
   * multiple of 64, as NumPy writes it. */
  size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
  if (total > size)
    return npy_fail(err, SLY_E_INVALID_ARG, "header does not fit");
  size_t hlen = total - 10;
  memcpy(buf, npy_magic, sizeof(npy_magic));
  buf[6] = 1;
  buf[7] = 0;
  buf[8] = (char)(hlen & 0xff);
  buf[9] = (char)(hlen >> 8);
  memcpy(buf + 10, dict, (size_t)n);
  memset(buf + 10 + n, ' ', hlen - (size_t)n - 1);
  buf[total - 1] = '\n';
  *len = total;
  return 0;
}

/* ---- files ---- */

int npy_open(const char *path, npy_file *f, sly_error *err) {
  memset(f, 0, sizeof(*f));
  snprintf(f->path, sizeof(f->path), "%s", path);
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0)
    return npy_fail(err, SLY_E_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  char buf[NPY_PREAMBLE_MAX + NPY_HEADER_MAX];
  size_t got = 0;
  int rc = 0;
  if (fstat(f->fd, &st) < 0) {
    rc = npy_fail(err, SLY_E_IO, "%s: %s", path, strerror(errno));
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = npy_fail(err, SLY_E_INVALID_ARG, "%s: not a regular file", path);
    goto fail;
  }
  while (got < sizeof(buf)) {
    ssize_t n = pread(f->fd, buf + got, sizeof(buf) - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = npy_fail(err, SLY_E_IO, "%s: %s", path, strerror(errno));
      goto fail;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  rc = npy_header_parse(buf, got, (uint64_t)st.st_size, &f->h, err);
  if (rc < 0) {
    /* Prefix the path to the parser's message. */
    char m[sizeof(err->message)];
    if (err != NULL) {
      snprintf(m, sizeof(m), "%s", err->message);
      npy_fail(err, rc, "%s: %s", path, m);
    }
    goto fail;
  }
  return 0;
fail:
  close(f->fd);
  f->fd = -1;
  return rc;
}

static void swap_bytes(void *data, uint64_t nbytes, size_t size) {
  unsigned char *p = data;
  for (uint64_t i = 0; i + size <= nbytes; i += size)
    for (size_t a = 0, b = size - 1; a < b; a++, b--) {
      unsigned char t = p[i + a];
      p[i + a] = p[i + b];
      p[i + b] = t;
    }
}

int npy_read_into(npy_file *f, void *dst, sly_error *err) {
  uint64_t got = 0;
  while (got < f->h.nbytes) {
    size_t want = f->h.nbytes - got > (1u << 30) ? (1u << 30)
                                                 : (size_t)(f->h.nbytes - got);
    ssize_t n =
        pread(f->fd, (char *)dst + got, want, (off_t)(f->h.data_offset + got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return npy_fail(err, n < 0 ? SLY_E_IO : SLY_E_INVALID_ARG, "%s: %s",
                      f->path, n < 0 ? strerror(errno) : "file shrank");
    got += (uint64_t)n;
  }
  if (f->h.swap)
    swap_bytes(dst, f->h.nbytes, dtype_size(f->h.dtype));
  /* libtorch takes a bool byte other than 0 or 1 as undefined behaviour. */
  if (f->h.dtype == SLY_BOOL)
    for (uint64_t i = 0; i < f->h.nbytes; i++)
      if (((const unsigned char *)dst)[i] > 1)
        return npy_fail(err, SLY_E_INVALID_ARG,
                        "%s: bool data holds a byte other than 0 or 1 at "
                        "element %llu",
                        f->path, (unsigned long long)i);
  return 0;
}

void npy_close(npy_file *f) {
  if (f != NULL && f->fd >= 0)
    close(f->fd);
  if (f != NULL)
    f->fd = -1;
}

static bool write_all(int fd, const void *buf, uint64_t len) {
  const char *p = buf;
  while (len > 0) {
    size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
    ssize_t n = write(fd, p, want);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    len -= (uint64_t)n;
  }
  return true;
}

int npy_write(const char *path, sly_dtype dtype, uint32_t ndim,
              const uint64_t *shape, const void *data, sly_error *err) {
  char hdr[512];
  size_t hlen;
  int rc = npy_header_build(dtype, ndim, shape, hdr, sizeof(hdr), &hlen, err);
  if (rc < 0)
    return rc;
  uint64_t nbytes;
  proto_error perr;
  if (proto_tensor_nbytes((proto_dtype)dtype, ndim, shape, &nbytes, &perr) < 0)
    return npy_fail(err, SLY_E_INVALID_ARG, "%s: %s", path, perr.message);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0)
    return npy_fail(err, SLY_E_IO, "%s: %s", path, strerror(errno));
  bool ok = write_all(fd, hdr, hlen) && write_all(fd, data, nbytes);
  int e = errno;
  if (close(fd) < 0 && ok) {
    ok = false;
    e = errno;
  }
  if (!ok) {
    unlink(path);
    return npy_fail(err, SLY_E_IO, "%s: %s", path, strerror(e));
  }
  return 0;
}

/* ---- bfloat16 ---- */

float npy_f32_from_bf16(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

uint16_t npy_bf16_from_f32(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it one, quietly */
    return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
