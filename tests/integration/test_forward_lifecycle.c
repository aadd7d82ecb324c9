/* test_forward_lifecycle.c — slices over the daemon's life: a slice added at
 * run time serves forwards, shows its use in list and survives SIGHUP; and
 * SIGTERM during a slow forward still delivers its reply before the daemon
 * exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(forward_lifecycle, .timeout = 30, .fini = td_cleanup);

#define RT_CONFIG                                                              \
  "{\"in_features\": 16, \"out_features\": 8, \"bias\": true, "               \
  "\"dtype\": \"float32\", \"weights\": \"" FX_DIR "/linear_w.safetensors\"}"
#define LATE_SLICE                                                             \
  "{\"name\": \"late\", \"constructor\": \"linear\", \"config\": "            \
  "{\"in_features\": 16, \"out_features\": 8, \"dtype\": \"float32\", "       \
  "\"weights\": \"" FX_DIR "/linear_w.safetensors\"}}"

/* The list entry of `name`, copied; false when it is not listed. */
static bool find_slice(sly_conn *c, const char *name, sly_slice_info *out) {
  sly_slice_list *l = NULL;
  sly_error err;
  cr_assert_eq(sly_list(c, &l, &err), 0, "list: %s", err.message);
  bool found = false;
  for (size_t i = 0; i < l->count && !found; i++)
    if (strcmp(l->slices[i].name, name) == 0) {
      *out = l->slices[i];
      found = true;
    }
  sly_slice_list_free(l);
  return found;
}

/* Runs `slice` on lin's input and compares with lin's reference. */
static void forward_lin(sly_conn *c, const char *slice, const sly_tensor *in,
                        const fx_array *ref) {
  sly_result *r = NULL;
  sly_error err;
  cr_assert_eq(sly_forward(c, slice, in, 1, &r, &err), 0, "forward %s: %s",
               slice, err.message);
  fx_assert_match(sly_result_output(r, 0), ref, FX_TOL_F32, slice);
  sly_result_free(r);
}

Test(forward_lifecycle, slice_added_at_runtime_serves_and_survives_sighup) {
  char *cfg = fx_config(NULL, NULL);
  td *d = td_start(cfg);
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, 4096, &a, &err), 0, "%s", err.message);
  fx_array x, ref;
  fx_read("linear_w.in0.npy", &x);
  fx_read("linear_w.out0.npy", &ref);
  sly_tensor in = fx_put(a, &x);

  sly_slice_info s;
  cr_assert(!find_slice(c, "rt", &s), "rt listed before it was added");
  cr_assert_eq(sly_add_slice(c, "rt", "linear", RT_CONFIG, &err), 0,
               "add_slice: %s", err.message);
  cr_assert(find_slice(c, "rt", &s), "rt not listed after add_slice");
  cr_assert_str_eq(s.constructor, "linear");
  cr_assert_eq(s.hits, 0);

  forward_lin(c, "rt", &in, &ref);
  cr_assert(find_slice(c, "rt", &s));
  cr_assert_str_eq(s.state, "resident");
  cr_assert_str_eq(s.tier, td_compute_tier());
  cr_assert_eq(s.hits, 1, "hits %llu after one forward",
               (unsigned long long)s.hits);
  cr_assert_eq(s.loads, 1);
  /* 8 x 16 weights and 8 biases in float32, at least. */
  cr_assert_geq(s.bytes, (16 * 8 + 8) * 4, "bytes %llu",
                (unsigned long long)s.bytes);
  cr_assert_gt(s.last_used, 1e9, "last_used %f", s.last_used);
  forward_lin(c, "rt", &in, &ref);
  forward_lin(c, "rt", &in, &ref);
  cr_assert(find_slice(c, "rt", &s));
  cr_assert_eq(s.hits, 3, "hits %llu after three forwards",
               (unsigned long long)s.hits);

  /* SIGHUP with a config that gained a slice: the new one appears, the
   * runtime one stays, loaded and counted. */
  char *cfg2 = fx_config(LATE_SLICE, NULL);
  td_write_config(d, cfg2);
  cr_assert_eq(kill(d->pid, SIGHUP), 0);
  long long end = td_now_ms() + 5000;
  while (!find_slice(c, "late", &s) && td_now_ms() < end)
    td_sleep_ms(20);
  cr_assert(find_slice(c, "late", &s), "SIGHUP did not pick up 'late'");
  cr_assert(find_slice(c, "rt", &s), "rt lost on SIGHUP");
  cr_assert_str_eq(s.state, "resident", "rt after SIGHUP: %s", s.state);
  cr_assert_eq(s.hits, 3, "rt's hits after SIGHUP: %llu",
               (unsigned long long)s.hits);
  forward_lin(c, "rt", &in, &ref);
  forward_lin(c, "late", &in, &ref);
  cr_assert(find_slice(c, "rt", &s));
  cr_assert_eq(s.hits, 4, "rt's hits went %llu", (unsigned long long)s.hits);

  /* The reload op keeps it too, and add_slice still sees the name taken. */
  cr_assert_eq(sly_reload(c, &err), 0, "reload: %s", err.message);
  forward_lin(c, "rt", &in, &ref);
  cr_assert_eq(sly_add_slice(c, "rt", "linear", RT_CONFIG, &err),
               SLY_E_EXISTS, "%s", err.message);
  /* Removing it is for good: a reload does not bring it back. */
  cr_assert_eq(sly_remove_slice(c, "rt", &err), 0, "%s", err.message);
  cr_assert_eq(sly_reload(c, &err), 0, "reload: %s", err.message);
  cr_assert(!find_slice(c, "rt", &s), "rt came back with a reload");
  sly_result *r = NULL;
  cr_assert_eq(sly_forward(c, "rt", &in, 1, &r, &err), SLY_E_NOT_FOUND, "%s",
               err.message);
  free(cfg);
  free(cfg2);
  fx_array_free(&x);
  fx_array_free(&ref);
  sly_close(c);
  td_stop(d);
}

