/* test_daemon_admin.c — who may use admin ops, and the socket's mode.
 * Peers other than root run in a forked child that drops to uid 65534
 * (nobody); the child asserts nothing itself and reports through a pipe. */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_admin, .timeout = 60, .fini = td_cleanup);

#define NOBODY 65534

typedef struct {
  const char *json;
  const char *expect; /* "ok", or an error code; the id is always 1 */
  int admin;          /* -1: not checked; 0/1: the hello reply's "admin" */
} admin_step;

/* In the child: reports `fmt` to the parent and exits 1. */
__attribute__((format(printf, 2, 3), noreturn)) static void
admin_child_fail(int report, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdprintf(report, fmt, ap);
  va_end(ap);
  _exit(1);
}

static void admin_child(const char *sock, gid_t gid, int report,
                        const admin_step *steps, size_t n) {
  gid_t groups[1] = {gid};
  if (setgroups(1, groups) != 0 || setgid(gid) != 0 || setuid(NOBODY) != 0)
    admin_child_fail(report, "dropping to uid %d: %s", NOBODY,
                     strerror(errno));
  int fd = rc_try_connect(sock);
  if (fd < 0)
    admin_child_fail(report, "connect as uid %d: %s", NOBODY, strerror(-fd));
  for (size_t i = 0; i < n; i++) {
    if (rc_send_json(fd, steps[i].json) != 0)
      admin_child_fail(report, "%s: send failed", steps[i].json);
    char *body = NULL;
    uint32_t len;
    rc_status s = rc_read_frame(fd, RC_REPLY_TIMEOUT_MS, &body, &len, NULL);
    if (s != RC_FRAME)
      admin_child_fail(report, "%s: %s instead of a reply", steps[i].json,
                       rc_status_name(s));
    cJSON *r = cJSON_ParseWithLength(body, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "id");
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "ok");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, "error"), "code");
    const cJSON *admin = cJSON_GetObjectItemCaseSensitive(r, "admin");
    bool want_ok = strcmp(steps[i].expect, "ok") == 0;
    if (!cJSON_IsNumber(id) || id->valuedouble != 1)
      admin_child_fail(report, "%s: reply %s has the wrong id", steps[i].json,
                       body);
    if (want_ok && !cJSON_IsTrue(ok))
      admin_child_fail(report, "%s: expected ok, got %s", steps[i].json, body);
    if (!want_ok && (!cJSON_IsString(code) ||
                     strcmp(code->valuestring, steps[i].expect) != 0))
      admin_child_fail(report, "%s: expected %s, got %s", steps[i].json,
                       steps[i].expect, body);
    if (steps[i].admin >= 0 &&
        (!cJSON_IsBool(admin) || cJSON_IsTrue(admin) != steps[i].admin))
      admin_child_fail(report, "%s: expected \"admin\": %s, got %s",
                       steps[i].json, steps[i].admin ? "true" : "false",
                       body);
    cJSON_Delete(r);
    free(body);
  }
  close(fd);
  _exit(0);
}

/* Runs `steps` on one connection as uid 65534 with group `gid`. */
static void admin_as_nobody(const td *d, gid_t gid, const admin_step *steps,
                            size_t n) {
  int p[2];
  rc_pipe(p);
  pid_t pid = fork();
  cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(p[0]);
    admin_child(d->sock, gid, p[1], steps, n);
  }
  close(p[1]);
  char msg[2048] = "";
  size_t got = 0;
  ssize_t k;
  while (got < sizeof msg - 1 &&
         (k = read(p[0], msg + got, sizeof msg - 1 - got)) > 0)
    got += (size_t)k;
  msg[got] = '\0';
  close(p[0]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "as uid %d: %s (status 0x%x)", NOBODY, msg, status);
}

static void admin_need_root(void) {
  if (geteuid() != 0)
    cr_skip_test("needs root to act as uid %d", NOBODY);
}

/* The folder must let nobody reach the socket, and the socket let it in. */
static const td_opts admin_open = {.extra_json = "\"socket_mode\": \"0666\"",
                                   .dir_mode = 0755};

