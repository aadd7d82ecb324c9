/* diskcache.c — the disk tier's file I/O (see diskcache.h).
 *
 * A file is [8-byte header length][JSON header, space-padded][blob]. The
 * padding makes the data section start on a DISKCACHE_ALIGN boundary and
 * the data section is the blob byte for byte, so a tensor at a 4096-aligned
 * blob offset sits at a 4096-aligned file offset and the whole blob can be
 * read with O_DIRECT straight into the caller's buffer. A reader checks the
 * header region's length against the one the layout makes before it
 * allocates anything a length prefix asks for.
 *
 * Temp files are flock()ed by their writer for as long as they exist under
 * that name, so diskcache_sweep() removes only those whose writer died (the
 * kernel drops the lock with the process), never one being written, even in
 * the same process.
 */
#include "diskcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diskcache_int.h"
#include "faults.h"
#include "safetensors.h"
#include "xxhash.h"

#define DC_SUFFIX ".safetensors"
#define DC_TMP ".safetensors.tmp."
#define DC_DEFAULT_CHUNK (16u << 20)
#define DC_WRITE_MAX (64u << 20) /* bytes per pwrite(2) */
#define DC_TMP_TRIES 16

/* Makes temp names unique within the process; the pid does across them. */
static atomic_uint_fast64_t dc_tmp_counter;

/* ---- reading ---------------------------------------------------------- */

/* Exactly 16 lowercase hex digits, as the writer prints them. */
static int dc_parse_hex64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = s ? s[i] : '\0';
    if (c >= '0' && c <= '9')
      v = (v << 4) | (uint64_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v = (v << 4) | (uint64_t)(c - 'a' + 10);
    else
      return -1;
  }
  if (s[16] != '\0')
    return -1;
  *out = v;
  return 0;
}

/* Reads up to `len` bytes at `off`, stopping early only at end of file.
 * When the file system refuses O_DIRECT for this request (EINVAL), drops
 * O_DIRECT for the rest of the file and retries. Returns the bytes read or
 * a negative errno. */
static ssize_t dc_pread(int fd, void *buf, size_t len, uint64_t off,
                        bool *direct) {
  size_t done = 0;
  while (done < len) {
    ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && errno == EINVAL && *direct) {
      int fl = fcntl(fd, F_GETFL);
      if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
        return -EINVAL;
      *direct = false;
      continue;
    }
    if (r < 0)
      return -errno;
    if (r == 0)
      break;
    done += (size_t)r;
    /* O_DIRECT reads whole blocks: a partial one is the end of the file. */
    if (*direct && done % DISKCACHE_ALIGN != 0)
      break;
  }
  return (ssize_t)done;
}

/* Reads and checks everything before the data: the header region's length
 * against the one the layout makes, the file's size, the safetensors
 * header, the metadata and every tensor. `block` is a DISKCACHE_ALIGN-aligned
 * buffer of DISKCACHE_ALIGN bytes. Returns 0 with *sum (the checksum the
 * file claims) and *data_off, -EBADMSG with err, or another negative errno
 * for an I/O error. */
