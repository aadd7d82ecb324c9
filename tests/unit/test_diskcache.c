/* test_diskcache.c — the disk tier's files: a slice's blob goes out as a
 * valid, 4096-aligned safetensors file and comes back byte for byte; every
 * torn, truncated, corrupted, garbled or mismatched file is a miss that
 * deletes it; a full disk leaves nothing behind; kill -9 in the middle of a
 * write never leaves a file a reader would accept; and the key changes with
 * every input that decides the blob's bytes.
 */
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "diskcache_util.h"
#include "safetensors.h"
#include "xxhash.h"

char dir[256];
char err[DISKCACHE_ERROR_MAX];

TestSuite(diskcache, .init = setup, .fini = teardown, .timeout = 240);

/* ---- xxh64 ------------------------------------------------------------ */

Test(diskcache, xxh64_matches_the_reference_vectors) {
  cr_assert_eq(diskcache_xxh64("", 0), 0xEF46DB3751D8E999ull);
  cr_assert_eq(diskcache_xxh64("a", 1), 0xD24EC4F1A98C6E5Bull);
  cr_assert_eq(diskcache_xxh64("abc", 3), 0x44BC2CF5AD770999ull);
  /* Reference values from the xxhash package for b[i] = i * 31 + 7: every
   * path (under 4 bytes, under 32, one stripe, stripes and tail, seeds). */
  uint8_t b[1000];
  for (int i = 0; i < 1000; i++)
    b[i] = (uint8_t)(i * 31 + 7);
  cr_assert_eq(xxh64(b, 3, 0), 0x56e6957632a487f9ull);
  cr_assert_eq(xxh64(b, 31, 1), 0xd7ac4f4bea4e460aull);
  cr_assert_eq(xxh64(b, 32, 0), 0x8d57d6a4671cc43dull);
  cr_assert_eq(xxh64(b, 100, 0x9E3779B97F4A7C15ull), 0xbc7ab33be7528c18ull);
  cr_assert_eq(xxh64(b, 1000, 5), 0xd57bffb8c1ec8751ull);
}

Test(diskcache, xxh64_streams_in_any_pieces) {
  uint8_t b[5000];
  fill(b, sizeof(b), 42);
  uint64_t want = xxh64(b, sizeof(b), 7), s = 99;
  for (int trial = 0; trial < 50; trial++) {
    xxh64_state st;
    xxh64_init(&st, 7);
    for (size_t at = 0; at < sizeof(b);) {
      size_t n = rnd(&s) % 70;
      if (n > sizeof(b) - at)
        n = sizeof(b) - at;
      xxh64_update(&st, b + at, n);
      at += n;
    }
    cr_assert_eq(xxh64_digest(&st), want, "trial %d", trial);
  }
}

/* ---- round trips and the file format ---------------------------------- */

Test(diskcache, round_trip_of_odd_sized_tensors) {
  fixture *f = build(odd, N_ODD, 1);
  cr_assert_not(diskcache_exists(dir, f->l.key));
  writes(f);
  cr_assert(diskcache_exists(dir, f->l.key));
  reads_back(f, 0);
  reads_back(f, DISKCACHE_ALIGN); /* one block per chunk */
  reads_back(f, 3 * DISKCACHE_ALIGN);
  cr_assert_eq(count_files(".tmp."), 0);
  drop(f);
}

Test(diskcache, round_trip_over_many_chunks_with_a_partial_last_block) {
  const spec s[] = {{"a", PROTO_DTYPE_UINT8, 1, {(5u << 20) + 123}},
                    {"b", PROTO_DTYPE_FLOAT32, 1, {333}}};
  fixture *f = build(s, 2, 2);
  writes(f);
  reads_back(f, 1u << 20);
  reads_back(f, 0);
  drop(f);
}

/* What a chunk callback saw. */
typedef struct {
  const fixture *f;
  const uint8_t *dst;
  uint64_t next; /* where the next range must start */
  int calls, stop_after, stop_with;
} seen;

