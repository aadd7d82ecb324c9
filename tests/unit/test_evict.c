/* test_evict.c — the eviction policy on small traces: what it may never
 * evict, when it must refuse, and that it keeps what is used often, used
 * recently, expensive to bring back, or needed soon by a running pipeline.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"

#define MIB (1024ull * 1024)
#define H 100.0 /* half-life in ticks for these tests */

/* A candidate of `mib` MiB coming back at `gbps`, used `uses` times at
 * consecutive ticks ending at `last`. */
static evict_candidate cand(uint64_t mib, double gbps, int uses,
                            uint64_t last) {
  evict_candidate c = {.bytes = mib * MIB, .reload_gbps = gbps};
  for (int k = uses - 1; k >= 0; k--)
    evict_touch(&c, last - (uint64_t)k, H);
  return c;
}

/* Runs evict_choose and checks what every answer must satisfy: distinct,
 * in range, eligible, freeing at least `need`, none of them redundant. */
static int choose(const evict_candidate *c, size_t n, uint64_t need,
                  uint64_t tick, size_t *out, evict_reason *why) {
  int m = evict_choose(c, n, need, tick, H, out, why);
  if (m < 0)
    return m;
  cr_assert_leq((size_t)m, n);
  uint64_t freed = 0;
  for (int k = 0; k < m; k++) {
    cr_assert_lt(out[k], n);
    const evict_candidate *e = &c[out[k]];
    cr_assert(!e->pinned && !e->in_use && !e->needed_next,
              "chose protected candidate %zu", out[k]);
    cr_assert_gt(e->bytes, 0);
    for (int j = 0; j < k; j++)
      cr_assert_neq(out[j], out[k], "chose %zu twice", out[k]);
    freed += e->bytes;
  }
  cr_assert_geq(freed, need, "freed %llu of %llu", (unsigned long long)freed,
                (unsigned long long)need);
  for (int k = 0; k < m; k++)
    cr_assert_lt(freed - c[out[k]].bytes, need,
                 "candidate %zu was evicted without being needed", out[k]);
  return m;
}

Test(evict_choose, never_picks_pinned_in_use_or_needed_next) {
  /* The protected ones are the cheapest to lose (never used, fast reload);
   * the only eligible one is hot and slow to reload. */
  evict_candidate c[4] = {cand(64, 50, 0, 0), cand(64, 50, 0, 0),
                          cand(64, 50, 0, 0), cand(64, 1, 30, 1000)};
  c[0].pinned = true;
  c[1].in_use = true;
  c[2].needed_next = true;
  size_t out[4];
  int m = choose(c, 4, 1, 1001, out, NULL);
  cr_assert_eq(m, 1);
  cr_assert_eq(out[0], 3);
  /* More than the one eligible candidate holds: refused. */
  cr_assert_eq(choose(c, 4, 64 * MIB + 1, 1001, out, NULL), -1);
}

Test(evict_choose, refuses_when_eligible_bytes_fall_short_and_writes_nothing) {
  evict_candidate c[3] = {cand(100, 10, 1, 5), cand(200, 10, 1, 6),
                          cand(400, 10, 1, 7)};
  c[2].pinned = true;
  size_t out[3] = {77, 77, 77};
  evict_reason why[3] = {99, 99, 99};
  cr_assert_eq(evict_choose(c, 3, 300 * MIB + 1, 10, H, out, why), -1);
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(out[k], 77, "out written on failure");
    cr_assert_eq((int)why[k], 99, "reasons written on failure");
  }
  /* Exactly what is eligible is enough. */
  cr_assert_eq(choose(c, 3, 300 * MIB, 10, out, why), 2);
  /* Nothing at all to choose from. */
  cr_assert_eq(evict_choose(c, 0, 1, 10, H, out, why), -1);
  /* Too many candidates is refused before any is read. */
  cr_assert_eq(evict_choose(c, EVICT_MAX_CANDIDATES + 1, 1, 10, H, out, why),
               -1);
}

