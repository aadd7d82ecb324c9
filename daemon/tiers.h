/* tiers.h — where each slice's weights live, under budgets (daemon/).
 *
 * Owns: the placement of every slice's weight blob across the three tiers —
 * GPU (a CUDA device or the sim stand-in), CPU (host memory, pinned when
 * CUDA is there) and disk (the cache files) — and the budgets: device bytes
 * never pass max_gpu_mem_mb - gpu_reserve_mb (limit_gpu) or one running
 * slice plus prefetch_depth (active_only); host bytes never pass
 * max_cpu_mem_mb. A move is one copy of the whole blob plus re-pointing the
 * module's views; evicting to a lower tier never copies back (weights are
 * read-only). Eviction follows evict.h. Everything here runs on the executor
 * thread; the figures list and stats show are atomics read by the loop.
 */
#ifndef DAEMON_TIERS_H
#define DAEMON_TIERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "device.h"
#include "diskcache.h"
#include "evict.h"
#include "request.h"
#include <cJSON.h>

struct slice;

/* Where one slice's blob is; part of struct slice, touched by the executor
 * thread only except for the atomics. */
typedef struct {
  void *host;       /* CPU tier copy, or NULL */
  bool host_pinned;
  void *dev;        /* GPU tier copy, or NULL */
  void *bound;      /* the copy the module's views point into */
  bool on_disk;     /* a valid cache file holds it */
  char key[DISKCACHE_KEY_HEX + 1];
  diskcache_entry *entries; /* the blob layout (names borrowed from module) */
  size_t n_entries;
  uint64_t bytes;
  evict_candidate ev_gpu, ev_cpu;
  int in_use;            /* forwards running on it */
  bool needed_next;      /* a running pipeline needs it next */
  atomic_int tier;       /* highest tier holding it: 0 gpu, 1 cpu, 2 disk, 3 none */
  atomic_int pinned_tier; /* -1 when not pinned */
} tier_place;

enum { TIER_GPU = 0, TIER_CPU = 1, TIER_DISK = 2, TIER_NONE = 3 };
const char *tier_name(int t);

typedef struct {
  atomic_uint_fast64_t bytes;
  atomic_uint_fast64_t ns;
} tier_path_stats;

/* The config figures the tiers use, copied at start: the executor must not
 * read the loop's config, which a reload replaces. Budget changes take
 * effect at the next restart. */
typedef struct {
  gpu_strategy strategy;
  uint64_t max_gpu_mem_mb, gpu_reserve_mb, max_cpu_mem_mb, prefetch_depth;
  char *disk_cache_path; /* owned, or NULL */
  char *device;          /* owned */
  double sim_copy_gbps;
} tiers_conf;

typedef struct tiers {
  tiers_conf conf;
  device *dev;       /* NULL with device cpu or gpu_strategy none */
  uint64_t tick;
  /* Figures for stats. */
  atomic_uint_fast64_t gpu_used, cpu_used, cpu_pinned, disk_used;
  atomic_uint_fast64_t hits, misses;
  atomic_uint_fast64_t evictions[4]; /* by reason: policy, explicit, replaced, failed */
  tier_path_stats disk_to_cpu, cpu_to_gpu, build;
  struct slice **all; /* every slice with a blob somewhere (for eviction) */
  size_t n_all;
} tiers;

/* Opens the device the config names (sim or cuda) when gpu_strategy is not
 * none, and the disk cache folder. Returns 0 or -1 with err. */
int tiers_init(tiers *t, const config *cfg, char err[256]);
void tiers_close(tiers *t);

/* Makes `s` resident in its compute tier (GPU when there is one, else CPU),
 * building it, reading it from disk and copying it up as needed and evicting
 * others to make room; binds the module to that copy. Returns 0,
 * SLY_E_NO_MEMORY (err->needed set), or the build's error. */
int tiers_make_resident(tiers *t, struct slice *s, proto_error *err);

/* Marks `s` as what a running pipeline needs next: not evicted meanwhile. */
void tiers_set_needed_next(struct slice *s, bool needed);

/* The ops: load brings `s` up to tier (gpu, cpu, disk); evict leaves it at
 * most at tier; pin keeps it at least at tier (loading it there); unpin. */
int tiers_load(tiers *t, struct slice *s, int tier, proto_error *err);
int tiers_evict(tiers *t, struct slice *s, int tier, proto_error *err);
int tiers_pin(tiers *t, struct slice *s, int tier, proto_error *err);
void tiers_unpin(tiers *t, struct slice *s);

/* Adds "memory", "transfers", "evictions", "hits", "misses" to a stats
 * reply. Loop thread; reads atomics only. */
void tiers_stats_json(tiers *t, cJSON *reply);

#endif