static int on_chunk(void *arg, uint64_t offset, size_t len) {
  seen *s = arg;
  cr_assert_eq(offset, s->next, "ranges come in order, without gaps");
  cr_assert_gt(len, 0);
  cr_assert(len % DISKCACHE_ALIGN == 0 || offset + len == s->f->l.blob_bytes,
            "whole blocks except at the end");
  cr_assert_eq(memcmp(s->dst + offset, s->f->blob + offset, len), 0,
               "the range has landed when the callback hears of it");
  s->next = offset + len;
  return ++s->calls == s->stop_after ? s->stop_with : 0;
}

Test(diskcache, chunk_callbacks_follow_the_read_in_order) {
  const spec s[] = {{"a", PROTO_DTYPE_UINT8, 1, {(9u << 20) + 77}}};
  fixture *f = build(s, 1, 21);
  writes(f);
  uint8_t *dst = aligned(f->l.blob_bytes);
  seen sn = {.f = f, .dst = dst};
  int r = diskcache_read_chunks(dir, &f->l, dst, 1u << 20, on_chunk, &sn, err);
  cr_assert_eq(r, 0, "%d %s", r, err);
  cr_assert_eq(sn.next, f->l.blob_bytes, "the ranges cover the blob");
  /* The caller may stop the read: its error comes back, the file stays.
   * At the first call, the only one sure to come: on a busy machine the
   * reader may land everything before the consumer hears of any of it. */
  memset(dst, 0, f->l.blob_bytes);
  sn = (seen){.f = f, .dst = dst, .stop_after = 1, .stop_with = -ECANCELED};
  r = diskcache_read_chunks(dir, &f->l, dst, 1u << 20, on_chunk, &sn, err);
  cr_assert_eq(r, -ECANCELED, "%d %s", r, err);
  cr_assert_eq(sn.calls, 1);
  cr_assert(diskcache_exists(dir, f->l.key));
  /* Bytes handed on before a checksum failure are not blessed by it. */
  char path[PATH_MAX];
  path_of(path, f->l.key, "");
  uint8_t *last = &f->blob[f->l.blob_bytes - 1];
  *last ^= 1; /* the file's new byte, so that the callback's check holds */
  poke(path, 4096 + f->l.blob_bytes - 1, last, 1);
  memset(dst, 0, f->l.blob_bytes);
  sn = (seen){.f = f, .dst = dst};
  r = diskcache_read_chunks(dir, &f->l, dst, 1u << 20, on_chunk, &sn, err);
  cr_assert_eq(r, -EBADMSG, "%d %s", r, err);
  cr_assert_eq(sn.next, f->l.blob_bytes);
  cr_assert_not(diskcache_exists(dir, f->l.key));
  free(dst);
  drop(f);
}

Test(diskcache, round_trip_of_a_header_longer_than_one_block) {
  const spec proto = {"", PROTO_DTYPE_FLOAT32, 1, {0}};
  spec s[300];
  static char names[300][40];
  for (int i = 0; i < 300; i++) {
    s[i] = proto;
    snprintf(names[i], sizeof(names[i]), "layers.%d.attention.weight", i);
    s[i].name = names[i];
    s[i].shape[0] = (uint64_t)(i % 13) + 1;
  }
  fixture *f = build(s, 300, 3);
  writes(f);
  reads_back(f, 0);
  drop(f);
}

Test(diskcache, round_trip_of_an_empty_blob) {
  fixture *f = build(NULL, 0, 4);
  writes(f);
  cr_assert_eq(diskcache_read(dir, &f->l, NULL, 0, err), 0, "%s", err);
  drop(f);
}

Test(diskcache, unaligned_buffers_read_through_the_page_cache) {
  fixture *f = build(odd, N_ODD, 5);
  writes(f);
  uint8_t *buf = aligned(f->l.blob_bytes + 1);
  cr_assert_eq(read_into(f, buf + 1, 0), 0, "%s", err);
  cr_assert_eq(memcmp(buf + 1, f->blob, f->l.blob_bytes), 0);
  free(buf);
  drop(f);
}

