/* tiers.h — where each slice's weights live, under budgets (daemon/).
 *
 * Owns: the placement of every slice's weight blob across the three tiers —
 * GPU (a CUDA device or the sim stand-in), CPU (host memory, pinned when
 * CUDA is there) and disk (the cache files) — and the budgets: device bytes
 * never pass max_gpu_mem_mb - gpu_reserve_mb (limit_gpu) or one running
 * slice plus prefetch_depth (active_only); host bytes never pass
 * max_cpu_mem_mb. A move is one copy of the whole blob plus re-pointing the
 * module's views; evicting to a lower tier never copies back (weights are
 * read-only). Eviction follows evict.h.
 *
 * Threads: the executor (forwards and the tier ops), the loader (which
 * stages a request's slice before the executor gets the request, see
 * tiers_stage) and the mover, which brings slices in ahead of use
 * (prefetch.c), share everything here under
 * one mutex, which they drop only around the long parts of a move (building,
 * disk reads and writes, copies); the slice being moved is "busy" meanwhile,
 * owned by that thread: no one else moves or evicts it, and a forward that
 * needs it waits for that slice only. The figures list and stats show are
 * atomics read by the loop.
 */
#ifndef DAEMON_TIERS_H
#define DAEMON_TIERS_H

#include <pthread.h>
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

/* Where one slice's blob is; part of struct slice, guarded by the tiers'
 * mutex except for the atomics. */
