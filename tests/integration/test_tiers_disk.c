/* test_tiers_disk.c — the disk cache as DESIGN.md "Tiers" specifies: a
 * restarted daemon reuses valid files without touching them; a corrupted,
 * truncated or mismatched file is detected on read, logged, deleted and
 * rebuilt, with outputs still right; a file made for another config (a
 * changed seed) is never used; and kill -9 in the middle of writing a big
 * file leaves no torn file, only a temp file the next daemon sweeps. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"
#include "tierkit.h"

TestSuite(tiers_disk, .timeout = 60, .fini = tk_cleanup);

#define MAX_FILES 8

/* Name, inode, size and mtime of each cache file, in name order. */
typedef struct {
  int n;
  char name[MAX_FILES][TD_PATH_MAX + 1 + 256]; /* dir/entry: d_name is 256 */
  struct stat st[MAX_FILES];
} file_set;

static int by_name(const void *a, const void *b) {
  return strcmp(a, b);
}

static void files_of(const char *dir, file_set *fs) {
  memset(fs, 0, sizeof *fs);
  DIR *dd = opendir(dir);
  cr_assert(dd, "opendir %s: %s", dir, strerror(errno));
  struct dirent *e;
  while ((e = readdir(dd))) {
    size_t len = strlen(e->d_name);
    if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
      continue;
    cr_assert_lt(fs->n, MAX_FILES, "too many cache files");
    snprintf(fs->name[fs->n++], sizeof fs->name[0], "%s/%s", dir, e->d_name);
  }
  closedir(dd);
  qsort(fs->name, (size_t)fs->n, sizeof fs->name[0], by_name);
  for (int i = 0; i < fs->n; i++)
    cr_assert_eq(stat(fs->name[i], &fs->st[i]), 0, "stat %s", fs->name[i]);
}

static char *keys_cpu(int cpu_mb, const char *dir) {
  char *keys = NULL;
  cr_assert(asprintf(&keys, "\"max_cpu_mem_mb\": %d, \"disk_cache_path\": "
                     "\"%s\"", cpu_mb, dir) > 0, "out of memory");
  return keys;
}

static td *start_cpu(const tk_model *m, int cpu_mb, const char *dir) {
  char *keys = keys_cpu(cpu_mb, dir);
  td *d = tk_start(m, "cpu", keys);
  free(keys);
  return d;
}

static void four_slices(tk_model *m) {
  memset(m, 0, sizeof *m);
  for (int i = 0; i < 4; i++) {
    char name[8];
    snprintf(name, sizeof name, "r%d", i);
    tk_model_add(m, name, 1024, 40 + i); /* 8 MiB */
  }
  m->n_cfg = m->n_pipe = 4;
}

/* Daemon A writes every slice's file; returns the files it left. */
static void first_daemon(const tk_model *m, const tk_ref *ref, int cpu_mb,
                         const char *dir, file_set *fs) {
  td *a = start_cpu(m, cpu_mb, dir);
  tk_client k;
  tk_open(&k, a);
  if (m->n_pipe > 0)
    tk_forward_check(&k, NULL, "p", ref->pipe, "daemon A");
  for (size_t i = 0; i < m->n; i++) {
    char where[8];
    sly_error err;
    cr_assert_eq(sly_load(k.c, m->s[i].name, "disk", where, &err), 0, "%s",
                 err.message);
  }
  tk_close(&k);
  td_stop(a);
  files_of(dir, fs);
  cr_assert_eq(fs->n, (int)m->n, "daemon A left %d cache files, want %zu",
               fs->n, m->n);
}

