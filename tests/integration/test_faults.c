/* test_faults.c — the disk and the device failing under a real slyced,
 * through the injection points SLYCED_FAULTS arms (daemon/faults.h).
 *
 * A full disk while writing a cache file costs only the file (the slice is
 * served from memory, no temp file stays, valid files stay untouched); an
 * I/O error while reading one fails that request cleanly and keeps the file,
 * which serves the next request; a device allocation failure is met by
 * evicting and retrying; a lost device (a sticky error) fails what is in
 * flight with UNAVAILABLE and the daemon exits 1 for systemd to restart it.
 * After each, what still works is checked against the reference outputs. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "tierkit.h"

TestSuite(faults, .timeout = 90, .fini = tk_cleanup);

static void two_slices(tk_model *m) {
  memset(m, 0, sizeof *m);
  tk_model_add(m, "f0", 512, 70);
  tk_model_add(m, "f1", 512, 71);
  m->n_cfg = m->n_pipe = 2;
}

/* A cpu daemon with a disk cache in `dir`, and SLYCED_FAULTS=`faults` in
 * its environment (this test's process only: Criterion forks per test). */
static td *start_with(const tk_model *m, const char *device, const char *keys,
                      const char *faults) {
  if (faults)
    setenv("SLYCED_FAULTS", faults, 1);
  td *d = tk_start(m, device, keys);
  unsetenv("SLYCED_FAULTS");
  return d;
}

/* A sim daemon with room for both slices on its GPU tier, no prefetch. */
static td *start_sim(const tk_model *m, const char *faults) {
  return start_with(m, "sim",
                    "\"gpu_strategy\": \"limit_gpu\", \"max_gpu_mem_mb\": 64, "
                    "\"gpu_reserve_mb\": 8, \"prefetch_depth\": 0",
                    faults);
}

static char *cache_keys(const char *dir) {
  char *keys = NULL;
  cr_assert(asprintf(&keys, "\"max_cpu_mem_mb\": 64, \"disk_cache_path\": "
                     "\"%s\"", dir) > 0);
  return keys;
}

static void load_to(tk_client *k, const char *slice, const char *tier,
                    int want, const char *what) {
  char where[8];
  sly_error err;
  int rc = sly_load(k->c, slice, tier, where, &err);
  cr_assert_eq(rc, want, "%s: load %s %s: %d %s", what, slice, tier, rc,
               rc ? err.message : "");
}

/* The one cache file's bytes, to see that a fault left it untouched. */
static char *file_bytes(const char *dir, size_t *len) {
  char path[TD_PATH_MAX + 64];
  tk_cache_only(dir, path);
  FILE *f = fopen(path, "rb");
  cr_assert(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  rewind(f);
  char *b = malloc(*len);
  cr_assert(b && fread(b, 1, *len, f) == *len, "read %s", path);
  fclose(f);
  return b;
}

Test(faults, a_full_disk_costs_only_the_cache_file) {
  tk_model m;
  two_slices(&m);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  char *keys = cache_keys(dir);
  /* Daemon A leaves a valid file for f0. */
  td *a = start_with(&m, "cpu", keys, NULL);
  tk_client k;
  tk_open(&k, a);
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "daemon A");
  tk_close(&k);
  td_stop(a);
  size_t len0;
  char *before = file_bytes(dir, &len0);

  /* Daemon B: every cache write fails with ENOSPC. */
  td *b = start_with(&m, "cpu", keys, "disk_write=ENOSPC:*");
  tk_open(&k, b);
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "f0 from its file");
  tk_forward_check(&k, "f1", NULL, ref->slice[1], "f1 with a full disk");
  cr_assert_eq(tk_cache_files(dir), 1, "a file was written on a full disk");
  cr_assert_eq(tk_cache_temps(dir), 0, "a temp file stayed behind");
  /* Evicting f1 to disk cannot write it either: it drops to "none" and is
   * built again when next used. */
  sly_error err;
  cr_assert_eq(sly_evict(k.c, "f1", "disk", NULL, &err), 0, "%s",
               err.message);
  tk_entry e;
  tk_where(k.c, "f1", &e);
  cr_assert_str_eq(e.tier, "none", "f1 is at %s after a failed write", e.tier);
  tk_forward_check(&k, "f1", NULL, ref->slice[1], "f1 rebuilt");
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "f0 after the faults");
  tk_close(&k);
  char *log = tk_log(b);
  cr_assert_geq(tk_count_lines(log, "cannot write its cache file", "No space"),
                2, "the failed writes were not logged");
  free(log);
  td_stop(b);
  size_t len1;
  char *after = file_bytes(dir, &len1);
  cr_assert(len0 == len1 && memcmp(before, after, len0) == 0,
            "f0's file changed under a full disk");
  free(before), free(after), free(keys);
  tk_cache_remove(dir);
  free(ref);
}

