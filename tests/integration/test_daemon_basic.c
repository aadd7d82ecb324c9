/* test_daemon_basic.c — hello, list and stats against a real slyced, through
 * libslyce and as raw replies. */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "limits.h"
#include "rawconn.h"

TestSuite(daemon_basic, .timeout = 60, .fini = td_cleanup);

/* Every limit set to a value other than its default, so that a daemon that
 * ignores a key cannot pass. */
#define BASIC_LIMITS(X)                                                        \
  X(max_frame_bytes, 65536)                                                    \
  X(frame_timeout_ms, 7000)                                                    \
  X(max_conns_per_uid, 9)                                                      \
  X(max_regions_per_conn, 5)                                                   \
  X(max_region_mb, 33)                                                         \
  X(max_registered_mb, 77)                                                     \
  X(max_inflight_per_conn, 11)                                                 \
  X(queue_depth, 13)                                                           \
  X(max_output_mb, 17)                                                         \
  X(drain_timeout_ms, 3000)

#define BASIC_JSON(key, v) ", \"" #key "\": " #v
static const char basic_limits_all[] = BASIC_LIMITS(BASIC_JSON);
/* Without the leading ", ". */
static const char *const basic_limits_json = basic_limits_all + 2;

static const char slice_a[] =
    "{\"name\": \"a\", \"constructor\": \"linear\", "
    "\"config\": {\"in_features\": 4, \"out_features\": 4, \"seed\": 1}}";
static const char slice_b[] =
    "{\"name\": \"b\", \"constructor\": \"linear\", "
    "\"config\": {\"in_features\": 4, \"out_features\": 2, \"seed\": 2}}";

Test(daemon_basic, hello_reports_the_configured_limits_device_and_protocol) {
  td *d = td_start(basic_limits_json);
  sly_hello_info h;
  td_hello(d, &h);
  cr_assert_eq(h.protocol, 1);
  cr_assert_str_eq(h.device, td_device());
  cr_assert_str_eq(h.server, "slyced " SLY_VERSION);
#define BASIC_CHECK(key, v)                                                    \
  cr_assert_eq(h.key, (uint64_t)v, #key ": hello says %llu, config %llu",     \
               (unsigned long long)h.key, (unsigned long long)v);
  BASIC_LIMITS(BASIC_CHECK)
#undef BASIC_CHECK
  td_stop(d);
}

Test(daemon_basic, raw_hello_names_every_limit_of_the_table) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  cJSON *r =
      rc_call(fd, "{\"id\": 1, \"op\": \"hello\", \"version\": 1, "
                  "\"client\": \"integ\"}");
  rc_assert_ok(r, 1);
  cr_assert_eq(rc_u64(r, "protocol"), 1);
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "admin")),
            "root (the daemon's own uid) may use admin ops");
  const cJSON *limits = cJSON_GetObjectItemCaseSensitive(r, "limits");
  cr_assert(cJSON_IsObject(limits), "hello has no \"limits\" object");
  proto_limits def;
  proto_limits_default(&def);
  int n = 0;