Test(tiers_disk, a_restarted_daemon_reuses_valid_files_untouched) {
  tk_model m;
  four_slices(&m);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  file_set before, after;
  first_daemon(&m, ref, 20, dir, &before); /* 20 MiB: two of four fit */

  td *b = start_cpu(&m, 20, dir);
  tk_client k;
  tk_open(&k, b);
  for (int pass = 0; pass < 2; pass++)
    tk_forward_check(&k, NULL, "p", ref->pipe, "daemon B");
  tk_close(&k);
  char *log = tk_log(b);
  int found = tk_count_lines(log, "a cache file exists", NULL);
  cr_assert_geq(found, 4, "B did not find the files of all four slices");
  /* Seeded slices: the restart declares their layout and draws nothing. */
  cr_assert_eq(tk_count_lines(log, "a cache file exists",
                              "its weights come from there"), found,
               "B initialised a slice that its cache file holds:\n%s", log);
  cr_assert_gt(tk_count_lines(log, "from=disk to=cpu", NULL), 0,
               "B read nothing from the disk");
  cr_assert_eq(tk_count_lines(log, "from=cpu to=disk", NULL), 0,
               "B wrote a cache file again");
  cr_assert_eq(tk_count_lines(log, "building it again", NULL), 0,
               "B found a valid file bad");
  free(log);
  td_stop(b);
  files_of(dir, &after);
  cr_assert_eq(after.n, before.n, "%d files after B, %d before", after.n,
               before.n);
  for (int i = 0; i < after.n; i++) {
    cr_assert_str_eq(after.name[i], before.name[i], "file set changed");
    cr_assert(after.st[i].st_ino == before.st[i].st_ino &&
                  after.st[i].st_size == before.st[i].st_size &&
                  after.st[i].st_mtim.tv_sec == before.st[i].st_mtim.tv_sec &&
                  after.st[i].st_mtim.tv_nsec == before.st[i].st_mtim.tv_nsec,
              "%s was replaced or modified", after.name[i]);
  }
  tk_cache_remove(dir);
  free(ref);
}

/* "Reused without rebuilding" (issue 4): with room for every slice, B's
 * first use of each slice reads its file instead of building the weights
 * again and copying those. */
Test(tiers_disk, a_restarted_daemon_reads_each_slice_from_its_file) {
  tk_model m;
  four_slices(&m);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  file_set fs;
  first_daemon(&m, ref, 64, dir, &fs);
  td *b = start_cpu(&m, 64, dir);
  tk_client k;
  tk_open(&k, b);
  tk_forward_check(&k, NULL, "p", ref->pipe, "daemon B");
  tk_close(&k);
  char *log = tk_log(b);
  for (size_t i = 0; i < m.n; i++) {
    char needle[64];
    snprintf(needle, sizeof needle, "move slice=%s from=disk to=cpu",
             m.s[i].name);
    cr_assert_eq(tk_count_lines(log, needle, NULL), 1,
                 "B's first use of %s did not read its cache file (%zu "
                 "'%s' lines): the weights were built again", m.s[i].name,
                 tk_count_lines(log, needle, NULL), needle);
  }
  free(log);
  td_stop(b);
  tk_cache_remove(dir);
  free(ref);
}

/* A slice built while the host tier is held by pins finds no room and is
 * refused (NO_MEMORY), but its build is not lost: the cache file is written
 * from it before it goes, and every later try reads that file. Before, the
 * built module was thrown away, and each try built the slice again (twice
 * within the refused forward: on the loader, then on the executor). */
