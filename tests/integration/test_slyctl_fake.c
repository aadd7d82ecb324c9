/* test_slyctl_fake.c — slyctl against a scripted fake server
 * (fakeserver.h): the output of status, list and stats, --json, errors and
 * usage, and the commands of slices: forward with .npy files, activate,
 * add-slice, remove-slice.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "fakeserver.h"
#include "harness.h"
#include "npy.h"
#include "slyce.h"

/* ---- slyctl ---- */

static void script_ctl_list(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  if (f->arg == 0)
    fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, FAKE_LIST_TWO);
  else
    fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
               id);
  fake_expect_eof(f);
}

static void run_ctl(fake *f, const char *const argv[], td_cmd *r) {
  td_slyctl(f != NULL ? f->sock : "/nonexistent-slyce/s.sock", argv, r);
}

Test(slyctl_fake, list_prints_one_row_per_slice_under_a_header, .timeout = 30) {
  fake *f = fake_start(script_ctl_list, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.err, ""));
  cr_assert(
      eq(str, r.out,
         "NAME  CONSTRUCTOR  TIER  STATE     BYTES    PINNED  HITS  LOADS\n"
         "enc   linear       gpu   resident  1.0 MiB  cpu     12    3\n"
         "dec   mlp          none  unloaded  512 B    no      0     0\n"));
  td_cmd_free(&r);
}

Test(slyctl_fake, list_of_nothing_says_no_slices, .timeout = 30) {
  fake *f = fake_start(script_ctl_list, 1);
  td_cmd r;
  run_ctl(f, (const char *const[]){"list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.out, "no slices\n"));
  td_cmd_free(&r);
}

Test(slyctl_fake, json_prints_the_reply_without_id_and_ok, .timeout = 30) {
  fake *f = fake_start(script_ctl_list, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"--json", "list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cJSON *j = cJSON_Parse(r.out);
  cr_assert(j != NULL, "%s", r.out);
  cr_assert(cJSON_GetObjectItemCaseSensitive(j, "id") == NULL);
  cr_assert(cJSON_GetObjectItemCaseSensitive(j, "ok") == NULL);
  cr_assert(
      eq(int, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "slices")),
         2));
  cJSON_Delete(j);
  td_cmd_free(&r);
}

static void script_ctl_denied(fake *f) {
  long long id = fake_expect(f, "shutdown");
  FCHECK(f, id >= 0, "no shutdown");
  fake_reply(f,
             "{\"id\":%lld,\"ok\":false,\"error\":{\"code\":"
             "\"PERMISSION_DENIED\",\"message\":\"shutdown needs admin\"}}",
             id);
  fake_expect_eof(f);
}

Test(slyctl_fake, an_error_is_one_line_on_stderr_and_exit_1, .timeout = 30) {
  fake *f = fake_start(script_ctl_denied, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"shutdown", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 1));
  cr_assert(
      eq(str, r.err, "slyctl: PERMISSION_DENIED: shutdown needs admin\n"));
  cr_assert(eq(str, r.out, ""));
  td_cmd_free(&r);

  run_ctl(NULL, (const char *const[]){"list", NULL}, &r);
  cr_assert(eq(int, r.exit_code, 1));
  cr_assert(eq(str, r.err,
               "slyctl: IO: connect /nonexistent-slyce/s.sock: "
               "No such file or directory\n"));
  td_cmd_free(&r);
}

