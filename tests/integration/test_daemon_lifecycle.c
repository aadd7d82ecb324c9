/* test_daemon_lifecycle.c — how slyced starts and stops: READY and STOPPING
 * to the notify socket, shutdown and SIGTERM with exit status 0, stale
 * sockets replaced, a live one left alone, and systemd socket activation. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_lifecycle, .timeout = 60, .fini = td_cleanup);

/* Asserts the daemon exited with status 0 within `ms`. */
static void life_expect_exit0(td *d, int ms, const char *after) {
  if (!td_wait_exit(d, ms)) {
    char *logs = td_logs(d, 4000);
    cr_assert_fail("slyced still runs %d ms after %s; logs:\n%s", ms, after,
                   logs ? logs : "");
  }
  if (!WIFEXITED(d->status) || WEXITSTATUS(d->status) != 0) {
    char *logs = td_logs(d, 4000);
    cr_assert_fail("slyced ended with status 0x%x after %s; logs:\n%s",
                   d->status, after, logs ? logs : "");
  }
}

Test(daemon_lifecycle, shutdown_replies_ok_then_exits_0_with_stopping) {
  td *d = td_start("\"drain_timeout_ms\": 2000");
  sly_conn *c = td_connect(d);
  sly_error err;
  cr_assert_eq(sly_shutdown(c, &err), 0, "shutdown: %s", err.message);
  long long start = td_now_ms();
  life_expect_exit0(d, 2000 + 3000, "shutdown");
  cr_log_info("exited %lld ms after shutdown", td_now_ms() - start);
  cr_assert(td_wait_notify(d, "STOPPING=1", 0),
            "no STOPPING=1 was sent; notes:\n%s", d->notes);
  sly_close(c);
  td_destroy(d);
}

Test(daemon_lifecycle, sigterm_with_a_connection_open_exits_0) {
  td *d = td_start("\"drain_timeout_ms\": 2000");
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  sly_conn *c = td_connect(d);
  cr_assert_eq(kill(d->pid, SIGTERM), 0);
  /* An idle connection has nothing in flight: no reason to wait. */
  life_expect_exit0(d, 2000 + 3000, "SIGTERM");
  cr_assert(td_wait_notify(d, "STOPPING=1", 0),
            "no STOPPING=1 was sent; notes:\n%s", d->notes);
  rc_status s = rc_wait_closed(fd, 1000);
  cr_assert(s == RC_CLOSED, "the open connection saw %s", rc_status_name(s));
  close(fd);
  /* The library's connection was closed under it too: a call says by whom,
   * not "Connection reset by peer" or "Broken pipe". */
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert_eq(sly_list(c, &l, &err), SLY_E_IO);
  cr_assert(strstr(err.message, "connection closed by slyced (it may be "
                                "stopping or restarting") != NULL,
            "%s", err.message);
  sly_close(c);
  td_destroy(d);
}

Test(daemon_lifecycle, ready_comes_once_the_socket_listens) {
  td *d = td_start(NULL);
  /* READY has arrived (td_start): a connection must work at once. */
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  close(fd);
  td_stop(d);
}

/* A stale socket is the daemon's own leftover; a regular file is someone
 * else's, so slyced refuses to start rather than delete it. */
Test(daemon_lifecycle, regular_file_at_the_socket_path_is_left_alone) {
  td *d = td_new(NULL);
  FILE *f = fopen(d->sock, "w");
  cr_assert(f, "create %s: %s", d->sock, strerror(errno));
  fputs("not a socket\n", f);
  fclose(f);
  td_assert_refused(d, "a regular file at its socket path", d->sock, NULL);
  char *text = td_read_tail(d->sock, 100);
  cr_assert(text && strcmp(text, "not a socket\n") == 0,
            "the file at the socket path was changed");
  free(text);
  td_destroy(d);
}

Test(daemon_lifecycle, dead_socket_at_the_socket_path_is_replaced) {
  td *d = td_new(NULL);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, d->sock);
  cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s",
               strerror(errno));
  close(s); /* the file stays; nobody listens */
  cr_assert_eq(rc_try_connect(d->sock), -ECONNREFUSED);
  td_launch(d);
  cr_assert(td_wait_notify(d, "READY=1", TD_READY_TIMEOUT_MS),
            "no READY with a dead socket at the socket path; logs:\n%s",
            td_logs(d, 4000));
  td_assert_serving(d);
  td_stop(d);
}

Test(daemon_lifecycle, second_daemon_on_a_live_socket_refuses_to_start) {
  td *first = td_start(NULL);
  int by = rc_connect(first->sock);
  rc_assert_hello(by, 1);
  td_opts o = {.socket_path = first->sock};
  td *second = td_new(&o);
  td_launch(second);
  bool ready = td_wait_notify(second, "READY=1", TD_READY_TIMEOUT_MS);
  cr_assert(!ready, "a second slyced started on a live socket");
  cr_assert(second->exited, "the second slyced neither started nor exited");
  cr_assert(!WIFEXITED(second->status) || WEXITSTATUS(second->status) != 0,
            "the second slyced exited 0");
  char *logs = td_logs(second, 8000);
  cr_assert(logs && strstr(logs, first->sock),
            "the second slyced's log does not name the socket:\n%s", logs);
  free(logs);
  td_destroy(second);
  /* The first one still owns its socket, and its old connection works. */
  rc_assert_hello(by, 2);
  td_assert_serving(first);
  close(by);
  td_stop(first);
}