Test(diskcache, the_file_is_safetensors_with_aligned_data) {
  fixture *f = build(odd, N_ODD, 6);
  writes(f);
  char path[PATH_MAX];
  path_of(path, f->l.key, "");
  uint64_t len = 0;
  uint8_t *file = slurp(path, &len);
  uint64_t hl = 0;
  char why[ST_ERROR_MAX];
  cr_assert_eq(st_header_len(file, len, &hl, why), 0, "%s", why);
  st_header h;
  cr_assert_eq(st_header_parse((char *)file + 8, hl, len, &h, why), 0, "%s",
               why);
  cr_assert_eq(h.data_offset % DISKCACHE_ALIGN, 0);
  cr_assert_eq(h.data_bytes, f->l.blob_bytes);
  cr_assert_str_eq(st_header_meta(&h, "slyced.magic"), "slyced-cache");
  cr_assert_str_eq(st_header_meta(&h, "slyced.version"), "1");
  cr_assert_str_eq(st_header_meta(&h, "slyced.key"), f->l.key);
  char want[32];
  snprintf(want, sizeof(want), "%llu", (unsigned long long)f->l.blob_bytes);
  cr_assert_str_eq(st_header_meta(&h, "slyced.bytes"), want);
  snprintf(want, sizeof(want), "%016llx",
           (unsigned long long)diskcache_xxh64(f->blob, f->l.blob_bytes));
  cr_assert_str_eq(st_header_meta(&h, "slyced.checksum"), want);
  size_t pads = 0;
  for (size_t i = 0; i < h.n_tensors; i++) {
    const st_tensor *t = &h.tensors[i];
    if (strncmp(t->name, "__pad_", 6) == 0) {
      cr_assert_eq(t->dtype, PROTO_DTYPE_UINT8);
      cr_assert_eq(t->ndim, 1);
      pads++;
    }
  }
  cr_assert_eq(h.n_tensors, N_ODD + pads);
  for (size_t i = 0; i < N_ODD; i++) {
    const diskcache_entry *e = &f->e[i];
    const st_tensor *t = st_header_find(&h, e->name);
    cr_assert_not_null(t, "%s missing", e->name);
    cr_assert_eq((h.data_offset + t->begin) % DISKCACHE_ALIGN, 0, "%s",
                 e->name);
    cr_assert_eq(t->dtype, e->dtype);
    cr_assert_eq(t->ndim, e->ndim);
    for (uint32_t d = 0; d < e->ndim; d++)
      cr_assert_eq(t->shape[d], e->shape[d]);
    cr_assert_eq(
        memcmp(file + h.data_offset + t->begin, f->blob + e->offset, e->nbytes),
        0, "%s bytes", e->name);
  }
  st_header_free(&h);
  free(file);
  drop(f);
}

Test(diskcache, a_missing_file_is_a_miss) {
  fixture *f = build(odd, N_ODD, 7);
  uint8_t *dst = aligned(f->l.blob_bytes);
  cr_assert_eq(read_into(f, dst, 0), -ENOENT);
  cr_assert_not(diskcache_exists(dir, f->l.key));
  free(dst);
  drop(f);
}

Test(diskcache, writing_keeps_an_existing_valid_file) {
  fixture *f = build(odd, N_ODD, 8);
  writes(f);
  char path[PATH_MAX];
  path_of(path, f->l.key, "");
  struct stat a, b;
  cr_assert_eq(stat(path, &a), 0);
  writes(f);
  cr_assert_eq(stat(path, &b), 0);
  cr_assert_eq(a.st_ino, b.st_ino, "a valid file must not be rewritten");
  /* A file with a bad header is replaced. */
  poke(path, 10, "xx", 2);
  writes(f);
  cr_assert_eq(stat(path, &b), 0);
  cr_assert_neq(a.st_ino, b.st_ino);
  reads_back(f, 0);
  drop(f);
}

/* ---- files that must never be used ------------------------------------ */