Test(evict_choose, needs_nothing_chooses_nothing) {
  evict_candidate c[1] = {cand(1, 1, 0, 0)};
  size_t out[1] = {5};
  cr_assert_eq(evict_choose(c, 1, 0, 10, H, out, NULL), 0);
  cr_assert_eq(out[0], 5);
}

Test(evict_choose, zero_byte_candidates_are_never_chosen) {
  evict_candidate c[2] = {cand(0, 50, 0, 0), cand(8, 1, 50, 100)};
  size_t out[2];
  cr_assert_eq(choose(c, 2, 1, 101, out, NULL), 1);
  cr_assert_eq(out[0], 1);
  cr_assert_eq(choose(c, 1, 1, 101, out, NULL), -1);
}

Test(evict_choose, evicts_the_faster_reload_first_at_equal_use) {
  evict_candidate c[2] = {cand(256, 1.3, 5, 50), cand(256, 54.3, 5, 50)};
  size_t out[2];
  cr_assert_eq(choose(c, 2, 256 * MIB, 51, out, NULL), 1);
  cr_assert_eq(out[0], 1, "the disk-backed slice should stay");
  cr_assert_lt(evict_value(&c[1], 51, H), evict_value(&c[0], 51, H));
}

Test(evict_choose, keeps_the_frequently_used_over_the_once_used) {
  /* Same size, bandwidth and last use; 20 uses against one. */
  evict_candidate c[2] = {cand(128, 10, 20, 500), cand(128, 10, 1, 500)};
  size_t out[2];
  evict_reason why[2];
  cr_assert_eq(choose(c, 2, 1, 501, out, why), 1);
  cr_assert_eq(out[0], 1);
  cr_assert_eq(why[0], EVICT_REASON_LOWEST_VALUE);
}

Test(evict_choose, old_heavy_use_loses_to_recent_use_after_enough_half_lives) {
  /* 50 uses ending at tick 100 against one use. Right after, the heavy user
   * is kept; log2(50) < 6 half-lives later, the recent one is. */
  evict_candidate heavy = cand(128, 10, 50, 100);
  evict_candidate c[2] = {heavy, cand(128, 10, 1, 101)};
  size_t out[2];
  cr_assert_eq(choose(c, 2, 1, 102, out, NULL), 1);
  cr_assert_eq(out[0], 1, "recent single use should go first at first");

  uint64_t later = 100 + (uint64_t)(6 * H);
  c[1] = cand(128, 10, 1, later);
  cr_assert_eq(choose(c, 2, 1, later + 1, out, NULL), 1);
  cr_assert_eq(out[0], 0, "six half-lives on, the old heavy use should go");
}

Test(evict_choose, prefers_small_cheap_slices_over_a_big_expensive_one) {
  /* Equal use. Freeing 100 MiB: two 64 MiB host-backed slices cost far less
   * to bring back than the 1 GiB disk-backed one that would also do. */
  evict_candidate c[3] = {cand(1024, 1.3, 3, 90), cand(64, 54.3, 3, 90),
                          cand(64, 54.3, 3, 90)};
  size_t out[3];
  int m = choose(c, 3, 100 * MIB, 91, out, NULL);
  cr_assert_eq(m, 2);
  cr_assert(out[0] != 0 && out[1] != 0, "the big disk-backed slice went");
}

Test(evict_choose, takes_one_cheap_big_slice_over_many_small_valuable_ones) {
  /* Eight small hot slow-to-reload ones, or one big never-used one. */
  evict_candidate c[9];
  for (int k = 0; k < 8; k++)
    c[k] = cand(32, 1.3, 40, 300);
  c[8] = cand(512, 54.3, 0, 0);
  size_t out[9];
  evict_reason why[9];
  cr_assert_eq(choose(c, 9, 200 * MIB, 301, out, why), 1);
  cr_assert_eq(out[0], 8);
  cr_assert_eq(why[0], EVICT_REASON_NEVER_USED);
}

