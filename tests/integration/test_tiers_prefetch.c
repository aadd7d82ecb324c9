/* test_tiers_prefetch.c — slices brought in before they are asked for.
 *
 * A pipeline prefetches its next slices while one computes, without ever
 * holding more than the running slice plus prefetch_depth on the GPU under
 * active_only; one-slice calls that keep coming in the same order are
 * learned and prefetched, with hits and wasted bytes in stats; and a cyclic
 * pipeline with room for half of it moves fewer bytes than a full pass,
 * because its next uses steer eviction. Outputs always equal the reference.
 * Prefetch counts are asserted only where the test first waits for the
 * mover to finish (tk_stats_settled), so nothing depends on timing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "tierkit.h"

TestSuite(tiers_prefetch, .timeout = 90, .fini = tk_cleanup);

static void model_of(tk_model *m, int n) {
  memset(m, 0, sizeof *m);
  for (int i = 0; i < n; i++) {
    char name[16];
    snprintf(name, sizeof name, "s%d", i);
    tk_model_add(m, name, 512, 100 + i);
  }
  m->n_cfg = m->n_pipe = (size_t)n;
}

static size_t on_gpu(tk_client *k) {
  tk_entry all[TK_MAX_SLICES];
  size_t n = tk_list(k->c, all, TK_MAX_SLICES), g = 0;
  for (size_t i = 0; i < n; i++)
    g += strcmp(all[i].tier, "gpu") == 0;
  return g;
}

/* active_only with room for many: the GPU still never holds more than the
 * running slice plus `depth` being prefetched. */
static void pipeline_active_only(int depth) {
  tk_model m;
  model_of(&m, 6);
  tk_ref *ref = tk_reference(&m);
  char keys[256];
  snprintf(keys, sizeof keys,
           "\"gpu_strategy\": \"active_only\", \"max_gpu_mem_mb\": 64, "
           "\"prefetch_depth\": %d, \"sim_copy_gbps\": 2",
           depth);
  td *d = tk_start(&m, tk_gpu_device(), keys);
  tk_client k;
  tk_open(&k, d);
  uint64_t slice = tk_slice_bytes(&m.s[0]);
  char when[64];
  for (int pass = 0; pass < 4; pass++) {
    snprintf(when, sizeof when, "depth %d, pass %d", depth, pass);
    tk_forward_check(&k, NULL, "p", ref->pipe, when);
    tk_stats st;
    tk_stats_settled(k.c, &st);
    tk_assert_budgets(&st, when);
    if (!tk_on_cuda()) /* CUDA's high-water mark counts its allocator */
      cr_assert_leq(st.gpu_high_water, (uint64_t)(1 + depth) * slice,
                    "%s: the GPU held %llu bytes at once, more than the "
                    "running slice plus %d prefetched (%llu each)",
                    when, (unsigned long long)st.gpu_high_water, depth,
                    (unsigned long long)slice);
    cr_assert_leq(on_gpu(&k), (size_t)(1 + depth), "%s: %zu on the GPU",
                  when, on_gpu(&k));
  }
  tk_stats st;
  tk_stats_settled(k.c, &st);
  /* 4 passes of 5 prefetches each: the mover cannot have lost every race
   * to the executor. */
  cr_assert_geq(st.pf_done, 1, "no prefetch in 4 passes of a pipeline");
  cr_assert_geq(st.pf_hits, 1, "no prefetched slice was used");
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(tiers_prefetch, pipeline_depth_1_active_only) { pipeline_active_only(1); }
Test(tiers_prefetch, pipeline_depth_2_active_only) { pipeline_active_only(2); }

/* One-slice calls in a fixed order: after two rounds each call prefetches
 * the next, and every prefetch is used; a call out of order wastes one. */
Test(tiers_prefetch, learns_what_follows) {
  tk_model m;
  model_of(&m, 4);
  tk_ref *ref = tk_reference(&m);
  td *d = tk_start(&m, tk_gpu_device(),
                   "\"gpu_strategy\": \"active_only\", \"max_gpu_mem_mb\": "
                   "64, \"prefetch_depth\": 1");
  tk_client k;
  tk_open(&k, d);
  tk_stats st;
  char when[64];
  for (int round = 0; round < 4; round++)
    for (int i = 0; i < 4; i++) {
      snprintf(when, sizeof when, "round %d, %s", round, m.s[i].name);
      tk_forward_check(&k, m.s[i].name, NULL, ref->slice[i], when);
      tk_stats_settled(k.c, &st);
      tk_assert_budgets(&st, when);
    }
  /* Rounds 0 and 1 teach s0 -> s1 -> s2 -> s3 -> s0; from round 2 on every
   * call prefetches its successor: 8 prefetches, 7 used so far. */
  cr_assert_geq(st.pf_done, 6, "%llu prefetches, want 8",
                (unsigned long long)st.pf_done);
  cr_assert_geq(st.pf_hits, 6, "%llu prefetch hits, want 7",
                (unsigned long long)st.pf_hits);
  cr_assert_eq(st.pf_wasted, 0, "%llu bytes wasted in a steady order",
               (unsigned long long)st.pf_wasted);
  /* s0 was prefetched after s3; calling s2 instead pushes it out unused. */
  tk_forward_check(&k, m.s[2].name, NULL, ref->slice[2], "out of order");
  tk_stats_settled(k.c, &st);
  cr_assert_eq(st.pf_wasted, tk_slice_bytes(&m.s[0]),
               "wasted %llu bytes, want s0's %llu",
               (unsigned long long)st.pf_wasted,
               (unsigned long long)tk_slice_bytes(&m.s[0]));
  tk_close(&k);
  td_stop(d);
  free(ref);
}

/* A cyclic pipeline of 8 with room for 4: plain recency would reload all 8
 * every pass; knowing each slice's next use keeps part of it resident. */
Test(tiers_prefetch, cyclic_pipeline_moves_less_than_a_pass) {
  tk_model m;
  model_of(&m, 8);
  tk_ref *ref = tk_reference(&m);
  uint64_t slice = tk_slice_bytes(&m.s[0]);
  /* 17 MiB for weights: 4 slices of 4.02 MiB, not 5. */
  td *d = tk_start(&m, tk_gpu_device(),
                   "\"gpu_strategy\": \"limit_gpu\", \"max_gpu_mem_mb\": 25, "
                   "\"gpu_reserve_mb\": 8, \"prefetch_depth\": 1");
  cr_assert_eq(17ull * TK_MIB / slice, 4, "the budget must hold 4 slices");
  tk_client k;
  tk_open(&k, d);
  tk_stats st;
  for (int pass = 0; pass < 2; pass++)
    tk_forward_check(&k, NULL, "p", ref->pipe, "warm-up");
  tk_stats_settled(k.c, &st);
  uint64_t before = st.c2g_bytes;
  const int passes = 6;
  for (int pass = 0; pass < passes; pass++) {
    tk_forward_check(&k, NULL, "p", ref->pipe, "measured pass");
    tk_stats_settled(k.c, &st);
    tk_assert_budgets(&st, "measured pass");
  }
  double per_pass = (double)(st.c2g_bytes - before) / passes;
  double full = 8.0 * (double)slice;
  cr_log_info("cyclic pipeline: %.2f of a full pass moved per pass",
              per_pass / full);
  cr_assert_lt(per_pass, 0.85 * full,
               "%.0f bytes moved per pass, %.2f of the %.0f a full pass "
               "moves (recency alone moves all of it)",
               per_pass, per_pass / full, full);
  tk_close(&k);
  td_stop(d);
  free(ref);
}
