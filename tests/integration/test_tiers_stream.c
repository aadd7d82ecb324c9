/* test_tiers_stream.c — a model several times larger than both the GPU and
 * the host budget runs through slyced: on the sim device (or CUDA under
 * tests/gpu/run.sh) with limit_gpu and active_only, with and without a disk
 * cache, and on the CPU with a disk cache. Its outputs equal those of a
 * daemon with unlimited memory, every budget holds after every request, and
 * stats and the log account for every move and every eviction. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"
#include "tierkit.h"

TestSuite(tiers_stream, .timeout = 60, .fini = tk_cleanup);

/* The budgets: each holds two of the 16 MiB slices, not three. */
#define GPU_MB 48
#define RESERVE_MB 8
#define CPU_MB 48
#define N_SLICES 10

/* Ten 16 MiB slices in one pipeline: 160 MiB of weights, more than three
 * times the GPU's and the host's budget. */
static void big_model(tk_model *m) {
  memset(m, 0, sizeof *m);
  for (int i = 0; i < N_SLICES; i++) {
    char name[16];
    snprintf(name, sizeof name, "s%d", i);
    tk_model_add(m, name, 2048, i + 1);
  }
  m->n_cfg = m->n_pipe = N_SLICES;
  uint64_t total = tk_model_bytes(m, m->n);
  cr_assert_geq(total, 3ull * GPU_MB * TK_MIB, "model smaller than 3x GPU");
  cr_assert_geq(total, 3ull * CPU_MB * TK_MIB, "model smaller than 3x CPU");
}

/* How a run is set up and what it must show beyond equal outputs. */
typedef struct {
  const char *device;
  const char *strategy; /* NULL: none */
  bool disk;
  bool one_on_gpu; /* active_only: only the running slice stays */
} stream_case;

static char *keys_of(const stream_case *sc, const char *dir) {
  char *keys = NULL;
  int n;
  if (sc->strategy)
    n = asprintf(&keys,
                 "\"gpu_strategy\": \"%s\", \"max_gpu_mem_mb\": %d, "
                 "\"gpu_reserve_mb\": %d, \"max_cpu_mem_mb\": %d, "
                 "\"prefetch_depth\": 0%s%s%s",
                 sc->strategy, GPU_MB, RESERVE_MB, CPU_MB,
                 sc->disk ? ", \"disk_cache_path\": \"" : "",
                 sc->disk ? dir : "", sc->disk ? "\"" : "");
  else
    n = asprintf(&keys, "\"max_cpu_mem_mb\": %d%s%s%s", CPU_MB,
                 sc->disk ? ", \"disk_cache_path\": \"" : "",
                 sc->disk ? dir : "", sc->disk ? "\"" : "");
  cr_assert(n > 0, "out of memory");
  return keys;
}

/* After a request: budgets hold, and under active_only the GPU holds no
 * slice but the one that ran last. */
static void check_step(tk_client *k, const stream_case *sc, const char *when) {
  tk_stats st;
  tk_stats_get(k->c, &st);
  tk_assert_budgets(&st, when);
  if (!sc->one_on_gpu)
    return;
  tk_entry all[TK_MAX_SLICES];
  size_t n = tk_list(k->c, all, TK_MAX_SLICES), on_gpu = 0;
  for (size_t i = 0; i < n; i++)
    on_gpu += strcmp(all[i].tier, "gpu") == 0;
  cr_assert_leq(on_gpu, 1, "%s: %zu slices on the GPU under active_only "
                "(prefetch_depth 0), want at most the one that ran; gpu.used "
                "%llu of %llu", when, on_gpu, (unsigned long long)st.gpu_used,
                (unsigned long long)st.gpu_budget);
}

/* Two passes of the pipeline, then every slice alone from last to first:
 * each output equals the reference, each step within budgets. */