Test(slyctl_fake, usage_errors_exit_2_with_the_usage_line) {
  const char *const *cases[] = {
      (const char *const[]){NULL},
      (const char *const[]){"frobnicate", NULL},
      (const char *const[]){"list", "extra", NULL},
      (const char *const[]){"--bogus", "list", NULL},
      (const char *const[]){"-s", NULL},
      (const char *const[]){"--json", "top", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    td_cmd r;
    run_ctl(NULL, cases[i], &r);
    cr_assert(eq(int, r.exit_code, 2), "case %zu: %s", i, r.err);
    cr_assert(strstr(r.err, "usage: slyctl") != NULL, "case %zu", i);
    cr_assert(eq(str, r.out, ""));
    td_cmd_free(&r);
  }
  td_cmd r;
  run_ctl(NULL, (const char *const[]){"--help", NULL}, &r);
  cr_assert(eq(int, r.exit_code, 0));
  cr_assert(strstr(r.out, "shutdown") != NULL);
  td_cmd_free(&r);
  /* A command's own --help: its usage, on stdout, without connecting. */
  run_ctl(NULL, (const char *const[]){"status", "--help", NULL}, &r);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.out, "usage: slyctl [options] status\n"
                           "server, device, socket, slices, uptime\n"));
  td_cmd_free(&r);
  static const char *const bad_timeouts[] = {"abc", "0", "-1", "100000",
                                             "1s", ""};
  for (size_t i = 0; i < 6; i++) {
    run_ctl(NULL, (const char *const[]){"--timeout", bad_timeouts[i], "list",
                                        NULL},
            &r);
    cr_assert(eq(int, r.exit_code, 2), "--timeout '%s': %s", bad_timeouts[i],
              r.err);
    cr_assert(strstr(r.err, "--timeout") != NULL, "%s", r.err);
    td_cmd_free(&r);
  }
}

static void script_silent(fake *f) {
  FCHECK(f, fake_expect(f, "list") >= 0, "no list");
  fake_expect_eof(f);
}

/* A daemon that answers nothing (stopped, hung) ends slyctl at --timeout. */
Test(slyctl_fake, timeout_gives_up_on_a_silent_daemon, .timeout = 30) {
  fake *f = fake_start(script_silent, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"--timeout", "0.2", "list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 1), "%s", r.err);
  cr_assert(eq(str, r.err, "slyctl: IO: no reply from slyced in 200 ms (the "
                           "timeout); the connection is closed\n"));
  td_cmd_free(&r);
}

static void script_ctl_status(fake *f) {
  long long id = fake_expect(f, "hello");
  FCHECK(f, id >= 0, "no hello");
  fake_send_hello(f, id);
  id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, FAKE_STATS_BODY);
  id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, FAKE_LIST_TWO);
  fake_expect_eof(f);
}

Test(slyctl_fake, status_summarises_server_socket_slices_and_memory,
     .timeout = 30) {
  fake *f = fake_start(script_ctl_status, 0);
  char want[256];
  snprintf(want, sizeof(want),
           "server    slyced 0.1.0\nprotocol  1\ndevice    sim\n"
           "socket    %s\nslices    2\nuptime    1h 02m 03s\n"
           "rss       50.0 MiB\n",
           f->sock);
  td_cmd r;
  run_ctl(f, (const char *const[]){"status", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.out, want));
  td_cmd_free(&r);
}

static void script_ctl_stats(fake *f) {
  long long id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, FAKE_STATS_BODY);
  fake_expect_eof(f);
}

