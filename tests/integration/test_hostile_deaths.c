/* test_hostile_deaths.c — clients that go away at the worst moment: in the
 * middle of a forward (with more queued, a region unmapped under them and
 * half a frame sent), killed with SIGKILL while holding server regions,
 * gone with replies and their fds still in flight, a burst of connections
 * far past max_conns_per_uid (some dying before they are accepted), and a
 * client that half-closes. A client's death is its socket's last close: the
 * daemon sees the same whether the process exits, is killed, or closes.
 * After each case the daemon serves a good forward, maps no server region
 * of the dead, and is back to its baseline of fds and memory. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(hostile_deaths, .timeout = 90, .fini = td_cleanup);

/* "slow": a transformer layer, about 0.3 s over [2, 1024, 256] on one core.
 * "wide": 8 -> 1024 features, [1536, 8] in gives 6 MiB out. */
#define SLICES                                                                 \
  "{\"name\": \"slow\", \"constructor\": \"transformer_encoder_layer\", "      \
  "\"config\": {\"d_model\": 256, \"nhead\": 8, \"dim_feedforward\": 1024, "   \
  "\"dtype\": \"float32\", \"seed\": 7}}, "                                    \
  "{\"name\": \"wide\", \"constructor\": \"linear\", \"config\": "             \
  "{\"in_features\": 8, \"out_features\": 1024, \"dtype\": \"float32\", "      \
  "\"seed\": 5}}"
#define SLOW_BYTES ((size_t)2 * 1024 * 256 * 4)
#define WIDE_ROWS 1536
#define MAX_CONNS 4
#define LIMITS                                                                 \
  "\"max_conns_per_uid\": 4, \"max_inflight_per_conn\": 4, "                   \
  "\"max_region_mb\": 4, \"max_output_mb\": 32"
/* As in test_hostile_frames.c: what glibc may keep of what it freed. */
#define RSS_SLACK_KIB (8 * 1024)
#define GONE_MS 10000

static uint64_t map_floats(int c, const char *name, size_t bytes, uint64_t id);
static void slow_json(char *out, size_t len, int id, uint64_t region);
static void wide_json(char *out, size_t len, int id, uint64_t region);

/* Every slice the cases run is loaded, and run at the cases' sizes, before
 * the baseline: a slice made resident is memory kept on purpose. */
static td *start(td_baseline *b) {
  char *cfg = fx_config(SLICES, LIMITS);
  td *d = td_start(cfg);
  free(cfg);
  int c = rc_connect(d->sock);
  uint64_t region = map_floats(c, "integ-warm", SLOW_BYTES, 1);
  char req[512];
  for (int i = 0; i < 2; i++) {
    slow_json(req, sizeof req, 2, region);
    cJSON *r = rc_call(c, req);
    rc_assert_ok(r, 2);
    cJSON_Delete(r);
    wide_json(req, sizeof req, 3, region);
    r = rc_call(c, req);
    rc_assert_ok(r, 3);
    cJSON_Delete(r);
  }
  close(c);
  for (int i = 0; i < 3; i++)
    td_assert_forward_ok(d, "warm-up");
  td_baseline_take(d, b);
  return d;
}

/* The dead client's work may still run: wait until no server region is left
 * (the good forward then makes and drops its own), then the baseline. */
static void recovered(const td *d, const td_baseline *b, const char *after) {
  long long end = td_now_ms() + GONE_MS;
  while (td_maps_files(d->pid, "slyced-out", NULL, 0) > 0 && td_now_ms() < end)
    td_sleep_ms(20);
  cr_assert_eq(td_maps_files(d->pid, "slyced-out", NULL, 0), 0,
               "%s: server regions still mapped %d ms later", after, GONE_MS);
  td_assert_forward_ok(d, after);
  td_baseline_assert(d, b, RSS_SLACK_KIB, after);
}

/* A sealed memfd named `name` of `bytes` filled with a pattern of floats,
 * mapped on `c` as map_region `id`; returns the region id. */
static uint64_t map_floats(int c, const char *name, size_t bytes, uint64_t id) {
  int m = rc_memfd(name, bytes, F_SEAL_SHRINK | F_SEAL_GROW);
  float *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  cr_assert(p != MAP_FAILED);
  for (size_t i = 0; i < bytes / 4; i++)
    p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  munmap(p, bytes);
  uint64_t region = rc_map_region(c, m, id);
  close(m);
  return region;
}

/* Appends one frame of `json` to buf at *len. */
static void frame_append(char *buf, size_t cap, size_t *len, const char *json) {
  uint32_t n = (uint32_t)strlen(json);
  cr_assert_leq(*len + 4 + n, cap);
  rc_header(n, (uint8_t *)buf + *len);
  memcpy(buf + *len + 4, json, n);
  *len += 4 + n;
}