/* ---- SIGTERM drains ------------------------------------------------------ */

#define SLOW_SLICE                                                             \
  "{\"name\": \"slow\", \"constructor\": \"transformer_encoder_layer\", "     \
  "\"config\": {\"d_model\": 256, \"nhead\": 8, \"dim_feedforward\": 1024, "  \
  "\"dtype\": \"float32\", \"seed\": 7}}"
#define SLOW_BYTES ((size_t)4 * 1024 * 256 * 4)

/* A raw connection with the slow input mapped as region 1... returns it. */
static uint64_t slow_region(int fd) {
  float *buf = malloc(SLOW_BYTES);
  cr_assert(buf);
  for (size_t i = 0; i < SLOW_BYTES / 4; i++)
    buf[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  uint64_t region = rc_map_data(fd, buf, SLOW_BYTES, 1);
  free(buf);
  return region;
}

static void slow_json(int id, uint64_t region, char *out, size_t len) {
  snprintf(out, len,
           "{\"id\": %d, \"op\": \"forward\", \"slice\": \"slow\", "
           "\"inputs\": [{\"dtype\": \"float32\", \"shape\": [4, 1024, 256], "
           "\"region\": %llu, \"offset\": 0}]}",
           id, (unsigned long long)region);
}

static void assert_exit_0(td *d) {
  cr_assert(td_wait_exit(d, TD_EXIT_TIMEOUT_MS), "slyced did not exit");
  char *logs = td_logs(d, 2000);
  cr_assert(WIFEXITED(d->status) && WEXITSTATUS(d->status) == 0,
            "slyced exit status 0x%x; logs:\n%s", d->status, logs);
  free(logs);
}

/* slyced with the fixtures and "slow", `more_keys` in its config. */
static td *start_slow(const char *more_keys) {
  char *cfg = fx_config(SLOW_SLICE, more_keys);
  td *d = td_start(cfg);
  free(cfg);
  return d;
}

Test(forward_lifecycle, sigterm_during_a_slow_forward_replies_then_exits_0) {
  td *d = start_slow(NULL);
  int fd = rc_connect(d->sock);
  uint64_t region = slow_region(fd);
  char req[512];
  slow_json(2, region, req, sizeof req);
  cr_assert_eq(rc_send_json(fd, req), 0);
  td_sleep_ms(200);
  cr_assert_eq(kill(d->pid, SIGTERM), 0);

  /* The forward that was running completes and its reply arrives. */
  cJSON *r = rc_read_reply(fd);
  rc_assert_ok(r, 2);
  const cJSON *outs = cJSON_GetObjectItemCaseSensitive(r, "outputs");
  cr_assert_eq(cJSON_GetArraySize(outs), 1);
  cJSON_Delete(r);
  /* Nothing new is taken on: the connection gets SHUTTING_DOWN or is
   * closed. */
  if (rc_send_json(fd, "{\"id\": 3, \"op\": \"hello\"}") == 0) {
    char *body = NULL;
    uint32_t len;
    rc_status s = rc_read_frame(fd, TD_EXIT_TIMEOUT_MS, &body, &len, NULL);
    if (s == RC_FRAME) {
      cJSON *j = cJSON_ParseWithLength(body, len);
      rc_assert_error(j, 3, "SHUTTING_DOWN");
      cJSON_Delete(j);
      free(body);
    } else {
      cr_assert_eq(s, RC_CLOSED, "after SIGTERM: %s", rc_status_name(s));
    }
  }
  close(fd);
  assert_exit_0(d);
  td_destroy(d);
}

Test(forward_lifecycle, drain_timeout_answers_queued_forwards_shutting_down) {
  td_skip_on_gpu("the slow forward finishes before drain_timeout_ms");
  td *d = start_slow("\"drain_timeout_ms\": 100");
  int fd = rc_connect(d->sock);
  uint64_t region = slow_region(fd);
  char req[512];
  for (int i = 0; i < 3; i++) {
    slow_json(10 + i, region, req, sizeof req);
    cr_assert_eq(rc_send_json(fd, req), 0);
  }
  td_sleep_ms(200);
  cr_assert_eq(kill(d->pid, SIGTERM), 0);
  /* The running forward cannot be stopped midway; the queued ones never
   * start once the drain time has passed. */
  int shut = 0;
  for (int i = 0; i < 3; i++) {
    char *body = NULL;
    uint32_t len;
    rc_status s = rc_read_frame(fd, TD_EXIT_TIMEOUT_MS, &body, &len, NULL);
    cr_assert_eq(s, RC_FRAME, "reply %d of 3: %s", i + 1, rc_status_name(s));
    cJSON *j = cJSON_ParseWithLength(body, len);
    free(body);
    if (i == 0 && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok"))) {
      rc_assert_ok(j, 10);
    } else {
      rc_assert_error(j, 10 + i, "SHUTTING_DOWN");
      shut++;
    }
    cJSON_Delete(j);
  }
  cr_assert_geq(shut, 2);
  close(fd);
  assert_exit_0(d);
  td_destroy(d);
}

/* ---- A client that goes away ---------------------------------------------- */

/* "slow"'s hits in a list reply, from a fresh connection. */
static long long slow_hits(td *d) {
  int fd = rc_connect(d->sock);
  cJSON *r = rc_call(fd, "{\"id\": 1, \"op\": \"list\"}");
  rc_assert_ok(r, 1);
  long long hits = -1;
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItem(r, "slices")) {
    if (strcmp(cJSON_GetObjectItem(s, "name")->valuestring, "slow") == 0)
      hits = (long long)cJSON_GetObjectItem(s, "hits")->valuedouble;
  }
  cJSON_Delete(r);
  close(fd);
  return hits;
}