Test(slyctl_fake, stats_prints_readable_figures, .timeout = 30) {
  fake *f = fake_start(script_ctl_stats, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"stats", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(strstr(r.out, "rss          50.0 MiB\n") != NULL, "%s", r.out);
  cr_assert(strstr(r.out, "memory       8.0 GiB available of 16.0 GiB\n") !=
                NULL,
            "%s", r.out);
  cr_assert(strstr(r.out, "connections  2 open, 9 accepted, 1 rejected\n") !=
                NULL,
            "%s", r.out);
  cr_assert(strstr(r.out, "executor     4 queued (3 staging on 2 loaders), 17 "
                          "run while a forward waited for a slice\n") != NULL,
            "%s", r.out);
  cr_assert(strstr(r.out, "requests     120 total, 3 errors\n") != NULL, "%s",
            r.out);
  cr_assert(strstr(r.out, "latency      p50 80 us, p90 200 us, p99 1.5 ms, "
                          "max 2.50 s\n") != NULL,
            "%s", r.out);
  cr_assert(strstr(r.out, "by error     NOT_FOUND 3\n") != NULL, "%s", r.out);
  td_cmd_free(&r);
}

/* ---- forward with .npy files ---- */

#define TIMING                                                                 \
  "\"timing\":{\"queue_us\":1,\"load_us\":2,\"compute_us\":3,\"total_us\":7}"

/* A scratch folder for .npy files; the test removes it with rm_dir(). */
static const char *scratch(char *dir, size_t size) {
  snprintf(dir, size, "/tmp/slyctl-npy-XXXXXX");
  cr_assert(mkdtemp(dir) != NULL);
  return dir;
}

static void rm_dir(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  cr_assert(system(cmd) == 0);
}

/* "<dir>/<name>" in buf. */
static const char *in_dir(char *buf, const char *dir, const char *name) {
  snprintf(buf, 128, "%s/%s", dir, name);
  return buf;
}

static void write_npy(const char *path, sly_dtype d, uint32_t ndim,
                      const uint64_t *shape, const void *data) {
  sly_error err = {0};
  cr_assert(eq(int, npy_write(path, d, ndim, shape, data, &err), 0), "%s",
            err.message);
}

/* Reads a whole .npy file; the caller frees *data. */
static npy_header read_npy(const char *path, void **data) {
  npy_file f;
  sly_error err = {0};
  cr_assert(eq(int, npy_open(path, &f, &err), 0), "%s", err.message);
  *data = malloc(f.h.nbytes + 1);
  cr_assert(eq(int, npy_read_into(&f, *data, &err), 0), "%s", err.message);
  npy_header h = f.h;
  npy_close(&f);
  return h;
}

/* Inputs a (float32 [2,3]) and b (int64 [4]); outputs a*2 (float32) and
 * b+0.5 (bfloat16, which slyctl writes as float32). f->arg: the outputs to
 * send (2, or 3 for a count that does not match). */
static void script_ctl_forward(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  uint64_t id;
  cJSON *req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no forward");
  char *in =
      cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(req, "inputs"));
  bool good = strcmp(in, "[{\"dtype\":\"float32\",\"shape\":[2,3],\"region\":1,"
                         "\"offset\":0},{\"dtype\":\"int64\",\"shape\":[4],"
                         "\"region\":1,\"offset\":64}]") == 0;
  if (!good)
    fake_failf(f, "inputs %s", in);
  free(in);
  const cJSON *ins = cJSON_GetObjectItemCaseSensitive(req, "inputs");
  float *a = good ? fake_tensor_data(f, cJSON_GetArrayItem(ins, 0), NULL) : 0;
  int64_t *b = good ? fake_tensor_data(f, cJSON_GetArrayItem(ins, 1), NULL) : 0;
  cJSON_Delete(req);
  FCHECK(f, a != NULL && b != NULL, "bad forward");
  fake_region *r = fake_server_region(f, 4096);
  FCHECK(f, r != NULL, "no server region");
  for (int i = 0; i < 6; i++)
    ((float *)r->base)[i] = a[i] * 2;
  for (int i = 0; i < 4; i++) {
    float v = (float)b[i] + 0.5f; /* exact in bfloat16 for small b */
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    ((uint16_t *)((char *)r->base + 64))[i] = (uint16_t)(u >> 16);
  }
  fake_reply_fds(f, &r->fd, 1,
                 "{\"id\":%llu,\"ok\":true,\"lease\":7,\"outputs\":[{\"dtype\""
                 ":\"float32\",\"shape\":[2,3],\"region\":2,\"offset\":0},{"
                 "\"dtype\":\"bfloat16\",\"shape\":[4],\"region\":2,\"offset\""
                 ":64}%s]," TIMING "}",
                 (unsigned long long)id,
                 f->arg == 3 ? ",{\"dtype\":\"bool\",\"shape\":[],\"region\":"
                               "2,\"offset\":200}"
                             : "");
  fake_expect_eof(f);
}