Test(tiers_disk, a_build_that_finds_no_room_keeps_its_cache_file) {
  tk_model m;
  memset(&m, 0, sizeof m);
  tk_model_add(&m, "a", 1024, 50); /* 8 MiB each: room for two */
  tk_model_add(&m, "b", 1024, 51);
  tk_model_add(&m, "c", 1024, 52);
  m.n_cfg = 3;
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  td *d = start_cpu(&m, 20, dir);
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  cr_assert_eq(sly_pin(k.c, "a", "cpu", &err), 0, "pin a: %s", err.message);
  cr_assert_eq(sly_pin(k.c, "b", "cpu", &err), 0, "pin b: %s", err.message);
  cr_assert_eq(tk_cache_files(dir), 2, "cache files after the pins");

  float out[TK_OUT_FLOATS];
  cr_assert_eq(tk_try_forward(&k, "c", NULL, out, &err), SLY_E_NO_MEMORY,
               "forward c with the host tier pinned full: %s", err.message);
  cr_assert_eq(tk_cache_files(dir), 3,
               "c was built, found no room, and left no cache file");
  tk_entry e;
  tk_where(k.c, "c", &e);
  cr_assert_str_eq(e.tier, "disk", "c after the refused forward");

  cr_assert_eq(sly_unpin(k.c, "a", &err), 0, "unpin: %s", err.message);
  tk_forward_check(&k, "c", NULL, ref->slice[2], "c once a was unpinned");
  tk_close(&k);
  char *log = tk_log(d);
  size_t builds = tk_count_lines(log, "slice c: built", NULL);
  size_t from_file =
      tk_count_lines(log, "slice c: built", "its weights come from there");
  cr_assert_eq(builds - from_file, 1,
               "c's weights were made %zu times, want once:\n%s",
               builds - from_file, log);
  cr_assert_geq(from_file, 1, "no later try of c read its cache file");
  cr_assert_eq(tk_count_lines(log, "move slice=c from=build to=disk", NULL), 1,
               "c's cache file was not written from its build");
  cr_assert_eq(tk_count_lines(log, "move slice=c from=disk to=cpu", NULL), 1,
               "c did not come in from its cache file");
  free(log);
  td_stop(d);
  tk_cache_remove(dir);
  free(ref);
}

static char *read_all(const char *path, size_t *len) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s", path);
  char *buf = malloc((size_t)st.st_size + 1);
  int fd = open(path, O_RDONLY);
  cr_assert(buf && fd >= 0, "open %s: %s", path, strerror(errno));
  size_t got = 0;
  ssize_t n;
  while (got < (size_t)st.st_size &&
         (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
    got += (size_t)n;
  close(fd);
  cr_assert_eq(got, (size_t)st.st_size, "short read of %s", path);
  *len = got;
  return buf;
}

typedef void (*damage_fn)(const char *path, uint64_t blob_bytes);

static void flip_data_byte(const char *path, uint64_t blob_bytes) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s", path);
  /* The data section is the file's last blob_bytes bytes; this byte is
   * inside the first weight matrix. */
  off_t at = st.st_size - (off_t)blob_bytes + 12345;
  int fd = open(path, O_RDWR);
  cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
  unsigned char b;
  cr_assert_eq(pread(fd, &b, 1, at), 1, "pread");
  b ^= 0x10;
  cr_assert_eq(pwrite(fd, &b, 1, at), 1, "pwrite");
  close(fd);
}

static void truncate_half(const char *path, uint64_t blob_bytes) {
  (void)blob_bytes;
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s", path);
  cr_assert_eq(truncate(path, st.st_size / 2), 0, "truncate: %s",
               strerror(errno));
}

/* Puts slice a in its file only, damages the file, and runs a: the damage
 * is found on read, logged, the file deleted and rebuilt, the output right,
 * and the new file good on the next read. */
