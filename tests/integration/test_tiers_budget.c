/* test_tiers_budget.c — budgets hold at every step of a long, seeded
 * sequence of forwards (single slices and a pipeline), loads, evicts, pins,
 * unpins and slices added at run time, on the sim device (or CUDA under
 * tests/gpu/run.sh) and on the CPU with a disk cache. After every step:
 * stats' gpu.used and the device's high-water mark within the GPU budget,
 * cpu.used within the host budget, the process's RSS within its baseline
 * plus the budgets plus a fixed slack, the accounting equal to what list
 * shows, a pinned slice where it was pinned, and every output equal to a
 * daemon's with unlimited memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "tierkit.h"

/* Generous: 450 checked steps take ~10 s here, many times that under TSan. */
TestSuite(tiers_budget, .timeout = 300, .fini = tk_cleanup);

#define STEPS 150
/* Each budget holds a pinned 16 MiB slice, the 16 MiB slice a pipeline
 * needs next (never evicted while the pipeline runs) and the 16 MiB slice
 * running: with less, a forward may rightly get NO_MEMORY. */
#define GPU_MB 60
#define RESERVE_MB 8
#define CPU_MB 52
#define N_CFG 10
#define N_PIPE 6
/* RSS above the baseline (taken right after start) that no budget covers:
 * libtorch's first forward (16 MiB measured: thread pools, scratch), a
 * slice being built (its module's own blob beside the host copy it goes
 * into: at most 16 MiB here), activations and output leases (under 1 MiB),
 * and headroom for the allocator. Measured with blobs returned to the
 * system on free (MALLOC_MMAP_THRESHOLD_=1048576): peak 0-4 MiB over
 * baseline + budgets in 600 steps. */
#define RSS_SLACK_MB 64

/* A sanitized daemon keeps freed memory in quarantine and shadow: its RSS
 * says nothing about the budgets. */
static bool rss_checked(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return false;
#else
  const char *other = getenv("SLY_TEST_SLYCED");
  return other == NULL || other[0] == '\0';
#endif
}

/* 4, 8 and 16 MiB slices, 104 MiB in the config and 36 MiB more added at
 * run time (2.7 times each budget); the pipeline is the first six (68 MiB).
 */
static void mixed_model(tk_model *m) {
  static const int hidden[] = {2048, 1024, 512, 2048, 1024, 2048, 512,
                               1024, 2048, 1024, 1024, 2048, 512,  1024};
  memset(m, 0, sizeof *m);
  for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
    char name[16];
    if (i < N_CFG)
      snprintf(name, sizeof name, "c%zu", i);
    else
      snprintf(name, sizeof name, "a%zu", i - N_CFG);
    tk_model_add(m, name, hidden[i], (int)i + 101);
  }
  m->n_cfg = N_CFG;
  m->n_pipe = N_PIPE;
}

/* splitmix64: the sequence is the same on every run. */
static uint64_t next_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

typedef struct {
  const char *device;
  const char *strategy; /* NULL: none */
  uint64_t seed;
} budget_case;

/* What the test knows of the daemon. */
typedef struct {
  tk_model m;
  tk_ref *ref;
  size_t n_live;   /* slices that exist: config ones, then added ones */
  int pinned;      /* index of the pinned slice, -1 when none */
  int pin_tier;    /* its tier rank */
  bool has_gpu;
  char dir[TD_PATH_MAX];
  uint64_t rss_base, rss_peak;
  tk_client k;
} world;

static const char *const tier_names[] = {"gpu", "cpu", "disk"};

/* A random tier the daemon has (gpu only with a GPU tier, unless `any`). */
static int pick_tier(world *w, uint64_t *s, bool any) {
  return w->has_gpu || any ? (int)(next_rand(s) % 3)
                           : 1 + (int)(next_rand(s) % 2);
}

static void expect_code(int rc, int want, const sly_error *err,
                        const char *what) {
  cr_assert_eq(rc, want, "%s: got %s (%s), want %s", what, sly_code_name(rc),
               rc ? err->message : "", sly_code_name(want));
}

