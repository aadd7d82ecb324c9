/* test_daemon_staging.c — a slice that takes long to come in is staged on
 * the loader thread: other clients' forwards go on meanwhile, and the
 * connection that asked still sees its requests take effect in order. */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_staging, .timeout = 120, .fini = td_cleanup);

/* "big" is 256 MiB of float32 drawn from its seed: its build takes a good
 * part of a second even on a fast machine, while a forward of "small"
 * takes well under a millisecond. */
#define STAGING_SLICES                                                         \
  "\"max_cpu_mem_mb\": 2048, \"slices\": ["                                    \
  "{\"name\": \"small\", \"constructor\": \"linear\", \"config\": "            \
  "{\"in_features\": 4, \"out_features\": 4, \"dtype\": \"float32\", "         \
  "\"seed\": 1}},"                                                             \
  "{\"name\": \"big\", \"constructor\": \"linear\", \"config\": "              \
  "{\"in_features\": 8192, \"out_features\": 8192, \"bias\": false, "          \
  "\"dtype\": \"float32\", \"seed\": 2}}]"

/* A raw connection with a [1, 4] float32 input mapped as region 1. */
static int small_client(td *d) {
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  float in[4] = {1, 2, 3, 4};
  rc_map_data(fd, in, sizeof(in), 1);
  return fd;
}

static void forward_small(int fd, int id) {
  char json[256];
  snprintf(json, sizeof(json),
           "{\"id\": %d, \"op\": \"forward\", \"slice\": \"small\", "
           "\"inputs\": [{\"region\": 1, \"offset\": 0, \"dtype\": "
           "\"float32\", \"shape\": [1, 4]}]}",
           id);
  cJSON *r = rc_call(fd, json);
  rc_assert_ok(r, (uint64_t)id);
  cJSON_Delete(r);
}

/* The reply to a request behind big's build: 256 MiB drawn and copied
 * takes seconds under a sanitizer, more than rc_read_reply waits. */
static cJSON *slow_reply(int fd) {
  return rc_read_reply_within(fd, 90000);
}

/* How many times the daemon's log says `needle`. */
static int log_count(const td *d, const char *needle) {
  char *logs = td_logs(d, 1 << 20);
  int n = 0;
  for (const char *p = logs; (p = strstr(p, needle)) != NULL; p++)
    n++;
  free(logs);
  return n;
}

/* Waits (up to 30 s) until list shows slice `name` loading. */
static void wait_loading(td *d, const char *name) {
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  for (int i = 0; i < 30000; i++) {
    cJSON *r = rc_call(fd, "{\"id\": 2, \"op\": \"list\"}");
    rc_assert_ok(r, 2);
    bool loading = false;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(r, "slices")) {
      if (strcmp(cJSON_GetObjectItem(s, "name")->valuestring, name) == 0)
        loading = strcmp(cJSON_GetObjectItem(s, "state")->valuestring,
                         "loading") == 0;
    }
    cJSON_Delete(r);
    if (loading) {
      close(fd);
      return;
    }
    td_sleep_ms(1);
  }
  cr_assert_fail("slice %s never showed as loading", name);
}

/* "big"'s entry in a list reply, from a fresh connection. */
static char *big_tier(td *d) {
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  cJSON *r = rc_call(fd, "{\"id\": 2, \"op\": \"list\"}");
  rc_assert_ok(r, 2);
  char *tier = NULL;
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItem(r, "slices")) {
    if (strcmp(cJSON_GetObjectItem(s, "name")->valuestring, "big") == 0)
      tier = strdup(cJSON_GetObjectItem(s, "tier")->valuestring);
  }
  cJSON_Delete(r);
  close(fd);
  cr_assert_not_null(tier, "no slice big in the list");
  return tier;
}

