/* tiers_room.c — making room in a tier: what leaves it, chosen by the
 * eviction policy (evict.h) from what each slice is worth keeping. Called
 * with the tiers' mutex held; never picks a busy, in-use or pinned copy. */
#include <stdlib.h>

#include "log.h"
#include "tiers_internal.h"

/* The measured bandwidth of a path, or a guess until it has been used: the
 * policy only compares these, so the guesses need only be in order. */
static double path_gbps(const tier_path_stats *p, double guess) {
  uint64_t b = atomic_load(&p->bytes), ns = atomic_load(&p->ns);
  return b >= (16u << 20) && ns > 0 ? (double)b / (double)ns : guess;
}

/* How fast a copy evicted from `tier` would come back: from the host for the
 * GPU when a host copy stays, else from disk, else by building it again. */
static double reload_gbps(tiers *t, const slice *s, int tier) {
  const tier_place *p = &s->place;
  if (tier == TIER_GPU && p->host != NULL)
    return path_gbps(&t->cpu_to_gpu, 20.0);
  if (p->on_disk)
    return path_gbps(&t->disk_to_cpu, 1.0);
  return path_gbps(&t->build, 0.2);
}

/* Frees `need` bytes in `tier` (over what is free under its budget) by
 * evicting other slices as `room` allows (tiers_internal.h); `keep` is
 * never chosen, nor a busy one. */
int tiers__over_budget(const tiers *t, int tier, const slice *s,
                       uint64_t need, proto_error *err) {
  uint64_t budget = tier == TIER_GPU ? tiers__gpu_budget(t) : tiers__cpu_budget(t);
  if (need <= budget)
    return 0;
  proto_fail(err, SLY_E_NO_MEMORY,
             "slice '%s' needs %llu bytes; the %s budget is %llu", s->name,
             (unsigned long long)need, tier_name(tier),
             (unsigned long long)budget);
  err->has_needed = true;
  err->needed = need;
  return SLY_E_NO_MEMORY;
}