Test(slyctl_fake, forward_reads_npy_inputs_and_writes_one_npy_per_output,
     .timeout = 30) {
  char dir[64], pa[128], pb[128], o1[128], o2[128], want[512];
  scratch(dir, sizeof(dir));
  float a[6] = {0, 1, 2, 3, 4, 5};
  int64_t b[4] = {1, 2, 3, 4};
  write_npy(in_dir(pa, dir, "a.npy"), SLY_FLOAT32, 2, (uint64_t[]){2, 3}, a);
  write_npy(in_dir(pb, dir, "b.npy"), SLY_INT64, 1, (uint64_t[]){4}, b);
  in_dir(o1, dir, "o1.npy");
  char o2_opt[140];
  snprintf(o2_opt, sizeof(o2_opt), "--out=%s", in_dir(o2, dir, "o2.npy"));
  fake *f = fake_start(script_ctl_forward, 2);
  td_cmd r;
  run_ctl(f,
          (const char *const[]){"forward", "enc", "--in", pa, "--in", pb,
                                "--out", o1, o2_opt, NULL},
          &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.err, ""));
  snprintf(want, sizeof(want),
           "output 0  float32 [2, 3] -> %s\n"
           "output 1  bfloat16 [4] -> %s\n"
           "timing    queue 1 us, load 2 us, compute 3 us, total 7 us\n",
           o1, o2);
  cr_assert(eq(str, r.out, want));
  td_cmd_free(&r);

  void *d;
  npy_header h = read_npy(o1, &d);
  cr_assert(eq(int, h.dtype, SLY_FLOAT32));
  cr_assert(eq(u32, h.ndim, 2));
  for (int i = 0; i < 6; i++)
    cr_assert(eq(flt, ((float *)d)[i], 2.0f * (float)i));
  free(d);
  /* bfloat16 comes out as float32, exactly. */
  h = read_npy(o2, &d);
  cr_assert(eq(int, h.dtype, SLY_FLOAT32));
  cr_assert(eq(u64, h.shape[0], 4));
  for (int i = 0; i < 4; i++)
    cr_assert(eq(flt, ((float *)d)[i], (float)b[i] + 0.5f));
  free(d);
  rm_dir(dir);
}

Test(slyctl_fake, forward_needs_one_out_per_output, .timeout = 30) {
  char dir[64], pa[128], pb[128], o1[128], o2[128];
  scratch(dir, sizeof(dir));
  float a[6] = {0};
  int64_t b[4] = {0};
  write_npy(in_dir(pa, dir, "a.npy"), SLY_FLOAT32, 2, (uint64_t[]){2, 3}, a);
  write_npy(in_dir(pb, dir, "b.npy"), SLY_INT64, 1, (uint64_t[]){4}, b);
  fake *f = fake_start(script_ctl_forward, 3);
  td_cmd r;
  run_ctl(f,
          (const char *const[]){"forward", "enc", "--in", pa, "--in", pb,
                                "--out", in_dir(o1, dir, "o1.npy"), "--out",
                                in_dir(o2, dir, "o2.npy"), NULL},
          &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 1));
  cr_assert(eq(str, r.err,
               "slyctl: INVALID_ARG: slice enc returned 3 outputs but 2 "
               "--out were given\n"));
  cr_assert(eq(str, r.out, ""));
  cr_assert(access(o1, F_OK) != 0, "an output was written");
  td_cmd_free(&r);
  rm_dir(dir);
}

/* --cast bfloat16 over a pipeline: float32 [3] arrives as bfloat16, rounded
 * to nearest even; the float32 output is passed back as it is. */
static void script_ctl_cast(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  uint64_t id;
  cJSON *req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no forward");
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(req, "pipeline");
  const cJSON *in =
      cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(req, "inputs"), 0);
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(in, "dtype");
  bool good = cJSON_IsString(p) && strcmp(p->valuestring, "pipe") == 0 &&
              cJSON_IsString(dt) && strcmp(dt->valuestring, "bfloat16") == 0;
  uint16_t *x = good ? fake_tensor_data(f, in, NULL) : NULL;
  cJSON_Delete(req);
  FCHECK(f, x != NULL, "input not sent as bfloat16 to pipeline pipe");
  FCHECK(f, x[0] == 0x3f80 && x[1] == 0x3f80 && x[2] == 0x4040,
         "bfloat16 input %#x %#x %#x", x[0], x[1], x[2]);
  fake_region *r = fake_server_region(f, 4096);
  FCHECK(f, r != NULL, "no server region");
  memcpy(r->base, (float[]){-1, 0.25f, 8}, 12);
  fake_reply_fds(
      f, &r->fd, 1,
      "{\"id\":%llu,\"ok\":true,\"lease\":7,\"outputs\":[{\"dtype\""
      ":\"float32\",\"shape\":[3],\"region\":2,\"offset\":0}]," TIMING "}",
      (unsigned long long)id);
  fake_expect_eof(f);
}