Test(daemon_lifecycle, socket_activation_uses_the_passed_listening_fd) {
  td *d = td_new(NULL);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, d->sock);
  cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s",
               strerror(errno));
  cr_assert_eq(listen(s, 16), 0);
  struct stat before;
  cr_assert_eq(stat(d->sock, &before), 0);
  d->listen_fd = s;
  td_launch(d);
  cr_assert(td_wait_notify(d, "READY=1", TD_READY_TIMEOUT_MS),
            "no READY under socket activation; logs:\n%s", td_logs(d, 4000));
  /* The same socket file: slyced did not unlink and bind its own. */
  struct stat after;
  cr_assert_eq(stat(d->sock, &after), 0);
  cr_assert_eq(after.st_ino, before.st_ino,
               "slyced replaced the socket it was handed");
  sly_hello_info h;
  td_hello(d, &h);
  cr_assert_eq(h.protocol, 1);
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1);
  close(fd);
  td_stop(d);
}

Test(daemon_lifecycle, early_exit_on_a_bad_config_is_reported) {
  td_opts o = {.extra_json = "\"no_such_key\": 1"};
  td *d = td_new(&o);
  td_assert_refused(d, "an unknown config key", "no_such_key", NULL);
  td_destroy(d);
}

/* --check reads the config as a start would, declares each slice (whose
 * constructor config a running slyced checks only at first use) and exits
 * without starting: 0 and a summary, or 1 and one line per bad slice. */
Test(daemon_lifecycle, check_validates_slice_configs_without_starting) {
  td *d = td_new(NULL);
  td_write_config(d, "\"slices\": [{\"name\": \"a\", \"constructor\": "
                     "\"linear\", \"config\": {\"in_features\": 4, "
                     "\"out_features\": 2}}]");
  td_cmd r;
  td_run(td_slyced_path(), NULL,
         (const char *const[]){"-c", d->config, "--check", NULL}, &r);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  /* weight and bias, each in a 4 KiB step of the blob */
  cr_assert(strstr(r.out, "slice a: linear, 8192 bytes\n") != NULL, "%s",
            r.out);
  cr_assert(strstr(r.out, ": ok (1 slices, 0 pipelines)") != NULL, "%s",
            r.out);
  td_cmd_free(&r);
  cr_assert(access(d->sock, F_OK) != 0, "--check created the socket");

  td_write_config(d, "\"slices\": [{\"name\": \"a\", \"constructor\": "
                     "\"linear\", \"config\": {\"in_features\": 4, "
                     "\"outfeatures\": 2}}, {\"name\": \"b\", \"constructor\":"
                     " \"linear\", \"config\": {\"in_features\": 4, "
                     "\"out_features\": 2, \"weights\": \"none.safetensors\"}"
                     "}, {\"name\": \"c\", \"constructor\": \"linear\", "
                     "\"config\": {\"in_features\": 4, \"out_features\": 2}}]");
  td_run(td_slyced_path(), NULL,
         (const char *const[]){"-c", d->config, "--check", NULL}, &r);
  cr_assert_eq(r.exit_code, 1, "%s", r.out);
  cr_assert(strstr(r.err, "slices[0] (a): config.outfeatures: unknown key") !=
                NULL, "%s", r.err);
  cr_assert(strstr(r.err, "slices[1] (b): config.weights: ") != NULL &&
                strstr(r.err, "none.safetensors: No such file") != NULL,
            "%s", r.err);
  cr_assert(strstr(r.out, "slice c: linear") != NULL, "%s", r.out);
  td_cmd_free(&r);

  /* A file a start refuses, --check refuses alike. */
  td_write_config(d, "\"max_frame_byte\": 1");
  td_run(td_slyced_path(), NULL,
         (const char *const[]){"-c", d->config, "--check", NULL}, &r);
  cr_assert_eq(r.exit_code, 1);
  cr_assert(strstr(r.err, "unknown key \"max_frame_byte\"") != NULL, "%s",
            r.err);
  td_cmd_free(&r);
  td_destroy(d);
}

/* A GPU device with gpu_strategy none serves from host memory on the CPU, as
 * config/README.md says; the log says so at start, so that a forgotten
 * strategy does not pass for a GPU in use. */
Test(daemon_lifecycle, a_gpu_device_without_a_strategy_is_warned_of) {
  td *d = td_start("\"device\": \"sim\", \"max_gpu_mem_mb\": 64");
  cr_assert(td_logs_wait(d, "device sim with gpu_strategy none", 5000),
            "no warning:\n%s", td_logs(d, 4000));
  td_stop(d);
}