int tiers__make_room(tiers *t, int tier, uint64_t need, slice *keep,
                     int room, tiers_spares *spares, proto_error *err) {
  uint64_t budget = tier == TIER_GPU ? tiers__gpu_budget(t) : tiers__cpu_budget(t);
  uint64_t used = atomic_load(tier == TIER_GPU ? &t->gpu_used : &t->cpu_used);
  if (tiers__over_budget(t, tier, keep, need, err) < 0)
    return SLY_E_NO_MEMORY;
  bool active_only =
      tier == TIER_GPU && t->conf.strategy == GPU_STRATEGY_ACTIVE_ONLY;
  if (used + need <= budget && !active_only)
    return 0;
  if (room == TIERS_ROOM_FREE) {
    if (used + need <= budget)
      return 0; /* active_only: nothing is evicted for a far prefetch */
    return proto_fail(err, SLY_E_NO_MEMORY,
                      "no free room for slice '%s' (%llu bytes) in the %s "
                      "tier, and a prefetch from this far ahead evicts nothing",
                      keep->name, (unsigned long long)need, tier_name(tier));
  }

  evict_candidate *c = calloc(t->n_all + 1, sizeof(*c));
  size_t *idx = calloc(t->n_all + 1, sizeof(*idx));
  size_t *order = calloc(t->n_all + 1, sizeof(*order));
  evict_reason *why = calloc(t->n_all + 1, sizeof(*why));
  if (c == NULL || idx == NULL || order == NULL || why == NULL) {
    free(c), free(idx), free(order), free(why);
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  size_t n = 0;
  for (size_t i = 0; i < t->n_all; i++) {
    slice *o = t->all[i];
    tier_place *p = &o->place;
    if (o == keep || (tier == TIER_GPU ? p->dev : p->host) == NULL)
      continue;
    c[n] = tier == TIER_GPU ? p->ev_gpu : p->ev_cpu;
    c[n].bytes = p->bytes;
    c[n].reload_gbps = reload_gbps(t, o, tier);
    int pin = atomic_load(&p->pinned_tier);
    c[n].pinned = pin == tier; /* pinned at T keeps its copy at T */
    c[n].in_use = p->in_use > 0 || p->busy;
    /* A staged copy (the host's: tiers_stage brings slices no further)
     * waits for its job as a pipeline's next slice waits. */
    c[n].needed_next = p->needed_next ||
                       (tier == TIER_CPU && atomic_load(&p->awaited) > 0);
    c[n].next_use = p->next_use_at > t->tick ? p->next_use_at - t->tick : 0;
    idx[n++] = i;
  }
  uint64_t want = used + need > budget ? used + need - budget : 0;
  if (active_only) {
    /* active_only keeps nothing on the GPU but the running slice and what
     * is being brought in for it: every other copy that may go, goes. */
    uint64_t eligible = 0;
    for (size_t i = 0; i < n; i++)
      if (!c[i].pinned && !c[i].in_use && !c[i].needed_next)
        eligible += c[i].bytes;
    if (eligible > want)
      want = eligible;
  }
  int k = evict_choose(c, n, want, t->tick, TIERS_HALF_LIFE, order, why);
  if (k < 0 && active_only && used + need <= budget) {
    k = 0; /* nothing else may go, and it fits anyway */
  } else if (k < 0 && room == TIERS_ROOM_DEMAND) {
    /* Only the slice a pipeline needs next could make room: better to
     * reload it later than to refuse a request that fits. */
    want = used + need > budget ? used + need - budget : 0;
    for (size_t i = 0; i < n; i++)
      c[i].needed_next = false;
    k = evict_choose(c, n, want, t->tick, TIERS_HALF_LIFE, order, why);
  }
  int rc = 0;
  if (k < 0) {
    uint64_t stuck = 0;
    for (size_t i = 0; i < n; i++)
      if (c[i].pinned || c[i].in_use)
        stuck += c[i].bytes;
    used = stuck;
    rc = proto_fail(err, SLY_E_NO_MEMORY,
                    "no room for slice '%s' (%llu bytes) in the %s tier: "
                    "%llu of %llu bytes used by pinned or busy slices",
                    keep->name, (unsigned long long)need, tier_name(tier),
                    (unsigned long long)used, (unsigned long long)budget);
    err->has_needed = true;
    err->needed = need;
  } else {
    /* Take the victims out first: the array they live in may move. */
    slice **victims = calloc((size_t)k + 1, sizeof(*victims));
    for (int j = 0; victims != NULL && j < k; j++) {
      victims[j] = t->all[idx[order[j]]];
      slice_ref(victims[j]);
    }
    for (int j = 0; victims != NULL && j < k; j++) {
      tiers__drop_copy(t, victims[j], tier, WHY_POLICY,
                       evict_reason_name(why[j]), spares);
      slice_unref(victims[j]);
    }
    free(victims);
  }
  free(c), free(idx), free(order), free(why);
  return rc;
}

/* Evicts the lowest-value other copy on the GPU; for allocation failures
 * that the budget did not foresee (fragmentation, another process). */
int tiers__evict_one_gpu(tiers *t, slice *keep) {
  slice *victim = NULL;
  double best = 0;
  for (size_t i = 0; i < t->n_all; i++) {
    slice *o = t->all[i];
    tier_place *p = &o->place;
    int pin = atomic_load(&p->pinned_tier);
    if (o == keep || p->dev == NULL || p->in_use > 0 || p->busy ||
        p->needed_next || pin == TIER_GPU)
      continue;
    double v = evict_value(&p->ev_gpu, t->tick, TIERS_HALF_LIFE);
    if (victim == NULL || v < best) {
      victim = o;
      best = v;
    }
  }
  if (victim == NULL)
    return -1;
  tiers__drop_copy(t, victim, TIER_GPU, WHY_FAILED, "allocation failed",
                   NULL);
  return 0;
}