Test(diskcache, a_corrupted_data_byte_is_caught_by_the_checksum) {
  fixture *f = build(odd, N_ODD, 9);
  char path[PATH_MAX];
  path_of(path, f->l.key, "");
  /* In a tensor, in padding, in the last byte. */
  uint64_t at[] = {f->e[2].offset + 17, f->e[0].nbytes + 5,
                   f->l.blob_bytes - 1};
  for (size_t i = 0; i < 3; i++) {
    writes(f);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    uint64_t data = (uint64_t)st.st_size - f->l.blob_bytes;
    uint8_t flip = f->blob[at[i]] ^ 0x40;
    poke(path, data + at[i], &flip, 1);
    rejects(f, "checksum mismatch");
  }
  /* The buffered path checks too. */
  writes(f);
  poke(path, (uint64_t)4096 + 3, "\x7f", 1);
  uint8_t *buf = aligned(f->l.blob_bytes + 8);
  cr_assert_eq(read_into(f, buf + 8, 0), -EBADMSG);
  cr_assert_not(diskcache_exists(dir, f->l.key));
  free(buf);
  drop(f);
}

Test(diskcache, a_truncated_file_is_rejected) {
  fixture *f = build(odd, N_ODD, 10);
  char path[PATH_MAX];
  path_of(path, f->l.key, "");
  writes(f);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  off_t full = st.st_size;
  off_t cuts[] = {0, 7, 100, 4096, 4097, full - 4096, full - 1};
  for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
    writes(f);
    cr_assert_eq(truncate(path, cuts[i]), 0);
    rejects(f, "truncated");
  }
  /* Grown is no better than shrunk. */
  writes(f);
  cr_assert_eq(truncate(path, full + 1), 0);
  rejects(f, "the layout needs");
  drop(f);
}

Test(diskcache, a_garbage_header_is_rejected) {
  fixture *f = build(odd, N_ODD, 11);
  char path[PATH_MAX];
  path_of(path, f->l.key, "");
  writes(f);
  uint8_t junk[4096];
  fill(junk, sizeof(junk), 5);
  poke(path, 0, junk, sizeof(junk));
  rejects(f, "header");
  /* A valid length but broken JSON. */
  writes(f);
  poke(path, 8, "[", 1);
  rejects(f, "header");
  /* Valid JSON of another format. */
  writes(f);
  poke(path, 8 + 36, "X", 1); /* inside "slyced-cache" */
  rejects(f, "not a slyced cache file");
  drop(f);
}

Test(diskcache, a_file_holding_another_key_is_rejected) {
  fixture *f = build(odd, N_ODD, 12);
  writes(f);
  char from[PATH_MAX], to[PATH_MAX];
  path_of(from, f->l.key, "");
  diskcache_key("linear", "{\"in\":4}", 0, 0, &f->l, "2.11.0", f->l.key);
  path_of(to, f->l.key, "");
  cr_assert_eq(rename(from, to), 0);
  rejects(f, "holds key");
  drop(f);
}

Test(diskcache, a_file_of_another_layout_is_rejected) {
  fixture *f = build(odd, N_ODD, 13);
  /* Same key and sizes, a different claim each time. */
  struct {
    size_t i;
    uint32_t ndim;
    uint64_t s0, s1;
    proto_dtype dt;
  } lies[] = {{0, 2, 5, 3, PROTO_DTYPE_FLOAT32},
              {0, 2, 3, 5, PROTO_DTYPE_INT32},
              {0, 1, 15, 0, PROTO_DTYPE_FLOAT32}};
  for (size_t k = 0; k < 3; k++) {
    writes(f);
    diskcache_entry saved = f->e[lies[k].i];
    diskcache_entry *e = &f->e[lies[k].i];
    e->ndim = lies[k].ndim, e->shape[0] = lies[k].s0;
    e->shape[1] = lies[k].s1, e->dtype = lies[k].dt;
    rejects(f, "mismatch");
    *e = saved;
  }
  /* A tensor moved by one block (the blob grows by one block). */
  writes(f);
  fixture *g = build(odd, N_ODD, 13);
  memcpy(g->l.key, f->l.key, sizeof(g->l.key));
  g->e[N_ODD - 1].offset += DISKCACHE_ALIGN;
  g->l.blob_bytes += DISKCACHE_ALIGN;
  rejects(g, "");
  drop(g);
  drop(f);
}

