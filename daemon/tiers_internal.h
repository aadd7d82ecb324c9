/* tiers_internal.h — what tiers.c, tiers_build.c, tiers_stats.c and
 * prefetch.c share (daemon/). Not for anyone else.
 *
 * Locking: every function here is called with t->mu held. A slice is moved
 * by the thread that claimed it (tiers__claim); that thread may drop the
 * mutex around the long parts of the move, and nobody else touches the
 * slice's placement meanwhile.
 */
#ifndef DAEMON_TIERS_INTERNAL_H
#define DAEMON_TIERS_INTERNAL_H

#include "slices.h"
#include "tiers.h"

/* Logical clock for recency: one tick per residency request. Half-life in
 * ticks of the decayed use score. */
#define TIERS_HALF_LIFE 64.0

/* Why a copy was dropped (stats "evictions", log lines). */
enum { WHY_POLICY, WHY_EXPLICIT, WHY_REPLACED, WHY_FAILED };

uint64_t tiers__now_ns(void);
void tiers__path_add(tier_path_stats *p, uint64_t bytes, uint64_t ns);
uint64_t tiers__gpu_budget(const tiers *t);
uint64_t tiers__cpu_budget(const tiers *t);
int tiers__compute_tier(const tiers *t);
/* "policy", "explicit", "removed", "failed": evictions by reason. */
const char *tiers__why_name(int why);
void tiers__log_move(const struct slice *s, const char *from, const char *to,
                     uint64_t bytes, uint64_t ns);

/* Most device blocks one move keeps from the copies it evicted. */
#define TIERS_SPARES 8

/* The blocks of copies a move's make_room dropped from one tier, kept for
 * the move to reuse one of the size it needs (take_spare in tiers.c); on
 * its stack. */
typedef struct {
  void *p;
  uint64_t bytes;
  void *fence; /* device: its last owner's (borrowed), a reuse waits for it */
  bool pinned; /* host: how hostmem gave it */
} tiers_spare;

typedef struct {
  tiers_spare v[TIERS_SPARES];
  size_t n;
} tiers_spares;

/* Frees one copy of `s` (never a busy or in-use one); `detail` says why the
 * policy chose it, or NULL. The copy's block goes to `keep` while it has
 * room (NULL: freed). A slice left with no copy anywhere loses its module
 * too and is rebuilt when next needed. */
void tiers__drop_copy(tiers *t, struct slice *s, int tier, int why,
                      const char *detail, tiers_spares *keep);

/* How a move may make room: DEMAND (a forward needs it now: anything not
 * busy, in use or pinned may go, as a last resort even what a pipeline
 * needs next), AHEAD (a prefetch: never what a pipeline needs next) or
 * FREE (a prefetch from far ahead: nothing is evicted for it). */
enum { TIERS_ROOM_DEMAND, TIERS_ROOM_AHEAD, TIERS_ROOM_FREE };

/* tiers_room.c: NO_MEMORY with `needed` in err when `need` bytes of `s`
 * exceed the whole budget of `tier` (no eviction can make room), else 0.
 * err not NULL. */
int tiers__over_budget(const tiers *t, int tier, const struct slice *s,
                       uint64_t need, proto_error *err);
/* tiers_room.c: frees `need` bytes in `tier` (over what is free under its
 * budget) by evicting other slices as `room` (TIERS_ROOM_*) allows; `keep`
 * is never chosen; evicted device blocks go to `spares` (may be NULL). 0 or
 * SLY_E_NO_MEMORY (err->needed set). */
int tiers__make_room(tiers *t, int tier, uint64_t need, struct slice *keep,
                     int room, tiers_spares *spares, proto_error *err);
/* Evicts the lowest-value other copy on the GPU, for allocation failures
 * the budget did not foresee. 0, or -1 when nothing may go. */
int tiers__evict_one_gpu(tiers *t, struct slice *keep);

/* Waits until nobody is moving `s`, then makes the caller its mover. */
void tiers__claim(tiers *t, struct slice *s);
void tiers__unclaim(tiers *t, struct slice *s);
/* Starts tracking `s` for eviction (takes a reference). */
void tiers__track(tiers *t, struct slice *s);
/* Brings claimed `s` into `tier` (TIER_GPU or TIER_CPU) ahead of use,
 * making room as `room` allows (TIERS_ROOM_AHEAD or _FREE; _DEMAND for a
 * forward that waits for it). Leaves the
 * state settled (resident, or unloaded/failed on error). */
int tiers__ensure(tiers *t, struct slice *s, int tier, int room,
                  proto_error *err);

/* tiers_build.c: builds claimed `s`'s module (mutex dropped meanwhile),
 * keeps its layout and cache key, and gives it its values unless its cache
 * file holds them (without `use_cache`, a file is not looked for: it turned
 * out bad). */
int tiers__build(tiers *t, struct slice *s, bool use_cache, proto_error *err);
/* Writes the cache file of claimed `s` from `blob` (its host copy, or the
 * blob of a module just built; `from` names it in the move line) where
 * there is a disk cache and no file yet (mutex dropped meanwhile). A failed
 * write is logged and leaves the slice as it was. */
void tiers__write_cache(tiers *t, struct slice *s, const void *blob,
                        const char *from);

/* prefetch.c: the mover thread, and the hints a slice leaves behind. */
int tiers__mover_start(tiers *t);
void tiers__mover_stop(tiers *t);
/* Drops what the prefetcher knows of `s` and what points at removed
 * slices. */
void tiers__forget_hints(tiers *t, struct slice *s);

#endif
