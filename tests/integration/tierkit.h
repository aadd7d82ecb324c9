/* tierkit.h — models larger than memory, streamed through a real slyced,
 * for the tier tests (test_tiers_*.c).
 *
 * Owns: a model of seeded mlp slices (1024 -> hidden -> 1024, so that any
 * slice takes any other's output and a pipeline of them chains), its config,
 * the outputs of a reference daemon with unlimited memory, forwards compared
 * with them, and the figures the tests check: stats (budgets, transfers,
 * evictions, RSS), list (tier, state, pin of each slice), the daemon's log
 * (move and evict lines) and the cache folder (cache and temp files). Cache
 * folders live outside the daemon's folder so that they outlive a daemon and
 * serve the next one; tk_cleanup() (the suites' .fini) removes those a failed
 * test left, with the daemons. Helpers abort the Criterion test on failure
 * unless named tk_try_*.
 */
#ifndef SLY_TEST_TIERKIT_H
#define SLY_TEST_TIERKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "slyce.h"

#define TK_ROWS 4
#define TK_FEATURES 1024
#define TK_OUT_FLOATS (TK_ROWS * TK_FEATURES)
#define TK_MAX_SLICES 24
#define TK_NAME_MAX 32
#define TK_MIB (1024u * 1024u)

typedef struct {
  char name[TK_NAME_MAX];
  int hidden; /* hidden features: about hidden * 8 KiB of weights */
  int seed;
} tk_slice;

/* The first n_cfg slices are in the config file; the others are added at
 * run time with add_slice. The pipeline "p" is the first n_pipe slices. */
typedef struct {
  tk_slice s[TK_MAX_SLICES];
  size_t n, n_cfg, n_pipe;
} tk_model;

/* Appends a slice named `name` (hidden 512: 4 MiB, 1024: 8 MiB, 2048:
 * 16 MiB of weights). */
void tk_model_add(tk_model *m, const char *name, int hidden, int seed);
/* The constructor config of a slice, as JSON text. */
void tk_slice_config(const tk_slice *s, char *out, size_t cap);
/* The size of a slice's weight blob: each tensor at a 4096-aligned offset. */
uint64_t tk_slice_bytes(const tk_slice *s);
uint64_t tk_model_bytes(const tk_model *m, size_t first_n);
/* Index of a slice by name, or -1. */
int tk_model_find(const tk_model *m, const char *name);

/* The device with a GPU tier these tests use: td_device() when it is
 * cuda:N (tests/gpu/run.sh), else "sim". */
const char *tk_gpu_device(void);
bool tk_on_cuda(void);

/* Starts slyced on `device` with the model's config slices, its pipeline
 * and `keys` ("\"k\": v, ..." or NULL). */
td *tk_start(const tk_model *m, const char *device, const char *keys);

typedef struct {
  float slice[TK_MAX_SLICES][TK_OUT_FLOATS]; /* each slice on the input */
  float pipe[TK_OUT_FLOATS];                 /* the pipeline on the input */
} tk_ref;

/* Runs every slice of `m` and the pipeline in a reference daemon (device
 * cpu, no budgets, no disk cache, every slice in its config) and asserts
 * that the pipeline equals its slices chained one by one. The caller frees
 * the result. */
tk_ref *tk_reference(const tk_model *m);

/* A connection with an arena holding the input (TK_ROWS x TK_FEATURES). */
typedef struct {
  sly_conn *c;
  sly_arena *a;
  sly_tensor x;
} tk_client;

void tk_open(tk_client *k, const td *d);
void tk_close(tk_client *k);

/* Runs `pipeline` when not NULL, else `slice`, on the input; on success
 * copies the output into `out`. Returns 0 or the error code (err filled). */
int tk_try_forward(tk_client *k, const char *slice, const char *pipeline,
                   float *out, sly_error *err);
/* Same, asserting success and that the output equals `want`. */
void tk_forward_check(tk_client *k, const char *slice, const char *pipeline,
                      const float *want, const char *what);
/* Outputs are equal: bit for bit on cpu and sim (same libtorch, same CPU
 * kernels), within 1e-4 relative on CUDA. */
bool tk_try_equal(const float *got, const float *want, char *why, size_t len);
void tk_assert_equal(const float *got, const float *want, const char *what);

typedef struct {
  bool has_gpu;
  uint64_t gpu_used, gpu_budget, gpu_high_water;
  uint64_t cpu_used, cpu_budget, cpu_pinned, disk_written;
  uint64_t rss;
  uint64_t d2c_bytes, c2g_bytes, build_bytes;
  double d2c_gbps, c2g_gbps;
  uint64_t hits, misses;
  uint64_t ev_policy, ev_explicit, ev_removed, ev_failed;
  uint64_t pf_done, pf_hits, pf_wasted, pf_pending;
} tk_stats;

void tk_stats_get(sly_conn *c, tk_stats *out);
/* Waits (up to 30 s) until no prefetch is queued or moving, so that the
 * daemon's figures and list agree, and returns the stats then. The budgets
 * hold at every moment; this only waits for the list to catch up. */
void tk_stats_settled(sly_conn *c, tk_stats *out);
/* gpu.used and gpu.high_water within gpu.budget, cpu.used within
 * cpu.budget (when there is one). */
void tk_assert_budgets(const tk_stats *s, const char *when);
uint64_t tk_evictions(const tk_stats *s);

typedef struct {
  char name[TK_NAME_MAX];
  char tier[8];
  char state[16];
  char pinned[8]; /* "" when not pinned */
  uint64_t bytes;
} tk_entry;

/* The slices list shows, at most `max`; returns how many. */
size_t tk_list(sly_conn *c, tk_entry *out, size_t max);
/* One slice's entry; aborts when list does not show it. */
void tk_where(sly_conn *c, const char *slice, tk_entry *out);
/* gpu 0, cpu 1, disk 2, none 3 (higher is farther from compute); -1 for
 * anything else. */
int tk_tier_rank(const char *tier);

/* The whole log of the daemon (NUL-terminated; the caller frees it). */
char *tk_log(const td *d);
/* Lines of `text` that contain `a` and, when not NULL, `b`. */
size_t tk_count_lines(const char *text, const char *a, const char *b);
/* Sum of bytes= over the "move slice=... from=<from> to=<to>" lines. */
uint64_t tk_move_bytes(const char *log, const char *from, const char *to);

/* A fresh cache folder /tmp/slytc-XXXXXX, removed by tk_cache_remove() or
 * tk_cleanup(). */
void tk_cache_new(char dir[TD_PATH_MAX]);
void tk_cache_remove(const char *dir);
/* Files in `dir` whose name ends in ".safetensors" (cache files) or holds
 * ".tmp." (temp files). */
int tk_cache_files(const char *dir);
int tk_cache_temps(const char *dir);
/* The path of the only cache file; aborts unless there is exactly one. */
void tk_cache_only(const char *dir, char path[TD_PATH_MAX + 64]);
/* Suite .fini: td_cleanup() and every cache folder still there. */
void tk_cleanup(void);

#endif
