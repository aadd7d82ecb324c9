/* evict.h — choosing what leaves a tier (daemon/).
 *
 * Owns: the eviction policy, as pure functions over candidate descriptions,
 * so that it can be unit-tested on traces and simulated against LRU. Usage-
 * aware: each candidate's value is its recency- and frequency-weighted use
 * times its reload cost (bytes over the measured bandwidth of the tier it
 * would come back from); the cheapest to lose goes first. Never a pinned
 * candidate, never one in use, never the one a running pipeline needs next.
 *
 * Units. A tick is one slice activation (the daemon's logical clock). A
 * candidate's value is the reload time its eviction is expected to cost per
 * tick: (estimated uses per tick) x (bytes / reload bandwidth), in seconds
 * per tick. The use rate comes from whichever of two sources says more:
 *   - the decayed use count, read as an exponentially weighted rate
 *     (score x ln 2 / half_life uses per tick);
 *   - `next_use`, when the daemon knows it: a running pipeline knows how many
 *     ticks remain until it reaches each of its slices in the current pass,
 *     and a slice needed in d ticks is worth 1/d uses per tick. This is what
 *     makes cyclic pipelines work (farthest next use goes first, as Belady's
 *     MIN); recency alone evicts exactly the slice a loop needs soonest.
 * Callers keep score and last_use_tick per slice across evictions (usage is
 * the slice's, not the tier copy's). No globals, no I/O, no allocation.
 */
#ifndef DAEMON_EVICT_H
#define DAEMON_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A half-life that suits the traces in tests/bench/evict_sim.c: long enough
 * that frequency counts (Zipf), short enough that a workload change is
 * forgotten within a few hundred activations. */
#define EVICT_DEFAULT_HALF_LIFE 256.0

/* next_use, as the daemon should fill it (and tests/bench/evict_sim.c
 * does): while a pipeline of L slices runs and has just run step `cur`, its
 * slice at position p is needed in (p - cur) steps if p > cur; if the
 * pipeline has completed a whole pass before (it is taken to repeat), a
 * slice with p <= cur is needed in (L - cur + p) steps. Steps are converted
 * to ticks with the ticks per pipeline step seen so far (1 when the
 * pipeline is the only traffic, more when other calls interleave). Learned
 * prefetch can fill it the same way from its successor chain. A slice
 * brought in ahead of use has a score of 0 and, without needed_next or
 * next_use, is the first to go. */

/* Most candidates one evict_choose call accepts. */
#define EVICT_MAX_CANDIDATES 65536

typedef struct {
  uint64_t bytes;          /* freed if evicted */
  double reload_gbps;      /* bandwidth it would come back at (GB/s, > 0;
                              anything below 0.001 or NaN counts as 0.001) */
  double score;            /* decayed use count (evict_touch keeps it) */
  uint64_t last_use_tick;  /* logical clock of the last use */
  uint64_t next_use;       /* ticks until its next known use; 0 = unknown.
                              See "next_use" above. */
  bool pinned, in_use, needed_next;
} evict_candidate;

/* Why a candidate was chosen, for the log and stats. */
typedef enum {
  EVICT_REASON_LOWEST_VALUE, /* lowest use x reload cost */
  EVICT_REASON_NEVER_USED,   /* no recorded use and no known next use */
  EVICT_REASON_NEEDED_LATER, /* its known next use set its value */
} evict_reason;

/* "lowest_value", "never_used", "needed_later"; "unknown" otherwise. The
 * string is static. */
const char *evict_reason_name(evict_reason r);

/* Records a use at logical time `tick`: the score decays by half every
 * `half_life` ticks and then gains 1. A half_life below 1 (or NaN) counts as
 * 1; a tick before the last use counts as the last use. */
void evict_touch(evict_candidate *c, uint64_t tick, double half_life);

/* The value of keeping c at time `tick` (higher: keep), in expected reload
 * seconds per tick as described above. Ignores pinned/in_use/needed_next. */
double evict_value(const evict_candidate *c, uint64_t tick, double half_life);

/* Picks candidates to free at least `need` bytes, cheapest value first,
 * skipping pinned, in-use and needed-next ones. Writes their indices into
 * `out` (room for n; in eviction order) and, unless `reasons` is NULL, why
 * each was chosen into `reasons` (room for n); returns how many (0 when
 * need is 0). Returns -1 when even all eligible candidates cannot free
 * `need` bytes, or n > EVICT_MAX_CANDIDATES: then nothing is chosen and out
 * and reasons are untouched. Deterministic: ties go to the least recently
 * used, then to the lower index. */
int evict_choose(const evict_candidate *cands, size_t n, uint64_t need,
                 uint64_t tick, double half_life, size_t *out,
                 evict_reason *reasons);

#endif