static void stream(const stream_case *sc) {
  tk_model m;
  big_model(&m);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX] = "";
  if (sc->disk)
    tk_cache_new(dir);
  char *keys = keys_of(sc, dir);
  td *d = tk_start(&m, sc->device, keys);
  free(keys);
  tk_client k;
  tk_open(&k, d);
  char when[64];
  for (int pass = 0; pass < 2; pass++) {
    snprintf(when, sizeof when, "pipeline pass %d", pass);
    tk_forward_check(&k, NULL, "p", ref->pipe, when);
    check_step(&k, sc, when);
  }
  for (int i = N_SLICES - 1; i >= 0; i--) {
    snprintf(when, sizeof when, "slice %s alone", m.s[i].name);
    tk_forward_check(&k, m.s[i].name, NULL, ref->slice[i], when);
    check_step(&k, sc, when);
  }
  tk_stats st;
  tk_stats_get(k.c, &st);
  cr_assert_gt(tk_evictions(&st), 0, "a model 3x the budgets ran without "
               "evictions");
  if (sc->disk) {
    /* Every slice was written once and came back from its file. */
    cr_assert_eq(tk_cache_files(dir), N_SLICES, "%d cache files, want %d",
                 tk_cache_files(dir), N_SLICES);
    cr_assert_gt(st.d2c_bytes, 0, "nothing was read back from the disk");
  }
  tk_close(&k);
  td_stop(d);
  if (sc->disk)
    tk_cache_remove(dir);
  free(ref);
}

Test(tiers_stream, sim_limit_gpu_with_disk_cache_equals_unlimited) {
  stream_case sc = {tk_gpu_device(), "limit_gpu", true, false};
  stream(&sc);
}

Test(tiers_stream, sim_active_only_keeps_one_slice_and_equals_unlimited) {
  stream_case sc = {tk_gpu_device(), "active_only", true, true};
  stream(&sc);
}

Test(tiers_stream, sim_limit_gpu_without_disk_cache_rebuilds_and_equals) {
  stream_case sc = {tk_gpu_device(), "limit_gpu", false, false};
  stream(&sc);
}

Test(tiers_stream, cpu_with_disk_cache_equals_unlimited) {
  stream_case sc = {"cpu", NULL, true, false};
  stream(&sc);
}

/* Rereads the log until its evict lines number `want`: a line is written
 * before the reply that follows it, but give the file a moment. */
static char *log_with_evictions(const td *d, uint64_t want) {
  long long end = td_now_ms() + 2000;
  for (;;) {
    char *log = tk_log(d);
    if (tk_count_lines(log, "evict slice=", NULL) >= want ||
        td_now_ms() >= end)
      return log;
    free(log);
    td_sleep_ms(20);
  }
}