static void slow_json(char *out, size_t len, int id, uint64_t region) {
  snprintf(out, len,
           "{\"id\": %d, \"op\": \"forward\", \"slice\": \"slow\", "
           "\"inputs\": [{\"dtype\": \"float32\", \"shape\": [2, 1024, 256], "
           "\"region\": %llu, \"offset\": 0}]}",
           id, (unsigned long long)region);
}

static void wide_json(char *out, size_t len, int id, uint64_t region) {
  snprintf(out, len,
           "{\"id\": %d, \"op\": \"forward\", \"slice\": \"wide\", "
           "\"inputs\": [{\"dtype\": \"float32\", \"shape\": [%d, 8], "
           "\"region\": %llu, \"offset\": 0}]}",
           id, WIDE_ROWS, (unsigned long long)region);
}

Test(hostile_deaths, dying_mid_forward_with_more_queued_leaves_nothing) {
  td_baseline b;
  td *d = start(&b);
  char name[64];
  snprintf(name, sizeof name, "integ-dying-%ld", (long)getpid());
  int c = rc_connect(d->sock);
  uint64_t region = map_floats(c, name, SLOW_BYTES, 1);
  /* Three slow forwards, the region unmapped under them, half a frame. */
  char buf[2048], req[512];
  size_t len = 0;
  for (int i = 0; i < 3; i++) {
    slow_json(req, sizeof req, 10 + i, region);
    frame_append(buf, sizeof buf, &len, req);
  }
  snprintf(req, sizeof req,
           "{\"id\": 20, \"op\": \"unmap_region\", \"region\": %llu}",
           (unsigned long long)region);
  frame_append(buf, sizeof buf, &len, req);
  frame_append(buf, sizeof buf, &len, "{\"id\": 21, \"op\": \"hello\"}");
  len -= 10;
  cr_assert_eq(rc_send(c, buf, len), 0);
  /* Usually inside the first forward; anywhere before the last reply is
   * as hostile. */
  td_sleep_ms(300);
  close(c);
  long long end = td_now_ms() + GONE_MS;
  while (td_maps_contains(d, name) && td_now_ms() < end)
    td_sleep_ms(20);
  cr_assert(!td_maps_contains(d, name),
            "the dead client's region is still mapped");
  recovered(d, &b, "death mid-forward");
  td_stop_clean(d);
}

/* In the forked child: holds four results of "wide" (two server regions),
 * says so on `ready`, and waits to be killed. Never returns. */
static void hold_outputs(const char *sock, int ready) {
  sly_conn *c = NULL;
  sly_arena *a = NULL;
  sly_error err;
  if (sly_connect(sock, &c, &err) < 0 ||
      sly_arena_create(c, 64 << 10, &a, &err) < 0)
    _exit(2);
  sly_tensor in = {.dtype = SLY_FLOAT32, .ndim = 2, .shape = {WIDE_ROWS, 8}};
  in.data = sly_arena_alloc(a, WIDE_ROWS * 8 * 4, 64);
  if (in.data == NULL)
    _exit(3);
  for (size_t i = 0; i < WIDE_ROWS * 8; i++)
    ((float *)in.data)[i] = (float)(i % 7) * 0.25f;
  sly_result *held[4];
  for (int i = 0; i < 4; i++)
    if (sly_forward(c, "wide", &in, 1, &held[i], &err) < 0)
      _exit(4);
  if (write(ready, "R", 1) != 1)
    _exit(5);
  for (;;)
    pause();
}

Test(hostile_deaths, a_killed_client_holding_server_regions_gives_them_back) {
  td_baseline b;
  td *d = start(&b);
  int p[2];
  rc_pipe(p);
  pid_t pid = fork();
  cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(p[0]);
    hold_outputs(d->sock, p[1]);
  }
  close(p[1]);
  char got = 0;
  struct pollfd pf = {.fd = p[0], .events = POLLIN};
  ssize_t n = poll(&pf, 1, 20000) == 1 ? read(p[0], &got, 1) : 0;
  close(p[0]);
  if (n != 1) {
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    cr_assert_fail("the client failed before holding its outputs (0x%x)", st);
  }
  int held = td_maps_files(d->pid, "slyced-out", NULL, 0);
  cr_assert_geq(held, 2, "24 MiB of outputs in %d server regions", held);
  cr_assert_eq(kill(pid, SIGKILL), 0);
  int st;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  cr_assert(WIFSIGNALED(st), "the client ended otherwise (0x%x)", st);
  recovered(d, &b, "a client killed holding server regions");
  td_stop_clean(d);
}