static void damaged_file_is_rebuilt(damage_fn damage) {
  tk_model m = {0};
  tk_model_add(&m, "a", 1024, 7);
  m.n_cfg = 1;
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  td *d = start_cpu(&m, 64, dir);
  tk_client k;
  tk_open(&k, d);
  char where[8], path[TD_PATH_MAX + 64];
  sly_error err;
  cr_assert_eq(sly_load(k.c, "a", "disk", where, &err), 0, "%s", err.message);
  cr_assert_eq(sly_evict(k.c, "a", "disk", where, &err), 0, "%s", err.message);
  cr_assert_str_eq(where, "disk", "a is at %s after evict disk", where);
  tk_cache_only(dir, path);
  size_t len;
  char *good = read_all(path, &len);
  damage(path, tk_slice_bytes(&m.s[0]));

  tk_forward_check(&k, "a", NULL, ref->slice[0], "a from a damaged file");
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "slice a: cache file", "building it again"),
               1, "the damage was not logged");
  cr_assert_eq(tk_count_lines(log, "move slice=a from=cpu to=disk", NULL), 2,
               "the file was not written again");
  free(log);
  /* The same weights make the same file. */
  tk_cache_only(dir, path);
  size_t len2;
  char *again = read_all(path, &len2);
  cr_assert(len2 == len && memcmp(again, good, len) == 0,
            "the file is still damaged (%zu bytes, was %zu)", len2, len);
  free(again);
  free(good);

  /* The rebuilt file reads back clean. */
  cr_assert_eq(sly_evict(k.c, "a", "disk", where, &err), 0, "%s", err.message);
  tk_forward_check(&k, "a", NULL, ref->slice[0], "a from the new file");
  log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "building it again", NULL), 1,
               "the rebuilt file was found bad");
  cr_assert_eq(tk_count_lines(log, "move slice=a from=disk to=cpu", NULL), 1,
               "the rebuilt file was not read");
  free(log);
  tk_close(&k);
  td_stop(d);
  tk_cache_remove(dir);
  free(ref);
}

Test(tiers_disk, a_corrupted_file_is_detected_deleted_and_rebuilt) {
  damaged_file_is_rebuilt(flip_data_byte);
}

Test(tiers_disk, a_truncated_file_is_detected_deleted_and_rebuilt) {
  damaged_file_is_rebuilt(truncate_half);
}

/* Replaces the bytes of `to` with those of `from`, in place. */
static void copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_TRUNC);
  cr_assert(in >= 0 && out >= 0, "open: %s", strerror(errno));
  static char buf[1 << 16];
  ssize_t n;
  while ((n = read(in, buf, sizeof buf)) > 0)
    cr_assert_eq(write(out, buf, (size_t)n), n, "write: %s", strerror(errno));
  cr_assert_eq(n, 0, "read: %s", strerror(errno));
  close(in);
  close(out);
}

/* A valid file of slice a put under slice b's name (same layout, other
 * seed): its header names another key, so b never computes with a's
 * weights. */
Test(tiers_disk, another_slices_file_under_this_key_is_rebuilt) {
  tk_model m = {0};
  tk_model_add(&m, "a", 1024, 1);
  tk_model_add(&m, "b", 1024, 2);
  m.n_cfg = 2;
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  td *d = start_cpu(&m, 64, dir);
  tk_client k;
  tk_open(&k, d);
  char where[8], fa[TD_PATH_MAX + 64];
  sly_error err;
  cr_assert_eq(sly_load(k.c, "a", "disk", where, &err), 0, "%s", err.message);
  tk_cache_only(dir, fa);
  cr_assert_eq(sly_load(k.c, "b", "disk", where, &err), 0, "%s", err.message);
  cr_assert_eq(sly_evict(k.c, "b", "disk", where, &err), 0, "%s", err.message);
  file_set fs;
  files_of(dir, &fs);
  cr_assert_eq(fs.n, 2, "%d files", fs.n);
  const char *fb = strcmp(fs.name[0], fa) == 0 ? fs.name[1] : fs.name[0];
  copy_file(fa, fb);

  tk_forward_check(&k, "b", NULL, ref->slice[1], "b over a's file");
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "slice b: cache file", "building it again"),
               1, "the mismatch was not logged");
  free(log);
  tk_close(&k);
  td_stop(d);
  tk_cache_remove(dir);
  free(ref);
}

/* A slice whose config changed (another seed) has another key: the old
 * file is not used, a new one is written, outputs follow the new seed. */