Test(slyctl_fake, forward_json_with_cast_to_bfloat16_over_a_pipeline,
     .timeout = 30) {
  char dir[64], pa[128], o1[128];
  scratch(dir, sizeof(dir));
  float x[3] = {1.0f, 1.00390625f, 3.0f}; /* the middle one is a tie */
  write_npy(in_dir(pa, dir, "x.npy"), SLY_FLOAT32, 1, (uint64_t[]){3}, x);
  fake *f = fake_start(script_ctl_cast, 0);
  td_cmd r;
  run_ctl(f,
          (const char *const[]){"--json", "forward", "--pipeline", "pipe",
                                "--cast", "bfloat16", "--in", pa, "--out",
                                in_dir(o1, dir, "y.npy"), NULL},
          &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cJSON *j = cJSON_Parse(r.out);
  cr_assert(j != NULL, "%s", r.out);
  char *got = cJSON_PrintUnformatted(j);
  char want[512];
  snprintf(want, sizeof(want),
           "{\"pipeline\":\"pipe\",\"outputs\":[{\"dtype\":\"float32\","
           "\"shape\":[3],\"file\":\"%s\"}],\"lease\":7,\"timing\":{"
           "\"queue_us\":1,\"load_us\":2,\"compute_us\":3,\"total_us\":7}}",
           o1);
  cr_assert(eq(str, got, want));
  free(got);
  cJSON_Delete(j);
  td_cmd_free(&r);
  void *d;
  read_npy(o1, &d);
  cr_assert(eq(flt, ((float *)d)[2], 8.0f));
  free(d);
  rm_dir(dir);
}

static void script_eof(fake *f) { fake_expect_eof(f); }

Test(slyctl_fake, a_bad_npy_input_is_named_and_nothing_is_sent, .timeout = 30) {
  char dir[64], pa[128], py[128];
  scratch(dir, sizeof(dir));
  FILE *fp = fopen(in_dir(pa, dir, "bad.npy"), "w");
  fputs("this is not a NumPy file at all", fp);
  fclose(fp);
  fake *f = fake_start(script_eof, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"forward", "enc", "--in", pa, "--out",
                                    in_dir(py, dir, "y.npy"), NULL},
          &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 1));
  char want[256];
  snprintf(want, sizeof(want),
           "slyctl: INVALID_ARG: %s: not a .npy file (no magic)\n", pa);
  cr_assert(eq(str, r.err, want));
  td_cmd_free(&r);
  rm_dir(dir);
}