Test(faults, a_read_error_fails_the_request_and_keeps_the_file) {
  tk_model m;
  two_slices(&m);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  char *keys = cache_keys(dir);
  td *a = start_with(&m, "cpu", keys, NULL);
  tk_client k;
  tk_open(&k, a);
  load_to(&k, "f0", "disk", 0, "daemon A");
  tk_close(&k);
  td_stop(a);

  td *b = start_with(&m, "cpu", keys, "disk_read=EIO");
  tk_open(&k, b);
  float out[TK_OUT_FLOATS];
  sly_error err;
  int rc = tk_try_forward(&k, "f0", NULL, out, &err);
  cr_assert_eq(rc, SLY_E_UNAVAILABLE, "an EIO read gave %d: %s", rc,
               err.message);
  cr_assert(strstr(err.message, "cache file") != NULL, "%s", err.message);
  cr_assert_eq(tk_cache_files(dir), 1, "the file was deleted after EIO");
  /* The fault was one read: the same file serves the retry. */
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "retry after EIO");
  tk_stats st;
  tk_stats_settled(k.c, &st);
  cr_assert_gt(st.d2c_bytes, 0, "the retry did not read the file");
  tk_forward_check(&k, "f1", NULL, ref->slice[1], "another slice");
  tk_close(&k);
  td_stop(b);
  free(keys);
  tk_cache_remove(dir);
  free(ref);
}

/* Two slices that both fit on a sim GPU tier; `faults` makes the second
 * slice's first try fail for want of device memory while the first is on
 * the device: the first is evicted (evictions.failed) and the second's
 * forward answers right. */
static void evicts_and_retries(const char *faults, const char *what) {
  tk_model m;
  two_slices(&m);
  tk_ref *ref = tk_reference(&m);
  td *d = start_sim(&m, faults);
  tk_client k;
  tk_open(&k, d);
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "f0");
  tk_forward_check(&k, "f1", NULL, ref->slice[1], what);
  tk_stats st;
  tk_stats_settled(k.c, &st);
  cr_assert_eq(st.ev_failed, 1, "%llu evictions for failed allocations",
               (unsigned long long)st.ev_failed);
  tk_entry e;
  tk_where(k.c, "f0", &e);
  cr_assert_str_neq(e.tier, "gpu", "f0 stayed on the device");
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "f0 again");
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(faults, a_device_allocation_failure_evicts_and_retries) {
  if (tk_on_cuda())
    cr_skip("sim only: the injected allocation failure needs no GPU");
  /* The second allocation fails: f1's. */
  evicts_and_retries("device_alloc=1@1", "f1 after a failed alloc");
}

/* libtorch out of device memory during a forward (injected): a GPU copy no
 * one uses is evicted and the forward runs again. */
Test(faults, a_forward_out_of_device_memory_evicts_and_retries) {
  if (tk_on_cuda())
    cr_skip("sim only: the injected failure needs no GPU");
  /* The second forward fails once: f1's. */
  evicts_and_retries("forward_oom=1@1", "f1 after its forward found no "
                     "memory");
}

/* With nothing to evict, the failure reaches the client as NO_MEMORY and the
 * daemon serves the next request. */
Test(faults, a_forward_out_of_device_memory_with_nothing_to_evict_is_no_memory) {
  if (tk_on_cuda())
    cr_skip("sim only: the injected failure needs no GPU");
  tk_model m;
  two_slices(&m);
  tk_ref *ref = tk_reference(&m);
  td *d = start_sim(&m, "forward_oom=1");
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  int rc = tk_try_forward(&k, "f0", NULL, NULL, &err);
  cr_assert_eq(rc, SLY_E_NO_MEMORY, "%d %s", rc, rc ? err.message : "");
  cr_assert(strstr(err.message, "f0") != NULL, "%s", err.message);
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "f0 after the failure");
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(faults, a_lost_device_fails_in_flight_and_exits_1) {
  if (tk_on_cuda())
    cr_skip("sim only: a real GPU cannot be lost on purpose here");
  tk_model m;
  two_slices(&m);
  tk_ref *ref = tk_reference(&m);
  /* The third copy to the device finds it lost. */
  td *d = start_sim(&m, "device_lost=3");
  tk_client k;
  tk_open(&k, d);
  tk_forward_check(&k, "f0", NULL, ref->slice[0], "f0 before");
  tk_forward_check(&k, "f1", NULL, ref->slice[1], "f1 before");
  sly_error err;
  cr_assert_eq(sly_evict(k.c, "f0", "cpu", NULL, &err), 0, "%s", err.message);
  float out[TK_OUT_FLOATS];
  int rc = tk_try_forward(&k, "f0", NULL, out, &err);
  cr_assert_eq(rc, SLY_E_UNAVAILABLE, "a lost device gave %d: %s", rc,
               err.message);
  cr_assert(strstr(err.message, "lost") != NULL, "%s", err.message);
  tk_close(&k);
  cr_assert(td_wait_exit(d, 20000), "slyced did not exit after losing the "
            "device");
  cr_assert(WIFEXITED(d->status) && WEXITSTATUS(d->status) == 1,
            "slyced ended with wait status %#x, want exit 1", d->status);
  char *log = tk_log(d);
  cr_assert_geq(tk_count_lines(log, "exiting for a restart", NULL), 1,
                "no log line says why slyced exits");
  free(log);
  char *err_log = td_read_tail(d->err_log, 1 << 16);
  cr_assert(err_log == NULL || (strstr(err_log, "Sanitizer") == NULL &&
                                strstr(err_log, "runtime error") == NULL),
            "sanitizer report at exit:\n%s", err_log);
  free(err_log);
  td_destroy(d);
  free(ref);
}

