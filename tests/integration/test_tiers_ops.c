/* test_tiers_ops.c — load, evict, pin and unpin as PROTOCOL.md defines
 * them: load and evict move a slice between gpu, cpu and disk and list
 * follows; a pin holds a slice while a pipeline streams past it; an evict
 * below a pin is refused until unpin; gpu ops without a GPU tier are bad
 * requests; a slice larger than the budget, or a budget all pinned, gives
 * NO_MEMORY with `needed` while the daemon keeps serving. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "tierkit.h"

TestSuite(tiers_ops, .timeout = 60, .fini = tk_cleanup);

/* A model of (name, hidden) pairs, the first n_pipe in pipeline "p". */
static void model_of(tk_model *m, const char *const *names, const int *hidden,
                     size_t n, size_t n_pipe) {
  memset(m, 0, sizeof *m);
  for (size_t i = 0; i < n; i++)
    tk_model_add(m, names[i], hidden[i], (int)i + 11);
  m->n_cfg = n;
  m->n_pipe = n_pipe;
}

/* Starts slyced on the GPU-tier device with limit_gpu and these budgets,
 * and a disk cache in `dir` when it is not NULL. */
static td *start_gpu(const tk_model *m, int gpu_mb, int reserve_mb, int cpu_mb,
                     const char *dir) {
  char *keys = NULL;
  int n = asprintf(&keys,
                   "\"gpu_strategy\": \"limit_gpu\", \"max_gpu_mem_mb\": %d, "
                   "\"gpu_reserve_mb\": %d, \"max_cpu_mem_mb\": %d%s%s%s",
                   gpu_mb, reserve_mb, cpu_mb,
                   dir ? ", \"disk_cache_path\": \"" : "", dir ? dir : "",
                   dir ? "\"" : "");
  cr_assert(n > 0, "out of memory");
  td *d = tk_start(m, tk_gpu_device(), keys);
  free(keys);
  return d;
}

/* slyced with one 4 MiB slice "a", roomy budgets and a disk cache in a
 * fresh `dir`. */
static td *start_one_4mib(char dir[TD_PATH_MAX]) {
  static const char *const names[] = {"a"};
  static const int hidden[] = {512};
  tk_model m;
  model_of(&m, names, hidden, 1, 0);
  tk_cache_new(dir);
  return start_gpu(&m, 48, 8, 48, dir);
}

static void expect_tier(sly_conn *c, const char *slice, const char *tier,
                        const char *pinned, const char *when) {
  tk_entry e;
  tk_where(c, slice, &e);
  cr_assert_str_eq(e.tier, tier, "%s: list shows %s at %s, want %s", when,
                   slice, e.tier, tier);
  cr_assert_str_eq(e.pinned, pinned, "%s: list shows %s pinned '%s', want "
                   "'%s'", when, slice, e.pinned, pinned);
  /* libslyce reads the same. */
  sly_slice_list *l = NULL;
  sly_error err;
  cr_assert_eq(sly_list(c, &l, &err), 0, "sly_list: %s", err.message);
  size_t i = 0;
  while (i < l->count && strcmp(l->slices[i].name, slice) != 0)
    i++;
  cr_assert_lt(i, l->count, "sly_list does not show %s", slice);
  const char *at = sly_list_pinned_tier(l, i);
  cr_assert_str_eq(at != NULL ? at : "", pinned,
                   "%s: sly_list_pinned_tier says %s is pinned at '%s'", when,
                   slice, at != NULL ? at : "");
  cr_assert_eq(l->slices[i].pinned, pinned[0] != '\0', "%s: pinned %d", when,
               l->slices[i].pinned);
  sly_slice_list_free(l);
}

/* A tier op that must succeed and leave the slice at `want`. */
static void op_ok(sly_conn *c, const char *op, const char *slice,
                  const char *tier, const char *want) {
  sly_error err;
  char where[8] = "";
  int rc = strcmp(op, "load") == 0 ? sly_load(c, slice, tier, where, &err)
                                   : sly_evict(c, slice, tier, where, &err);
  cr_assert_eq(rc, 0, "%s %s %s: %s (%s)", op, slice, tier, err.message,
               sly_code_name(rc));
  cr_assert_str_eq(where, want, "%s %s %s: reply says %s, want %s", op, slice,
                   tier, where, want);
  char when[64];
  snprintf(when, sizeof when, "after %s %s %s", op, slice, tier);
  expect_tier(c, slice, want, "", when);
}