Test(daemon_admin, root_may_reload) {
  td *d = td_start(NULL);
  sly_conn *c = td_connect(d);
  sly_error err;
  cr_assert_eq(sly_reload(c, &err), 0, "reload: %s", err.message);
  cr_assert_eq(sly_reload(c, &err), 0, "second reload: %s", err.message);
  sly_close(c);
  td_assert_serving(d);
  td_stop(d);
}

Test(daemon_admin, other_uid_gets_permission_denied_for_admin_ops) {
  admin_need_root();
  td *d = td_start_opts(&admin_open);
  static const admin_step steps[] = {
      {"{\"id\": 1, \"op\": \"hello\"}", "ok", 0},
      {"{\"id\": 1, \"op\": \"list\"}", "ok", -1},
      {"{\"id\": 1, \"op\": \"stats\"}", "ok", -1},
      {"{\"id\": 1, \"op\": \"reload\"}", "PERMISSION_DENIED", -1},
      {"{\"id\": 1, \"op\": \"shutdown\"}", "PERMISSION_DENIED", -1},
      {"{\"id\": 1, \"op\": \"pin\", \"slice\": \"a\", \"tier\": \"cpu\"}",
       "PERMISSION_DENIED", -1},
      {"{\"id\": 1, \"op\": \"unpin\", \"slice\": \"a\"}", "PERMISSION_DENIED",
       -1},
      {"{\"id\": 1, \"op\": \"add_slice\", \"name\": \"x\", "
       "\"constructor\": \"linear\"}",
       "PERMISSION_DENIED", -1},
      {"{\"id\": 1, \"op\": \"remove_slice\", \"name\": \"x\"}",
       "PERMISSION_DENIED", -1},
      {"{\"id\": 1, \"op\": \"hello\"}", "ok", 0},
  };
  admin_as_nobody(d, NOBODY, steps, sizeof steps / sizeof steps[0]);
  /* The refused shutdown left the daemon running. */
  td_assert_serving(d);
  td_stop(d);
}

Test(daemon_admin, member_of_admin_group_may_reload) {
  admin_need_root();
  struct group *g = getgrgid(NOBODY);
  if (!g)
    cr_skip_test("no group with gid %d", NOBODY);
  char extra[256];
  snprintf(extra, sizeof extra,
           "\"socket_mode\": \"0666\", \"admin_group\": \"%s\"", g->gr_name);
  td_opts o = {.extra_json = extra, .dir_mode = 0755};
  td *d = td_start_opts(&o);
  static const admin_step steps[] = {
      {"{\"id\": 1, \"op\": \"hello\"}", "ok", 1},
      {"{\"id\": 1, \"op\": \"reload\"}", "ok", -1},
  };
  admin_as_nobody(d, NOBODY, steps, sizeof steps / sizeof steps[0]);
  td_stop(d);
}

static void admin_expect_mode(const char *extra, unsigned mode) {
  td *d = td_start(extra);
  struct stat st;
  cr_assert_eq(lstat(d->sock, &st), 0, "stat %s: %s", d->sock,
               strerror(errno));
  cr_assert(S_ISSOCK(st.st_mode), "%s is not a socket", d->sock);
  cr_assert_eq(st.st_mode & 07777, mode, "socket mode %04o, want %04o",
               st.st_mode & 07777, mode);
  td_stop(d);
}

Test(daemon_admin, socket_gets_the_configured_mode) {
  admin_expect_mode("\"socket_mode\": \"0666\"", 0666);
  admin_expect_mode("\"socket_mode\": \"0600\"", 0600);
}

Test(daemon_admin, socket_mode_defaults_to_0660) {
  admin_expect_mode(NULL, 0660);
}

Test(daemon_admin, socket_mode_0600_keeps_other_uids_out) {
  admin_need_root();
  td_opts o = {.extra_json = "\"socket_mode\": \"0600\"", .dir_mode = 0755};
  td *d = td_start_opts(&o);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    gid_t groups[1] = {NOBODY};
    if (setgroups(1, groups) != 0 || setgid(NOBODY) != 0 ||
        setuid(NOBODY) != 0)
      _exit(2);
    int fd = rc_try_connect(d->sock);
    _exit(fd == -EACCES ? 0 : 1);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "uid %d was not refused by a 0600 socket (status 0x%x)", NOBODY,
            status);
  td_assert_serving(d);
  td_stop(d);
}