static int dc_check_header(int fd, const diskcache_layout *l,
                           const diskcache__plan *plan, uint64_t expect_len,
                           uint8_t *block, bool *direct, uint64_t *sum,
                           uint64_t *data_off, char err[DISKCACHE_ERROR_MAX]) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return diskcache__fail(err, -errno, "fstat: %s", strerror(errno));
  uint64_t size = (uint64_t)st.st_size;
  uint64_t want = expect_len + l->blob_bytes;
  if (size < want)
    return diskcache__fail(err, -EBADMSG,
                           "truncated: %" PRIu64 " bytes, the layout "
                           "needs %" PRIu64,
                           size, want);
  ssize_t r = dc_pread(fd, block, DISKCACHE_ALIGN, 0, direct);
  if (r < 0)
    return diskcache__fail(err, (int)r, "read header: %s", strerror((int)-r));
  if ((uint64_t)r < 8)
    return diskcache__fail(err, -EBADMSG, "file changed while being read");
  char why[ST_ERROR_MAX];
  uint64_t json_len = 0;
  if (st_header_len(block, size, &json_len, why) != 0)
    return diskcache__fail(err, -EBADMSG, "header: %s", why);
  if (json_len + 8 != expect_len)
    return diskcache__fail(err, -EBADMSG,
                           "header region of %" PRIu64 " bytes, the "
                           "layout makes %" PRIu64,
                           json_len + 8, expect_len);
  if (size != want)
    return diskcache__fail(err, -EBADMSG,
                           "%" PRIu64 " bytes, the layout needs %" PRIu64, size,
                           want);
  uint8_t *region = block;
  if (expect_len > DISKCACHE_ALIGN) {
    void *p = NULL;
    if (posix_memalign(&p, DISKCACHE_ALIGN, expect_len) != 0)
      return diskcache__fail(err, -ENOMEM, "out of memory");
    region = p;
    memcpy(region, block, DISKCACHE_ALIGN);
    r = dc_pread(fd, region + DISKCACHE_ALIGN, expect_len - DISKCACHE_ALIGN,
                 DISKCACHE_ALIGN, direct);
    int rc = r < 0                                         ? (int)r
             : (uint64_t)r != expect_len - DISKCACHE_ALIGN ? -EBADMSG
                                                           : 0;
    if (rc != 0) {
      free(region);
      return diskcache__fail(err, rc, "read header: %s", strerror(-rc));
    }
  }
  st_header h = {0};
  int rc = 0;
  if (st_header_parse((const char *)region + 8, json_len, size, &h, why) != 0) {
    rc = diskcache__fail(err, -EBADMSG, "header: %s", why);
    goto out;
  }
  const char *magic = st_header_meta(&h, "slyced.magic");
  const char *version = st_header_meta(&h, "slyced.version");
  const char *key = st_header_meta(&h, "slyced.key");
  const char *bytes = st_header_meta(&h, "slyced.bytes");
  const char *check = st_header_meta(&h, "slyced.checksum");
  uint64_t claimed = 0;
  char want_bytes[24];
  snprintf(want_bytes, sizeof(want_bytes), "%" PRIu64, l->blob_bytes);
  if (!magic || strcmp(magic, DISKCACHE__MAGIC) != 0 || !version ||
      strcmp(version, DISKCACHE__FORMAT) != 0) {
    rc = diskcache__fail(
        err, -EBADMSG, "not a slyced cache file of version " DISKCACHE__FORMAT);
  } else if (!key || strcmp(key, l->key) != 0) {
    rc = diskcache__fail(err, -EBADMSG, "holds key '%.40s', not '%s'",
                         key ? key : "(none)", l->key);
  } else if (!bytes || strcmp(bytes, want_bytes) != 0) {
    rc = diskcache__fail(err, -EBADMSG,
                         "holds %.24s blob bytes, the layout has %s",
                         bytes ? bytes : "(none)", want_bytes);
  } else if (dc_parse_hex64(check, &claimed) != 0) {
    rc = diskcache__fail(err, -EBADMSG, "bad checksum field");
  } else if (h.n_tensors != plan->n) {
    rc = diskcache__fail(err, -EBADMSG,
                         "layout mismatch: %zu tensors with padding, "
                         "the layout makes %zu",
                         h.n_tensors, plan->n);
  }
  /* Both lists are in data order (st_header_parse sorts by range, then
   * name; the plan is built in the same order), so they match pairwise. */
  for (size_t i = 0; rc == 0 && i < plan->n; i++) {
    const diskcache__slot *s = &plan->slots[i];
    const st_tensor *t = &h.tensors[i];
    const diskcache_entry *e = s->entry;
    bool same = strcmp(t->name, diskcache__slot_name(s)) == 0 &&
                t->begin == s->begin && t->end == s->end &&
                t->dtype == (e ? e->dtype : PROTO_DTYPE_UINT8) &&
                t->ndim == (e ? e->ndim : 1);
    for (uint32_t d = 0; same && d < t->ndim; d++)
      same = t->shape[d] == (e ? e->shape[d] : s->end - s->begin);
    if (!same)
      rc = diskcache__fail(err, -EBADMSG,
                           "layout mismatch at tensor '%.64s' "
                           "(file has '%.64s')",
                           diskcache__slot_name(s), t->name);
  }
  if (rc == 0) {
    *sum = claimed;
    *data_off = expect_len;
  }