static void expect_refused(int rc, const sly_error *err, int want,
                           const char *what) {
  cr_assert_eq(rc, want, "%s: got %s (%s), want %s", what, sly_code_name(rc),
               rc ? err->message : "", sly_code_name(want));
}

Test(tiers_ops, load_and_evict_move_a_slice_and_list_follows) {
  static const char *const names[] = {"a", "b"};
  static const int hidden[] = {1024, 1024};
  tk_model m;
  model_of(&m, names, hidden, 2, 0);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  td *d = start_gpu(&m, 48, 8, 48, dir);
  tk_client k;
  tk_open(&k, d);
  tk_entry e;
  tk_where(k.c, "a", &e);
  cr_assert_str_eq(e.tier, "none", "a fresh slice is at %s", e.tier);

  /* Up to disk: built and written once (its host copy may stay). */
  sly_error err;
  char where[8];
  cr_assert_eq(sly_load(k.c, "a", "disk", where, &err), 0, "%s", err.message);
  cr_assert(tk_tier_rank(where) >= 0 && tk_tier_rank(where) <= 2,
            "load a disk: now at %s", where);
  cr_assert_eq(tk_cache_files(dir), 1, "load disk wrote %d cache files",
               tk_cache_files(dir));
  char file[TD_PATH_MAX + 64];
  tk_cache_only(dir, file);
  struct stat st0, st1;
  cr_assert_eq(stat(file, &st0), 0, "stat %s", file);

  op_ok(k.c, "evict", "a", "disk", "disk");
  op_ok(k.c, "load", "a", "cpu", "cpu");
  op_ok(k.c, "load", "a", "gpu", "gpu");
  op_ok(k.c, "evict", "a", "cpu", "cpu");
  op_ok(k.c, "load", "a", "gpu", "gpu");
  op_ok(k.c, "evict", "a", "disk", "disk");
  /* Asking a slice to stay at most where it already is changes nothing. */
  op_ok(k.c, "evict", "a", "gpu", "disk");
  tk_forward_check(&k, "a", NULL, ref->slice[0], "a back from disk");
  op_ok(k.c, "evict", "a", "disk", "disk");

  /* Written once: the same file all along, and the moves were logged. */
  cr_assert_eq(tk_cache_files(dir), 1, "%d cache files", tk_cache_files(dir));
  cr_assert_eq(stat(file, &st1), 0, "%s is gone after evict to disk", file);
  cr_assert(st0.st_ino == st1.st_ino &&
                st0.st_mtim.tv_nsec == st1.st_mtim.tv_nsec &&
                st0.st_mtim.tv_sec == st1.st_mtim.tv_sec,
            "%s was rewritten", file);
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "move slice=a from=disk to=cpu", NULL), 2,
               "want two disk->cpu moves of a");
  cr_assert_eq(tk_count_lines(log, "move slice=a from=cpu to=gpu", NULL), 2,
               "want two cpu->gpu moves of a (the loads)");
  /* The forward read a from disk and copied it on as the read landed. */
  cr_assert_eq(tk_count_lines(log, "move slice=a from=disk to=gpu", NULL), 1,
               "want one disk->gpu move of a (the forward)");
  cr_assert_eq(tk_count_lines(log, "move slice=a from=cpu to=disk", NULL), 1,
               "want one write of a");
  free(log);
  tk_stats s;
  tk_stats_get(k.c, &s);
  cr_assert_geq(s.ev_explicit, 4, "evictions.explicit %llu",
                (unsigned long long)s.ev_explicit);
  expect_tier(k.c, "b", "none", "", "b untouched");
  tk_close(&k);
  td_stop(d);
  tk_cache_remove(dir);
  free(ref);
}

