/* diskcache_util.h — fixtures for the disk cache's tests (tests/unit/):
 * a per-test folder, layouts packed the way the shim packs a blob, random
 * blobs, and reads that fail the test or expect a given rejection. The test
 * file defines `dir` and `err`, then includes this header.
 */
#ifndef TESTS_UNIT_DISKCACHE_UTIL_H
#define TESTS_UNIT_DISKCACHE_UTIL_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diskcache.h"

extern char dir[256];
extern char err[DISKCACHE_ERROR_MAX];

static inline void setup(void) {
  strcpy(dir, "/tmp/test_diskcache.XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}

static inline int rm_one(const char *p, const struct stat *sb, int flag,
                         struct FTW *f) {
  (void)sb, (void)flag, (void)f;
  return remove(p);
}

/* Also unmounts the small file system a full-disk test may have left
 * mounted when it failed midway, so its mount point can go too. */
static inline void teardown(void) {
  char mnt[sizeof(dir) + 8];
  snprintf(mnt, sizeof(mnt), "%s/small", dir);
  umount2(mnt, MNT_DETACH);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline uint64_t rnd(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1Dull;
}

static inline void fill(void *p, uint64_t n, uint64_t seed) {
  uint64_t s = seed | 1, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rnd(&s);
    memcpy((char *)p + i, &v, 8);
  }
  for (; i < n; i++)
    ((uint8_t *)p)[i] = (uint8_t)rnd(&s);
}

typedef struct {
  const char *name;
  proto_dtype dtype;
  uint32_t ndim;
  uint64_t shape[PROTO_MAX_DIMS];
} spec;

/* A layout packed like the shim packs one (each tensor 4096-aligned, the
 * blob ending where the last tensor ends), its random blob and its key. */
typedef struct {
  diskcache_entry e[512];
  diskcache_layout l;
  uint8_t *blob;
} fixture;

static inline uint64_t round_up(uint64_t n) {
  return (n + DISKCACHE_ALIGN - 1) / DISKCACHE_ALIGN * DISKCACHE_ALIGN;
}

static inline void *aligned(uint64_t n) {
  void *p = aligned_alloc(DISKCACHE_ALIGN, round_up(n ? n : 1));
  cr_assert_not_null(p);
  return p;
}

static inline void rekey(fixture *f) {
  diskcache_key("linear", "{\"in\":3}", 0, 0, &f->l, "2.11.0", f->l.key);
}

static inline fixture *build(const spec *s, size_t n, uint64_t seed) {
  fixture *f = calloc(1, sizeof(*f));
  cr_assert(f && n <= 512);
  uint64_t at = 0;
  for (size_t i = 0; i < n; i++) {
    diskcache_entry *e = &f->e[i];
    e->name = s[i].name;
    e->dtype = s[i].dtype;
    e->ndim = s[i].ndim;
    e->nbytes = proto_dtype_size(e->dtype);
    for (uint32_t d = 0; d < e->ndim; d++) {
      e->shape[d] = s[i].shape[d];
      e->nbytes *= e->shape[d];
    }
    e->offset = round_up(at);
    at = e->offset + e->nbytes;
  }
  f->l = (diskcache_layout){.entries = f->e, .n_entries = n, .blob_bytes = at};
  f->blob = aligned(at);
  fill(f->blob, at, seed);
  rekey(f);
  return f;
}

static inline void drop(fixture *f) {
  free(f->blob);
  free(f);
}

/* Odd sizes on purpose: a scalar, an empty tensor, and a 2-byte tail. */
static const spec odd[] = {
    {"fc1.weight", PROTO_DTYPE_FLOAT32, 2, {3, 5}},
    {"fc1.bias", PROTO_DTYPE_FLOAT16, 1, {7}},
    {"emb.weight", PROTO_DTYPE_INT64, 2, {1000, 3}},
    {"scale", PROTO_DTYPE_BFLOAT16, 0, {0}},
    {"empty", PROTO_DTYPE_BOOL, 2, {0, 4}},
    {"fc2.weight", PROTO_DTYPE_FLOAT64, 3, {2, 3, 7}},
    {"mask", PROTO_DTYPE_UINT8, 1, {2}},
};
#define N_ODD (sizeof(odd) / sizeof(odd[0]))

static inline void path_of(char *out, const char *key, const char *suffix) {
  snprintf(out, PATH_MAX, "%s/%s.safetensors%s", dir, key, suffix);
}

static inline int read_into(const fixture *f, uint8_t *dst, size_t chunk) {
  memset(err, 0, sizeof(err));
  return diskcache_read(dir, &f->l, dst, chunk, err);
}

/* Reads the file of f and expects the blob back. */
static inline void reads_back(const fixture *f, size_t chunk) {
  uint8_t *dst = aligned(f->l.blob_bytes);
  int r = read_into(f, dst, chunk);
  cr_assert_eq(r, 0, "read: %d %s", r, err);
  cr_assert_eq(memcmp(dst, f->blob, f->l.blob_bytes), 0);
  free(dst);
}

static inline void writes(const fixture *f) {
  int r = diskcache_write(dir, &f->l, f->blob, err);
  cr_assert_eq(r, 0, "write: %d %s", r, err);
}

/* Expects a read to reject the file with `why` in err and delete it. */
static inline void rejects(const fixture *f, const char *why) {
  uint8_t *dst = aligned(f->l.blob_bytes);
  int r = read_into(f, dst, 0);
  free(dst);
  cr_assert_eq(r, -EBADMSG, "got %d (%s), want -EBADMSG (%s)", r, err, why);
  cr_assert_not_null(strstr(err, why), "got '%s', want '%s'", err, why);
  cr_assert_not(diskcache_exists(dir, f->l.key), "a bad file must be deleted");
}

/* Files in dir whose name contains `part`. */
static inline int count_files(const char *part) {
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.' && strstr(e->d_name, part) != NULL;
  closedir(d);
  return n;
}

static inline uint8_t *slurp(const char *path, uint64_t *len) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  uint8_t *p = malloc((size_t)st.st_size + 1);
  FILE *fp = fopen(path, "rb");
  cr_assert(p && fp);
  cr_assert_eq(fread(p, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
  fclose(fp);
  *len = (uint64_t)st.st_size;
  return p;
}

static inline void poke(const char *path, uint64_t off, const void *bytes,
                        size_t n) {
  int fd = open(path, O_WRONLY);
  cr_assert_geq(fd, 0);
  cr_assert_eq(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
  close(fd);
}

#endif