Test(forward_lifecycle, a_closed_connections_queued_forwards_are_dropped) {
  td_skip_on_gpu("the slow forward is too fast to keep a queue");
  td *d = start_slow(NULL);
  int fd = rc_connect(d->sock);
  uint64_t region = slow_region(fd);
  char req[512];
  slow_json(2, region, req, sizeof req);
  cJSON *r = rc_call(fd, req); /* built, and one hit */
  rc_assert_ok(r, 2);
  cJSON_Delete(r);
  enum { QUEUED = 8 };
  for (int i = 0; i < QUEUED; i++) {
    slow_json(10 + i, region, req, sizeof req);
    cr_assert_eq(rc_send_json(fd, req), 0);
  }
  td_sleep_ms(50);
  close(fd); /* as a client killed with its requests in flight */

  /* Another client's forward runs after whatever of those still ran. */
  int other = rc_connect(d->sock);
  region = slow_region(other);
  slow_json(3, region, req, sizeof req);
  r = rc_call(other, req);
  rc_assert_ok(r, 3);
  cJSON_Delete(r);
  close(other);
  /* 1 + 1 for the first and the last; of the eight, the one running when
   * the close was seen, and one more that may have started meanwhile. */
  long long hits = slow_hits(d);
  cr_assert_leq(hits, 4, "%lld forwards ran: the closed connection's queued "
                         "ones were not dropped", hits);
  cr_assert(td_logs_wait(d, "peer gone with", 1000));
  td_stop(d);
}