Test(tiers_ops, a_slice_pinned_at_gpu_stays_while_a_pipeline_streams) {
  static const char *const names[] = {"s0", "s1", "s2", "s3", "s4", "s5"};
  static const int hidden[] = {2048, 2048, 2048, 2048, 2048, 2048};
  tk_model m;
  model_of(&m, names, hidden, 6, 6);
  tk_ref *ref = tk_reference(&m);
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  td *d = start_gpu(&m, 48, 8, 48, dir); /* two of six slices fit */
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  cr_assert_eq(sly_pin(k.c, "s2", "gpu", &err), 0, "pin: %s", err.message);
  expect_tier(k.c, "s2", "gpu", "gpu", "after pin s2 gpu");
  for (int pass = 0; pass < 3; pass++) {
    char when[32];
    snprintf(when, sizeof when, "pass %d", pass);
    tk_forward_check(&k, NULL, "p", ref->pipe, when);
    expect_tier(k.c, "s2", "gpu", "gpu", when);
    tk_stats s;
    tk_stats_get(k.c, &s);
    tk_assert_budgets(&s, when);
  }
  tk_stats s;
  tk_stats_get(k.c, &s);
  cr_assert_geq(s.ev_policy, 10, "the others did not stream (%llu evictions)",
                (unsigned long long)s.ev_policy);
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "evict slice=s2 from=gpu", NULL), 0,
               "the pinned slice left the GPU");
  cr_assert_eq(tk_count_lines(log, "move slice=s2 from=cpu to=gpu", NULL), 1,
               "the pinned slice came to the GPU more than once");
  free(log);
  tk_close(&k);
  td_stop(d);
  tk_cache_remove(dir);
  free(ref);
}

Test(tiers_ops, evict_below_a_pin_is_refused_until_unpin) {
  char dir[TD_PATH_MAX];
  td *d = start_one_4mib(dir);
  sly_conn *c = td_connect(d);
  sly_error err;
  char where[8];
  cr_assert_eq(sly_pin(c, "a", "gpu", &err), 0, "pin: %s", err.message);
  expect_refused(sly_evict(c, "a", "cpu", where, &err), &err,
                 SLY_E_BAD_REQUEST, "evict cpu under a gpu pin");
  cr_assert(strstr(err.message, "pinned"), "message: %s", err.message);
  expect_refused(sly_evict(c, "a", "disk", where, &err), &err,
                 SLY_E_BAD_REQUEST, "evict disk under a gpu pin");
  expect_tier(c, "a", "gpu", "gpu", "after refused evicts");
  cr_assert_eq(sly_evict(c, "a", "gpu", where, &err), 0, "evict gpu at a gpu "
               "pin: %s", err.message);
  expect_tier(c, "a", "gpu", "gpu", "after evict to its pinned tier");

  cr_assert_eq(sly_unpin(c, "a", &err), 0, "unpin: %s", err.message);
  expect_tier(c, "a", "gpu", "", "after unpin");

  /* A pin at cpu lets the GPU copy go, not the host one. */
  cr_assert_eq(sly_pin(c, "a", "cpu", &err), 0, "pin cpu: %s", err.message);
  expect_tier(c, "a", "gpu", "cpu", "after pin cpu");
  td_cmd r;
  td_slyctl(d->sock, (const char *const[]){"list", NULL}, &r);
  cr_assert_eq(r.exit_code, 0, "slyctl list: %s", r.err);
  const char *row = strstr(r.out, "\na ");
  cr_assert(row != NULL && strstr(row, " cpu ") != NULL,
            "slyctl list does not show a pinned at cpu:\n%s", r.out);
  td_cmd_free(&r);
  cr_assert_eq(sly_evict(c, "a", "cpu", where, &err), 0, "%s", err.message);
  expect_tier(c, "a", "cpu", "cpu", "after evict cpu at a cpu pin");
  expect_refused(sly_evict(c, "a", "disk", where, &err), &err,
                 SLY_E_BAD_REQUEST, "evict disk under a cpu pin");

  cr_assert_eq(sly_unpin(c, "a", &err), 0, "unpin: %s", err.message);
  expect_tier(c, "a", "cpu", "", "after the second unpin");
  cr_assert_eq(sly_evict(c, "a", "disk", where, &err), 0, "%s", err.message);
  expect_tier(c, "a", "disk", "", "after unpin and evict disk");
  sly_close(c);
  td_stop(d);
  tk_cache_remove(dir);
}