/* ---- failures while writing ------------------------------------------- */

Test(diskcache, invalid_layouts_are_refused_before_any_file_exists) {
  fixture *f = build(odd, N_ODD, 14);
  diskcache_entry saved = f->e[1];
  f->e[1].offset += 8; /* unaligned */
  cr_assert_eq(diskcache_write(dir, &f->l, f->blob, err), -EINVAL);
  f->e[1] = saved;
  f->e[1].offset = f->e[0].offset; /* overlapping */
  cr_assert_eq(diskcache_write(dir, &f->l, f->blob, err), -EINVAL);
  f->e[1] = saved;
  f->e[1].nbytes++; /* disagrees with dtype and shape */
  cr_assert_eq(diskcache_write(dir, &f->l, f->blob, err), -EINVAL);
  f->e[1] = saved;
  f->e[1].name = "__pad_0"; /* reserved */
  cr_assert_eq(diskcache_write(dir, &f->l, f->blob, err), -EINVAL);
  f->e[1] = saved;
  f->e[1].name = "bad\xff"; /* not UTF-8: the header could not be read back */
  cr_assert_eq(diskcache_write(dir, &f->l, f->blob, err), -EINVAL);
  f->e[1] = saved;
  strcpy(f->l.key, "../../../../../../../../tmp/evil"); /* 32 bytes */
  cr_assert_eq(diskcache_write(dir, &f->l, f->blob, err), -EINVAL);
  cr_assert_eq(diskcache_read(dir, &f->l, f->blob, 0, err), -EINVAL);
  cr_assert_not(diskcache_exists(dir, f->l.key));
  rekey(f);
  cr_assert_eq(diskcache_read(dir, &f->l, f->blob, 1000, err), -EINVAL,
               "chunks are whole blocks");
  cr_assert_eq(count_files(""), 0);
  drop(f);
}

Test(diskcache, a_write_past_the_file_size_limit_leaves_nothing) {
  const spec s[] = {{"w", PROTO_DTYPE_UINT8, 1, {1u << 20}}};
  fixture *f = build(s, 1, 15);
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = {64 << 10, 64 << 10};
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  int r = diskcache_write(dir, &f->l, f->blob, err);
  cr_assert_eq(r, -EFBIG, "got %d: %s", r, err);
  cr_assert_eq(count_files(""), 0, "no file and no temp file");
  drop(f);
}

Test(diskcache, a_full_disk_leaves_nothing) {
  char mnt[PATH_MAX];
  snprintf(mnt, sizeof(mnt), "%s/small", dir);
  cr_assert_eq(mkdir(mnt, 0700), 0);
  /* A private mount namespace: the mount dies with this test's process. */
  if (unshare(CLONE_NEWNS) != 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0)
    cr_skip_test("cannot mount a small tmpfs here: %s", strerror(errno));
  const spec s[] = {{"w", PROTO_DTYPE_UINT8, 1, {3u << 20}}};
  fixture *f = build(s, 1, 16);
  int r = diskcache_write(mnt, &f->l, f->blob, err);
  cr_assert_eq(r, -ENOSPC, "got %d: %s", r, err);
  DIR *d = opendir(mnt);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  cr_assert_eq(n, 0, "no file and no temp file");
  /* The same folder takes a blob that fits. */
  const spec small[] = {{"w", PROTO_DTYPE_UINT8, 1, {100000}}};
  fixture *g = build(small, 1, 17);
  cr_assert_eq(diskcache_write(mnt, &g->l, g->blob, err), 0, "%s", err);
  uint8_t *dst = aligned(g->l.blob_bytes);
  cr_assert_eq(diskcache_read(mnt, &g->l, dst, 0, err), 0, "%s", err);
  cr_assert_eq(memcmp(dst, g->blob, g->l.blob_bytes), 0);
  free(dst);
  cr_assert_eq(umount(mnt), 0);
  drop(g);
  drop(f);
}