out:
  st_header_free(&h);
  if (region != block)
    free(region);
  return rc;
}

/* Deletes `name` if it is still the file `fd` has open: a writer may have
 * renamed a fresh file over it since. */
static void dc_unlink_if_same(int dirfd, const char *name, int fd) {
  struct stat a, b;
  if (fstat(fd, &a) == 0 &&
      fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
      a.st_dev == b.st_dev && a.st_ino == b.st_ino)
    unlinkat(dirfd, name, 0);
}

/* A plan and the header length it makes; shared by read and write. The
 * caller frees plan->slots. */
static int dc_prepare(const diskcache_layout *l, diskcache__plan *plan,
                      uint64_t *header_len, char err[DISKCACHE_ERROR_MAX]) {
  if (!l || !diskcache__key_ok(l->key))
    return diskcache__fail(err, -EINVAL, "bad cache key");
  int r = diskcache__plan_make(l, plan, err);
  if (r != 0)
    return r;
  char *hdr = NULL;
  if (diskcache__header_make(l, plan, 0, &hdr, header_len) != 0) {
    free(plan->slots);
    return diskcache__fail(err, -ENOMEM, "out of memory");
  }
  free(hdr);
  return 0;
}

/* Lands the blob in dst chunk by chunk: on its own thread when there is
 * more than one chunk, so that the disk, the checksum and the caller's work
 * on each chunk (a copy to the GPU) all run at once. */
typedef struct {
  int fd;
  bool direct;
  uint8_t *dst, *block;
  uint64_t bytes, data_off;
  size_t chunk;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t landed;   /* bytes of dst filled, in order; under mu */
  int rc;            /* a negative errno, or -EBADMSG: truncated; under mu */
  uint64_t short_at; /* where the file ended early; under mu */
  bool stop;         /* the consumer gave up; under mu */
} dc_reader;

static void *dc_reader_run(void *arg) {
  dc_reader *r = arg;
  /* Whole blocks straight into dst; the last partial block through
   * `block`, since O_DIRECT reads whole blocks. */
  uint64_t whole = r->bytes & ~(uint64_t)(DISKCACHE_ALIGN - 1);
  for (uint64_t pos = 0; pos < r->bytes;) {
    bool tail = pos == whole;
    size_t want =
        tail ? (size_t)(r->bytes - pos)
             : (size_t)(whole - pos < r->chunk ? whole - pos : r->chunk);
    int inj = pos == 0 ? faults_take(FAULT_DISK_READ) : 0;
    ssize_t n = inj ? -inj
                    : dc_pread(r->fd, tail ? r->block : r->dst + pos,
                               tail ? DISKCACHE_ALIGN : want,
                               r->data_off + pos, &r->direct);
    int rc = n < 0 ? (int)n : (size_t)n < want ? -EBADMSG : 0;
    if (rc == 0 && tail)
      memcpy(r->dst + pos, r->block, want);
    pthread_mutex_lock(&r->mu);
    if (rc == 0) {
      pos += want;
      r->landed = pos;
    } else {
      r->rc = rc;
      r->short_at = pos + (n > 0 ? (uint64_t)n : 0);
    }
    bool stop = r->stop || rc != 0;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (stop)
      break;
  }
  return NULL;
}

/* Runs the reader, hashing and handing on what lands. Returns 0, a
 * negative errno (the reader's or on_chunk's) with err, and sets *bad when
 * the file is torn or corrupt. */