Test(tiers_ops, tiers_the_daemon_lacks_are_bad_requests) {
  static const char *const names[] = {"a"};
  static const int hidden[] = {512};
  tk_model m;
  model_of(&m, names, hidden, 1, 0);
  td *d = tk_start(&m, "cpu", "\"max_cpu_mem_mb\": 64"); /* no disk cache */
  sly_conn *c = td_connect(d);
  sly_error err;
  char where[8];
  expect_refused(sly_load(c, "a", "gpu", where, &err), &err,
                 SLY_E_BAD_REQUEST, "load gpu on device cpu");
  expect_refused(sly_pin(c, "a", "gpu", &err), &err, SLY_E_BAD_REQUEST,
                 "pin gpu on device cpu");
  expect_refused(sly_load(c, "a", "disk", where, &err), &err,
                 SLY_E_BAD_REQUEST, "load disk without disk_cache_path");
  expect_tier(c, "a", "none", "", "after refused ops");
  cr_assert_eq(sly_load(c, "a", "cpu", where, &err), 0, "%s", err.message);
  expect_tier(c, "a", "cpu", "", "after load cpu");
  sly_close(c);
  td_stop(d);
}

Test(tiers_ops, a_slice_larger_than_the_gpu_budget_gets_no_memory) {
  static const char *const names[] = {"big", "small"};
  static const int hidden[] = {4096, 512}; /* 32 MiB, 4 MiB */
  tk_model m;
  model_of(&m, names, hidden, 2, 0);
  tk_ref *ref = tk_reference(&m);
  td *d = start_gpu(&m, 24, 8, 64, NULL); /* GPU budget 16 MiB */
  tk_client k;
  tk_open(&k, d);
  tk_stats before, after;
  tk_stats_get(k.c, &before);
  float out[TK_OUT_FLOATS];
  sly_error err;
  uint64_t bytes = tk_slice_bytes(&m.s[0]);
  int rc = tk_try_forward(&k, "big", NULL, out, &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "forward big");
  cr_assert_geq(err.needed, bytes, "needed %llu, the slice has %llu bytes",
                (unsigned long long)err.needed, (unsigned long long)bytes);
  char where[8];
  rc = sly_load(k.c, "big", "gpu", where, &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "load big gpu");
  cr_assert_geq(err.needed, bytes, "load: needed %llu",
                (unsigned long long)err.needed);
  /* Refused, not crashed: the others still run, budgets held. */
  tk_forward_check(&k, "small", NULL, ref->slice[1], "small after big");
  tk_stats_get(k.c, &after);
  tk_assert_budgets(&after, "after NO_MEMORY");
  tk_entry e;
  tk_where(k.c, "big", &e);
  cr_assert_neq(tk_tier_rank(e.tier), 0, "big is on the GPU");
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(tiers_ops, a_slice_larger_than_the_cpu_budget_gets_no_memory) {
  static const char *const names[] = {"big", "small"};
  static const int hidden[] = {4096, 512};
  tk_model m;
  model_of(&m, names, hidden, 2, 0);
  tk_ref *ref = tk_reference(&m);
  td *d = tk_start(&m, "cpu", "\"max_cpu_mem_mb\": 16");
  tk_client k;
  tk_open(&k, d);
  float out[TK_OUT_FLOATS];
  sly_error err;
  int rc = tk_try_forward(&k, "big", NULL, out, &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "forward big");
  cr_assert_geq(err.needed, tk_slice_bytes(&m.s[0]), "needed %llu",
                (unsigned long long)err.needed);
  tk_forward_check(&k, "small", NULL, ref->slice[1], "small after big");
  tk_stats s;
  tk_stats_get(k.c, &s);
  tk_assert_budgets(&s, "after NO_MEMORY");
  /* What was built for the refused slice is not kept outside the budget. */
  tk_entry e;
  tk_where(k.c, "big", &e);
  cr_assert(strcmp(e.tier, "none") != 0 || strcmp(e.state, "resident") != 0,
            "big shows state resident at tier none: its built weights are "
            "held outside every budget");
  /* Added at run time, the same: refused at once, not after its weights
   * were drawn (seconds of the executor for a big slice), and not kept. */
  char cfg[192];
  tk_slice_config(&m.s[0], cfg, sizeof cfg);
  rc = sly_add_slice(k.c, "big2", "mlp", cfg, &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "add_slice big2");
  cr_assert_geq(err.needed, tk_slice_bytes(&m.s[0]), "add_slice: needed %llu",
                (unsigned long long)err.needed);
  tk_entry all[8];
  size_t n = tk_list(k.c, all, 8);
  for (size_t i = 0; i < n; i++)
    cr_assert_str_neq(all[i].name, "big2", "a refused slice stayed");
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "slice big", ": built"), 0,
               "big's weights were made although they cannot fit:\n%s", log);
  free(log);
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(tiers_ops, a_gpu_budget_all_pinned_gives_no_memory_until_unpin) {
  static const char *const names[] = {"a", "b", "c"};
  static const int hidden[] = {1024, 1024, 1024}; /* 8 MiB each */
  tk_model m;
  model_of(&m, names, hidden, 3, 0);
  tk_ref *ref = tk_reference(&m);
  td *d = start_gpu(&m, 26, 8, 64, NULL); /* 18 MiB: two fit, not three */
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  cr_assert_eq(sly_pin(k.c, "a", "gpu", &err), 0, "pin a: %s", err.message);
  cr_assert_eq(sly_pin(k.c, "b", "gpu", &err), 0, "pin b: %s", err.message);
  float out[TK_OUT_FLOATS];
  uint64_t bytes = tk_slice_bytes(&m.s[2]);
  int rc = tk_try_forward(&k, "c", NULL, out, &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "forward c");
  cr_assert_geq(err.needed, bytes, "needed %llu, c has %llu bytes",
                (unsigned long long)err.needed, (unsigned long long)bytes);
  char where[8];
  rc = sly_load(k.c, "c", "gpu", where, &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "load c gpu");
  cr_assert_geq(err.needed, bytes, "load: needed %llu",
                (unsigned long long)err.needed);
  rc = sly_pin(k.c, "c", "gpu", &err);
  expect_refused(rc, &err, SLY_E_NO_MEMORY, "pin c gpu");
  expect_tier(k.c, "a", "gpu", "gpu", "after NO_MEMORY");
  expect_tier(k.c, "b", "gpu", "gpu", "after NO_MEMORY");
  tk_forward_check(&k, "a", NULL, ref->slice[0], "pinned a still runs");

  cr_assert_eq(sly_unpin(k.c, "a", &err), 0, "unpin a: %s", err.message);
  tk_forward_check(&k, "c", NULL, ref->slice[2], "c after unpin a");
  expect_tier(k.c, "c", "gpu", "", "c after unpin a");
  expect_tier(k.c, "b", "gpu", "gpu", "b after c ran");
  tk_entry e;
  tk_where(k.c, "a", &e);
  cr_assert_neq(tk_tier_rank(e.tier), 0, "a stayed on the GPU after unpin");
  tk_close(&k);
  td_stop(d);
  free(ref);
}