Test(hostile_deaths, a_client_gone_with_replies_and_their_fds_in_flight) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  uint64_t region = map_floats(c, "integ-wide", WIDE_ROWS * 8 * 4, 1);
  /* Ten forwards at once: four fit max_inflight_per_conn, the rest get
   * BUSY; none of the replies, nor the server regions' fds they carry, is
   * ever read. */
  char buf[4096], req[512];
  size_t len = 0;
  for (int i = 0; i < 10; i++) {
    wide_json(req, sizeof req, 10 + i, region);
    frame_append(buf, sizeof buf, &len, req);
  }
  cr_assert_eq(rc_send(c, buf, len), 0);
  /* Let the first reply, with its fd, reach the socket before the close. */
  td_sleep_ms(200);
  close(c);
  recovered(d, &b, "a client gone with replies in flight");
  td_stop_clean(d);
}

/* Connects `n` times without reading; fds into `out`. */
static void connect_n(const td *d, int *out, int n) {
  for (int i = 0; i < n; i++)
    out[i] = rc_connect(d->sock);
}

/* The "rejected" count of stats, read on `c`. */
static uint64_t rejected(int c) {
  cJSON *r = rc_call(c, "{\"id\": 1, \"op\": \"stats\"}");
  uint64_t v =
      rc_u64(cJSON_GetObjectItemCaseSensitive(r, "connections"), "rejected");
  cJSON_Delete(r);
  return v;
}

#define BURST (3 * MAX_CONNS)
#define DYING 50

Test(hostile_deaths, a_burst_past_max_conns_per_uid_and_clients_dying_unseen) {
  td_baseline b;
  td *d = start(&b);
  int fds[BURST];
  connect_n(d, fds, BURST);
  /* Accepted in the order they connected: the first MAX_CONNS are served,
   * every later one gets BUSY (id null) and is closed. */
  int ok = 0, busy = 0, keep[MAX_CONNS];
  for (int i = 0; i < BURST; i++) {
    (void)rc_send_json(fds[i], "{\"id\": 5, \"op\": \"hello\"}");
    cJSON *r = rc_read_reply(fds[i]);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"))) {
      cr_assert_lt(ok, MAX_CONNS, "connection %d served past the limit", i);
      keep[ok++] = fds[i];
    } else {
      rc_assert_error(r, RC_ID_NULL, "BUSY");
      rc_assert_closed(fds[i]);
      close(fds[i]);
      busy++;
    }
    cJSON_Delete(r);
  }
  cr_assert(ok == MAX_CONNS && busy == BURST - MAX_CONNS,
            "%d served, %d BUSY of %d", ok, busy, BURST);

  /* Clients that connect and die at once, before or after the accept. */
  uint64_t before = rejected(keep[0]);
  for (int i = 0; i < DYING; i++)
    close(rc_connect(d->sock));
  long long end = td_now_ms() + GONE_MS;
  uint64_t now;
  while ((now = rejected(keep[0])) < before + DYING && td_now_ms() < end)
    td_sleep_ms(20);
  cr_assert_eq(now, before + DYING, "rejected went from %llu to %llu",
               (unsigned long long)before, (unsigned long long)now);
  for (int i = 0; i < MAX_CONNS; i++) {
    rc_assert_hello(keep[i], 6);
    close(keep[i]);
  }
  recovered(d, &b, "a burst of connections");
  td_stop_clean(d);
}

Test(hostile_deaths, a_client_that_half_closes_still_gets_every_reply) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  uint64_t region = map_floats(c, "integ-half", SLOW_BYTES, 1);
  char buf[2048], req[512];
  size_t len = 0;
  slow_json(req, sizeof req, 10, region);
  frame_append(buf, sizeof buf, &len, req);
  frame_append(buf, sizeof buf, &len, "{\"id\": 11, \"op\": \"hello\"}");
  frame_append(buf, sizeof buf, &len, "{\"id\": 12, \"op\": \"list\"}");
  cr_assert_eq(rc_send(c, buf, len), 0);
  cr_assert_eq(shutdown(c, SHUT_WR), 0);
  for (int id = 10; id <= 12; id++) {
    char *body = NULL;
    uint32_t n;
    rc_status s = rc_read_frame(c, 3 * RC_REPLY_TIMEOUT_MS, &body, &n, NULL);
    cr_assert_eq(s, RC_FRAME, "reply %d: %s", id, rc_status_name(s));
    cJSON *r = cJSON_ParseWithLength(body, n);
    free(body);
    rc_assert_ok(r, (uint64_t)id);
    cJSON_Delete(r);
  }
  rc_assert_closed(c);
  close(c);
  recovered(d, &b, "a half-closed client");
  td_stop_clean(d);
}