static int dc_read_data(dc_reader *r, uint64_t sum, diskcache_chunk_fn on_chunk,
                        void *arg, bool *bad, char err[DISKCACHE_ERROR_MAX]) {
  pthread_t th;
  bool threaded =
      r->bytes > r->chunk && pthread_create(&th, NULL, dc_reader_run, r) == 0;
  if (!threaded)
    dc_reader_run(r);
  xxh64_state hs;
  xxh64_init(&hs, 0);
  uint64_t hashed = 0;
  int rc = 0;
  while (rc == 0 && hashed < r->bytes) {
    pthread_mutex_lock(&r->mu);
    while (r->landed == hashed && r->rc == 0)
      pthread_cond_wait(&r->cv, &r->mu);
    uint64_t landed = r->landed, short_at = r->short_at;
    int reader_rc = r->rc;
    pthread_mutex_unlock(&r->mu);
    if (landed > hashed) {
      xxh64_update(&hs, r->dst + hashed, (size_t)(landed - hashed));
      if (on_chunk && (rc = on_chunk(arg, hashed, (size_t)(landed - hashed))))
        diskcache__fail(err, rc, "stopped by the caller: %s", strerror(-rc));
      hashed = landed;
    } else if (reader_rc == -EBADMSG) {
      *bad = true;
      rc = diskcache__fail(err, -EBADMSG,
                           "truncated while being read at %" PRIu64, short_at);
    } else {
      rc = diskcache__fail(err, reader_rc, "read: %s", strerror(-reader_rc));
    }
  }
  if (threaded) {
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_mutex_unlock(&r->mu);
    pthread_join(th, NULL);
  }
  if (rc != 0)
    return rc;
  uint64_t got = xxh64_digest(&hs);
  if (got != sum) {
    *bad = true;
    return diskcache__fail(err, -EBADMSG,
                           "checksum mismatch: file says %016" PRIx64
                           ", data hashes to %016" PRIx64,
                           sum, got);
  }
  return 0;
}

int diskcache_read_chunks(const char *dir, const diskcache_layout *layout,
                          void *dst, size_t chunk, diskcache_chunk_fn on_chunk,
                          void *arg, char err[DISKCACHE_ERROR_MAX]) {
  if (chunk == 0)
    chunk = DC_DEFAULT_CHUNK;
  if (!dir || chunk % DISKCACHE_ALIGN != 0 ||
      (!dst && layout && layout->blob_bytes))
    return diskcache__fail(err, -EINVAL, "bad arguments");
  diskcache__plan plan;
  uint64_t header_len = 0;
  int rc = dc_prepare(layout, &plan, &header_len, err);
  if (rc != 0)
    return rc;
  char name[DISKCACHE_KEY_HEX + sizeof(DC_SUFFIX)];
  snprintf(name, sizeof(name), "%s" DC_SUFFIX, layout->key);
  int dirfd = -1, fd = -1;
  uint8_t *block = NULL;
  bool bad = false;
  dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    rc = diskcache__fail(err, -errno, "open %.128s: %s", dir, strerror(errno));
    goto out;
  }
  /* O_DIRECT needs an aligned buffer; a caller without one still reads. */
  bool direct = ((uintptr_t)dst % DISKCACHE_ALIGN) == 0;
  int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
  fd = openat(dirfd, name, flags | (direct ? O_DIRECT : 0));
  if (fd < 0 && errno == EINVAL && direct) {
    direct = false;
    fd = openat(dirfd, name, flags);
  }
  if (fd < 0) {
    rc = diskcache__fail(err, -errno, "open %s: %s", name, strerror(errno));
    goto out;
  }
  void *p = NULL;
  if (posix_memalign(&p, DISKCACHE_ALIGN, DISKCACHE_ALIGN) != 0) {
    rc = diskcache__fail(err, -ENOMEM, "out of memory");
    goto out;
  }
  block = p;
  uint64_t sum = 0, data_off = 0;
  rc = dc_check_header(fd, layout, &plan, header_len, block, &direct, &sum,
                       &data_off, err);
  bad = rc == -EBADMSG;
  if (rc != 0)
    goto out;
  dc_reader r = {.fd = fd,
                 .direct = direct,
                 .dst = dst,
                 .block = block,
                 .bytes = layout->blob_bytes,
                 .data_off = data_off,
                 .chunk = chunk,
                 .mu = PTHREAD_MUTEX_INITIALIZER,
                 .cv = PTHREAD_COND_INITIALIZER};
  rc = dc_read_data(&r, sum, on_chunk, arg, &bad, err);
  pthread_cond_destroy(&r.cv);
  pthread_mutex_destroy(&r.mu);