Test(tiers_stream, stats_and_log_show_every_move_and_eviction) {
  tk_model m;
  big_model(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  stream_case sc = {tk_gpu_device(), "limit_gpu", true, false};
  char *keys = keys_of(&sc, dir);
  td *d = tk_start(&m, sc.device, keys);
  free(keys);
  tk_client k;
  tk_open(&k, d);
  float out[TK_OUT_FLOATS];
  sly_error err;
  for (int pass = 0; pass < 2; pass++)
    cr_assert_eq(tk_try_forward(&k, NULL, "p", out, &err), 0, "pass %d: %s",
                 pass, err.message);
  tk_stats st;
  tk_stats_get(k.c, &st);
  tk_close(&k);

  /* Streaming used every path, at a measured speed. */
  cr_assert_gt(st.d2c_bytes, 0, "transfers.disk_to_cpu.bytes is 0");
  cr_assert_gt(st.d2c_gbps, 0, "transfers.disk_to_cpu.gbps is 0");
  cr_assert_gt(st.c2g_bytes, 0, "transfers.cpu_to_gpu.bytes is 0");
  cr_assert_gt(st.c2g_gbps, 0, "transfers.cpu_to_gpu.gbps is 0");
  cr_assert_gt(st.ev_policy, 0, "evictions.policy is 0");
  cr_assert_eq(st.hits + st.misses, 2 * N_SLICES,
               "hits %llu + misses %llu, want one per slice run (%d)",
               (unsigned long long)st.hits, (unsigned long long)st.misses,
               2 * N_SLICES);
  cr_assert_geq(st.misses, N_SLICES, "misses %llu: the first pass alone "
                "misses every slice", (unsigned long long)st.misses);

  /* One evict line per eviction, one move line per move, same bytes. */
  char *log = log_with_evictions(d, tk_evictions(&st));
  size_t evicts = tk_count_lines(log, "evict slice=", NULL);
  cr_assert_eq(evicts, tk_evictions(&st), "%zu evict lines, stats counts %llu "
               "evictions", evicts, (unsigned long long)tk_evictions(&st));
  size_t policy = tk_count_lines(log, "evict slice=", " why=policy");
  cr_assert_eq(policy, st.ev_policy, "%zu why=policy lines, stats %llu",
               policy, (unsigned long long)st.ev_policy);
  size_t moves = tk_count_lines(log, "move slice=", NULL);
  size_t timed = tk_count_lines(log, "move slice=", " gbps=");
  cr_assert(moves > 0 && moves == timed, "%zu move lines, %zu with gbps",
            moves, timed);
  uint64_t b = tk_move_bytes(log, "disk", "cpu");
  cr_assert_eq(b, st.d2c_bytes, "disk->cpu move lines sum to %llu bytes, "
               "stats %llu", (unsigned long long)b,
               (unsigned long long)st.d2c_bytes);
  b = tk_move_bytes(log, "cpu", "gpu");
  cr_assert_eq(b, st.c2g_bytes, "cpu->gpu move lines sum to %llu bytes, "
               "stats %llu", (unsigned long long)b,
               (unsigned long long)st.c2g_bytes);
  b = tk_move_bytes(log, "cpu", "disk");
  cr_assert_eq(b, st.disk_written, "cpu->disk move lines sum to %llu bytes, "
               "memory.disk.written %llu", (unsigned long long)b,
               (unsigned long long)st.disk_written);
  uint64_t one = tk_slice_bytes(&m.s[0]);
  cr_assert_eq(b, N_SLICES * one, "each slice written once: %llu bytes, want "
               "%llu", (unsigned long long)b,
               (unsigned long long)(N_SLICES * one));
  /* Every line names the slice and its whole size. */
  char needle[64];
  snprintf(needle, sizeof needle, " bytes=%llu ", (unsigned long long)one);
  cr_assert_eq(tk_count_lines(log, "move slice=s", needle), moves,
               "move lines without the slice's size (%s)", needle);
  cr_assert_eq(tk_count_lines(log, "evict slice=s", needle), evicts,
               "evict lines without the slice's size (%s)", needle);
  free(log);
  td_stop(d);
  tk_cache_remove(dir);
}

/* A pipeline "p" of `n_pipe` slices q0.. of 4 MiB (0.4 s each at 0.01
 * GB/s), plus a slice "f" when `with_f`, on the sim device with that copy
 * pace; `keys` adds to the config. */
static td *slow_copies(tk_model *m, size_t n_pipe, bool with_f,
                       const char *keys) {
  if (tk_on_cuda())
    cr_skip_test("sim_copy_gbps sets the pace only on sim");
  memset(m, 0, sizeof *m);
  for (size_t i = 0; i < n_pipe; i++) {
    char name[24]; /* "q" and any size_t */
    snprintf(name, sizeof name, "q%zu", i);
    tk_model_add(m, name, 512, (int)i + 1);
  }
  if (with_f)
    tk_model_add(m, "f", 512, 70);
  m->n_pipe = n_pipe;
  m->n_cfg = m->n;
  char all[512];
  snprintf(all, sizeof all,
           "\"gpu_strategy\": \"limit_gpu\", \"max_gpu_mem_mb\": 64, "
           "\"gpu_reserve_mb\": 8, \"sim_copy_gbps\": 0.01, %s",
           keys);
  return tk_start(m, "sim", all);
}

/* SIGTERM while a pipeline streams over a slow copy path: at the drain's end
 * the pipeline stops before its next slice, and slyced exits in about one
 * slice's copy, not the rest of the pipeline's. */
Test(tiers_stream, the_drains_end_stops_a_streaming_pipeline) {
  tk_model m;
  td *d = slow_copies(&m, 10, false,
                      "\"prefetch_depth\": 4, \"drain_timeout_ms\": 200");
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  static float x[TK_ROWS * TK_FEATURES];
  rc_map_data(fd, x, sizeof x, 1);
  char req[256];
  snprintf(req, sizeof req,
           "{\"id\": 2, \"op\": \"forward\", \"pipeline\": \"p\", \"inputs\": "
           "[{\"region\": 1, \"offset\": 0, \"dtype\": \"float32\", "
           "\"shape\": [%d, %d]}]}",
           TK_ROWS, TK_FEATURES);
  cr_assert_eq(rc_send_json(fd, req), 0);
  td_sleep_ms(300); /* into its first slice's copy */
  long long t0 = td_now_ms();
  cr_assert_eq(kill(d->pid, SIGTERM), 0);
  cJSON *r = rc_read_reply(fd);
  rc_assert_error(r, 2, "SHUTTING_DOWN");
  cJSON_Delete(r);
  cr_assert(td_wait_exit(d, 30000), "slyced did not exit");
  long long took = td_now_ms() - t0;
  /* The whole pipeline is 4 s of copies; the drain 0.2 s, then the copy
   * running and at most one the mover had started (1.2 s here). */
  cr_log_info("exited %lld ms after SIGTERM", took);
  cr_assert_lt(took, 2500, "slyced exited %lld ms after SIGTERM", took);
  close(fd);
  td_destroy(d);
}

/* A slice staged for a forward that waits behind pipelines streaming
 * through a small host budget keeps its copy until the forward runs: the
 * pipelines' room comes from their own slices. It used to go first (it had
 * never been used) and the forward read it back from disk. */
Test(tiers_stream, a_staged_slice_waits_in_memory_behind_streaming_pipelines) {
  tk_model m;
  memset(&m, 0, sizeof m);
  for (int i = 0; i < 8; i++) {
    char name[16];
    snprintf(name, sizeof name, "s%d", i);
    tk_model_add(&m, name, 2048, i + 1); /* 16 MiB */
  }
  tk_model_add(&m, "x", 2048, 99);
  m.n_cfg = 9;
  m.n_pipe = 8;
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  char keys[TD_PATH_MAX + 96];
  /* Room for four slices: the pipeline's running and next ones, x, one
   * more. */
  snprintf(keys, sizeof keys,
           "\"max_cpu_mem_mb\": 64, \"prefetch_depth\": 1, "
           "\"disk_cache_path\": \"%s\"",
           dir);
  td *d = tk_start(&m, "cpu", keys);
  static float in[TK_ROWS * TK_FEATURES];
  int fp = rc_connect(d->sock);
  rc_assert_hello(fp, 1);
  rc_map_data(fp, in, sizeof in, 1);
  char req[256];
  const char *fmt = "{\"id\": %d, \"op\": \"forward\", \"%s\": \"%s\", "
                    "\"inputs\": [{\"region\": 1, \"offset\": 0, \"dtype\": "
                    "\"float32\", \"shape\": [%d, %d]}]}";
  /* The first pass builds the pipeline and fills the cache folder. */
  snprintf(req, sizeof req, fmt, 2, "pipeline", "p", TK_ROWS, TK_FEATURES);
  cJSON *r = rc_call(fp, req);
  rc_assert_ok(r, 2);
  cJSON_Delete(r);
  for (int id = 3; id <= 5; id++) {
    snprintf(req, sizeof req, fmt, id, "pipeline", "p", TK_ROWS, TK_FEATURES);
    cr_assert_eq(rc_send_json(fp, req), 0);
  }
  /* On the same connection, so that it runs after the passes (another
   * client's forward could run between their steps): x is staged at once,
   * then waits behind them. Under a sanitizer, longer than rc_read_reply
   * waits. */
  snprintf(req, sizeof req, fmt, 6, "slice", "x", TK_ROWS, TK_FEATURES);
  cr_assert_eq(rc_send_json(fp, req), 0);
  for (uint64_t id = 3; id <= 6; id++) {
    r = rc_read_reply_within(fp, 60000);
    rc_assert_ok(r, id);
    cJSON_Delete(r);
  }
  char *log = tk_log(d);
  /* The case holds only if pipelines streamed from disk after x came in. */
  const char *staged = strstr(log, "move slice=x from=cpu to=disk");
  cr_assert_not_null(staged, "x was not built and written while staged");
  cr_assert_gt(tk_count_lines(staged, "move slice=s", "from=disk"), 0,
               "no pipeline read a slice after x was staged");
  cr_assert_eq(tk_count_lines(log, "evict slice=x ", NULL), 0,
               "x was evicted before its forward ran");
  cr_assert_eq(tk_count_lines(log, "move slice=x from=disk", NULL), 0,
               "x was read back from disk");
  free(log);
  close(fp);
  td_stop(d);
  tk_cache_remove(dir);
}

/* slow_copies with a six-slice pipeline and "f", and a client `k` that
 * pinned f on the device and had a right answer from it; *ref holds the
 * expected outputs. The caller frees *ref and closes k. */
static td *pipeline_beside_pinned_f(tk_model *m, const char *keys,
                                    tk_ref **ref, tk_client *k) {
  td *d = slow_copies(m, 6, true, keys);
  *ref = tk_reference(m);
  tk_open(k, d);
  sly_error err;
  cr_assert_eq(sly_pin(k->c, "f", "gpu", &err), 0, "pin f: %s", err.message);
  tk_forward_check(k, "f", NULL, (*ref)->slice[6], "f before the pipeline");
  return d;
}

/* Runs the pipeline (or `slice`, where set) once on its own connection,
 * checks its output, and says when it has its reply. */
typedef struct {
  const td *d;
  const char *slice;
  const float *want;
  atomic_bool sent, done;
} pipe_run;

static void *run_pipeline(void *arg) {
  pipe_run *r = arg;
  tk_client k;
  tk_open(&k, r->d);
  atomic_store(&r->sent, true); /* a moment early: the caller waits more */
  sly_result *res = NULL;
  sly_error err;
  int rc = r->slice != NULL
               ? sly_forward(k.c, r->slice, &k.x, 1, &res, &err)
               : sly_forward_pipeline(k.c, "p", &k.x, 1, &res, &err);
  atomic_store(&r->done, true);
  const char *why = NULL;
  if (rc != 0) {
    why = "the long forward failed";
  } else {
    const sly_tensor *o = sly_result_output(res, 0);
    sly_timing tm = sly_result_timing(res);
    if (o == NULL || sly_tensor_nbytes(o) != TK_OUT_FLOATS * sizeof(float) ||
        !tk_try_equal(o->data, r->want, err.message, sizeof err.message))
      why = "the long forward answered wrong";
    /* Its copies set its pace: the time it waited for them, beside the
     * other client's forwards, is load time. */
    else if (tm.load_us < tm.total_us / 2)
      why = "the long forward's load_us leaves out the wait for its copies";
  }
  sly_result_free(res);
  tk_close(&k);
  return (void *)why;
}

/* While a pipeline waits for the mover to bring its next slice over a slow
 * copy path, another client's forwards on a slice already on the device
 * run in the meantime: each one is answered before the pipeline is. They
 * used to wait behind the whole pipeline on the one executor. With
 * `prefetch_depth` 0 the mover brings nothing ahead, and the pipeline
 * hands it each move it would have made itself. With `slice`, a forward
 * of that one slice, in host memory, stands in for the pipeline: the
 * forwards of f come in while it is copied to the device, and they used
 * to wait for the copy. */
static void forwards_beside_a_move(int prefetch_depth, const char *slice,
                                   const char *busy) {
  tk_model m;
  char keys[64];
  snprintf(keys, sizeof keys, "\"prefetch_depth\": %d", prefetch_depth);
  tk_ref *ref;
  tk_client k;
  td *d = pipeline_beside_pinned_f(&m, keys, &ref, &k);
  sly_error err;
  const char *to_host[] = {slice, busy};
  for (size_t i = 0; i < 2; i++) {
    if (to_host[i] == NULL)
      continue;
    char where[8];
    cr_assert_eq(sly_load(k.c, to_host[i], "cpu", where, &err), 0,
                 "load %s: %s", to_host[i], err.message);
    cr_assert_str_eq(where, "cpu");
  }
  if (busy != NULL) {
    /* The mover copies `busy` to the device when the forward of `slice`
     * comes: the executor is free, and nothing is ready to run. */
    cr_assert_eq(sly_set_active_slice(k.c, busy, 0, NULL, &err), 0,
                 "set_active_slice %s: %s", busy, err.message);
    td_sleep_ms(50);
  }

  pipe_run r = {.d = d, .slice = slice, .want = ref->pipe};
  if (slice != NULL)
    r.want = ref->slice[tk_model_find(&m, slice)];
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, run_pipeline, &r), 0);
  while (!atomic_load(&r.sent))
    td_sleep_ms(1);
  td_sleep_ms(100); /* its request is in: 0.4 s a copy, six for p */
  int answered_first = 0;
  for (int i = 0; i < 5; i++) {
    tk_forward_check(&k, "f", NULL, ref->slice[6], "f beside the move");
    answered_first += !atomic_load(&r.done);
  }
  void *why = NULL;
  pthread_join(th, &why);
  cr_assert_null(why, "%s", (const char *)why);
  cr_assert_eq(answered_first, 5,
               "%d of 5 forwards of f waited for %s to end", 5 - answered_first,
               slice != NULL ? slice : "the pipeline");
  char *reply = NULL;
  cr_assert_eq(sly_request_json(k.c, "{\"id\": 9, \"op\": \"stats\"}", &reply,
                                &err),
               0, "stats: %s", err.message);
  cJSON *st = cJSON_Parse(reply);
  const cJSON *n = cJSON_GetObjectItem(st, "interleaved");
  cr_assert(cJSON_IsNumber(n) && n->valuedouble >= 4,
            "stats.interleaved: %s", reply);
  n = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "prefetch"), "done");
  if (prefetch_depth == 0 || slice != NULL)
    cr_assert(cJSON_IsNumber(n) && n->valuedouble == 0,
              "moves handed to the mover counted as prefetches: %s", reply);
  cJSON_Delete(st);
  free(reply);
  tk_stats ts;
  tk_stats_get(k.c, &ts);
  /* Every slice of the pass came in while it ran: six misses, however
   * each one was brought in (none counts as a hit because the mover,
   * not the forward, moved it). */
  if (prefetch_depth == 0 && slice == NULL)
    cr_assert_geq(ts.misses, 6, "%llu misses for a pass that moved all six",
                  (unsigned long long)ts.misses);
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(tiers_stream, forwards_run_while_a_pipeline_waits_for_its_next_slice) {
  forwards_beside_a_move(1, NULL, NULL);
}