Test(daemon_staging, a_slow_build_holds_up_no_other_client) {
  td *d = td_start(STAGING_SLICES);
  int fast = small_client(d);
  forward_small(fast, 10); /* built and resident before the big one starts */

  int slow = rc_connect(d->sock);
  rc_assert_hello(slow, 1);
  cr_assert_eq(rc_send_json(slow, "{\"id\": 5, \"op\": \"load\", \"slice\": "
                                  "\"big\", \"tier\": \"cpu\"}"),
               0);
  /* A tier op on the slice being staged, from a third client, waits for it
   * on the loader, not on the executor where it would hold up everyone. */
  int third = rc_connect(d->sock);
  rc_assert_hello(third, 1);
  cr_assert_eq(rc_send_json(third, "{\"id\": 6, \"op\": \"evict\", "
                                   "\"slice\": \"big\", \"tier\": \"cpu\"}"),
               0);
  /* Each of these would wait for the whole build on one executor. */
  int answered_first = 0;
  for (int i = 0; i < 5; i++) {
    forward_small(fast, 11 + i);
    struct pollfd p = {.fd = slow, .events = POLLIN};
    if (poll(&p, 1, 0) == 0)
      answered_first++;
  }
  cJSON *r = slow_reply(slow);
  rc_assert_ok(r, 5);
  cJSON_Delete(r);
  cr_assert_eq(answered_first, 5,
               "the load of big was answered before %d of 5 small forwards "
               "sent after it; logs:\n%s",
               5 - answered_first, td_logs(d, 4000));
  r = slow_reply(third);
  rc_assert_ok(r, 6);
  cJSON_Delete(r);
  close(third);
  char *tier = big_tier(d);
  cr_assert_str_eq(tier, "cpu");
  free(tier);
  cr_assert_eq(log_count(d, "slice big: built"), 1);
  close(slow);
  close(fast);
  td_stop(d);
}

/* Client a's load of "big" (a 256 MiB build) is under way when client c
 * asks for "mid" (4 MiB). With `loaders` threads: two, and mid's build
 * runs beside big's and is answered first; one, and mid waits for big. */
static void second_clients_build(int loaders) {
  char keys[512];
  snprintf(keys, sizeof keys,
           "\"max_cpu_mem_mb\": 2048, \"loaders\": %d, \"slices\": ["
           "{\"name\": \"mid\", \"constructor\": \"linear\", \"config\": "
           "{\"in_features\": 1024, \"out_features\": 1024, \"bias\": false, "
           "\"dtype\": \"float32\", \"seed\": 3}},"
           "{\"name\": \"big\", \"constructor\": \"linear\", \"config\": "
           "{\"in_features\": 8192, \"out_features\": 8192, \"bias\": false, "
           "\"dtype\": \"float32\", \"seed\": 2}}]",
           loaders);
  td *d = td_start(keys);
  int a = rc_connect(d->sock), c = rc_connect(d->sock);
  rc_assert_hello(a, 1);
  rc_assert_hello(c, 1);
  cr_assert_eq(rc_send_json(a, "{\"id\": 5, \"op\": \"load\", \"slice\": "
                               "\"big\", \"tier\": \"cpu\"}"),
               0);
  wait_loading(d, "big"); /* its build is under way on a loader */
  cJSON *st = rc_call(c, "{\"id\": 4, \"op\": \"stats\"}");
  rc_assert_ok(st, 4);
  const cJSON *n = cJSON_GetObjectItem(st, "staging");
  cr_assert(cJSON_IsNumber(n) && n->valuedouble == 1,
            "stats.staging during big's build: %s", cJSON_PrintUnformatted(st));
  n = cJSON_GetObjectItem(st, "loaders");
  cr_assert(cJSON_IsNumber(n) && n->valuedouble == loaders, "stats.loaders");
  cJSON_Delete(st);
  cr_assert_eq(rc_send_json(c, "{\"id\": 6, \"op\": \"load\", \"slice\": "
                               "\"mid\", \"tier\": \"cpu\"}"),
               0);
  cJSON *r = slow_reply(c);
  rc_assert_ok(r, 6);
  cJSON_Delete(r);
  struct pollfd p = {.fd = a, .events = POLLIN};
  if (loaders > 1)
    cr_assert_eq(poll(&p, 1, 0), 0,
                 "big's load was answered before mid's, sent after it; "
                 "logs:\n%s",
                 td_logs(d, 4000));
  else
    cr_assert_eq(poll(&p, 1, 0), 1,
                 "mid's load was answered before big's with one loader; "
                 "logs:\n%s",
                 td_logs(d, 4000));
  r = slow_reply(a);
  rc_assert_ok(r, 5);
  cJSON_Delete(r);
  cr_assert_eq(log_count(d, "slice big: built"), 1);
  cr_assert_eq(log_count(d, "slice mid: built"), 1);
  close(a);
  close(c);
  td_stop(d);
}

