/* harness.h — a real slyced in a temporary folder, for integration tests.
 *
 * Owns: one daemon per td: its folder (/tmp/slyit-XXXXXX holding the config,
 * the socket, the log, the daemon's stderr and the notify socket), the
 * process, and the sd_notify datagrams it sent. Helpers here abort the
 * current Criterion test on failure; a test that aborts leaves its daemon to
 * td_cleanup() (the suites' .fini) and to PR_SET_PDEATHSIG, so no daemon
 * outlives its test. Also runs slyctl and reads /proc facts of the daemon.
 */
#ifndef SLY_TEST_HARNESS_H
#define SLY_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "slyce.h"

#ifndef SLY_TEST_BUILD_DIR
#error "SLY_TEST_BUILD_DIR must be defined by the Makefile"
#endif

#define TD_SLYCED SLY_TEST_BUILD_DIR "/slyced"
/* The slyced to start: $SLY_TEST_SLYCED when set (the ThreadSanitizer run
 * drives an instrumented daemon from uninstrumented tests), else TD_SLYCED. */
const char *td_slyced_path(void);
/* The device tests run on: $SLY_TEST_DEVICE (tests/gpu/run.sh sets cuda:0),
 * else "cpu". */
const char *td_device(void);
/* The tier a resident slice is computed from on td_device(): "gpu" on
 * cuda:N, "cpu" otherwise. */
const char *td_compute_tier(void);
/* Skips a test whose timing assumes a slow CPU forward, on a GPU. */
void td_skip_on_gpu(const char *why);
#define TD_SLYCTL SLY_TEST_BUILD_DIR "/slyctl"

/* Long enough for a daemon started under ASan on a busy machine. */
#define TD_READY_TIMEOUT_MS 30000
#define TD_EXIT_TIMEOUT_MS 30000
#define TD_PATH_MAX 160
#define TD_NOTES_MAX 4096

typedef struct {
  const char *extra_json; /* fields merged into the config ("\"k\": v"), or NULL */
  unsigned dir_mode;      /* 0: the folder keeps mkdtemp's 0700 */
  const char *socket_path; /* NULL: <dir>/s.sock */
} td_opts;

typedef struct td {
  char dir[TD_PATH_MAX];
  char sock[TD_PATH_MAX];
  char config[TD_PATH_MAX];
  char log[TD_PATH_MAX];
  char err_log[TD_PATH_MAX]; /* the daemon's stdout and stderr */
  char notify[TD_PATH_MAX];
  int notify_fd;
  int listen_fd; /* set before td_launch(), which hands it to the daemon as
                    fd 3 (socket activation) and closes it here */
  pid_t pid;     /* 0 before td_launch() */
  bool exited;
  int status;                /* wait status once exited */
  char notes[TD_NOTES_MAX];  /* every sd_notify datagram, newline separated */
  size_t notes_len;
} td;

/* Starts slyced with the default config plus `extra_json` and waits for
 * READY=1. The caller ends it with td_stop(). */
td *td_start(const char *extra_json);
td *td_start_opts(const td_opts *o);

/* The two halves of td_start_opts, for tests that prepare the folder (a
 * stale socket, a listening fd) or expect the daemon to fail: td_new() makes
 * the folder, the config and the notify socket; td_launch() forks slyced. */
td *td_new(const td_opts *o);
void td_launch(td *d);

/* Launches `d` and asserts that it refuses to start: no READY, a non-zero
 * exit, and a log holding `a` and `b` (b may be NULL). `what` says what it
 * was started with, for the failure message. */
void td_assert_refused(td *d, const char *what, const char *a, const char *b);

/* Rewrites the config file with `extra_json` merged in (for reloads). */
void td_write_config(td *d, const char *extra_json);
/* Writes `text` as the whole config file. */
void td_write_config_text(td *d, const char *text);

/* Waits until a datagram holding the line `what` ("READY=1") has arrived.
 * Returns false when the daemon exits first or the time runs out. */
bool td_wait_notify(td *d, const char *what, int timeout_ms);
/* Reaps the daemon. Returns true and sets d->status once it has exited. */
bool td_wait_exit(td *d, int timeout_ms);

/* Asserts a fresh connection's hello still works, sends SIGTERM, asserts
 * exit status 0 within TD_EXIT_TIMEOUT_MS; removes the folder and frees d. */