Test(tiers_stream, forwards_run_while_a_pipeline_without_prefetch_moves) {
  forwards_beside_a_move(0, NULL, NULL);
}

Test(tiers_stream, forwards_run_while_another_slice_comes_to_the_device) {
  forwards_beside_a_move(1, "q0", NULL);
}

/* The same while the mover is busy with another copy from host memory (a
 * background load): q0 goes behind it to the mover, where it would have
 * taken turns with it on the copy stream anyway, and the forwards of f run
 * meanwhile. The executor used to make q0's move itself beside the
 * mover's, and they waited for both copies. */
Test(tiers_stream, forwards_run_while_a_slice_waits_behind_the_movers_copy) {
  forwards_beside_a_move(1, "q0", "q1");
}

/* set_active_slice without wait returns at once, and its load, on the
 * executor, lets another client's forwards of a slice on the device run
 * while the copy does (the mover makes it). The executor used to make the
 * move itself, and they waited behind it. */
Test(tiers_stream, a_background_load_leaves_the_executor_to_other_forwards) {
  tk_model m;
  tk_ref *ref;
  tk_client k, a;
  td *d = pipeline_beside_pinned_f(&m, "\"prefetch_depth\": 1", &ref, &k);
  tk_open(&a, d);
  sly_error err;
  char where[8];
  cr_assert_eq(sly_load(a.c, "q0", "cpu", where, &err), 0, "load: %s",
               err.message);
  cr_assert_eq(sly_set_active_slice(a.c, "q0", 0, where, &err), 0,
               "set_active_slice: %s", err.message);
  cr_assert_str_eq(where, "cpu", "set_active_slice waited for the copy");
  td_sleep_ms(50); /* its load job is on the executor, or done there */
  for (int i = 0; i < 5; i++)
    tk_forward_check(&k, "f", NULL, ref->slice[6], "f beside the load");
  tk_entry e;
  tk_where(k.c, "q0", &e);
  cr_assert_str_eq(e.tier, "cpu",
                   "q0 came in before the forwards of f were answered");
  /* It does come in, and a forward of it is right. */
  long long until = td_now_ms() + 20000;
  do {
    td_sleep_ms(20);
    tk_where(k.c, "q0", &e);
  } while (strcmp(e.tier, "gpu") != 0 && td_now_ms() < until);
  cr_assert_str_eq(e.tier, "gpu", "the background load never ended");
  tk_forward_check(&a, NULL, NULL, ref->slice[0], "q0, active");
  tk_close(&a);
  tk_close(&k);
  td_stop(d);
  free(ref);
}

