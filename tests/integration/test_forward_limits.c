/* test_forward_limits.c — the forward queue's limits: max_inflight_per_conn
 * (requests waiting on one connection) and queue_depth (requests waiting on
 * the device, all connections together) answer BUSY, in order, and the
 * connection serves again once the queue drains. A slow forward (a 256-wide
 * transformer layer on 8 x 1024 tokens, about a second on one CPU core)
 * holds the
 * queue while the test crosses the limit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(forward_limits, .timeout = 30, .fini = td_cleanup);

#define SLOW_SLICE                                                             \
  "{\"name\": \"slow\", \"constructor\": \"transformer_encoder_layer\", "     \
  "\"config\": {\"d_model\": 256, \"nhead\": 8, \"dim_feedforward\": 1024, "  \
  "\"dtype\": \"float32\", \"seed\": 7}}"
#define SLOW_ROWS 8
#define SLOW_TOKENS 1024
#define SLOW_BYTES ((size_t)SLOW_ROWS * SLOW_TOKENS * 256 * 4)

static td *start_slow(const char *more_keys) {
  char *cfg = fx_config(SLOW_SLICE, more_keys);
  td *d = td_start(cfg);
  free(cfg);
  return d;
}

/* A raw connection with one region: the slow input at 0, lin's input after
 * it. */
typedef struct {
  int fd;
  uint64_t region;
} raw;

static void raw_open(raw *w, const td *d) {
  w->fd = rc_connect(d->sock);
  fx_array x;
  fx_read("linear_w.in0.npy", &x);
  char *buf = calloc(1, SLOW_BYTES + x.nbytes);
  cr_assert(buf);
  float *f = (float *)buf;
  for (size_t i = 0; i < SLOW_BYTES / 4; i++)
    f[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  memcpy(buf + SLOW_BYTES, x.data, x.nbytes);
  w->region = rc_map_data(w->fd, buf, SLOW_BYTES + x.nbytes, 1);
  free(buf);
  fx_array_free(&x);
}

/* The text of a forward request: the slow slice over `rows` rows of
 * tokens, or lin when rows is 0. */
static void forward_json(const raw *w, int id, int rows, char *out,
                         size_t len) {
  if (rows > 0)
    snprintf(out, len,
             "{\"id\": %d, \"op\": \"forward\", \"slice\": \"slow\", "
             "\"inputs\": [{\"dtype\": \"float32\", \"shape\": [%d, %d, 256], "
             "\"region\": %llu, \"offset\": 0}]}",
             id, rows, SLOW_TOKENS, (unsigned long long)w->region);
  else
    snprintf(out, len,
             "{\"id\": %d, \"op\": \"forward\", \"slice\": \"lin\", "
             "\"inputs\": [{\"dtype\": \"float32\", \"shape\": [4, 16], "
             "\"region\": %llu, \"offset\": %zu}]}",
             id, (unsigned long long)w->region, SLOW_BYTES);
}

/* Appends one frame of `json` to buf at *len. */
static void frame_append(char *buf, size_t *len, const char *json) {
  uint32_t n = (uint32_t)strlen(json);
  rc_header(n, (uint8_t *)buf + *len);
  memcpy(buf + *len + 4, json, n);
  *len += 4 + n;
}

Test(forward_limits, max_inflight_per_conn_answers_busy_in_order) {
  td *d = start_slow("\"max_inflight_per_conn\": 2");
  raw w;
  raw_open(&w, d);
  /* Four forwards in one write: the slow one runs, the second waits, the
   * third and fourth are past the limit of 2. */
  char buf[4096], req[512];
  size_t len = 0;
  for (int i = 0; i < 4; i++) {
    forward_json(&w, 10 + i, i == 0 ? SLOW_ROWS : 0, req, sizeof req);
    frame_append(buf, &len, req);
  }
  cr_assert_eq(rc_send(w.fd, buf, len), 0);
  const char *want[] = {NULL, NULL, "BUSY", "BUSY"};
  for (int i = 0; i < 4; i++) {
    cJSON *r = rc_read_reply(w.fd);
    if (want[i] == NULL) {
      rc_assert_ok(r, (uint64_t)(10 + i));
    } else {
      rc_assert_error_msg(r, 10 + i, want[i], "max_inflight_per_conn");
    }
    cJSON_Delete(r);
  }
  /* Once the replies are in, the connection takes forwards again. */
  forward_json(&w, 20, 0, req, sizeof req);
  cJSON *r = rc_call(w.fd, req);
  rc_assert_ok(r, 20);
  cJSON_Delete(r);
  close(w.fd);
  td_stop(d);
}

Test(forward_limits, queue_depth_answers_busy_to_other_connections) {
  td_skip_on_gpu("the slow forward is too fast to hold the queue");
  td *d = start_slow("\"queue_depth\": 1");
  raw w;
  raw_open(&w, d);
  /* Load the slow slice first (one short row), so that the forward below is
   * all compute. */
  char req[512];
  forward_json(&w, 1, 1, req, sizeof req);
  cJSON *r = rc_call(w.fd, req);
  rc_assert_ok(r, 1);
  cJSON_Delete(r);

  forward_json(&w, 2, SLOW_ROWS, req, sizeof req);
  cr_assert_eq(rc_send_json(w.fd, req), 0);
  td_sleep_ms(150);
  long long sent = td_now_ms();

  /* Another connection finds the device's queue full. */
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, 4096, &a, &err), 0, "%s", err.message);
  fx_array x, ref;
  fx_read("linear_w.in0.npy", &x);
  fx_read("linear_w.out0.npy", &ref);
  sly_tensor in = fx_put(a, &x);
  sly_result *res = NULL;
  int rc = sly_forward(c, "lin", &in, 1, &res, &err);
  long long busy_at = td_now_ms();
  cr_assert_eq(rc, SLY_E_BUSY, "forward beside a running one: %s: %s",
               sly_code_name(rc), rc < 0 ? err.message : "ok");
  cr_assert(strstr(err.message, "queue_depth"), "%s", err.message);
  /* BUSY comes at once, not after the slow forward. */
  r = rc_read_reply(w.fd);
  long long slow_at = td_now_ms();
  rc_assert_ok(r, 2);
  cJSON_Delete(r);
  cr_assert_lt(busy_at - sent, slow_at - sent,
               "BUSY took %lld ms, the slow forward %lld ms", busy_at - sent,
               slow_at - sent);

  /* Non-forward requests do not queue on the device. */
  forward_json(&w, 3, SLOW_ROWS, req, sizeof req);
  cr_assert_eq(rc_send_json(w.fd, req), 0);
  td_sleep_ms(100);
  td_assert_serving(d);
  r = rc_read_reply(w.fd);
  rc_assert_ok(r, 3);
  cJSON_Delete(r);

  /* With the queue empty the other connection is served. */
  cr_assert_eq(sly_forward(c, "lin", &in, 1, &res, &err), 0, "%s",
               err.message);
  fx_assert_match(sly_result_output(res, 0), &ref, FX_TOL_F32, "lin");
  sly_result_free(res);
  fx_array_free(&x);
  fx_array_free(&ref);
  sly_close(c);
  close(w.fd);
  td_stop(d);
}
