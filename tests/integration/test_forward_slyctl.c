/* test_forward_slyctl.c — `slyctl forward` against a real slyced: .npy files
 * in, .npy files out equal to PyTorch's, pipelines, --json, and the exit
 * codes and messages of everything that can go wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"

TestSuite(forward_slyctl, .timeout = 30, .fini = td_cleanup);

static td *start_fixtures(void) {
  char *cfg = fx_config(NULL, NULL);
  td *d = td_start(cfg);
  free(cfg);
  return d;
}

/* Paths live in a ring of static buffers: a test holds at most this many
 * at a time. */
#define PATH_RING 32

/* A path in the daemon's folder, for output files. */
static const char *tmp_path(const td *d, const char *name) {
  static char bufs[PATH_RING][TD_PATH_MAX + 64];
  static int next;
  char *b = bufs[next++ % PATH_RING];
  snprintf(b, sizeof bufs[0], "%s/%s", d->dir, name);
  return b;
}

/* A fixture's path. */
static const char *fix_path(const char *name) {
  static char bufs[PATH_RING][512];
  static int next;
  char *b = bufs[next++ % PATH_RING];
  snprintf(b, sizeof bufs[0], "%s/%s", FX_DIR, name);
  return b;
}

/* Runs slyctl against d; asserts the exit code, and that stderr mentions
 * `err_needle` when it is not NULL. The caller frees r. */
static void ctl_expect(const td *d, const char *const argv[], int code,
                       const char *err_needle, td_cmd *r) {
  td_slyctl(d->sock, argv, r);
  cr_assert_eq(r->exit_code, code,
               "slyctl %s %s: exit %d, want %d\nstdout: %s\nstderr: %s",
               argv[0], argv[1] ? argv[1] : "", r->exit_code, code, r->out,
               r->err);
  if (err_needle)
    cr_assert(strstr(r->err, err_needle), "stderr lacks \"%s\": %s",
              err_needle, r->err);
}

/* The file at `path` holds what PyTorch computed (fixture `ref`). */
static void assert_file_matches(const char *path, const char *ref,
                                double tol) {
  fx_array got, want;
  fx_read_path(path, &got);
  fx_read(ref, &want);
  sly_tensor t = {.dtype = got.dtype, .ndim = got.ndim, .data = got.data};
  memcpy(t.shape, got.shape, sizeof t.shape);
  fx_assert_match(&t, &want, tol, path);
  fx_array_free(&got);
  fx_array_free(&want);
}

Test(forward_slyctl, each_fixture_through_slyctl_matches_pytorch) {
  td *d = start_fixtures();
  td_cmd r;
  const char *y = tmp_path(d, "y.npy"), *z = tmp_path(d, "z.npy");

  const char *one[] = {"forward", "ts_one", "--in", fix_path("ts_one.in0.npy"),
                       "--out", y, NULL};
  ctl_expect(d, one, 0, NULL, &r);
  cr_assert(strstr(r.out, "output 0  float32 [4, 8]"), "stdout: %s", r.out);
  td_cmd_free(&r);
  assert_file_matches(y, "ts_one.out0.npy", FX_TOL_F32);

  const char *multi[] = {"forward", "ts_multi",
                         "--in", fix_path("ts_multi.in0.npy"),
                         "--in", fix_path("ts_multi.in1.npy"),
                         "--out", y, NULL};
  ctl_expect(d, multi, 0, NULL, &r);
  td_cmd_free(&r);
  assert_file_matches(y, "ts_multi.out0.npy", FX_TOL_F32);

  const char *tuple[] = {"forward", "ts_tuple",
                         "--in", fix_path("ts_tuple.in0.npy"),
                         "--out", y, "--out", z, NULL};
  ctl_expect(d, tuple, 0, NULL, &r);
  td_cmd_free(&r);
  assert_file_matches(y, "ts_tuple.out0.npy", FX_TOL_F32);
  assert_file_matches(z, "ts_tuple.out1.npy", FX_TOL_F32);

  const char *embed[] = {"forward", "ts_embed",
                         "--in", fix_path("ts_embed.in0.npy"),
                         "--out", y, NULL};
  ctl_expect(d, embed, 0, NULL, &r);
  td_cmd_free(&r);
  assert_file_matches(y, "ts_embed.out0.npy", FX_TOL_F32);

  const char *lin[] = {"forward", "lin", "--in", fix_path("linear_w.in0.npy"),
                       "--out", y, NULL};
  ctl_expect(d, lin, 0, NULL, &r);
  td_cmd_free(&r);
  assert_file_matches(y, "linear_w.out0.npy", FX_TOL_F32);

  const char *tel[] = {"forward", "tel", "--in", fix_path("tel_w.in0.npy"),
                       "--out", y, NULL};
  ctl_expect(d, tel, 0, NULL, &r);
  td_cmd_free(&r);
  assert_file_matches(y, "tel_w.out0.npy", FX_TOL_F32);

  /* bfloat16 goes in narrowed by --cast and comes out widened to float32. */
  const char *bf[] = {"forward", "tel_bf16", "--cast", "bfloat16",
                      "--in", fix_path("tel_bf16.in0.npy"), "--out", y, NULL};
  ctl_expect(d, bf, 0, NULL, &r);
  cr_assert(strstr(r.out, "output 0  bfloat16 [2, 5, 32]"), "stdout: %s",
            r.out);
  td_cmd_free(&r);
  fx_array got;
  fx_read_path(y, &got);
  cr_assert_eq(got.dtype, SLY_FLOAT32, "bfloat16 output not written as f4");
  fx_array_free(&got);
  assert_file_matches(y, "tel_bf16.out0.npy", FX_TOL_BF16);
  td_stop(d);
}