Test(tiers_disk, a_file_made_for_an_old_config_is_not_used) {
  tk_model refm = {0}, old = {0}, now = {0};
  tk_model_add(&refm, "seed1", 1024, 1);
  tk_model_add(&refm, "seed2", 1024, 2);
  refm.n_cfg = 2;
  tk_ref *ref = tk_reference(&refm);
  char why[256];
  cr_assert(!tk_try_equal(ref->slice[0], ref->slice[1], why, sizeof why),
            "seeds 1 and 2 give the same output");
  tk_model_add(&old, "a", 1024, 1);
  tk_model_add(&now, "a", 1024, 2);
  old.n_cfg = now.n_cfg = 1;
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  file_set fs;
  first_daemon(&old, ref, 64, dir, &fs);
  char old_file[TD_PATH_MAX + 64];
  strcpy(old_file, fs.name[0]);

  td *b = start_cpu(&now, 64, dir);
  tk_client k;
  tk_open(&k, b);
  tk_forward_check(&k, "a", NULL, ref->slice[1], "a with seed 2");
  char where[8];
  sly_error err;
  cr_assert_eq(sly_evict(k.c, "a", "disk", where, &err), 0, "%s", err.message);
  cr_assert_str_eq(where, "disk", "no new file for seed 2: a is at %s", where);
  tk_forward_check(&k, "a", NULL, ref->slice[1], "a with seed 2 from disk");
  char *log = tk_log(b);
  cr_assert_eq(tk_count_lines(log, "a cache file exists", NULL), 0,
               "the seed 1 file was taken for seed 2");
  cr_assert_eq(tk_count_lines(log, "move slice=a from=cpu to=disk", NULL), 1,
               "no file written for seed 2");
  free(log);
  tk_close(&k);
  td_stop(b);
  files_of(dir, &fs);
  cr_assert_eq(fs.n, 2, "%d files, want the old and the new", fs.n);
  cr_assert(strcmp(fs.name[0], old_file) == 0 ||
                strcmp(fs.name[1], old_file) == 0,
            "the old file was replaced");
  tk_cache_remove(dir);
  free(ref);
}

/* Starts a daemon that writes big's 200 MiB file and kills it with SIGKILL
 * while the temp file exists. Returns false when the write won the race
 * (the file was renamed into place before the kill). */
static bool kill_mid_write(const tk_model *m, const char *dir) {
  td *a = start_cpu(m, 256, dir);
  int fd = rc_connect(a->sock);
  cr_assert_eq(rc_send_json(fd, "{\"id\": 1, \"op\": \"load\", \"slice\": "
                                "\"big\", \"tier\": \"disk\"}"), 0, "send");
  long long end = td_now_ms() + 30000;
  while (tk_cache_temps(dir) == 0 && tk_cache_files(dir) == 0 &&
         td_now_ms() < end)
    usleep(500);
  bool caught = tk_cache_temps(dir) > 0;
  cr_assert(kill(a->pid, SIGKILL) == 0, "kill: %s", strerror(errno));
  cr_assert(td_wait_exit(a, TD_EXIT_TIMEOUT_MS), "no exit after SIGKILL");
  close(fd);
  td_destroy(a);
  caught = caught && tk_cache_temps(dir) > 0;
  cr_assert(caught || tk_cache_files(dir) > 0, "no cache file was written "
            "within 30 s");
  return caught;
}

Test(tiers_disk, kill_9_while_writing_leaves_no_torn_file) {
  tk_model m = {0};
  tk_model_add(&m, "big", 25600, 5); /* 200 MiB */
  m.n_cfg = 1;
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  bool caught = false;
  int attempt = 0;
  for (; attempt < 3 && !caught; attempt++) {
    caught = kill_mid_write(&m, dir);
    if (!caught) { /* too late: start over with an empty folder */
      tk_cache_remove(dir);
      tk_cache_new(dir);
    }
  }
  cr_assert(caught, "the 200 MiB write finished before SIGKILL, 3 times");
  cr_log_info("SIGKILL with a temp file present on attempt %d", attempt);
  cr_assert_eq(tk_cache_files(dir), 0, "a cache file exists after a killed "
               "write: it may be torn");

  td *b = start_cpu(&m, 256, dir);
  cr_assert(td_logs_wait(b, "temp files left by a crash", 5000),
            "B did not log sweeping the temp file");
  cr_assert_eq(tk_cache_temps(dir), 0, "B left the temp file");
  tk_client k;
  tk_open(&k, b);
  tk_forward_check(&k, "big", NULL, ref->slice[0], "big after the crash");
  char where[8];
  sly_error err;
  cr_assert_eq(sly_evict(k.c, "big", "disk", where, &err), 0, "%s",
               err.message);
  cr_assert_str_eq(where, "disk", "big is at %s", where);
  tk_forward_check(&k, "big", NULL, ref->slice[0], "big from its new file");
  char *log = tk_log(b);
  cr_assert_eq(tk_count_lines(log, "move slice=big from=disk to=cpu", NULL),
               1, "big was not read from its file");
  cr_assert_eq(tk_count_lines(log, "building it again", NULL), 0,
               "B found its own file bad");
  free(log);
  tk_close(&k);
  td_stop(b);
  tk_cache_remove(dir);
  free(ref);
}