Test(evict_choose, one_slice_that_costs_less_beats_a_cheaper_per_byte_pair) {
  /* Per byte, the two 60 MiB slices (needed in 11 ticks) are cheaper than
   * the 100 MiB one (needed in 10), so greedy takes both; but together they
   * cost 120/11 against 100/10 for the one that frees enough alone. */
  evict_candidate c[3] = {cand(60, 10, 0, 0), cand(60, 10, 0, 0),
                          cand(100, 10, 0, 0)};
  c[0].next_use = c[1].next_use = 11;
  c[2].next_use = 10;
  size_t out[3];
  cr_assert_eq(choose(c, 3, 100 * MIB, 1, out, NULL), 1);
  cr_assert_eq(out[0], 2);
  /* Freeing less, the pair's first half is enough. */
  cr_assert_eq(choose(c, 3, 60 * MIB, 1, out, NULL), 1);
  cr_assert_eq(out[0], 0);
}

Test(evict_choose, drops_a_cheap_pick_that_a_later_big_one_makes_redundant) {
  /* Greedy by value per byte takes the small slice first, then the big one,
   * which alone covers `need`: the small one must stay resident. The big
   * one is also the best single candidate, so either step finds it; the
   * randomized test below checks that no answer carries a redundant pick. */
  evict_candidate c[3] = {cand(10, 54.3, 1, 10), cand(100, 20, 1, 10),
                          cand(100, 1.3, 10, 10)};
  size_t out[3];
  cr_assert_eq(choose(c, 3, 100 * MIB, 11, out, NULL), 1);
  cr_assert_eq(out[0], 1);
}

Test(evict_choose, farthest_known_next_use_goes_first) {
  /* A cyclic pipeline's slices, all used alike: without hints recency
   * decides; with next_use, the one needed last goes (Belady). */
  evict_candidate c[3];
  for (int k = 0; k < 3; k++)
    c[k] = cand(256, 54.3, 1, 10 + (uint64_t)k);
  size_t out[3];
  evict_reason why[3];
  cr_assert_eq(choose(c, 3, 1, 13, out, why), 1);
  cr_assert_eq(out[0], 0, "LRU without hints");

  c[0].next_use = 1;
  c[1].next_use = 7;
  c[2].next_use = 3;
  cr_assert_eq(choose(c, 3, 300 * MIB, 13, out, why), 2);
  cr_assert_eq(out[0], 1);
  cr_assert_eq(out[1], 2);
  cr_assert_eq(why[0], EVICT_REASON_NEEDED_LATER);
  cr_assert_eq(why[1], EVICT_REASON_NEEDED_LATER);
}

Test(evict_choose, a_next_use_counts_as_one_use_per_that_many_ticks) {
  /* A slice used every tick of late (rate about 0.75 per tick at H = 100)
   * against a never-used one that a pipeline will reach: 1000 or 2 ticks
   * away is worth less, 1 tick away is worth more. */
  evict_candidate c[2] = {cand(64, 10, 200, 400), cand(64, 10, 0, 0)};
  size_t out[2];
  evict_reason why[2];
  cr_assert_eq(choose(c, 2, 1, 401, out, why), 1);
  cr_assert_eq(out[0], 1);
  cr_assert_eq(why[0], EVICT_REASON_NEVER_USED);
  c[1].next_use = 1000;
  cr_assert_eq(choose(c, 2, 1, 401, out, why), 1);
  cr_assert_eq(out[0], 1);
  cr_assert_eq(why[0], EVICT_REASON_NEEDED_LATER);
  c[1].next_use = 2;
  cr_assert_eq(choose(c, 2, 1, 401, out, why), 1);
  cr_assert_eq(out[0], 1);
  c[1].next_use = 1;
  cr_assert_eq(choose(c, 2, 1, 401, out, why), 1);
  cr_assert_eq(out[0], 0, "needed next tick: the hot one should go");
  cr_assert_eq(why[0], EVICT_REASON_LOWEST_VALUE);
}