/* One step; `what` receives its description for the checks that follow. */
static void step(world *w, uint64_t *s, char *what, size_t cap) {
  sly_conn *c = w->k.c;
  sly_error err;
  char where[8] = "";
  int i = (int)(next_rand(s) % w->n_live);
  const char *name = w->m.s[i].name;
  unsigned r = (unsigned)(next_rand(s) % 100);
  if (r >= 87 && w->n_live == w->m.n)
    r = 0; /* nothing left to add: a forward instead */
  if (r < 30) {
    snprintf(what, cap, "forward %s", name);
    tk_forward_check(&w->k, name, NULL, w->ref->slice[i], what);
  } else if (r < 45) {
    snprintf(what, cap, "forward pipeline p");
    tk_forward_check(&w->k, NULL, "p", w->ref->pipe, what);
  } else if (r < 60) {
    int t = pick_tier(w, s, next_rand(s) % 8 == 0);
    snprintf(what, cap, "load %s %s", name, tier_names[t]);
    int rc = sly_load(c, name, tier_names[t], where, &err);
    expect_code(rc, t == 0 && !w->has_gpu ? SLY_E_BAD_REQUEST : 0, &err, what);
    if (rc == 0)
      cr_assert_leq(tk_tier_rank(where), t, "%s: now at %s", what, where);
  } else if (r < 75) {
    int t = pick_tier(w, s, true);
    snprintf(what, cap, "evict %s %s", name, tier_names[t]);
    int rc = sly_evict(c, name, tier_names[t], where, &err);
    bool refused = i == w->pinned && w->pin_tier < t;
    expect_code(rc, refused ? SLY_E_BAD_REQUEST : 0, &err, what);
    if (rc == 0)
      cr_assert_geq(tk_tier_rank(where), t, "%s: still at %s", what, where);
  } else if (r < 87 && w->pinned >= 0) {
    snprintf(what, cap, "unpin %s", w->m.s[w->pinned].name);
    int rc = sly_unpin(c, w->m.s[w->pinned].name, &err);
    expect_code(rc, 0, &err, what);
    w->pinned = -1;
  } else if (r < 87) {
    /* One pin at a time: see GPU_MB. */
    int t = pick_tier(w, s, next_rand(s) % 8 == 0);
    snprintf(what, cap, "pin %s %s", name, tier_names[t]);
    int rc = sly_pin(c, name, tier_names[t], &err);
    expect_code(rc, t == 0 && !w->has_gpu ? SLY_E_BAD_REQUEST : 0, &err, what);
    if (rc == 0) {
      w->pinned = i;
      w->pin_tier = t;
    }
  } else {
    const tk_slice *a = &w->m.s[w->n_live];
    char cfg[192];
    tk_slice_config(a, cfg, sizeof cfg);
    snprintf(what, cap, "add_slice %s", a->name);
    int rc = sly_add_slice(c, a->name, "mlp", cfg, &err);
    expect_code(rc, 0, &err, what);
    w->n_live++;
  }
}

/* Everything that must hold between requests. */
static void check(world *w, const char *what) {
  tk_stats st;
  tk_stats_get(w->k.c, &st);
  tk_assert_budgets(&st, what);
  uint64_t rss_cap = w->rss_base + st.gpu_budget + st.cpu_budget +
                     (uint64_t)RSS_SLACK_MB * TK_MIB;
  cr_assert(!rss_checked() || st.rss <= rss_cap,
            "%s: RSS %llu MiB > baseline %llu + gpu %llu + cpu %llu + slack "
            "%d MiB", what, (unsigned long long)(st.rss >> 20),
            (unsigned long long)(w->rss_base >> 20),
            (unsigned long long)(st.gpu_budget >> 20),
            (unsigned long long)(st.cpu_budget >> 20), RSS_SLACK_MB);
  if (st.rss > w->rss_peak)
    w->rss_peak = st.rss;
  /* The budgets hold at every moment; the list and the accounting agree
   * once prefetches in flight have landed. */
  tk_stats_settled(w->k.c, &st);
  tk_assert_budgets(&st, what);

  tk_entry all[TK_MAX_SLICES];
  size_t n = tk_list(w->k.c, all, TK_MAX_SLICES);
  cr_assert_eq(n, w->n_live, "%s: list shows %zu slices, want %zu", what, n,
               w->n_live);
  uint64_t on_gpu = 0, on_cpu = 0, files = 0;
  for (size_t j = 0; j < n; j++) {
    const tk_entry *e = &all[j];
    int i = tk_model_find(&w->m, e->name);
    cr_assert(i >= 0 && (size_t)i < w->n_live, "%s: list shows %s", what,
              e->name);
    int rank = tk_tier_rank(e->tier);
    cr_assert(rank >= 0, "%s: %s at tier '%s'", what, e->name, e->tier);
    if (rank < 3)
      cr_assert_eq(e->bytes, tk_slice_bytes(&w->m.s[i]),
                   "%s: %s has %llu bytes, want %llu", what, e->name,
                   (unsigned long long)e->bytes,
                   (unsigned long long)tk_slice_bytes(&w->m.s[i]));
    on_gpu += rank == 0 ? e->bytes : 0;
    on_cpu += rank == 1 ? e->bytes : 0;
    files += rank == 2;
    if (i == w->pinned) {
      cr_assert_str_eq(e->pinned, tier_names[w->pin_tier],
                       "%s: %s pinned '%s', want '%s'", what, e->name,
                       e->pinned, tier_names[w->pin_tier]);
      cr_assert_leq(rank, w->pin_tier, "%s: %s pinned at %s is at %s", what,
                    e->name, tier_names[w->pin_tier], e->tier);
    } else {
      cr_assert_str_eq(e->pinned, "", "%s: %s shows pinned '%s'", what,
                       e->name, e->pinned);
    }
  }
  cr_assert_eq(st.gpu_used, on_gpu, "%s: gpu.used %llu, list shows %llu "
               "bytes at gpu", what, (unsigned long long)st.gpu_used,
               (unsigned long long)on_gpu);
  /* A slice at gpu may keep its host copy too. */
  cr_assert_geq(st.cpu_used, on_cpu, "%s: cpu.used %llu, list shows %llu "
                "bytes at cpu", what, (unsigned long long)st.cpu_used,
                (unsigned long long)on_cpu);
  cr_assert_leq(st.cpu_used, on_cpu + on_gpu, "%s: cpu.used %llu, more than "
                "the %llu bytes at cpu or gpu", what,
                (unsigned long long)st.cpu_used,
                (unsigned long long)(on_cpu + on_gpu));
  cr_assert_geq((uint64_t)tk_cache_files(w->dir), files,
                "%s: %llu slices at disk, %d cache files", what,
                (unsigned long long)files, tk_cache_files(w->dir));
}

