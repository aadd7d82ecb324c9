/* evict.c — the usage-aware eviction policy (see evict.h for the model).
 *
 * Choosing a set to evict is a covering knapsack: free at least `need`
 * bytes while losing as little value (expected reload seconds per tick) as
 * possible. It is NP-hard in general, so:
 *   1. greedy by value per byte, the classic knapsack ratio: a candidate's
 *      value per byte is its use rate over its reload bandwidth, so at equal
 *      use the slice that comes back fastest goes first, whatever its size;
 *   2. prune the overshoot: the greedy prefix often ends with a large slice
 *      that alone covers what some earlier small ones freed; walking the
 *      chosen set from most to least valuable, any one the rest can do
 *      without is kept resident;
 *   3. compare with the best single candidate that frees `need` on its own,
 *      which bounds the greedy's worst case (one small cheap slice in front
 *      of the one big slice that is needed anyway).
 * The result is within the usual greedy bounds and, more to the point here,
 * never evicts a big expensive slice when small cheap ones suffice, nor a
 * handful of small valuable ones when one cheap big one does.
 *
 * Everything works in place in the caller's `out` array (qsort_r with a
 * context), so the policy needs no allocation and no globals.
 */
#include "evict.h"

#include <math.h>
#include <stdlib.h>

#define EVICT_LN2 0.69314718055994530942
#define EVICT_MIN_GBPS 0.001

static double clamp_half_life(double h) { return h >= 1.0 ? h : 1.0; }

static double clamp_gbps(double g) {
  return g >= EVICT_MIN_GBPS ? g : EVICT_MIN_GBPS;
}

/* The decayed use count at `tick`. */
static double decayed_score(const evict_candidate *c, uint64_t tick, double h) {
  double s = c->score > 0 ? c->score : 0; /* NaN and negatives count as 0 */
  if (s == 0 || tick <= c->last_use_tick)
    return s;
  return s * exp2(-(double)(tick - c->last_use_tick) / h);
}

/* Uses per tick implied by the decayed count: an exponentially weighted
 * moving sum with half-life h sums to h / ln 2 times the rate. */
static double score_rate(const evict_candidate *c, uint64_t tick, double h) {
  return decayed_score(c, tick, h) * EVICT_LN2 / h;
}

static double hint_rate(const evict_candidate *c) {
  return c->next_use ? 1.0 / (double)c->next_use : 0.0;
}

/* Estimated uses per tick: whichever source says more, because a slice a
 * pipeline will reach soon and that one-off clients also call often is
 * worth keeping for either reason. */
static double use_rate(const evict_candidate *c, uint64_t tick, double h) {
  double r = score_rate(c, tick, h), k = hint_rate(c);
  return k > r ? k : r;
}

const char *evict_reason_name(evict_reason r) {
  switch (r) {
  case EVICT_REASON_LOWEST_VALUE: return "lowest_value";
  case EVICT_REASON_NEVER_USED: return "never_used";
  case EVICT_REASON_NEEDED_LATER: return "needed_later";
  }
  return "unknown";
}

void evict_touch(evict_candidate *c, uint64_t tick, double half_life) {
  double h = clamp_half_life(half_life);
  c->score = decayed_score(c, tick, h) + 1.0;
  if (tick > c->last_use_tick)
    c->last_use_tick = tick;
}

double evict_value(const evict_candidate *c, uint64_t tick, double half_life) {
  double h = clamp_half_life(half_life);
  double reload_s = (double)c->bytes / (clamp_gbps(c->reload_gbps) * 1e9);
  return use_rate(c, tick, h) * reload_s;
}

static evict_reason reason_for(const evict_candidate *c, uint64_t tick,
                               double h) {
  if (c->next_use && hint_rate(c) >= score_rate(c, tick, h))
    return EVICT_REASON_NEEDED_LATER;
  if (!(c->score > 0) && !c->next_use)
    return EVICT_REASON_NEVER_USED;
  return EVICT_REASON_LOWEST_VALUE;
}

static bool eligible(const evict_candidate *c) {
  /* A zero-byte candidate frees nothing, so losing it buys nothing. */
  return !c->pinned && !c->in_use && !c->needed_next && c->bytes > 0;
}