Test(evict_choose, ties_go_to_the_least_recently_used_then_the_lower_index) {
  evict_candidate c[4];
  for (int k = 0; k < 4; k++)
    c[k] = (evict_candidate){.bytes = MIB, .reload_gbps = 10};
  c[0].last_use_tick = 9;
  c[1].last_use_tick = 3;
  c[2].last_use_tick = 3;
  c[3].last_use_tick = 5;
  size_t out[4];
  evict_reason why[4];
  cr_assert_eq(choose(c, 4, 4 * MIB, 10, out, why), 4);
  size_t want[4] = {1, 2, 3, 0};
  for (int k = 0; k < 4; k++) {
    cr_assert_eq(out[k], want[k], "position %d", k);
    cr_assert_eq(why[k], EVICT_REASON_NEVER_USED);
  }
}

/* splitmix64, so that the randomized traces are the same on every run. */
static uint64_t rng(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Test(evict_choose, randomized_sets_free_enough_exactly_and_deterministically) {
  uint64_t seed = 42;
  evict_candidate c[40];
  size_t out[40], again[40];
  evict_reason why[40], why_again[40];
  for (int round = 0; round < 2000; round++) {
    size_t n = 1 + rng(&seed) % 40;
    uint64_t eligible = 0;
    for (size_t k = 0; k < n; k++) {
      uint64_t r = rng(&seed);
      c[k] = (evict_candidate){
          .bytes = (r % 5 == 0) ? 0 : 1 + (r >> 8) % (512 * MIB),
          .reload_gbps = (r >> 40) % 2 ? 54.3 : 1.3,
          .pinned = (r >> 42) % 7 == 0,
          .in_use = (r >> 45) % 9 == 0,
          .needed_next = (r >> 48) % 11 == 0,
          .next_use = (r >> 51) % 3 == 0 ? 1 + (r >> 53) % 64 : 0,
      };
      int uses = (int)(rng(&seed) % 30);
      for (int u = 0; u < uses; u++)
        evict_touch(&c[k], rng(&seed) % 1000, H);
      if (!c[k].pinned && !c[k].in_use && !c[k].needed_next)
        eligible += c[k].bytes;
    }
    uint64_t need = rng(&seed) % (eligible + eligible / 4 + 2);
    int m = choose(c, n, need, 1000, out, why);
    if (need > eligible) {
      cr_assert_eq(m, -1, "round %d: need %llu > eligible %llu", round,
                   (unsigned long long)need, (unsigned long long)eligible);
      continue;
    }
    cr_assert_geq(m, need ? 1 : 0, "round %d", round);
    int m2 = evict_choose(c, n, need, 1000, H, again, why_again);
    cr_assert_eq(m2, m);
    cr_assert_eq(memcmp(out, again, (size_t)m * sizeof(*out)), 0);
    cr_assert_eq(memcmp(why, why_again, (size_t)m * sizeof(*why)), 0);
  }
}

/* A cyclic pipeline of `n` equal slices with room for `room`, run `passes`
 * times, the daemon's way: the slice computing while the next loads is in
 * use, the next one is needed_next, and with `hints` each slice gets the
 * steps until the pipeline reaches it again. Returns the hits. */
static int cyclic_hits(int n, int room, int passes, bool hints) {
  evict_candidate usage[16] = {{0}}, c[16];
  bool resident[16] = {false};
  size_t slice_of[16], out[16];
  int hits = 0, used = 0;
  cr_assert_leq(n, 16);
  for (int step = 0; step < n * passes; step++) {
    int pos = step % n;
    uint64_t tick = (uint64_t)step + 1;
    if (resident[pos]) {
      hits++;
    } else if (used == room) {
      size_t m = 0;
      for (int k = 0; k < n; k++) {
        if (!resident[k])
          continue;
        c[m] = usage[k];
        c[m].bytes = 256 * MIB;
        c[m].reload_gbps = 54.3;
        c[m].in_use = pos > 0 && k == pos - 1;
        c[m].needed_next = k == pos + 1;
        if (hints && step >= n)
          c[m].next_use = (uint64_t)(k > pos ? k - pos : n - pos + k);
        slice_of[m++] = (size_t)k;
      }
      int e = evict_choose(c, m, 256 * MIB, tick, H, out, NULL);
      cr_assert_eq(e, 1);
      resident[slice_of[out[0]]] = false;
      used--;
    }
    if (!resident[pos]) {
      resident[pos] = true;
      used++;
    }
    evict_touch(&usage[pos], tick, H);
  }
  return hits;
}

Test(evict_trace, cyclic_pipeline_hits_with_next_use_where_recency_gets_none) {
  /* 8 slices, room for 4, 20 passes. Recency alone evicts exactly the slice
   * needed soonest: no hits. With next_use (from the second pass on) the
   * policy keeps at least room - 2 slices through each pass: one slot holds
   * the slice computing, which may not go, and one the slice coming in. */
  cr_assert_eq(cyclic_hits(8, 4, 20, false), 0);
  int hits = cyclic_hits(8, 4, 20, true);
  cr_assert_geq(hits, 19 * 2, "got %d hits", hits);
}

Test(evict_touch, halves_the_score_every_half_life_then_adds_one) {
  evict_candidate c = {.bytes = 1, .reload_gbps = 1};
  evict_touch(&c, 1000, H);
  cr_assert_float_eq(c.score, 1.0, 1e-12);
  evict_touch(&c, 1000 + (uint64_t)H, H);
  cr_assert_float_eq(c.score, 1.5, 1e-12);
  cr_assert_eq(c.last_use_tick, 1000 + (uint64_t)H);
  /* A tick from the past counts as now: no decay, no going back. */
  evict_touch(&c, 5, H);
  cr_assert_float_eq(c.score, 2.5, 1e-12);
  cr_assert_eq(c.last_use_tick, 1000 + (uint64_t)H);
  /* A half-life below one tick counts as one. */
  evict_candidate d = {0};
  evict_touch(&d, 10, 0.0);
  evict_touch(&d, 11, NAN);
  cr_assert_float_eq(d.score, 1.5, 1e-12);
}

Test(evict_value, is_use_rate_times_reload_seconds) {
  /* Used once just now: rate ln2 / H per tick; 1 GB at 2 GB/s: 0.5 s. */
  evict_candidate c = {.bytes = 1000000000, .reload_gbps = 2};
  evict_touch(&c, 7, H);
  cr_assert_float_eq(evict_value(&c, 7, H), log(2.0) / H * 0.5, 1e-12);
  /* One half-life later, half of it. */
  cr_assert_float_eq(evict_value(&c, 7 + (uint64_t)H, H), log(2.0) / H * 0.25,
                     1e-12);
  /* A known next use in 4 ticks: a quarter of a use per tick. */
  c.next_use = 4;
  cr_assert_float_eq(evict_value(&c, 7, H), 0.25 * 0.5, 1e-12);
  /* Never used, no hint: worth nothing. Bad bandwidths stay finite. */
  evict_candidate z = {.bytes = 1, .reload_gbps = 0, .next_use = 1};
  cr_assert(isfinite(evict_value(&z, 0, H)));
  z.reload_gbps = NAN;
  cr_assert(isfinite(evict_value(&z, 0, H)));
  z.next_use = 0;
  cr_assert_eq(evict_value(&z, 0, H), 0.0);
}

Test(evict_reason, names_are_stable_for_logs_and_stats) {
  cr_assert_str_eq(evict_reason_name(EVICT_REASON_LOWEST_VALUE),
                   "lowest_value");
  cr_assert_str_eq(evict_reason_name(EVICT_REASON_NEVER_USED), "never_used");
  cr_assert_str_eq(evict_reason_name(EVICT_REASON_NEEDED_LATER),
                   "needed_later");
  cr_assert_str_eq(evict_reason_name((evict_reason)42), "unknown");
}