/* The next slice is kept while a pipeline runs, but when only it can make
 * room the request still fits the budget: NO_MEMORY is for requests that
 * cannot fit (DESIGN.md "Tiers"), and this one fits with the next slice
 * brought back after. */
Test(tiers_ops, a_pipelines_next_slice_gives_way_when_nothing_else_can) {
  static const char *const names[] = {"x", "y", "z"};
  static const int hidden[] = {2048, 1024, 2048}; /* 16, 8, 16 MiB */
  tk_model m;
  model_of(&m, names, hidden, 3, 2); /* p = [x, y] */
  tk_ref *ref = tk_reference(&m);
  td *d = start_gpu(&m, 48, 8, 64, NULL); /* 40 MiB: z + y + x is 32 KiB over */
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  char where[8];
  cr_assert_eq(sly_pin(k.c, "z", "gpu", &err), 0, "pin z: %s", err.message);
  cr_assert_eq(sly_load(k.c, "y", "gpu", where, &err), 0, "load y: %s",
               err.message);
  tk_forward_check(&k, NULL, "p", ref->pipe, "p with z pinned and y loaded");
  tk_stats s;
  tk_stats_get(k.c, &s);
  tk_assert_budgets(&s, "after p");
  tk_close(&k);
  td_stop(d);
  free(ref);
}

