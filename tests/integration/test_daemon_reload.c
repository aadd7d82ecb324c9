/* test_daemon_reload.c — SIGHUP and the reload op re-read the config: a good
 * file takes effect, a bad one changes nothing and its error names the key. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_reload, .timeout = 60, .fini = td_cleanup);

static uint64_t reload_max_frame(const td *d) {
  sly_hello_info h;
  td_hello(d, &h);
  return h.max_frame_bytes;
}

/* Polls hello until max_frame_bytes reads `want` (SIGHUP is asynchronous). */
static bool reload_wait_max_frame(const td *d, uint64_t want, int ms) {
  long long end = td_now_ms() + ms;
  while (reload_max_frame(d) != want) {
    if (td_now_ms() >= end)
      return false;
    td_sleep_ms(20);
  }
  return true;
}

static const char slice_a[] =
    "\"slices\": [{\"name\": \"a\", \"constructor\": \"linear\", "
    "\"config\": {\"in_features\": 4, \"out_features\": 4, \"seed\": 1}}]";

Test(daemon_reload, sighup_applies_a_changed_limit) {
  td *d = td_start("\"max_frame_bytes\": 8192");
  cr_assert_eq(reload_max_frame(d), 8192);
  int old = rc_connect(d->sock);
  rc_assert_hello(old, 1);
  td_write_config(d, "\"max_frame_bytes\": 16384");
  cr_assert_eq(kill(d->pid, SIGHUP), 0);
  cr_assert(reload_wait_max_frame(d, 16384, 5000),
            "max_frame_bytes still %llu 5 s after SIGHUP",
            (unsigned long long)reload_max_frame(d));
  rc_assert_hello(old, 2);
  close(old);
  td_stop(d);
}

Test(daemon_reload, sighup_picks_up_new_slices) {
  td *d = td_start(NULL);
  td_write_config(d, slice_a);
  cr_assert_eq(kill(d->pid, SIGHUP), 0);
  long long end = td_now_ms() + 5000;
  size_t count = 0;
  do {
    sly_conn *c = td_connect(d);
    sly_slice_list *l = NULL;
    sly_error err;
    cr_assert_eq(sly_list(c, &l, &err), 0, "list: %s", err.message);
    count = l->count;
    if (count == 1)
      cr_assert_str_eq(l->slices[0].name, "a");
    sly_slice_list_free(l);
    sly_close(c);
    if (count == 0)
      td_sleep_ms(20);
  } while (count == 0 && td_now_ms() < end);
  cr_assert_eq(count, 1, "the slice of the new config is not listed");
  td_stop(d);
}

Test(daemon_reload, reload_op_applies_a_changed_limit_before_replying) {
  td *d = td_start("\"max_frame_bytes\": 8192");
  td_write_config(d, "\"max_frame_bytes\": 32768");
  sly_conn *c = td_connect(d);
  sly_error err;
  cr_assert_eq(sly_reload(c, &err), 0, "reload: %s", err.message);
  cr_assert_eq(reload_max_frame(d), 32768);
  sly_close(c);
  td_stop(d);
}

Test(daemon_reload, reload_of_a_bad_config_names_the_key_and_keeps_limits) {
  td *d = td_start("\"max_frame_bytes\": 8192");
  td_write_config(d, "\"max_frame_bytes\": 16384, \"bogus_key\": 1");
  sly_conn *c = td_connect(d);
  sly_error err;
  int r = sly_reload(c, &err);
  cr_assert_eq(r, SLY_E_BAD_REQUEST, "reload gave %s: %s", sly_code_name(r),
               err.message);
  cr_assert(strstr(err.message, "bogus_key"),
            "the message does not name the key: %s", err.message);
  cr_assert_eq(reload_max_frame(d), 8192, "a bad config changed a limit");

  /* The same over the wire: the reply keeps the request's id. */
  int fd = rc_connect(d->sock);
  cJSON *reply = rc_call(fd, "{\"id\": 42, \"op\": \"reload\"}");
  rc_assert_error_msg(reply, 42, "BAD_REQUEST", "bogus_key");
  cJSON_Delete(reply);

  /* A value out of range is named too. */
  td_write_config(d, "\"max_frame_bytes\": 1");
  r = sly_reload(c, &err);
  cr_assert_eq(r, SLY_E_BAD_REQUEST, "reload gave %s", sly_code_name(r));
  cr_assert(strstr(err.message, "max_frame_bytes"),
            "the message does not name the key: %s", err.message);
  cr_assert_eq(reload_max_frame(d), 8192);

  /* Fixing the file makes the next reload work. */
  td_write_config(d, "\"max_frame_bytes\": 16384");
  cr_assert_eq(sly_reload(c, &err), 0, "reload: %s", err.message);
  cr_assert_eq(reload_max_frame(d), 16384);
  close(fd);
  sly_close(c);
  td_stop(d);
}