void td_stop(td *d);
/* Kills the daemon if it still runs, removes the folder, frees d. Asserts
 * nothing: for daemons a test expected to fail or has already checked. */
void td_destroy(td *d);
/* Suite .fini: td_destroy() on every daemon a failed test left behind. */
void td_cleanup(void);

/* The tail (at most `max` bytes) of the daemon's log file and of its stderr,
 * as one string the caller frees. */
char *td_logs(const td *d, size_t max);
/* Polls the logs until they contain `needle`. */
bool td_logs_wait(const td *d, const char *needle, int timeout_ms);

/* Connects with libslyce and says hello; aborts the test on failure. */
sly_conn *td_connect(const td *d);
/* A fresh connection's hello succeeds: the daemon still serves. */
void td_assert_serving(const td *d);
void td_hello(const td *d, sly_hello_info *out);

/* Open file descriptors of the daemon (from /proc/PID/fd). */
int td_fd_count(const td *d);
/* Polls until the daemon has exactly `want` fds open. */
bool td_fd_count_wait(const td *d, int want, int timeout_ms);
/* Whether /proc/PID/maps mentions `needle`. */
bool td_maps_contains(const td *d, const char *needle);

/* Distinct files (by inode) mapped in /proc/PID/maps on lines mentioning
 * `needle` ("slyced-out"); pid 0 means this process. The first `max` inodes
 * go into `inodes` (may be NULL when max is 0). */
int td_maps_files(pid_t pid, const char *needle, unsigned long *inodes,
                  int max);

/* A finished slyctl (or other) run. */
typedef struct {
  int exit_code; /* 128 + signal when killed */
  char *out;
  char *err;
} td_cmd;

/* Runs slyctl with argv (NULL-terminated, without argv[0]); SLYCE_SOCKET is
 * set to `env_socket`, or unset when it is NULL. Aborts the test when slyctl
 * runs longer than 20 s. The caller frees the result with td_cmd_free(). */
void td_slyctl(const char *env_socket, const char *const argv[], td_cmd *r);
/* The same for any program (td_slyced_path(), for one). */
void td_run(const char *prog, const char *env_socket, const char *const argv[],
            td_cmd *r);
void td_cmd_free(td_cmd *r);

/* Sleeps for `ms` milliseconds. */
void td_sleep_ms(int ms);
/* Milliseconds on the monotonic clock. */
long long td_now_ms(void);
/* Reads a whole file (NUL-terminated, at most `max` bytes from its end);
 * NULL when it cannot be read. The caller frees it. */
char *td_read_tail(const char *path, size_t max);

/* ---- Back to baseline, for the hostile-client suites ---------------------
 * After each hostile case the daemon must serve a good forward and hold the
 * fds and roughly the memory it held before. */

/* The daemon's resident set: VmRSS of /proc/PID/status, in KiB. */
long td_rss_kib(const td *d);
/* Whether RSS figures mean anything: not under a sanitizer, whose
 * quarantine keeps freed memory resident on purpose (ASan in this build, or
 * an instrumented $SLY_TEST_SLYCED). Leaks are then LeakSanitizer's job. */
bool td_rss_meaningful(void);

typedef struct {
  int fds;      /* entries of /proc/PID/fd */
  long rss_kib; /* VmRSS */
} td_baseline;

void td_baseline_take(const td *d, td_baseline *b);
/* Waits up to TD_BASELINE_WAIT_MS for the fd count to come back to b->fds
 * exactly (closes after a client's close are asynchronous), then asserts it
 * and, when td_rss_meaningful(), that VmRSS is at most b->rss_kib +
 * slack_kib. `after` names the case in the messages. */
#define TD_BASELINE_WAIT_MS 5000
void td_baseline_assert(const td *d, const td_baseline *b, long slack_kib,
                        const char *after);

/* Runs the fixture slice "lin" (fx_config()) on a fresh connection, retrying
 * BUSY for a moment as td_assert_serving() does, and asserts PyTorch's
 * output; `after` names the case in the messages. */
void td_assert_forward_ok(const td *d, const char *after);

/* td_stop(), and also asserts that the daemon's stderr holds no sanitizer
 * report (a recoverable UBSan report does not change the exit status). */
void td_stop_clean(td *d);

#endif