static void run_sequence(const budget_case *bc) {
  static world w;
  memset(&w, 0, sizeof w);
  mixed_model(&w.m);
  w.ref = tk_reference(&w.m);
  w.n_live = N_CFG;
  w.pinned = -1;
  w.has_gpu = bc->strategy != NULL;
  tk_cache_new(w.dir);
  char *keys = NULL;
  int n = w.has_gpu
              ? asprintf(&keys,
                         "\"gpu_strategy\": \"%s\", \"max_gpu_mem_mb\": %d, "
                         "\"gpu_reserve_mb\": %d, \"max_cpu_mem_mb\": %d, "
                         "\"disk_cache_path\": \"%s\"",
                         bc->strategy, GPU_MB, RESERVE_MB, CPU_MB, w.dir)
              : asprintf(&keys, "\"max_cpu_mem_mb\": %d, "
                         "\"disk_cache_path\": \"%s\"", CPU_MB, w.dir);
  cr_assert(n > 0, "out of memory");
  td *d = tk_start(&w.m, bc->device, keys);
  free(keys);
  tk_open(&w.k, d);
  tk_stats st;
  if (tk_on_cuda()) {
    /* CUDA's libraries set up their host side at the first forward on the
     * device (hundreds of MiB, none of it the daemon's): measure after it,
     * with the warm-up slice gone again. */
    char where[8];
    sly_error err;
    tk_forward_check(&w.k, w.m.s[2].name, NULL, w.ref->slice[2], "warm-up");
    cr_assert_eq(sly_evict(w.k.c, w.m.s[2].name, "disk", where, &err), 0,
                 "%s", err.message);
  }
  tk_stats_get(w.k.c, &st);
  w.rss_base = st.rss;
  cr_assert(w.has_gpu == st.has_gpu, "stats.memory.gpu %s a high-water mark",
            st.has_gpu ? "has" : "lacks");
  uint64_t s = bc->seed;
  char what[160], when[200];
  for (int i = 0; i < STEPS; i++) {
    step(&w, &s, what, sizeof what);
    snprintf(when, sizeof when, "step %d (seed %llu): %s", i,
             (unsigned long long)bc->seed, what);
    check(&w, when);
  }
  tk_stats_get(w.k.c, &st);
  cr_assert_gt(tk_evictions(&st), 0, "%d steps without an eviction", STEPS);
  cr_log_info("%s/%s: RSS%s baseline %llu MiB, peak %llu MiB (budgets %llu "
              "MiB); %llu evictions", bc->device,
              bc->strategy ? bc->strategy : "none",
              rss_checked() ? "" : " (not checked)",
              (unsigned long long)(w.rss_base >> 20),
              (unsigned long long)(w.rss_peak >> 20),
              (unsigned long long)((st.gpu_budget + st.cpu_budget) >> 20),
              (unsigned long long)tk_evictions(&st));
  tk_close(&w.k);
  td_stop(d);
  tk_cache_remove(w.dir);
  free(w.ref);
}

Test(tiers_budget, sim_limit_gpu_every_step_within_budgets) {
  budget_case bc = {tk_gpu_device(), "limit_gpu", 1};
  run_sequence(&bc);
}

Test(tiers_budget, sim_active_only_every_step_within_budgets) {
  budget_case bc = {tk_gpu_device(), "active_only", 2};
  run_sequence(&bc);
}

Test(tiers_budget, cpu_disk_every_step_within_budgets) {
  budget_case bc = {"cpu", NULL, 3};
  run_sequence(&bc);
}