#define BASIC_DEFAULT(key, dv, lo, hi)                                         \
  cr_assert_eq(rc_u64(limits, #key), def.key, #key " is not its default");   \
  n++;
  PROTO_LIMIT_MAP(BASIC_DEFAULT)
#undef BASIC_DEFAULT
  cr_assert_eq(cJSON_GetArraySize(limits), n,
               "limits holds keys beyond the table");
  cJSON_Delete(r);
  close(fd);
  td_stop(d);
}

Test(daemon_basic, list_of_a_config_without_slices_is_empty) {
  td *d = td_start(NULL);
  sly_conn *c = td_connect(d);
  sly_slice_list *l = NULL;
  sly_error err;
  int r = sly_list(c, &l, &err);
  cr_assert_eq(r, 0, "list: %s", err.message);
  cr_assert_eq(l->count, 0);
  sly_slice_list_free(l);

  char *json = NULL;
  r = sly_request_json(c, "{\"op\": \"list\"}", &json, &err);
  cr_assert_eq(r, 0, "list: %s", err.message);
  cJSON *j = cJSON_Parse(json);
  cr_assert(j, "list reply is not JSON: %s", json);
  const cJSON *slices = cJSON_GetObjectItemCaseSensitive(j, "slices");
  const cJSON *pipes = cJSON_GetObjectItemCaseSensitive(j, "pipelines");
  cr_assert(cJSON_IsArray(slices) && cJSON_GetArraySize(slices) == 0, "%s",
            json);
  cr_assert(cJSON_IsArray(pipes) && cJSON_GetArraySize(pipes) == 0, "%s",
            json);
  cJSON_Delete(j);
  free(json);
  sly_close(c);
  td_stop(d);
}

static const sly_slice_info *basic_find(const sly_slice_list *l,
                                        const char *name) {
  for (size_t i = 0; i < l->count; i++)
    if (strcmp(l->slices[i].name, name) == 0)
      return &l->slices[i];
  return NULL;
}

Test(daemon_basic, configured_slices_are_listed_unloaded_before_first_use) {
  char extra[1024];
  snprintf(extra, sizeof extra,
           "\"slices\": [%s, %s], \"pipelines\": {\"p\": [\"a\", \"b\"]}",
           slice_a, slice_b);
  td *d = td_start(extra);
  sly_conn *c = td_connect(d);
  sly_slice_list *l = NULL;
  sly_error err;
  int r = sly_list(c, &l, &err);
  cr_assert_eq(r, 0, "list: %s", err.message);
  cr_assert_eq(l->count, 2);
  const char *names[] = {"a", "b"};
  for (size_t i = 0; i < 2; i++) {
    const sly_slice_info *s = basic_find(l, names[i]);
    cr_assert(s, "slice %s is not listed", names[i]);
    cr_assert_str_eq(s->constructor, "linear");
    cr_assert_str_eq(s->state, "unloaded", "slice %s", names[i]);
    cr_assert_str_eq(s->tier, "none", "slice %s", names[i]);
    cr_assert_eq(s->pinned, 0);
    cr_assert_eq(s->hits, 0);
    cr_assert_eq(s->loads, 0);
    cr_assert(s->last_used == 0, "never used, yet last_used %f",
              s->last_used);
  }
  sly_slice_list_free(l);

  char *json = NULL;
  r = sly_request_json(c, "{\"op\": \"list\"}", &json, &err);
  cr_assert_eq(r, 0, "list: %s", err.message);
  cJSON *j = cJSON_Parse(json);
  const cJSON *pipes = cJSON_GetObjectItemCaseSensitive(j, "pipelines");
  cr_assert(cJSON_IsArray(pipes) && cJSON_GetArraySize(pipes) == 1, "%s",
            json);
  const cJSON *p = cJSON_GetArrayItem(pipes, 0);
  const cJSON *pname = cJSON_GetObjectItemCaseSensitive(p, "name");
  const cJSON *pslices = cJSON_GetObjectItemCaseSensitive(p, "slices");
  cr_assert(cJSON_IsString(pname) && strcmp(pname->valuestring, "p") == 0,
            "%s", json);
  cr_assert(cJSON_IsArray(pslices) && cJSON_GetArraySize(pslices) == 2, "%s",
            json);
  cr_assert_str_eq(cJSON_GetArrayItem(pslices, 0)->valuestring, "a");
  cr_assert_str_eq(cJSON_GetArrayItem(pslices, 1)->valuestring, "b");
  cJSON_Delete(j);
  free(json);
  sly_close(c);
  td_stop(d);
}

Test(daemon_basic, stats_report_memory_and_count_requests_and_errors) {
  td *d = td_start(NULL);
  sly_conn *c = td_connect(d);
  sly_stats s1, s2;
  sly_error err;
  cr_assert_eq(sly_stats_get(c, &s1, &err), 0, "stats: %s", err.message);
  cr_assert_gt(s1.rss_bytes, 0);
  cr_assert_gt(s1.mem_available_bytes, 0);
  cr_assert_geq(s1.mem_total_bytes, s1.mem_available_bytes);
  cr_assert_geq(s1.connections, 1, "this connection is open");
  cr_assert(s1.uptime_s >= 0 && isfinite(s1.uptime_s), "uptime %f",
            s1.uptime_s);

  sly_hello_info h;
  for (int i = 0; i < 3; i++)
    cr_assert_eq(sly_hello(c, "integ", &h, &err), 0, "%s", err.message);
  char *json = NULL;
  int r = sly_request_json(c, "{\"op\": \"no_such_op\"}", &json, &err);
  cr_assert_eq(r, SLY_E_UNKNOWN_OP, "got %s", sly_code_name(r));
  free(json);
  td_sleep_ms(20);

  cr_assert_eq(sly_stats_get(c, &s2, &err), 0, "stats: %s", err.message);
  cr_assert_geq(s2.requests, s1.requests + 4, "requests %llu -> %llu",
                (unsigned long long)s1.requests,
                (unsigned long long)s2.requests);
  cr_assert_geq(s2.errors, s1.errors + 1);
  cr_assert_geq(s2.uptime_s, s1.uptime_s);
  cr_assert_gt(s2.uptime_s, 0);
  sly_close(c);
  td_stop(d);
}

/* requests.by_op.NAME or requests.by_error.NAME of a raw stats reply (0
 * when absent: a counter that never moved may be left out). */
static uint64_t basic_counter(const cJSON *stats, const char *group,
                              const char *name) {
  const cJSON *req = cJSON_GetObjectItemCaseSensitive(stats, "requests");
  const cJSON *g = cJSON_GetObjectItemCaseSensitive(req, group);
  cr_assert(cJSON_IsObject(g), "stats has no requests.%s", group);
  if (!cJSON_GetObjectItemCaseSensitive(g, name))
    return 0;
  return rc_u64(g, name);
}

Test(daemon_basic, raw_stats_count_by_op_by_error_and_connections) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  cJSON *s1 = rc_call(fd, "{\"id\": 1, \"op\": \"stats\"}");
  rc_assert_ok(s1, 1);
  const cJSON *proc = cJSON_GetObjectItemCaseSensitive(s1, "process");
  cr_assert_gt(rc_u64(proc, "rss_bytes"), 0);
  cr_assert_gt(rc_u64(proc, "mem_available_bytes"), 0);
  cr_assert_gt(rc_u64(proc, "mem_total_bytes"), 0);
  cpu_set_t mine;
  cr_assert(sched_getaffinity(0, sizeof(mine), &mine) == 0);
  /* A cgroup quota may allow fewer CPUs than the mask holds. */
  uint64_t cpus = rc_u64(proc, "cpus");
  cr_assert(cpus >= 1 && cpus <= (uint64_t)CPU_COUNT(&mine), "cpus %llu",
            (unsigned long long)cpus);
  const cJSON *spin = cJSON_GetObjectItemCaseSensitive(proc, "spin_waits");
  cr_assert(cJSON_IsBool(spin));
  cr_assert_eq(cJSON_IsTrue(spin), cpus >= 2);
  const cJSON *lat = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(s1, "requests"), "latency_us");
  cr_assert(cJSON_IsObject(lat), "stats has no requests.latency_us");
  const cJSON *conns1 = cJSON_GetObjectItemCaseSensitive(s1, "connections");
  uint64_t accepted1 = rc_u64(conns1, "accepted");

  for (uint64_t id = 2; id < 5; id++)
    rc_assert_hello(fd, id);
  rc_call_error(fd, "{\"id\": 5, \"op\": \"no_such_op\"}", 5, "UNKNOWN_OP");
  int fd2 = rc_connect(d->sock);
  rc_assert_hello(fd2, 1);

  cJSON *s2 = rc_call(fd, "{\"id\": 6, \"op\": \"stats\"}");
  rc_assert_ok(s2, 6);
  cr_assert_geq(basic_counter(s2, "by_op", "hello"),
                basic_counter(s1, "by_op", "hello") + 4);
  cr_assert_geq(basic_counter(s2, "by_error", "UNKNOWN_OP"),
                basic_counter(s1, "by_error", "UNKNOWN_OP") + 1);
  const cJSON *conns2 = cJSON_GetObjectItemCaseSensitive(s2, "connections");
  cr_assert_geq(rc_u64(conns2, "accepted"), accepted1 + 1);
  cr_assert_geq(rc_u64(conns2, "open"), 2);
  cJSON_Delete(s1);
  cJSON_Delete(s2);
  close(fd);
  close(fd2);
  td_stop(d);
}