/* ---- crashes and the sweep -------------------------------------------- */

Test(diskcache, sweep_removes_dead_temp_files_only) {
  fixture *f = build(odd, N_ODD, 18);
  writes(f);
  char dead[PATH_MAX], live[PATH_MAX], other[PATH_MAX];
  path_of(dead, f->l.key, ".tmp.999999.0");
  path_of(live, f->l.key, ".tmp.999999.1");
  snprintf(other, sizeof(other), "%s/notes.tmp.1", dir);
  int fds[3];
  fds[0] = open(dead, O_CREAT | O_WRONLY, 0600);
  fds[1] = open(live, O_CREAT | O_WRONLY, 0600);
  fds[2] = open(other, O_CREAT | O_WRONLY, 0600);
  cr_assert(fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0);
  close(fds[0]);
  close(fds[2]);
  /* The lock a writer holds while it writes. */
  cr_assert_eq(flock(fds[1], LOCK_EX), 0);
  cr_assert_eq(diskcache_sweep(dir), 1);
  cr_assert_eq(access(dead, F_OK), -1);
  cr_assert_eq(access(live, F_OK), 0, "a temp file being written stays");
  cr_assert_eq(access(other, F_OK), 0, "files not ours stay");
  cr_assert(diskcache_exists(dir, f->l.key));
  close(fds[1]);
  cr_assert_eq(diskcache_sweep(dir), 1);
  cr_assert_eq(count_files(".safetensors.tmp."), 0);
  reads_back(f, 0);
  drop(f);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static pid_t spawn_writer(const fixture *f) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0)
    _exit(diskcache_write(dir, &f->l, f->blob, NULL) == 0 ? 0 : 1);
  return pid;
}

/* Size of the one temp file in dir, or -1 when there is none. */
static off_t temp_size(char *name_out) {
  DIR *d = opendir(dir);
  off_t size = -1;
  for (struct dirent *e; d && (e = readdir(d));)
    if (strstr(e->d_name, ".safetensors.tmp.")) {
      struct stat st;
      snprintf(name_out, PATH_MAX, "%s/%s", dir, e->d_name);
      if (stat(name_out, &st) == 0)
        size = st.st_size;
    }
  if (d)
    closedir(d);
  return size;
}

/* After a writer died: the folder holds no file for the key or a valid
 * one, never one a read accepts with wrong bytes; a torn temp file, put in
 * place of the real one, is rejected; the sweep clears every temp file.
 * Returns whether the temp file was torn. */
static bool check_after_kill(const fixture *f, uint64_t full, uint8_t *dst) {
  char final[PATH_MAX], tmp[PATH_MAX];
  path_of(final, f->l.key, "");
  int r = read_into(f, dst, 0);
  if (r == 0)
    cr_assert_eq(memcmp(dst, f->blob, f->l.blob_bytes), 0);
  else
    cr_assert_eq(r, -ENOENT, "a dead writer's file: %d %s", r, err);
  unlink(final);
  off_t size = temp_size(tmp);
  bool torn = size >= 0 && (uint64_t)size < full;
  if (size >= 0)
    cr_assert_eq(link(tmp, final), 0, "%s", strerror(errno));
  cr_assert_eq(diskcache_sweep(dir), size >= 0 ? 1 : 0);
  cr_assert_eq(count_files(".tmp."), 0);
  if (size < 0)
    return false;
  r = read_into(f, dst, 0);
  if (torn)
    cr_assert_eq(r, -EBADMSG, "torn file of %lld bytes: %d %s", (long long)size,
                 r, err);
  else if (r == 0) /* complete, killed before the rename */
    cr_assert_eq(memcmp(dst, f->blob, f->l.blob_bytes), 0);
  else
    cr_assert_eq(r, -EBADMSG, "%d %s", r, err);
  cr_assert_eq(access(final, F_OK) == 0, r == 0);
  unlink(final);
  return torn;
}