/* A slice added at run time takes its place in the tiers; removed, it
 * gives its memory back (evictions "removed") before the next request runs. */
Test(tiers_ops, a_removed_slice_gives_its_memory_back) {
  static const char *const names[] = {"a", "n"};
  static const int hidden[] = {512, 1024};
  tk_model m;
  model_of(&m, names, hidden, 2, 0);
  m.n_cfg = 1; /* n is added below */
  tk_ref *ref = tk_reference(&m);
  td *d = start_gpu(&m, 48, 8, 48, NULL);
  tk_client k;
  tk_open(&k, d);
  tk_forward_check(&k, "a", NULL, ref->slice[0], "a");
  char cfg[192];
  tk_slice_config(&m.s[1], cfg, sizeof cfg);
  sly_error err;
  cr_assert_eq(sly_add_slice(k.c, "n", "mlp", cfg, &err), 0, "add_slice: %s",
               err.message);
  tk_forward_check(&k, "n", NULL, ref->slice[1], "n");
  uint64_t a = tk_slice_bytes(&m.s[0]), n = tk_slice_bytes(&m.s[1]);
  tk_stats s;
  tk_stats_get(k.c, &s);
  cr_assert_eq(s.gpu_used, a + n, "gpu.used %llu, want a + n = %llu",
               (unsigned long long)s.gpu_used, (unsigned long long)(a + n));
  cr_assert_eq(sly_remove_slice(k.c, "n", &err), 0, "remove: %s", err.message);
  tk_forward_check(&k, "a", NULL, ref->slice[0], "a after removing n");
  tk_stats_get(k.c, &s);
  cr_assert_eq(s.gpu_used, a, "gpu.used %llu after removing n, want %llu",
               (unsigned long long)s.gpu_used, (unsigned long long)a);
  cr_assert_eq(s.cpu_used, a, "cpu.used %llu after removing n, want %llu",
               (unsigned long long)s.cpu_used, (unsigned long long)a);
  cr_assert_eq(s.ev_removed, 2, "evictions.removed %llu, want 2 (gpu, cpu)",
               (unsigned long long)s.ev_removed);
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, "evict slice=n ", "why=removed"), 2,
               "want two why=removed lines for n");
  free(log);
  tk_close(&k);
  td_stop(d);
  free(ref);
}

Test(tiers_ops, activate_brings_in_a_slice_that_was_evicted) {
  char dir[TD_PATH_MAX];
  td *d = start_one_4mib(dir);
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  char tier[8] = "";
  cr_assert_eq(sly_set_active_slice(k.c, "a", 1, tier, &err), 0, "%s",
               err.message);
  cr_assert_str_eq(tier, "gpu", "first activate: at %s", tier);
  /* Built already: only its cache file holds it now, then only host memory.
   * Activating with wait must bring it to the device either way. */
  op_ok(k.c, "evict", "a", "disk", "disk");
  cr_assert_eq(sly_set_active_slice(k.c, "a", 1, tier, &err), 0, "%s",
               err.message);
  cr_assert_str_eq(tier, "gpu", "activate after evict to disk: at %s", tier);
  expect_tier(k.c, "a", "gpu", "", "after the second activate");
  op_ok(k.c, "evict", "a", "cpu", "cpu");
  cr_assert_eq(sly_set_active_slice(k.c, "a", 1, tier, &err), 0, "%s",
               err.message);
  cr_assert_str_eq(tier, "gpu", "activate after evict to cpu: at %s", tier);
  /* Each of the three brought it to the device: list counts loads so. */
  sly_slice_list *l = NULL;
  cr_assert_eq(sly_list(k.c, &l, &err), 0, "%s", err.message);
  cr_assert_eq(l->count, 1);
  const sly_slice_info *a = &l->slices[0];
  cr_assert_eq(a->loads, 3, "a loaded %llu times",
               (unsigned long long)a->loads);
  sly_slice_list_free(l);
  tk_close(&k);
  td_stop(d);
  tk_cache_remove(dir);
}