typedef struct {
  const evict_candidate *cands;
  uint64_t tick;
  double h;
} order_ctx;

/* Ties: least recently used first, then lower index, so that the order is
 * total and the result is the same on every run. */
static int by_lru_then_index(const order_ctx *o, size_t a, size_t b) {
  const evict_candidate *ca = &o->cands[a], *cb = &o->cands[b];
  if (ca->last_use_tick != cb->last_use_tick)
    return ca->last_use_tick < cb->last_use_tick ? -1 : 1;
  return a < b ? -1 : (a > b ? 1 : 0);
}

/* Greedy order: value per byte ascending. value / bytes = rate / bandwidth
 * (the bytes cancel), computed that way to keep the comparison exact. */
static int cmp_per_byte(const void *pa, const void *pb, void *ctx) {
  const order_ctx *o = ctx;
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  const evict_candidate *ca = &o->cands[a], *cb = &o->cands[b];
  double ka = use_rate(ca, o->tick, o->h) / clamp_gbps(ca->reload_gbps);
  double kb = use_rate(cb, o->tick, o->h) / clamp_gbps(cb->reload_gbps);
  if (ka != kb)
    return ka < kb ? -1 : 1;
  return by_lru_then_index(o, a, b);
}

/* Pruning order: most valuable first (most recently used first on ties),
 * so that the ones worth most get the first chance to stay. */
static int cmp_value_desc(const void *pa, const void *pb, void *ctx) {
  const order_ctx *o = ctx;
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  double va = evict_value(&o->cands[a], o->tick, o->h);
  double vb = evict_value(&o->cands[b], o->tick, o->h);
  if (va != vb)
    return va > vb ? -1 : 1;
  return -by_lru_then_index(o, a, b);
}

int evict_choose(const evict_candidate *cands, size_t n, uint64_t need,
                 uint64_t tick, double half_life, size_t *out,
                 evict_reason *reasons) {
  if (n > EVICT_MAX_CANDIDATES)
    return -1;
  if (need == 0)
    return 0;

  /* Feasibility first, so that nothing is written when it fails. */
  uint64_t avail = 0;
  for (size_t i = 0; i < n && avail < need; i++)
    if (eligible(&cands[i]))
      avail += cands[i].bytes;
  if (avail < need)
    return -1;

  order_ctx o = {cands, tick, clamp_half_life(half_life)};
  size_t e = 0;
  for (size_t i = 0; i < n; i++)
    if (eligible(&cands[i]))
      out[e++] = i;
  qsort_r(out, e, sizeof(*out), cmp_per_byte, &o);

  /* 1. Greedy prefix. */
  size_t m = 0;
  uint64_t freed = 0;
  while (freed < need)
    freed += cands[out[m++]].bytes;

  /* 3 (looked up before out[] is reshuffled). The best single candidate:
   * lowest value among those large enough, greedy order breaking ties. */
  bool have_single = false;
  size_t single = 0;
  double single_v = 0;
  for (size_t k = 0; k < e; k++) {
    const evict_candidate *c = &cands[out[k]];
    if (c->bytes < need)
      continue;
    double v = evict_value(c, tick, o.h);
    if (!have_single || v < single_v) {
      have_single = true;
      single = out[k];
      single_v = v;
    }
  }

  /* 2. Prune the overshoot. */
  qsort_r(out, m, sizeof(*out), cmp_value_desc, &o);
  size_t kept = 0;
  double total_v = 0;
  for (size_t k = 0; k < m; k++) {
    uint64_t b = cands[out[k]].bytes;
    if (freed - b >= need) {
      freed -= b;
      continue;
    }
    total_v += evict_value(&cands[out[k]], tick, o.h);
    out[kept++] = out[k];
  }
  m = kept;

  if (have_single && single_v < total_v) {
    out[0] = single;
    m = 1;
  }

  qsort_r(out, m, sizeof(*out), cmp_per_byte, &o);
  if (reasons)
    for (size_t k = 0; k < m; k++)
      reasons[k] = reason_for(&cands[out[k]], tick, o.h);
  return (int)m;
}