Test(daemon_staging, a_second_clients_build_does_not_wait_for_the_first) {
  second_clients_build(2);
}

Test(daemon_staging, with_one_loader_a_second_clients_build_waits) {
  second_clients_build(1);
}

Test(daemon_staging, a_connections_requests_behind_a_staged_one_keep_order) {
  td *d = td_start(STAGING_SLICES);
  int fd = small_client(d);
  /* Sent together: the load is staged and the evict, which needs nothing
   * staged, must still come after it. Run the other way round, "big"
   * would end in host memory. */
  cr_assert_eq(rc_send_json(fd, "{\"id\": 5, \"op\": \"load\", \"slice\": "
                                "\"big\", \"tier\": \"cpu\"}"),
               0);
  cr_assert_eq(rc_send_json(fd, "{\"id\": 6, \"op\": \"evict\", \"slice\": "
                                "\"big\", \"tier\": \"disk\"}"),
               0);
  cJSON *r = slow_reply(fd);
  rc_assert_ok(r, 5);
  cJSON_Delete(r);
  r = rc_read_reply(fd);
  rc_assert_ok(r, 6);
  cJSON_Delete(r);
  char *tier = big_tier(d);
  cr_assert_str_eq(tier, "none", "the evict ran before the load");
  free(tier);
  /* And a forward after a staged one on the same connection is answered
   * after it, with both right. */
  cr_assert_eq(rc_send_json(fd, "{\"id\": 7, \"op\": \"load\", \"slice\": "
                                "\"big\", \"tier\": \"cpu\"}"),
               0);
  cr_assert_eq(rc_send_json(fd, "{\"id\": 8, \"op\": \"forward\", \"slice\": "
                                "\"small\", \"inputs\": [{\"region\": 1, "
                                "\"offset\": 0, \"dtype\": \"float32\", "
                                "\"shape\": [1, 4]}]}"),
               0);
  r = slow_reply(fd);
  rc_assert_ok(r, 7);
  cJSON_Delete(r);
  r = rc_read_reply(fd);
  rc_assert_ok(r, 8);
  cJSON_Delete(r);
  close(fd);
  td_stop(d);
}

Test(daemon_staging, a_build_that_fails_on_the_loader_is_answered_once) {
  td *d = td_start("\"slices\": [{\"name\": \"gone\", \"constructor\": "
                   "\"torchscript\", \"config\": {\"path\": "
                   "\"/nonexistent/m.pt\"}}]");
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  float in[4] = {1, 2, 3, 4};
  rc_map_data(fd, in, sizeof(in), 1);
  cJSON *r = rc_call(fd, "{\"id\": 3, \"op\": \"forward\", \"slice\": "
                         "\"gone\", \"inputs\": [{\"region\": 1, \"offset\": "
                         "0, \"dtype\": \"float32\", \"shape\": [1, 4]}]}");
  rc_assert_error_msg(r, 3, "UNAVAILABLE", "slice 'gone' cannot be loaded");
  cJSON_Delete(r);
  /* Built once (on the loader), not again on the executor. */
  cr_assert_eq(log_count(d, "slice gone: build failed"), 1);
  close(fd);
  td_stop(d);
}