/* Confined to one CPU, the daemon says so and does not spin-wait: its
 * spinning thread would hold up the one it waits for. It still serves. */
Test(daemon_basic, one_cpu_means_no_spin_waits) {
  cpu_set_t mine, one;
  cr_assert(sched_getaffinity(0, sizeof(mine), &mine) == 0);
  CPU_ZERO(&one);
  for (int i = 0; i < CPU_SETSIZE; i++)
    if (CPU_ISSET(i, &mine)) {
      CPU_SET(i, &one);
      break;
    }
  cr_assert(sched_setaffinity(0, sizeof(one), &one) == 0);
  char *cfg = fx_config(NULL, NULL);
  td *d = td_start(cfg); /* forked here: it inherits the one CPU */
  free(cfg);
  cr_assert(sched_setaffinity(0, sizeof(mine), &mine) == 0);
  int fd = rc_connect(d->sock);
  cJSON *s = rc_call(fd, "{\"id\": 1, \"op\": \"stats\"}");
  rc_assert_ok(s, 1);
  const cJSON *proc = cJSON_GetObjectItemCaseSensitive(s, "process");
  cr_assert_eq(rc_u64(proc, "cpus"), 1);
  cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(proc, "spin_waits")));
  cr_assert(td_logs_wait(d, "1 usable CPU: no spin-waits", 2000));
  cJSON_Delete(s);
  close(fd);
  td_assert_forward_ok(d, "confined to one CPU");
  td_stop_clean(d);
}