/* A built-in with a weights file: a restart that finds its cache file never
 * reads the weights file (only the layout is built), and a bad cache file
 * makes it read them after all. Outputs match PyTorch's every time. */
Test(tiers_disk, a_restart_reads_the_cache_file_not_the_weights_file) {
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  char keys[TD_PATH_MAX + 64];
  snprintf(keys, sizeof keys, "\"disk_cache_path\": \"%s\"", dir);
  char *cfg = fx_config(NULL, keys);
  td *a = td_start(cfg);
  td_assert_forward_ok(a, "daemon A");
  td_stop(a);
  cr_assert_eq(tk_cache_files(dir), 1, "daemon A left %d cache files, want "
               "lin's", tk_cache_files(dir));

  td *b = td_start(cfg);
  td_assert_forward_ok(b, "daemon B");
  char *log = tk_log(b);
  cr_assert_eq(tk_count_lines(log, "slice lin: built",
                              "its weights come from there"), 1,
               "B did not defer lin's weights to its cache file:\n%s", log);
  cr_assert_eq(tk_count_lines(log, "slice lin:", "weights read"), 0,
               "B read lin's weights file although its cache file is good");
  free(log);
  td_stop(b);

  /* Damage the cache file (its last byte is lin's data): C must read the
   * weights file after all, and still answer right. */
  char path[TD_PATH_MAX + 64];
  tk_cache_only(dir, path);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  int fd = open(path, O_RDWR);
  cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
  unsigned char byte;
  cr_assert_eq(pread(fd, &byte, 1, st.st_size - 1), 1);
  byte ^= 0x01;
  cr_assert_eq(pwrite(fd, &byte, 1, st.st_size - 1), 1);
  close(fd);
  td *c = td_start(cfg);
  td_assert_forward_ok(c, "daemon C, cache file damaged");
  log = tk_log(c);
  cr_assert_eq(tk_count_lines(log, "slice lin: built",
                              "weights read from its weights file"), 1,
               "C did not read lin's weights after its cache file was bad");
  free(log);
  td_stop(c);
  free(cfg);
  tk_cache_remove(dir);
}

/* A disk_cache_path that is a regular file stops slyced at start, naming
 * the key, and the file is left as it was. Before, slyced started, every
 * cache write failed, and an eviction to the disk unloaded the slice. */
Test(tiers_disk, a_cache_path_that_is_a_file_is_refused_at_start) {
  td *d = td_new(NULL);
  char path[TD_PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/cachefile", d->dir);
  FILE *f = fopen(path, "w");
  cr_assert(f, "create %s: %s", path, strerror(errno));
  fputs("not a folder\n", f);
  fclose(f);
  char keys[TD_PATH_MAX + 64];
  snprintf(keys, sizeof keys, "\"disk_cache_path\": \"%s\"", path);
  td_write_config(d, keys);
  td_assert_refused(d, "a file as its disk cache", "disk_cache_path",
                    "not a folder");
  char *text = td_read_tail(path, 100);
  cr_assert(text && strcmp(text, "not a folder\n") == 0,
            "the file at disk_cache_path was changed");
  free(text);
  td_destroy(d);
}