/* kill -9 at a random moment while a client streams a model through a
 * tight host budget with a disk cache (files being written, read and
 * evicted all the time), three times; after each, a restarted daemon
 * finds no torn or bad cache file and every slice answers right. */
typedef struct {
  pid_t pid;
  unsigned delay_ms;
} killer;

static void *kill_later(void *arg) {
  killer *k = arg;
  td_sleep_ms((int)k->delay_ms);
  kill(k->pid, SIGKILL);
  return NULL;
}

Test(faults, kill_9_under_load_never_leaves_a_bad_cache_file) {
  tk_model m;
  memset(&m, 0, sizeof m);
  for (int i = 0; i < 6; i++) {
    char name[8];
    snprintf(name, sizeof name, "k%d", i);
    tk_model_add(&m, name, 512, 90 + i); /* 4 MiB each */
  }
  m.n_cfg = m.n_pipe = 6;
  tk_ref *ref = tk_reference(&m);
  unsigned seed = (unsigned)td_now_ms();
  for (int round = 0; round < 3; round++) {
    /* A fresh folder each round, so that the kill may land while files are
     * being written, not only read. */
    char dir[TD_PATH_MAX];
    tk_cache_new(dir);
    char keys[TD_PATH_MAX + 96];
    /* Room for three of six: every pass reads and evicts. */
    snprintf(keys, sizeof keys, "\"max_cpu_mem_mb\": 13, "
             "\"disk_cache_path\": \"%s\"", dir);
    td *d = tk_start(&m, "cpu", keys);
    killer k = {.pid = d->pid, .delay_ms = 5 + (unsigned)rand_r(&seed) % 300};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, kill_later, &k), 0);
    tk_client c;
    tk_open(&c, d);
    float out[TK_OUT_FLOATS];
    sly_error err;
    /* Until the kill cuts the connection; what answers must be right. */
    for (int i = 0; i < 2000; i++) {
      int s = i % 7;
      int rc = s == 6 ? tk_try_forward(&c, NULL, "p", out, &err)
                      : tk_try_forward(&c, m.s[s].name, NULL, out, &err);
      if (rc != 0)
        break;
      char why[128];
      cr_assert(tk_try_equal(out, s == 6 ? ref->pipe : ref->slice[s], why,
                             sizeof why),
                "round %d, step %d before the kill: %s", round, i, why);
    }
    pthread_join(th, NULL);
    cr_assert(td_wait_exit(d, 10000), "no exit after SIGKILL");
    tk_close(&c);
    td_destroy(d);
    cr_log_info("round %d: SIGKILL after %u ms, %d cache files, %d temp",
                round, k.delay_ms, tk_cache_files(dir), tk_cache_temps(dir));

    /* The next daemon: every file it uses must be whole. */
    td *b = tk_start(&m, "cpu", keys);
    tk_client c2;
    tk_open(&c2, b);
    for (int s = 0; s < 6; s++)
      tk_forward_check(&c2, m.s[s].name, NULL, ref->slice[s], "after kill");
    tk_forward_check(&c2, NULL, "p", ref->pipe, "pipeline after kill");
    char *log = tk_log(b);
    cr_assert_eq(tk_count_lines(log, "building it again", NULL), 0,
                 "round %d: a cache file left by the kill was bad:\n%s",
                 round, log);
    free(log);
    tk_close(&c2);
    td_stop(b);
    cr_assert_eq(tk_cache_temps(dir), 0, "temp files outlived a restart");
    tk_cache_remove(dir);
  }
  free(ref);
}