Test(slyctl_fake, forward_usage_errors_need_no_server) {
  const char *const *cases[] = {
      (const char *const[]){"forward", "--in", "a.npy", NULL},
      (const char *const[]){"forward", "a", "--in", "a.npy", NULL},
      (const char *const[]){"forward", "a", "--pipeline", "p", NULL},
      (const char *const[]){"forward", "a", "b", NULL},
      (const char *const[]){"forward", "a", "--cast", "float16", NULL},
      (const char *const[]){"forward", "a", "--in", NULL},
      (const char *const[]){"forward", "a", "--frobnicate", NULL},
      (const char *const[]){"activate", "a", "--later", NULL},
      (const char *const[]){"activate", "--no-wait", NULL},
      (const char *const[]){"activate", "a", "b", NULL},
      (const char *const[]){"load", "a", "GPU", NULL},
      (const char *const[]){"evict", "a", "ram", NULL},
      (const char *const[]){"pin", "a", "", NULL},
      (const char *const[]){"add-slice", "a", "linear", "{bad json", NULL},
      (const char *const[]){"add-slice", "a", "linear", "[1, 2]", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    td_cmd r;
    run_ctl(NULL, cases[i], &r);
    cr_assert(eq(int, r.exit_code, 2), "case %zu: %s", i, r.err);
    cr_assert(strstr(r.err, "usage: slyctl") != NULL, "case %zu", i);
    td_cmd_free(&r);
  }
}

/* ---- activate, add-slice, remove-slice ---- */

static void script_ctl_slices(fake *f) {
  uint64_t id;
  cJSON *req = NULL;
  char *text = NULL;
  const char *op = f->arg == 0   ? "set_active_slice"
                   : f->arg == 1 ? "set_active_slice"
                   : f->arg == 2 ? "add_slice"
                                 : "remove_slice";
  req = fake_expect_json(f, op, &id);
  FCHECK(f, req != NULL, "no %s", op);
  cJSON_DeleteItemFromObjectCaseSensitive(req, "id");
  text = cJSON_PrintUnformatted(req);
  cJSON_Delete(req);
  static const char *want[] = {
      "{\"op\":\"set_active_slice\",\"slice\":\"enc\",\"wait\":true}",
      "{\"op\":\"set_active_slice\",\"slice\":\"enc\",\"wait\":false}",
      "{\"op\":\"add_slice\",\"name\":\"head\",\"constructor\":\"linear\","
      "\"config\":{\"in_features\":4}}",
      "{\"op\":\"remove_slice\",\"name\":\"head\"}",
  };
  bool good = strcmp(text, want[f->arg]) == 0;
  if (!good)
    fake_failf(f, "request %s", text);
  free(text);
  FCHECK(f, good, "bad request");
  if (f->arg <= 1)
    fake_reply(f, "{\"id\":%llu,\"ok\":true,\"slice\":\"enc\",\"tier\":\"%s\"}",
               (unsigned long long)id, f->arg == 0 ? "gpu" : "disk");
  else if (f->arg == 2)
    fake_reply(f, "{\"id\":%llu,\"ok\":true}", (unsigned long long)id);
  else
    fake_reply(f,
               "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":"
               "\"PERMISSION_DENIED\",\"message\":\"remove_slice needs "
               "admin\"}}",
               (unsigned long long)id);
  fake_expect_eof(f);
}

Test(slyctl_fake, activate_add_slice_and_remove_slice, .timeout = 30) {
  const char *const *argv[] = {
      (const char *const[]){"activate", "enc", NULL},
      (const char *const[]){"--json", "activate", "--no-wait", "enc", NULL},
      (const char *const[]){"add-slice", "head", "linear",
                            "{\"in_features\": 4}", NULL},
      (const char *const[]){"remove-slice", "head", NULL},
  };
  static const char *out[] = {"enc: active, on gpu\n", NULL, "", ""};
  for (uint64_t i = 0; i < 4; i++) {
    fake *f = fake_start(script_ctl_slices, i);
    td_cmd r;
    run_ctl(f, argv[i], &r);
    fake_finish(f);
    if (i == 3) {
      cr_assert(eq(int, r.exit_code, 1));
      cr_assert(eq(str, r.err,
                   "slyctl: PERMISSION_DENIED: remove_slice needs admin\n"));
    } else {
      cr_assert(eq(int, r.exit_code, 0), "case %llu: %s", (unsigned long long)i,
                r.err);
    }
    if (out[i] != NULL) {
      cr_assert(eq(str, r.out, (char *)out[i]), "case %llu",
                (unsigned long long)i);
    } else {
      cJSON *j = cJSON_Parse(r.out);
      char *s = cJSON_PrintUnformatted(j);
      cr_assert(eq(str, s, "{\"slice\":\"enc\",\"tier\":\"disk\"}"));
      free(s);
      cJSON_Delete(j);
    }
    td_cmd_free(&r);
  }
}