out:
  if (bad)
    dc_unlink_if_same(dirfd, name, fd);
  if (fd >= 0)
    close(fd);
  if (dirfd >= 0)
    close(dirfd);
  free(block);
  free(plan.slots);
  return rc;
}

int diskcache_read(const char *dir, const diskcache_layout *layout, void *dst,
                   size_t chunk, char err[DISKCACHE_ERROR_MAX]) {
  return diskcache_read_chunks(dir, layout, dst, chunk, NULL, NULL, err);
}

/* ---- writing ---------------------------------------------------------- */

static int dc_pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off) {
  uint64_t done = 0;
  while (done < len) {
    size_t n = len - done < DC_WRITE_MAX ? (size_t)(len - done) : DC_WRITE_MAX;
    ssize_t r = pwrite(fd, (const char *)buf + done, n, (off_t)(off + done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -errno;
    if (r == 0)
      return -EIO;
    done += (uint64_t)r;
  }
  return 0;
}

/* Whether `name` already holds this layout with checksum `sum` (the data
 * itself is checked by every read). */
static bool dc_existing_ok(int dirfd, const char *name,
                           const diskcache_layout *l,
                           const diskcache__plan *plan, uint64_t header_len,
                           uint64_t sum) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return false;
  void *block = NULL;
  bool ok = false, direct = false;
  uint64_t got = 0, off = 0;
  char why[DISKCACHE_ERROR_MAX];
  if (posix_memalign(&block, DISKCACHE_ALIGN, DISKCACHE_ALIGN) == 0)
    ok = dc_check_header(fd, l, plan, header_len, block, &direct, &got, &off,
                         why) == 0 &&
         got == sum;
  free(block);
  close(fd);
  return ok;
}

/* Creates and locks a fresh temp file. Returns its fd with its name in
 * `tmp`, or a negative errno. */
static int dc_tmp_open(int dirfd, const char *key, char *tmp, size_t cap) {
  for (int i = 0; i < DC_TMP_TRIES; i++) {
    snprintf(tmp, cap, "%s" DC_TMP "%ld.%" PRIuFAST64, key, (long)getpid(),
             atomic_fetch_add(&dc_tmp_counter, 1));
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0 && errno == EEXIST)
      continue;
    if (fd < 0)
      return -errno;
    if (flock(fd, LOCK_EX) != 0) {
      int e = -errno;
      unlinkat(dirfd, tmp, 0);
      close(fd);
      return e;
    }
    struct stat st;
    /* A sweep may have taken it between the open and the lock. */
    if (fstat(fd, &st) == 0 && st.st_nlink > 0)
      return fd;
    close(fd);
  }
  return -EEXIST;
}

