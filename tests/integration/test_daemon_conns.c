/* test_daemon_conns.c — connections per uid: past max_conns_per_uid a new
 * connection gets BUSY with id null and is closed; the others go on. */
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_conns, .timeout = 60, .fini = td_cleanup);

#define CONNS_MAX 4

/* Connects, and asserts the daemon answers BUSY (id null) and closes. */
static void conns_expect_busy(const td *d) {
  int fd = rc_connect(d->sock);
  cJSON *r = rc_read_reply(fd);
  rc_assert_error(r, RC_ID_NULL, "BUSY");
  cJSON_Delete(r);
  rc_assert_closed(fd);
  close(fd);
}

Test(daemon_conns, connection_past_max_conns_per_uid_gets_busy_then_close) {
  td *d = td_start("\"max_conns_per_uid\": 4");
  int fds[CONNS_MAX];
  for (int i = 0; i < CONNS_MAX; i++) {
    fds[i] = rc_connect(d->sock);
    rc_assert_hello(fds[i], 1);
  }
  conns_expect_busy(d);
  conns_expect_busy(d);
  for (int i = 0; i < CONNS_MAX; i++)
    rc_assert_hello(fds[i], 2);

  /* Once one closes, a new connection is served again (as soon as the
   * daemon has seen the close: retry a refused one for a while). */
  close(fds[0]);
  long long end = td_now_ms() + 5000;
  int fresh = -1;
  while (fresh < 0) {
    int fd = rc_connect(d->sock);
    /* A refused connection may be closed before the hello goes out. */
    (void)rc_send_json(fd, "{\"id\": 3, \"op\": \"hello\"}");
    cJSON *r = rc_read_reply(fd);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"))) {
      rc_assert_ok(r, 3);
      fresh = fd;
    } else {
      rc_assert_error(r, RC_ID_NULL, "BUSY");
      close(fd);
      cr_assert_lt(td_now_ms(), end, "still BUSY 5 s after a close");
      td_sleep_ms(20);
    }
    cJSON_Delete(r);
  }
  fds[0] = fresh;
  conns_expect_busy(d);
  for (int i = 0; i < CONNS_MAX; i++)
    close(fds[i]);
  td_stop(d);
}

Test(daemon_conns, stats_count_rejected_connections) {
  td *d = td_start("\"max_conns_per_uid\": 1");
  int fd = rc_connect(d->sock);
  cJSON *s1 = rc_call(fd, "{\"id\": 1, \"op\": \"stats\"}");
  conns_expect_busy(d);
  cJSON *s2 = rc_call(fd, "{\"id\": 2, \"op\": \"stats\"}");
  const cJSON *c1 = cJSON_GetObjectItemCaseSensitive(s1, "connections");
  const cJSON *c2 = cJSON_GetObjectItemCaseSensitive(s2, "connections");
  cr_assert_eq(rc_u64(c2, "rejected"), rc_u64(c1, "rejected") + 1);
  cr_assert_eq(rc_u64(c2, "open"), 1);
  cJSON_Delete(s1);
  cJSON_Delete(s2);
  close(fd);
  td_stop(d);
}

Test(daemon_conns, the_limit_counts_each_uid_apart) {
  if (geteuid() != 0)
    cr_skip_test("needs root to connect as another uid");
  td_opts o = {.extra_json = "\"max_conns_per_uid\": 1, "
                             "\"socket_mode\": \"0666\"",
               .dir_mode = 0755};
  td *d = td_start_opts(&o);
  int mine = rc_connect(d->sock);
  rc_assert_hello(mine, 1);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    gid_t g[1] = {65534};
    if (setgroups(1, g) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
      _exit(2);
    int fd = rc_try_connect(d->sock);
    if (fd < 0 || rc_send_json(fd, "{\"id\": 1, \"op\": \"hello\"}") != 0)
      _exit(3);
    char *body = NULL;
    uint32_t len;
    if (rc_read_frame(fd, RC_REPLY_TIMEOUT_MS, &body, &len, NULL) != RC_FRAME)
      _exit(4);
    _exit(strstr(body, "\"ok\":true") || strstr(body, "\"ok\": true") ? 0
                                                                       : 5);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "uid 65534 was refused while root held the only slot (0x%x)",
            status);
  rc_assert_hello(mine, 2);
  close(mine);
  td_stop(d);
}