Test(diskcache, kill_9_mid_write_never_leaves_a_usable_torn_file) {
  const spec s[] = {{"big.weight", PROTO_DTYPE_FLOAT32, 2, {16384, 4096}},
                    {"big.bias", PROTO_DTYPE_UINT8, 1, {4099}}};
  fixture *f = build(s, 2, 19);
  uint8_t *dst = aligned(f->l.blob_bytes);
  double t0 = now_s();
  writes(f);
  double write_s = now_s() - t0;
  char final[PATH_MAX];
  path_of(final, f->l.key, "");
  struct stat st;
  cr_assert_eq(stat(final, &st), 0);
  uint64_t full = (uint64_t)st.st_size;
  unlink(final);
  uint64_t seed = (uint64_t)time(NULL);
  cr_log_info("kill -9 test: a write takes %.3f s, seed %llu", write_s,
              (unsigned long long)seed);
  int torn = 0;
  /* At random moments over the whole write... */
  for (int i = 0; i < 6; i++) {
    pid_t pid = spawn_writer(f);
    double frac = ((double)i + (double)(rnd(&seed) % 1000) / 1000.0) / 6.0;
    usleep((useconds_t)(frac * write_s * 1.2e6));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    torn += check_after_kill(f, full, dst);
  }
  /* ...and at moments seen to be mid-copy, so some kills surely tear. */
  for (int i = 0; i < 3; i++) {
    uint64_t at = full / 8 + rnd(&seed) % (full / 2);
    pid_t pid = spawn_writer(f);
    char tmp[PATH_MAX];
    double give_up = now_s() + 60;
    while (temp_size(tmp) < (off_t)at && now_s() < give_up)
      if (waitpid(pid, NULL, WNOHANG) == pid)
        break;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    torn += check_after_kill(f, full, dst);
  }
  cr_assert_geq(torn, 1, "no kill landed mid-write: the test proved nothing");
  free(dst);
  drop(f);
}

/* ---- the key ---------------------------------------------------------- */

Test(diskcache, the_key_changes_with_every_input_and_only_then) {
  fixture *f = build(odd, N_ODD, 20);
  const diskcache_layout *l = &f->l;
  char keys[16][DISKCACHE_KEY_HEX + 1];
  int n = 0;
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  char again[DISKCACHE_KEY_HEX + 1];
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", again);
  cr_assert_str_eq(keys[0], again, "stable for the same inputs");
  cr_assert_eq(strspn(again, "0123456789abcdef"), DISKCACHE_KEY_HEX);
  diskcache_key("linear", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  diskcache_key("mlp", "{\"a\":2}", 10, 20, l, "2.11.0", keys[n++]);
  diskcache_key("mlp", "{\"a\":1}", 11, 20, l, "2.11.0", keys[n++]);
  diskcache_key("mlp", "{\"a\":1}", 10, 21, l, "2.11.0", keys[n++]);
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.12.0", keys[n++]);
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, NULL, keys[n++]);
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "", keys[n++]);
  diskcache_key("ml", "p{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  /* The layout: a name, a dtype, a shape, an offset, the blob size. */
  diskcache_entry saved = f->e[3];
  f->e[3].name = "scale2";
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  f->e[3] = saved;
  f->e[3].dtype = PROTO_DTYPE_FLOAT16;
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  f->e[3] = saved;
  f->e[0].shape[0] = 5, f->e[0].shape[1] = 3;
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  f->e[0].shape[0] = 3, f->e[0].shape[1] = 5;
  f->e[6].offset += DISKCACHE_ALIGN;
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  f->e[6].offset -= DISKCACHE_ALIGN;
  f->l.blob_bytes++;
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  f->l.blob_bytes--;
  f->l.n_entries--;
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", keys[n++]);
  f->l.n_entries++;
  /* The key field of the layout itself is not an input. */
  memset(f->l.key, 'f', DISKCACHE_KEY_HEX);
  diskcache_key("mlp", "{\"a\":1}", 10, 20, l, "2.11.0", again);
  cr_assert_str_eq(keys[0], again);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      cr_assert_str_neq(keys[i], keys[j], "inputs %d and %d collide", i, j);
  drop(f);
}