typedef struct {
  void *host;       /* CPU tier copy, or NULL */
  bool host_pinned;
  void *dev;        /* GPU tier copy, or NULL */
  void *bound;      /* the copy the module's views point into */
  void *fence;      /* device_fence_mark after its last compute; owned */
  bool on_disk;     /* a valid cache file holds it */
  char key[DISKCACHE_KEY_HEX + 1];
  diskcache_entry *entries; /* the blob layout (names borrowed from module) */
  size_t n_entries;
  uint64_t bytes;
  evict_candidate ev_gpu, ev_cpu;
  int in_use;            /* forwards holding it (tiers_acquire) */
  bool busy;             /* a thread is moving it with the mutex dropped */
  bool needed_next;      /* a running pipeline needs it within prefetch_depth */
  bool prefetched;       /* brought in ahead of use and not used since */
  bool staged;  /* brought in for a forward (tiers_stage, or the mover on a
                 * forward's behalf), not used since: a miss */
  atomic_int awaited;    /* staged jobs that have not acquired it yet */
  bool waited_for;       /* a forward waited for its move (tiers_in_motion) */
  uint64_t next_use_at;  /* tick of its next known use; 0 = unknown */
  struct slice *successor; /* the slice that usually follows it (a reference) */
  uint32_t successor_seen; /* how many times in a row it did */
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

/* Most slices waiting for the mover; more are dropped (prefetch is a hint). */
#define TIERS_PREFETCH_QUEUE 64
typedef struct tiers {
  tiers_conf conf;
  device *dev;       /* NULL with device cpu or gpu_strategy none */
  pthread_mutex_t mu; /* guards all but the atomics and conf */
  pthread_cond_t idle; /* a slice stopped being busy */
  pthread_cond_t work; /* the mover has something to do, or must stop */
  pthread_t mover;
  bool mover_started, stopping;
  /* Called (mutex held) whenever a move ends, or the mover drops one it
   * had queued: a forward waiting for one may go on (tiers_on_moved). */
  void (*moved)(void *ctx);
  void *moved_ctx;
  struct {
    struct slice *s; /* referenced */
    bool far;        /* needed beyond prefetch_depth steps from now */
    bool demand;     /* a forward waits for it (tiers_hand_to_mover) */
  } queue[TIERS_PREFETCH_QUEUE]; /* for the mover, in order */
  size_t queued;
  struct slice *moving; /* what the mover is moving now, or NULL */
  struct slice *last_single; /* slice of the last one-slice forward (ref) */
  uint64_t last_pipeline;    /* signature of the last pipeline that ran */
  uint32_t stalls;  /* one bit per recent acquire: 1 = it waited for a move */
  size_t read_chunk; /* bytes per disk read; 0: diskcache's (tests shrink it) */
  size_t n_busy;
  uint64_t ops_ended; /* claims let go (tiers_room_held) */
  uint64_t tick;
  /* Figures for stats. */
  atomic_uint_fast64_t gpu_used, cpu_used, cpu_pinned, disk_used;
  atomic_uint_fast64_t hits, misses;
  atomic_uint_fast64_t evictions[4]; /* by reason: policy, explicit, replaced, failed */
  atomic_uint_fast64_t prefetches, prefetch_hits, prefetch_wasted_bytes;
  atomic_uint_fast64_t prefetch_pending; /* queued or being moved */
  atomic_uint_fast64_t blocks_reused; /* device blocks handed from an evicted copy */
  atomic_uint_fast64_t host_blocks_reused; /* the same for host buffers */
  tier_path_stats disk_to_cpu, cpu_to_gpu, build;
  /* Moves whose copy to the GPU followed their disk read chunk by chunk:
   * their bytes, and the time from the read's start to the copy's end. */
  tier_path_stats disk_to_gpu;
  struct slice **all; /* every slice with a blob somewhere (for eviction) */
  size_t n_all;
} tiers;

/* Opens the device the config names (sim or cuda) when gpu_strategy is not
 * none, and the disk cache folder, and starts the mover thread. Returns 0 or
 * -1 with err. */
int tiers_init(tiers *t, const config *cfg, char err[256]);
/* Stops the mover and frees every copy. No other thread may use t. */
void tiers_close(tiers *t);

/* Makes `s` resident in its compute tier (GPU when there is one, else CPU),
 * building it, reading it from disk and copying it up as needed and evicting
 * others to make room; binds the module to that copy and holds it there (in
 * use: never evicted) until tiers_release. Waits when the mover is bringing
 * `s` in. Returns 0, SLY_E_NO_MEMORY (err->needed set), or the build's
 * error (then nothing is held). */
int tiers_acquire(tiers *t, struct slice *s, proto_error *err);
/* tiers_try_acquire's answer when it would wait; not an error code. */
#define TIERS_ROOM_HELD 1
/* As tiers_acquire, but where that would wait for room that another
 * thread's move in flight holds (the mover's, a loader's: it is freed, or
 * becomes evictable, as the move ends), returns TIERS_ROOM_HELD at once,
 * holding nothing, and sets *seen for tiers_room_held. So the executor
 * can run other forwards meanwhile. */
int tiers_try_acquire(tiers *t, struct slice *s, uint64_t *seen,
                      proto_error *err);
/* Whether the room tiers_try_acquire found held may be held still: some
 * move is in flight, and no claim has been let go since it set `seen`. */
bool tiers_room_held(tiers *t, uint64_t seen);
void tiers_release(tiers *t, struct slice *s);

/* Staging, the loader thread's work: a job whose slices have no copy in
 * memory (they need a build or a read from the cache file) is handed to the
 * device's executor only once they are in host memory, so that the
 * executor keeps serving other slices meanwhile. On a GPU, a built slice in
 * its cache file is not staged: the executor streams it to the device.
 * tiers_wants_stage reads atomics only (loop thread). tiers_stage builds
 * `s` if needed and brings it to host memory, evicting others as a demand
 * would; returns 0, NO_MEMORY (no room now: the executor will ask again)
 * or the build's error. On 0 the job holds `s`: until it calls
 * tiers_stage_release(s) (any thread, atomics only), the policy evicts its
 * host copy only as it would a running pipeline's next slice (never for a
 * prefetch; for a demand, as a last resort); else the executor's work
 * meanwhile (a pipeline streaming through memory) took the never-used copy
 * first, and the job read it again. An explicit evict still takes it. */
bool tiers_wants_stage(const tiers *t, const struct slice *s);
/* Whether `s` is in the tier forwards run from now. Atomics only. */
bool tiers_at_compute(const tiers *t, const struct slice *s);
/* Sets the function called, with the mutex held, whenever a move ends or
 * the mover drops one it had queued (NULL: none). It must not call back
 * into the tiers. */
void tiers_on_moved(tiers *t, void (*fn)(void *ctx), void *ctx);
/* Asks the mover to bring `s` to the compute tier for a forward that will
 * wait for it, so that the executor can run other forwards meanwhile: first
 * in the mover's queue, with the room a forward gets, and not counted as a
 * prefetch. A move that fails is left to the forward's acquire. */
void tiers_hand_to_mover(tiers *t, struct slice *s);
/* Whether the mover has nothing queued and nothing under way: a move
 * handed to it now starts at once. Atomics only; a hint. */
bool tiers_mover_idle(tiers *t);
/* Whether handing `s` to the mover costs it no time, though the mover is
 * busy: `s` needs only a copy from host memory to the device, and so does
 * the move the mover is making. Both copies take turns on the device's one
 * copy stream, so `s` is not in any sooner for being moved beside it. (A
 * disk read beside the mover's, or a copy beside its read, would be.) */
bool tiers_mover_copies_only(tiers *t, struct slice *s);
/* Whether another thread is moving `s` right now (the mover, the loader),
 * or the mover has it queued: an acquire would wait for that move, or
 * make it itself. For a forward that waits while it says so: the next
 * acquire of `s` counts as one that waited for a copy (prefetch.c's
 * window), as it would have had it waited inside tiers_acquire. */
bool tiers_in_motion(tiers *t, struct slice *s);
int tiers_stage(tiers *t, struct slice *s, proto_error *err);
void tiers_stage_release(struct slice *s);

/* For a forward that found no device memory for its activations: drops the
 * GPU copy of one slice that is not in use (nor `keep`, nor pinned there,
 * nor needed next), as the eviction policy picks. 0, or -1 when there is
 * no GPU tier or nothing to drop. */
int tiers_evict_for_compute(tiers *t, struct slice *keep);

/* The ops: load brings `s` up to tier (gpu, cpu, disk); evict leaves it at
 * most at tier; pin keeps it at least at tier (loading it there); unpin. */
int tiers_load(tiers *t, struct slice *s, int tier, proto_error *err);
int tiers_evict(tiers *t, struct slice *s, int tier, proto_error *err);
int tiers_pin(tiers *t, struct slice *s, int tier, proto_error *err);
void tiers_unpin(tiers *t, struct slice *s);

/* Whether the GPU tier's device is lost (device_lost); false without one. */
bool tiers_device_lost(tiers *t, bool probe);

/* Prefetch (prefetch.c). A pipeline `v` of n slices is about to run step
 * `cur`: the next prefetch_depth slices not in the compute tier are queued
 * for the mover, and they and the resident ones before them are protected
 * from eviction; every slice of it gets its next use as an eviction hint
 * (the pipeline is taken to repeat). */
void tiers_pipeline_step(tiers *t, struct slice *const *v, size_t n,
                         size_t cur);
/* No more prefetching: what is queued is dropped and the mover ends after
 * the move it is making (slyced is stopping). Loop thread. */
void tiers_stop_prefetch(tiers *t);
/* The pipeline is done: nothing of it is protected any more. */
void tiers_pipeline_end(tiers *t, struct slice *const *v, size_t n);
/* A one-slice forward of `s` has started (after tiers_acquire): learns that
 * `s` followed the previous one and queues what usually follows `s`. */
void tiers_single_step(tiers *t, struct slice *s);

/* Adds "memory", "transfers", "evictions", "hits", "misses" and "prefetch"
 * to a stats reply. Loop thread; reads atomics only. */
void tiers_stats_json(tiers *t, cJSON *reply);

#endif
