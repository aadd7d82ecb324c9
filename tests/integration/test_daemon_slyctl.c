/* test_daemon_slyctl.c — slyctl against a real slyced: status, list, stats
 * as text and as --json, the socket from -s or SLYCE_SOCKET, admin commands,
 * and one line on stderr with exit 1 when slyced cannot be reached. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_slyctl, .timeout = 60, .fini = td_cleanup);

static const char slice_a[] =
    "\"slices\": [{\"name\": \"a\", \"constructor\": \"linear\", "
    "\"config\": {\"in_features\": 4, \"out_features\": 4, \"seed\": 1}}]";

/* Asserts exit 0 and nothing on stderr. */
static void ctl_assert_ok(const td_cmd *r, const char *what) {
  cr_assert_eq(r->exit_code, 0, "slyctl %s: exit %d, stderr: %s", what,
               r->exit_code, r->err);
  cr_assert_str_empty(r->err, "slyctl %s wrote to stderr: %s", what, r->err);
  cr_assert_str_not_empty(r->out, "slyctl %s printed nothing", what);
}

/* Asserts the run failed with exit 1 and exactly one line on stderr that
 * starts "slyctl:", and printed nothing on stdout. */
static void ctl_assert_one_error_line(const td_cmd *r, const char *what) {
  cr_assert_eq(r->exit_code, 1, "slyctl %s: exit %d", what, r->exit_code);
  cr_assert_str_empty(r->out, "slyctl %s printed: %s", what, r->out);
  cr_assert(strncmp(r->err, "slyctl:", 7) == 0,
            "slyctl %s: stderr does not start with \"slyctl:\": %s", what,
            r->err);
  char *nl = strchr(r->err, '\n');
  cr_assert(nl && nl[1] == '\0', "slyctl %s: not one line on stderr: %s",
            what, r->err);
}

/* Parses stdout as a JSON object; the caller frees it. */
static cJSON *ctl_json(const td_cmd *r, const char *what) {
  cJSON *j = cJSON_Parse(r->out);
  cr_assert(cJSON_IsObject(j), "slyctl --json %s is not a JSON object: %s",
            what, r->out);
  return j;
}

Test(daemon_slyctl, status_list_stats_as_text_with_dash_s) {
  td *d = td_start(slice_a);
  td_cmd r;
  td_slyctl(NULL, (const char *[]){"-s", d->sock, "status", NULL}, &r);
  ctl_assert_ok(&r, "status");
  cr_assert(strstr(r.out, "slyced " SLY_VERSION), "status: %s", r.out);
  cr_assert(strstr(r.out, "cpu"), "status does not show the device: %s",
            r.out);
  cr_assert(strstr(r.out, d->sock), "status does not show the socket: %s",
            r.out);
  td_cmd_free(&r);

  td_slyctl(NULL, (const char *[]){"-s", d->sock, "list", NULL}, &r);
  ctl_assert_ok(&r, "list");
  cr_assert(strstr(r.out, "linear") && strstr(r.out, "unloaded"),
            "list does not show slice a: %s", r.out);
  td_cmd_free(&r);

  td_slyctl(NULL, (const char *[]){"-s", d->sock, "stats", NULL}, &r);
  ctl_assert_ok(&r, "stats");
  cr_assert(strcasestr(r.out, "rss"), "stats shows no RSS: %s", r.out);
  td_cmd_free(&r);
  td_stop(d);
}