/* A slice the executor brings in itself (from its cache file, while the
 * mover is busy) but that finds its room held by the mover's copy in
 * flight waits for that copy as it would for its own slice: another
 * client's forwards of a slice on the device run meanwhile. They used to
 * wait behind it, the copy it waited for and then its own. The mover's
 * copy is a learned prefetch: b follows a, so a forward of a sends the
 * mover for b. */
Test(tiers_stream, forwards_run_while_a_slice_waits_for_room_a_move_holds) {
  if (tk_on_cuda())
    cr_skip_test("sim_copy_gbps sets the pace only on sim");
  tk_model m;
  memset(&m, 0, sizeof m);
  tk_model_add(&m, "a", 512, 1);  /* 4 MiB: 0.4 s a copy */
  tk_model_add(&m, "b", 512, 2);
  tk_model_add(&m, "f", 512, 3);
  tk_model_add(&m, "u", 1024, 4); /* 8 MiB */
  m.n_cfg = m.n;
  char dir[TD_PATH_MAX], keys[TD_PATH_MAX + 160];
  tk_cache_new(dir);
  /* 13 MiB for weights: f, a and b, or f and u. */
  snprintf(keys, sizeof keys,
           "\"gpu_strategy\": \"limit_gpu\", \"max_gpu_mem_mb\": 21, "
           "\"gpu_reserve_mb\": 8, \"sim_copy_gbps\": 0.01, "
           "\"prefetch_depth\": 1, \"disk_cache_path\": \"%s\"",
           dir);
  td *d = tk_start(&m, "sim", keys);
  tk_ref *ref = tk_reference(&m);
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  char where[8];
  cr_assert_eq(sly_load(k.c, "u", "cpu", where, &err), 0, "load u: %s",
               err.message);
  cr_assert_eq(sly_evict(k.c, "u", "disk", where, &err), 0, "evict u: %s",
               err.message);
  cr_assert_str_eq(where, "disk");
  cr_assert_eq(sly_pin(k.c, "f", "gpu", &err), 0, "pin f: %s", err.message);
  tk_forward_check(&k, "f", NULL, ref->slice[2], "f");
  for (int i = 0; i < 3; i++) {
    tk_forward_check(&k, "a", NULL, ref->slice[0], "a, learning");
    tk_forward_check(&k, "b", NULL, ref->slice[1], "b, learning");
  }
  cr_assert_eq(sly_evict(k.c, "b", "cpu", where, &err), 0, "evict b: %s",
               err.message);
  tk_forward_check(&k, "a", NULL, ref->slice[0], "a, sending the mover for b");

  pipe_run r = {.d = d, .slice = "u", .want = ref->slice[3]};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, run_pipeline, &r), 0);
  while (!atomic_load(&r.sent))
    td_sleep_ms(1);
  td_sleep_ms(100); /* u's forward waits for room: b's copy ends at 0.4 s */
  int answered_first = 0;
  for (int i = 0; i < 5; i++) {
    tk_forward_check(&k, "f", NULL, ref->slice[2], "f beside u's wait");
    answered_first += !atomic_load(&r.done);
  }
  void *why = NULL;
  pthread_join(th, &why);
  cr_assert_null(why, "%s", (const char *)why);
  cr_assert_eq(answered_first, 5, "%d of 5 forwards of f waited for u",
               5 - answered_first);
  /* u came from its cache file, on the executor, after b's copy. */
  char *log = tk_log(d);
  cr_assert_geq(tk_count_lines(log, "move slice=b from=cpu to=gpu", NULL), 1,
                "b was never copied to the device:\n%s", log);
  cr_assert_eq(tk_count_lines(log, "move slice=u from=disk to=gpu", NULL), 1,
               "u did not come from its cache file once:\n%s", log);
  free(log);
  tk_close(&k);
  td_stop(d);
  tk_cache_remove(dir);
  free(ref);
}