Test(daemon_reload, sighup_with_a_bad_config_logs_the_key_and_keeps_running) {
  td *d = td_start("\"max_frame_bytes\": 8192");
  td_write_config(d, "\"max_frame_bytes\": 16384, \"bogus_key\": 1");
  cr_assert_eq(kill(d->pid, SIGHUP), 0);
  cr_assert(td_logs_wait(d, "bogus_key", 5000),
            "the log does not name the bad key:\n%s", td_logs(d, 4000));
  cr_assert_eq(reload_max_frame(d), 8192, "a bad config changed a limit");
  td_write_config_text(d, "{ not json");
  cr_assert_eq(kill(d->pid, SIGHUP), 0);
  td_sleep_ms(200);
  cr_assert_eq(reload_max_frame(d), 8192);
  td_stop(d);
}

/* Keys read only at start keep their running values on reload, and the
 * reply names them (the log says so too), so that a changed budget that did
 * not apply cannot pass for one that did. A key read live beside them
 * applies. */
Test(daemon_reload, reload_names_the_changed_keys_read_only_at_start) {
  td *d = td_start("\"max_cpu_mem_mb\": 64, \"prefetch_depth\": 1, "
                   "\"max_frame_bytes\": 8192");
  sly_conn *c = td_connect(d);
  td_write_config(d, "\"max_cpu_mem_mb\": 32, \"prefetch_depth\": 2, "
                     "\"loaders\": 1, \"max_frame_bytes\": 16384");
  char *reply = NULL;
  sly_error err;
  cr_assert_eq(sly_request_json(c, "{\"op\": \"reload\"}", &reply, &err), 0,
               "reload: %s", err.message);
  cr_assert(strstr(reply, "\"restart_needed\":[\"max_cpu_mem_mb\","
                          "\"prefetch_depth\",\"loaders\"]") != NULL,
            "the reply does not name exactly the three keys: %s", reply);
  free(reply);
  cr_assert_eq(reload_max_frame(d), 16384, "max_frame_bytes did not apply");
  char *stats = NULL;
  cr_assert_eq(sly_request_json(c, "{\"op\": \"stats\"}", &stats, &err), 0,
               "stats: %s", err.message);
  cr_assert(strstr(stats, "\"budget\":67108864") != NULL,
            "the cpu budget is not the running 64 MiB: %s", stats);
  free(stats);
  cr_assert(td_logs_wait(d, "max_cpu_mem_mb, prefetch_depth, loaders changed", 5000),
            "no warning in the log:\n%s", td_logs(d, 4000));
  /* The same file again: still not applied, so still named. */
  cr_assert_eq(sly_request_json(c, "{\"op\": \"reload\"}", &reply, &err), 0,
               "reload: %s", err.message);
  cr_assert(strstr(reply, "\"restart_needed\":[\"max_cpu_mem_mb\","
                          "\"prefetch_depth\",\"loaders\"]") != NULL,
            "a second reload forgot the running values: %s", reply);
  free(reply);
  /* The running values back in the file: nothing to name. */
  td_write_config(d, "\"max_cpu_mem_mb\": 64, \"prefetch_depth\": 1, "
                     "\"max_frame_bytes\": 16384");
  cr_assert_eq(sly_request_json(c, "{\"op\": \"reload\"}", &reply, &err), 0,
               "reload: %s", err.message);
  cr_assert(strstr(reply, "\"restart_needed\":[]") != NULL, "%s", reply);
  free(reply);
  sly_close(c);
  td_stop(d);
}