Test(forward_slyctl, pipeline_equals_its_slices_one_after_another) {
  td *d = start_fixtures();
  td_cmd r;
  const char *a = tmp_path(d, "a.npy"), *b = tmp_path(d, "b.npy"),
             *p = tmp_path(d, "p.npy");
  const char *s1[] = {"forward", "lin", "--in", fix_path("linear_w.in0.npy"),
                      "--out", a, NULL};
  ctl_expect(d, s1, 0, NULL, &r);
  td_cmd_free(&r);
  const char *s2[] = {"forward", "lin8", "--in", a, "--out", b, NULL};
  ctl_expect(d, s2, 0, NULL, &r);
  td_cmd_free(&r);
  const char *pp[] = {"forward", "--pipeline", "p",
                      "--in", fix_path("linear_w.in0.npy"), "--out", p, NULL};
  ctl_expect(d, pp, 0, NULL, &r);
  td_cmd_free(&r);

  fx_array step, pipe;
  fx_read_path(b, &step);
  fx_read_path(p, &pipe);
  sly_tensor t = {.dtype = pipe.dtype, .ndim = pipe.ndim, .data = pipe.data};
  memcpy(t.shape, pipe.shape, sizeof t.shape);
  fx_assert_match(&t, &step, FX_TOL_F32, "pipeline p against lin then lin8");
  fx_array_free(&step);
  fx_array_free(&pipe);
  td_stop(d);
}

Test(forward_slyctl, json_summary_names_each_output_file) {
  td *d = start_fixtures();
  td_cmd r;
  const char *y = tmp_path(d, "y.npy"), *z = tmp_path(d, "z.npy");
  const char *argv[] = {"--json", "forward", "ts_tuple",
                        "--in", fix_path("ts_tuple.in0.npy"),
                        "--out", y, "--out", z, NULL};
  ctl_expect(d, argv, 0, NULL, &r);
  cJSON *j = cJSON_Parse(r.out);
  cr_assert(j, "stdout is not JSON: %s", r.out);
  const cJSON *outs = cJSON_GetObjectItemCaseSensitive(j, "outputs");
  cr_assert_eq(cJSON_GetArraySize(outs), 2, "%s", r.out);
  const cJSON *f1 = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetArrayItem(outs, 1), "file");
  cr_assert(cJSON_IsString(f1) && strcmp(f1->valuestring, z) == 0, "%s",
            r.out);
  const cJSON *lease = cJSON_GetObjectItemCaseSensitive(j, "lease");
  cr_assert(cJSON_IsNumber(lease) && lease->valuedouble >= 1, "%s", r.out);
  const cJSON *timing = cJSON_GetObjectItemCaseSensitive(j, "timing");
  cr_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(timing,
                                                            "total_us")),
            "%s", r.out);
  cJSON_Delete(j);
  td_cmd_free(&r);
  assert_file_matches(z, "ts_tuple.out1.npy", FX_TOL_F32);
  td_stop(d);
}