/* The interleaved forwards meet the daemon's edges: a client that sends
 * forwards and closes at once while a pipeline waits (they run, or are
 * dropped, beside it), and SIGTERM in the middle (the pipeline stops at
 * the drain's end). Every reply still owed arrives, slyced exits 0 without
 * a sanitizer report, and the forwards run beside the pipeline are right. */
Test(tiers_stream, a_gone_client_and_a_drain_beside_a_waiting_pipeline) {
  tk_model m;
  tk_ref *ref;
  tk_client k;
  td *d = pipeline_beside_pinned_f(
      &m, "\"prefetch_depth\": 1, \"drain_timeout_ms\": 300", &ref, &k);

  static float x[TK_ROWS * TK_FEATURES];
  char req[256];
  const char *fmt = "{\"id\": %d, \"op\": \"forward\", \"%s\": \"%s\", "
                    "\"inputs\": [{\"region\": 1, \"offset\": 0, \"dtype\": "
                    "\"float32\", \"shape\": [%d, %d]}]}";
  int fp = rc_connect(d->sock);
  rc_assert_hello(fp, 1);
  rc_map_data(fp, x, sizeof x, 1);
  snprintf(req, sizeof req, fmt, 2, "pipeline", "p", TK_ROWS, TK_FEATURES);
  cr_assert_eq(rc_send_json(fp, req), 0);
  td_sleep_ms(100);

  int fb = rc_connect(d->sock);
  rc_assert_hello(fb, 1);
  rc_map_data(fb, x, sizeof x, 1);
  for (int id = 2; id < 10; id++) {
    snprintf(req, sizeof req, fmt, id, "slice", "f", TK_ROWS, TK_FEATURES);
    cr_assert_eq(rc_send_json(fb, req), 0);
  }
  close(fb);
  for (int i = 0; i < 3; i++)
    tk_forward_check(&k, "f", NULL, ref->slice[6], "f beside the pipeline");
  tk_close(&k);

  cr_assert_eq(kill(d->pid, SIGTERM), 0);
  cJSON *r = rc_read_reply_within(fp, 30000);
  cr_assert_not_null(r, "no reply to the pipeline's forward");
  const cJSON *ok = cJSON_GetObjectItem(r, "ok");
  if (!cJSON_IsTrue(ok))
    rc_assert_error(r, 2, "SHUTTING_DOWN");
  cJSON_Delete(r);
  close(fp);
  cr_assert(td_wait_exit(d, 30000), "slyced did not exit");
  char *stderr_text = td_read_tail(d->err_log, 1 << 16);
  cr_assert(WIFEXITED(d->status) && WEXITSTATUS(d->status) == 0,
            "slyced ended with status 0x%x; stderr:\n%s", d->status,
            stderr_text ? stderr_text : "");
  cr_assert(stderr_text == NULL || (!strstr(stderr_text, "Sanitizer") &&
                                    !strstr(stderr_text, "runtime error:")),
            "a sanitizer report:\n%s", stderr_text);
  free(stderr_text);
  td_destroy(d);
  free(ref);
}