int diskcache_write(const char *dir, const diskcache_layout *layout,
                    const void *blob, char err[DISKCACHE_ERROR_MAX]) {
  if (!dir || (!blob && layout && layout->blob_bytes))
    return diskcache__fail(err, -EINVAL, "bad arguments");
  diskcache__plan plan;
  uint64_t header_len = 0;
  int rc = dc_prepare(layout, &plan, &header_len, err);
  if (rc != 0)
    return rc;
  uint64_t sum = xxh64(blob, (size_t)layout->blob_bytes, 0);
  char *hdr = NULL;
  int dirfd = -1, fd = -1;
  char name[DISKCACHE_KEY_HEX + sizeof(DC_SUFFIX)];
  char tmp[DISKCACHE_KEY_HEX + sizeof(DC_TMP) + 48];
  tmp[0] = '\0';
  snprintf(name, sizeof(name), "%s" DC_SUFFIX, layout->key);
  if (diskcache__header_make(layout, &plan, sum, &hdr, &header_len) != 0) {
    rc = diskcache__fail(err, -ENOMEM, "out of memory");
    goto out;
  }
  /* Never write a file this module could not read back. */
  st_header check;
  char why[ST_ERROR_MAX];
  if (st_header_parse(hdr + 8, header_len - 8, header_len + layout->blob_bytes,
                      &check, why) != 0) {
    rc = diskcache__fail(err, -EINVAL, "layout is not valid safetensors: %s",
                         why);
    goto out;
  }
  st_header_free(&check);
  dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    rc = diskcache__fail(err, -errno, "open %.128s: %s", dir, strerror(errno));
    goto out;
  }
  if (dc_existing_ok(dirfd, name, layout, &plan, header_len, sum))
    goto out;
  fd = dc_tmp_open(dirfd, layout->key, tmp, sizeof(tmp));
  if (fd < 0) {
    rc = diskcache__fail(err, fd, "create temp file in %.128s: %s", dir,
                         strerror(-fd));
    tmp[0] = '\0';
    goto out;
  }
  /* The injected fault strikes after the header, as a full disk would. */
  if ((rc = dc_pwrite_all(fd, hdr, header_len, 0)) != 0 ||
      (rc = -faults_take(FAULT_DISK_WRITE)) != 0 ||
      (rc = dc_pwrite_all(fd, blob, layout->blob_bytes, header_len)) != 0) {
    diskcache__fail(err, rc, "write %s: %s", tmp, strerror(-rc));
    goto out;
  }
  if (fsync(fd) != 0) {
    rc = diskcache__fail(err, -errno, "fsync %s: %s", tmp, strerror(errno));
    goto out;
  }
  /* Reads bypass the page cache; the written copy would be dead weight. */
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (renameat(dirfd, tmp, dirfd, name) != 0) {
    rc = diskcache__fail(err, -errno, "rename %s: %s", tmp, strerror(errno));
    goto out;
  }
  tmp[0] = '\0';
  if (fsync(dirfd) != 0) {
    rc = diskcache__fail(err, -errno, "fsync %.128s: %s", dir, strerror(errno));
    unlinkat(dirfd, name, 0);
  }
out:
  if (rc != 0 && tmp[0])
    unlinkat(dirfd, tmp, 0);
  /* After the rename: closing drops the lock that guards the temp name. */
  if (fd >= 0)
    close(fd);
  if (dirfd >= 0)
    close(dirfd);
  free(hdr);
  free(plan.slots);
  return rc;
}

/* ---- the folder ------------------------------------------------------- */

int diskcache_exists(const char *dir, const char *key) {
  if (!dir || !diskcache__key_ok(key))
    return 0;
  char path[PATH_MAX];
  int n = snprintf(path, sizeof(path), "%s/%s" DC_SUFFIX, dir, key);
  struct stat st;
  return n > 0 && (size_t)n < sizeof(path) && stat(path, &st) == 0 &&
         S_ISREG(st.st_mode);
}

static bool dc_is_tmp_name(const char *name) {
  char key[DISKCACHE_KEY_HEX + 1];
  if (strlen(name) <= DISKCACHE_KEY_HEX + strlen(DC_TMP))
    return false;
  memcpy(key, name, DISKCACHE_KEY_HEX);
  key[DISKCACHE_KEY_HEX] = '\0';
  return diskcache__key_ok(key) &&
         strncmp(name + DISKCACHE_KEY_HEX, DC_TMP, strlen(DC_TMP)) == 0;
}

/* Returns how many temp files it removed, or a negative errno when the
 * folder cannot be read. */
int diskcache_sweep(const char *dir) {
  DIR *d = dir ? opendir(dir) : NULL;
  if (!d)
    return dir ? -errno : -EINVAL;
  int removed = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!dc_is_tmp_name(e->d_name))
      continue;
    int fd = openat(dirfd(d), e->d_name,
                    O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
      continue;
    struct stat st;
    /* A live writer holds the lock: its file is not debris. */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        unlinkat(dirfd(d), e->d_name, 0) == 0)
      removed++;
    close(fd);
  }
  closedir(d);
  return removed;
}