Test(forward_slyctl, errors_exit_non_zero_with_the_message_on_stderr) {
  td *d = start_fixtures();
  td_cmd r;
  const char *y = tmp_path(d, "y.npy"), *z = tmp_path(d, "z.npy");
  const char *x1 = fix_path("ts_one.in0.npy");

  const char *unknown[] = {"forward", "nope", "--in", x1, "--out", y, NULL};
  ctl_expect(d, unknown, 1, "NOT_FOUND", &r);
  td_cmd_free(&r);
  const char *unknown_p[] = {"forward", "--pipeline", "nope", "--in", x1,
                             "--out", y, NULL};
  ctl_expect(d, unknown_p, 1, "NOT_FOUND", &r);
  td_cmd_free(&r);

  /* libtorch's own words come back. */
  const char *shape[] = {"forward", "ts_one", "--in",
                         fix_path("tel_w.in0.npy"), "--out", y, NULL};
  ctl_expect(d, shape, 1, "BAD_TENSOR", &r);
  cr_assert(strstr(r.err, "shapes cannot be multiplied"), "%s", r.err);
  td_cmd_free(&r);
  const char *dtype[] = {"forward", "ts_one", "--in",
                         fix_path("ts_embed.in0.npy"), "--out", y, NULL};
  ctl_expect(d, dtype, 1, "BAD_TENSOR", &r);
  td_cmd_free(&r);
  cr_assert_neq(access(y, F_OK), 0, "a failed forward wrote %s", y);

  /* One --out per output: fewer or more is an error, and nothing is
   * written. */
  const char *fewer[] = {"forward", "ts_tuple", "--in",
                         fix_path("ts_tuple.in0.npy"), "--out", y, NULL};
  ctl_expect(d, fewer, 1, "returned 2 outputs but 1 --out", &r);
  td_cmd_free(&r);
  cr_assert_neq(access(y, F_OK), 0, "%s written despite the mismatch", y);
  const char *more[] = {"forward", "ts_one", "--in", x1, "--out", y,
                        "--out", z, NULL};
  ctl_expect(d, more, 1, "returned 1 output but 2 --out", &r);
  td_cmd_free(&r);
  cr_assert_neq(access(y, F_OK), 0, "%s written despite the mismatch", y);

  /* Files that are not there or not .npy fail before any request. */
  const char *missing[] = {"forward", "ts_one", "--in",
                           tmp_path(d, "missing.npy"), "--out", y, NULL};
  ctl_expect(d, missing, 1, "missing.npy", &r);
  td_cmd_free(&r);
  const char *not_npy[] = {"forward", "ts_one", "--in", fix_path("ts_one.pt"),
                           "--out", y, NULL};
  ctl_expect(d, not_npy, 1, "ts_one.pt", &r);
  td_cmd_free(&r);

  /* Usage errors exit 2. */
  const char *nothing[] = {"forward", "--in", x1, "--out", y, NULL};
  ctl_expect(d, nothing, 2, "usage", &r);
  td_cmd_free(&r);
  const char *both[] = {"forward", "ts_one", "--pipeline", "p", "--in", x1,
                        "--out", y, NULL};
  ctl_expect(d, both, 2, "usage", &r);
  td_cmd_free(&r);

  /* And after all that the daemon serves slyctl as before. */
  const char *good[] = {"forward", "ts_one", "--in", x1, "--out", y, NULL};
  ctl_expect(d, good, 0, NULL, &r);
  td_cmd_free(&r);
  assert_file_matches(y, "ts_one.out0.npy", FX_TOL_F32);
  td_stop(d);
}

/* `slyctl top` into a pipe: --count frames, each with the daemon's memory,
 * moves, prefetch and the slices' table; what a forward did shows up. */
Test(forward_slyctl, top_shows_frames_of_memory_moves_and_slices) {
  td *d = start_fixtures();
  td_assert_forward_ok(d, "before top");
  td_cmd r;
  ctl_expect(d, (const char *const[]){"top", "--count", "2", "--interval",
                                      "100", NULL},
             0, NULL, &r);
  const char *second = strstr(r.out, "\n\nslyced: up ");
  cr_assert(strncmp(r.out, "slyced: up ", 11) == 0 && second != NULL &&
                strstr(second + 2, "\n\nslyced: up ") == NULL,
            "want exactly 2 frames:\n%s", r.out);
  const char *want[] = {"memory  gpu ", "  cpu ", "moved   disk_to_cpu ",
                        "build ", "slices   hits ", "prefetch done ",
                        "NAME", "lin ", "resident", "tel_bf16 ",
                        /* nothing moved between the frames; one unit */
                        " GB/s, now 0.00 GB/s"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_assert(strstr(second, want[i]) != NULL, "frame 2 lacks '%s':\n%s",
              want[i], second);
  /* The head line's figures: the forward and slyctl's own connection. */
  int conns = -1, reqs = -1, errs = -1;
  cr_assert_eq(sscanf(second + 2, "slyced: up %*s rss %*s %*s %d "
                      "connections, %d requests (%d errors)",
                      &conns, &reqs, &errs), 3, "head line: %s", second + 2);
  cr_assert(conns >= 1 && reqs >= 2 && errs == 0,
            "%d connections, %d requests, %d errors", conns, reqs, errs);
  td_cmd_free(&r);
  ctl_expect(d, (const char *const[]){"top", "--interval", "5", NULL}, 2,
             "100..60000", &r);
  td_cmd_free(&r);
  ctl_expect(d, (const char *const[]){"top", "--count", NULL}, 2,
             "needs a value", &r);
  td_cmd_free(&r);
  ctl_expect(d, (const char *const[]){"top", "--color", NULL}, 2,
             "unknown argument", &r);
  td_cmd_free(&r);
  td_stop(d);
}