Test(daemon_slyctl, status_list_stats_as_json_with_slyce_socket) {
  td *d = td_start(slice_a);
  td_cmd r;
  td_slyctl(d->sock, (const char *[]){"--json", "status", NULL}, &r);
  ctl_assert_ok(&r, "--json status");
  cJSON *j = ctl_json(&r, "status");
  cr_assert_eq(rc_u64(j, "protocol"), 1);
  const cJSON *dev = cJSON_GetObjectItemCaseSensitive(j, "device");
  cr_assert(cJSON_IsString(dev) && strcmp(dev->valuestring, "cpu") == 0,
            "%s", r.out);
  cJSON_Delete(j);
  td_cmd_free(&r);

  td_slyctl(d->sock, (const char *[]){"--json", "list", NULL}, &r);
  ctl_assert_ok(&r, "--json list");
  j = ctl_json(&r, "list");
  const cJSON *slices = cJSON_GetObjectItemCaseSensitive(j, "slices");
  cr_assert(cJSON_IsArray(slices) && cJSON_GetArraySize(slices) == 1, "%s",
            r.out);
  const cJSON *a = cJSON_GetArrayItem(slices, 0);
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(a, "name");
  const cJSON *state = cJSON_GetObjectItemCaseSensitive(a, "state");
  cr_assert(cJSON_IsString(name) && strcmp(name->valuestring, "a") == 0,
            "%s", r.out);
  cr_assert(cJSON_IsString(state) && strcmp(state->valuestring, "unloaded") == 0,
            "%s", r.out);
  cJSON_Delete(j);
  td_cmd_free(&r);

  td_slyctl(d->sock, (const char *[]){"--json", "stats", NULL}, &r);
  ctl_assert_ok(&r, "--json stats");
  j = ctl_json(&r, "stats");
  const cJSON *proc = cJSON_GetObjectItemCaseSensitive(j, "process");
  cr_assert_gt(rc_u64(proc, "rss_bytes"), 0, "%s", r.out);
  cJSON_Delete(j);
  td_cmd_free(&r);
  td_stop(d);
}

Test(daemon_slyctl, dash_s_wins_over_slyce_socket) {
  td *d = td_start(NULL);
  char nope[TD_PATH_MAX + 16];
  snprintf(nope, sizeof nope, "%s/nope.sock", d->dir);
  td_cmd r;
  td_slyctl(nope, (const char *[]){"-s", d->sock, "status", NULL}, &r);
  ctl_assert_ok(&r, "-s PATH status");
  td_cmd_free(&r);
  td_slyctl(d->sock, (const char *[]){"-s", nope, "status", NULL}, &r);
  ctl_assert_one_error_line(&r, "-s MISSING status");
  td_cmd_free(&r);
  td_stop(d);
}

Test(daemon_slyctl, missing_socket_gives_exit_1_and_one_line_on_stderr) {
  char dir[] = "/tmp/slyit-ctl-XXXXXX";
  cr_assert(mkdtemp(dir));
  char nope[64];
  snprintf(nope, sizeof nope, "%s/nope.sock", dir);
  const char *cmds[] = {"status", "list", "stats", "reload", "shutdown"};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    td_cmd r;
    td_slyctl(NULL, (const char *[]){"-s", nope, cmds[i], NULL}, &r);
    ctl_assert_one_error_line(&r, cmds[i]);
    td_cmd_free(&r);
    td_slyctl(nope, (const char *[]){"--json", cmds[i], NULL}, &r);
    ctl_assert_one_error_line(&r, cmds[i]);
    td_cmd_free(&r);
  }
  rmdir(dir);
}

Test(daemon_slyctl, unknown_command_fails_with_a_message) {
  td_cmd r;
  td_slyctl(NULL, (const char *[]){"frobnicate", NULL}, &r);
  cr_assert_neq(r.exit_code, 0);
  cr_assert(strncmp(r.err, "slyctl:", 7) == 0, "stderr: %s", r.err);
  td_cmd_free(&r);
}

Test(daemon_slyctl, reload_and_shutdown) {
  td *d = td_start("\"drain_timeout_ms\": 2000");
  td_cmd r;
  td_slyctl(d->sock, (const char *[]){"reload", NULL}, &r);
  cr_assert_eq(r.exit_code, 0, "reload: %s", r.err);
  cr_assert_str_empty(r.err);
  td_cmd_free(&r);

  td_write_config(d, "\"drain_timeout_ms\": 2000, \"bogus_key\": 1");
  td_slyctl(d->sock, (const char *[]){"reload", NULL}, &r);
  ctl_assert_one_error_line(&r, "reload of a bad config");
  cr_assert(strstr(r.err, "bogus_key"), "stderr: %s", r.err);
  td_cmd_free(&r);
  td_write_config(d, "\"drain_timeout_ms\": 2000");

  td_slyctl(d->sock, (const char *[]){"shutdown", NULL}, &r);
  cr_assert_eq(r.exit_code, 0, "shutdown: %s", r.err);
  td_cmd_free(&r);
  cr_assert(td_wait_exit(d, 5000), "slyced runs on after slyctl shutdown");
  cr_assert(WIFEXITED(d->status) && WEXITSTATUS(d->status) == 0,
            "status 0x%x", d->status);
  td_destroy(d);
}