/* A stats figure (hits, misses) from a fresh connection. */
static double stat_of(td *d, const char *key) {
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  cJSON *r = rc_call(fd, "{\"id\": 2, \"op\": \"stats\"}");
  rc_assert_ok(r, 2);
  const cJSON *v = cJSON_GetObjectItem(r, key);
  cr_assert(cJSON_IsNumber(v), "stats has no %s", key);
  double x = v->valuedouble;
  cJSON_Delete(r);
  close(fd);
  return x;
}

Test(daemon_staging, a_slice_staged_for_a_forward_counts_as_a_miss) {
  td *d = td_start(STAGING_SLICES);
  int fd = small_client(d);
  forward_small(fd, 10); /* staged: built on the loader */
  cr_assert_eq(stat_of(d, "misses"), 1);
  cr_assert_eq(stat_of(d, "hits"), 0);
  forward_small(fd, 11);
  cr_assert_eq(stat_of(d, "hits"), 1);
  close(fd);
  td_stop(d);
}

Test(daemon_staging, a_background_load_outlives_its_connection) {
  /* On sim the load's last step, to the device, is the executor's: it runs
   * after the close is seen. */
  td *d = td_start(STAGING_SLICES ", \"device\": \"sim\", \"gpu_strategy\": "
                                  "\"limit_gpu\", \"max_gpu_mem_mb\": 1024, "
                                  "\"gpu_reserve_mb\": 8");
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  cJSON *r = rc_call(fd, "{\"id\": 2, \"op\": \"set_active_slice\", "
                         "\"slice\": \"big\", \"wait\": false}");
  rc_assert_ok(r, 2);
  cJSON_Delete(r);
  close(fd); /* as `slyctl activate big --no-wait` does */
  long long deadline = td_now_ms() + 90000;
  char *tier = big_tier(d);
  while (strcmp(tier, "gpu") != 0 && td_now_ms() < deadline) {
    free(tier);
    td_sleep_ms(100);
    tier = big_tier(d);
  }
  cr_assert_str_eq(tier, "gpu", "the load was dropped with its connection");
  free(tier);
  td_stop(d);
}

Test(daemon_staging, activate_behind_an_evict_of_its_slice_brings_it_back) {
  td *d = td_start(STAGING_SLICES);
  int fd = small_client(d);
  forward_small(fd, 10); /* small in host memory */
  /* In one go: a staged load (slow), an evict of small that follows it
   * through the loader, and an activate of small with wait. The activate
   * must take effect after the evict, as sent: small ends in memory. */
  cr_assert_eq(rc_send_json(fd, "{\"id\": 5, \"op\": \"load\", \"slice\": "
                                "\"big\", \"tier\": \"cpu\"}"),
               0);
  cr_assert_eq(rc_send_json(fd, "{\"id\": 6, \"op\": \"evict\", \"slice\": "
                                "\"small\", \"tier\": \"disk\"}"),
               0);
  cr_assert_eq(rc_send_json(fd, "{\"id\": 7, \"op\": \"set_active_slice\", "
                                "\"slice\": \"small\", \"wait\": true}"),
               0);
  for (int id = 5; id <= 7; id++) {
    cJSON *r = slow_reply(fd);
    rc_assert_ok(r, (uint64_t)id);
    if (id == 7)
      cr_assert_str_eq(cJSON_GetObjectItem(r, "tier")->valuestring, "cpu");
    cJSON_Delete(r);
  }
  int l = rc_connect(d->sock);
  rc_assert_hello(l, 1);
  cJSON *r = rc_call(l, "{\"id\": 2, \"op\": \"list\"}");
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItem(r, "slices")) {
    if (strcmp(cJSON_GetObjectItem(s, "name")->valuestring, "small") == 0)
      cr_assert_str_eq(cJSON_GetObjectItem(s, "tier")->valuestring, "cpu",
                       "the activate was answered before the evict ran");
  }
  cJSON_Delete(r);
  close(l);
  close(fd);
  td_stop(d);
}
