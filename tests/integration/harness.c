/* harness.c — starting, watching and stopping a real slyced for tests. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"

/* Daemons of the running test, so that .fini can reap what an aborted test
 * left; each Criterion test runs in its own process, so this is per test. */
#define TD_MAX_LIVE 8
const char *td_slyced_path(void) {
  const char *p = getenv("SLY_TEST_SLYCED");
  return p != NULL && p[0] != '\0' ? p : TD_SLYCED;
}

static td *td_live[TD_MAX_LIVE];

static void td_register(td *d) {
  for (int i = 0; i < TD_MAX_LIVE; i++) {
    if (!td_live[i]) {
      td_live[i] = d;
      return;
    }
  }
  cr_assert_fail("more than %d daemons in one test", TD_MAX_LIVE);
}

static void td_unregister(td *d) {
  for (int i = 0; i < TD_MAX_LIVE; i++)
    if (td_live[i] == d)
      td_live[i] = NULL;
}

long long td_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void td_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

char *td_read_tail(const char *path, size_t max) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return NULL;
  }
  off_t start = (size_t)st.st_size > max ? st.st_size - (off_t)max : 0;
  size_t want = (size_t)(st.st_size - start);
  char *buf = malloc(want + 1);
  size_t got = 0;
  if (buf) {
    while (got < want) {
      ssize_t n = pread(fd, buf + got, want - got, start + (off_t)got);
      if (n <= 0)
        break;
      got += (size_t)n;
    }
    buf[got] = '\0';
  }
  close(fd);
  return buf;
}

char *td_logs(const td *d, size_t max) {
  char *log = td_read_tail(d->log, max);
  char *err = td_read_tail(d->err_log, max);
  char *all = NULL;
  if (asprintf(&all, "--- %s ---\n%s\n--- stderr ---\n%s", d->log,
               log ? log : "(none)", err ? err : "(none)") < 0)
    all = NULL;
  free(log);
  free(err);
  return all;
}

bool td_logs_wait(const td *d, const char *needle, int timeout_ms) {
  long long end = td_now_ms() + timeout_ms;
  for (;;) {
    char *all = td_logs(d, 1 << 20);
    bool found = all && strstr(all, needle);
    free(all);
    if (found)
      return true;
    if (td_now_ms() >= end)
      return false;
    td_sleep_ms(20);
  }
}

static void td_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert(f, "cannot write %s: %s", path, strerror(errno));
  fputs(text, f);
  cr_assert(fclose(f) == 0, "cannot write %s", path);
}

void td_write_config_text(td *d, const char *text) {
  /* Written aside and renamed, so a SIGHUP never reads half a file. */
  char tmp[TD_PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", d->config);
  td_write_file(tmp, text);
  cr_assert(rename(tmp, d->config) == 0, "rename: %s", strerror(errno));
}

const char *td_device(void) {
  const char *p = getenv("SLY_TEST_DEVICE");
  return p != NULL && p[0] != '\0' ? p : "cpu";
}

const char *td_compute_tier(void) {
  return strncmp(td_device(), "cuda:", 5) == 0 ? "gpu" : "cpu";
}

void td_skip_on_gpu(const char *why) {
  if (strncmp(td_device(), "cuda:", 5) == 0)
    cr_skip_test("on %s: %s", td_device(), why);
}

void td_write_config(td *d, const char *extra_json) {
  /* A test that names its own device keeps it; the others run on
   * td_device(), and on a GPU with a GPU tier big enough for every test. */
  char device[160];
  if (extra_json != NULL && strstr(extra_json, "\"device\"") != NULL)
    device[0] = '\0';
  else if (strncmp(td_device(), "cuda:", 5) == 0)
    snprintf(device, sizeof device,
             " \"device\": \"%s\", \"gpu_strategy\": \"limit_gpu\", "
             "\"max_gpu_mem_mb\": 8192, \"gpu_reserve_mb\": 1024,\n",
             td_device());
  else
    snprintf(device, sizeof device, " \"device\": \"%s\",\n", td_device());
  char *text = NULL;
  int n = asprintf(&text,
                   "{\"socket\": \"%s\",\n"
                   "%s"
                   " \"log\": {\"file\": \"%s\", \"level\": \"debug\", "
                   "\"console\": false}%s%s}\n",
                   d->sock, device, d->log, extra_json ? ",\n " : "",
                   extra_json ? extra_json : "");
  cr_assert(n > 0, "out of memory");
  td_write_config_text(d, text);
  free(text);
}

static void td_path(char out[TD_PATH_MAX], const char *dir, const char *name) {
  int n = snprintf(out, TD_PATH_MAX, "%s/%s", dir, name);
  cr_assert(n > 0 && n < TD_PATH_MAX, "path too long");
}

td *td_new(const td_opts *o) {
  td *d = calloc(1, sizeof *d);
  cr_assert(d, "out of memory");
  d->notify_fd = -1;
  d->listen_fd = -1;
  snprintf(d->dir, sizeof d->dir, "/tmp/slyit-XXXXXX");
  cr_assert(mkdtemp(d->dir), "mkdtemp: %s", strerror(errno));
  td_register(d);
  if (o && o->dir_mode)
    cr_assert(chmod(d->dir, o->dir_mode) == 0, "chmod: %s", strerror(errno));
  if (o && o->socket_path) {
    cr_assert(strlen(o->socket_path) < sizeof d->sock, "socket path too long");
    strcpy(d->sock, o->socket_path);
  } else {
    td_path(d->sock, d->dir, "s.sock");
  }
  td_path(d->config, d->dir, "slyced.json");
  td_path(d->log, d->dir, "slyced.log");
  td_path(d->err_log, d->dir, "stderr.log");
  td_path(d->notify, d->dir, "notify.sock");
  td_write_config(d, o ? o->extra_json : NULL);

  d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  cr_assert(d->notify_fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, d->notify);
  cr_assert(bind(d->notify_fd, (struct sockaddr *)&sa, sizeof sa) == 0,
            "bind %s: %s", d->notify, strerror(errno));
  return d;
}

/* Runs in the forked child: never returns. */
static void td_exec_daemon(const td *d, pid_t parent) {
  /* Dies with the test, also when Criterion kills a test that hangs. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(127);
  int in = open("/dev/null", O_RDONLY);
  int out = open(d->err_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
      dup2(out, 2) < 0)
    _exit(127);
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDNAMES");
  unsetenv("SLYCE_SOCKET");
  if (d->listen_fd >= 0) {
    if (d->listen_fd != 3 && dup2(d->listen_fd, 3) < 0)
      _exit(127);
    int flags = fcntl(3, F_GETFD);
    fcntl(3, F_SETFD, flags & ~FD_CLOEXEC);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", pid, 1);
    close_range(4, ~0U, 0);
  } else {
    close_range(3, ~0U, 0);
  }
  setenv("NOTIFY_SOCKET", d->notify, 1);
  execl(td_slyced_path(), td_slyced_path(), "-c", d->config, "--foreground",
        (char *)NULL);
  dprintf(2, "exec %s: %s\n", td_slyced_path(), strerror(errno));
  _exit(127);
}

void td_launch(td *d) {
  cr_assert(access(td_slyced_path(), X_OK) == 0, "%s is not built",
            td_slyced_path());
  pid_t parent = getpid();
  pid_t pid = fork();
  cr_assert(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0)
    td_exec_daemon(d, parent);
  d->pid = pid;
  /* Only the daemon may hold the activated socket, as under systemd. */
  if (d->listen_fd >= 0) {
    close(d->listen_fd);
    d->listen_fd = -1;
  }
}

td *td_start_opts(const td_opts *o) {
  td *d = td_new(o);
  td_launch(d);
  if (!td_wait_notify(d, "READY=1", TD_READY_TIMEOUT_MS)) {
    char *logs = td_logs(d, 4000);
    cr_assert_fail("slyced sent no READY=1 (%s, status 0x%x); logs:\n%s",
                   d->exited ? "exited" : "still running", d->status,
                   logs ? logs : "");
  }
  return d;
}

td *td_start(const char *extra_json) {
  td_opts o = {.extra_json = extra_json};
  return td_start_opts(&o);
}

static void td_drain_notify(td *d) {
  char buf[1024];
  ssize_t n;
  while ((n = recv(d->notify_fd, buf, sizeof buf - 1, 0)) > 0) {
    buf[n] = '\0';
    size_t room = sizeof d->notes - d->notes_len - 1;
    size_t len = (size_t)n < room ? (size_t)n : room;
    memcpy(d->notes + d->notes_len, buf, len);
    d->notes_len += len;
    if (d->notes_len + 1 < sizeof d->notes)
      d->notes[d->notes_len++] = '\n';
    d->notes[d->notes_len] = '\0';
  }
}

/* Whether `what` stands as a whole line in the notes. */
static bool td_noted(const td *d, const char *what) {
  size_t len = strlen(what);
  for (const char *p = d->notes; (p = strstr(p, what)); p += len) {
    bool starts = p == d->notes || p[-1] == '\n';
    bool ends = p[len] == '\n' || p[len] == '\0';
    if (starts && ends)
      return true;
  }
  return false;
}

bool td_wait_exit(td *d, int timeout_ms) {
  long long end = td_now_ms() + timeout_ms;
  while (!d->exited) {
    pid_t r = waitpid(d->pid, &d->status, WNOHANG);
    if (r == d->pid) {
      d->exited = true;
      break;
    }
    cr_assert(r == 0, "waitpid: %s", strerror(errno));
    if (td_now_ms() >= end)
      return false;
    td_sleep_ms(10);
  }
  return true;
}

bool td_wait_notify(td *d, const char *what, int timeout_ms) {
  long long end = td_now_ms() + timeout_ms;
  for (;;) {
    td_drain_notify(d);
    if (td_noted(d, what))
      return true;
    if (d->exited || td_wait_exit(d, 0)) {
      td_drain_notify(d);
      return td_noted(d, what);
    }
    long long left = end - td_now_ms();
    if (left <= 0)
      return false;
    struct pollfd p = {.fd = d->notify_fd, .events = POLLIN};
    poll(&p, 1, left < 50 ? (int)left : 50);
  }
}

static int td_rm_entry(const char *path, const struct stat *st, int flag,
                       struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

void td_destroy(td *d) {
  if (!d)
    return;
  td_unregister(d);
  if (d->pid > 0 && !d->exited) {
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &d->status, 0);
    d->exited = true;
  }
  if (d->notify_fd >= 0)
    close(d->notify_fd);
  if (d->listen_fd >= 0)
    close(d->listen_fd);
  /* SLY_TEST_KEEP=1 keeps the folders (logs) for a look after a failure. */
  const char *keep = getenv("SLY_TEST_KEEP");
  if (!keep || strcmp(keep, "1") != 0)
    nftw(d->dir, td_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(d);
}

void td_cleanup(void) {
  for (int i = 0; i < TD_MAX_LIVE; i++)
    td_destroy(td_live[i]);
}

void td_stop(td *d) {
  cr_assert(!d->exited, "slyced exited before td_stop (status 0x%x)",
            d->status);
  /* Whatever the test sent, the daemon must still serve a newcomer. */
  td_assert_serving(d);
  cr_assert(kill(d->pid, SIGTERM) == 0, "kill: %s", strerror(errno));
  if (!td_wait_exit(d, TD_EXIT_TIMEOUT_MS)) {
    char *logs = td_logs(d, 4000);
    cr_assert_fail("slyced still runs %d ms after SIGTERM; logs:\n%s",
                   TD_EXIT_TIMEOUT_MS, logs ? logs : "");
  }
  if (!WIFEXITED(d->status) || WEXITSTATUS(d->status) != 0) {
    char *logs = td_logs(d, 4000);
    cr_assert_fail("slyced ended with status 0x%x after SIGTERM; logs:\n%s",
                   d->status, logs ? logs : "");
  }
  td_destroy(d);
}

sly_conn *td_connect(const td *d) {
  sly_conn *c = NULL;
  sly_error err = {0};
  int r = sly_connect(d->sock, &c, &err);
  cr_assert(r == 0 && c, "sly_connect %s: %s (%s)", d->sock, err.message,
            sly_code_name(r));
  sly_hello_info info;
  r = sly_hello(c, "integ", &info, &err);
  cr_assert(r == 0, "hello: %s (%s)", err.message, sly_code_name(r));
  return c;
}

/* One connect + hello; returns 0 or the sly_code, with err filled. */
static int td_try_hello(const td *d, sly_hello_info *out, sly_error *err) {
  sly_conn *c = NULL;
  int r = sly_connect(d->sock, &c, err);
  if (r == 0)
    r = sly_hello(c, "integ", out, err);
  sly_close(c);
  return r;
}

void td_hello(const td *d, sly_hello_info *out) {
  sly_error err = {0};
  int r = td_try_hello(d, out, &err);
  cr_assert(r == 0, "hello on %s: %s (%s)", d->sock, err.message,
            sly_code_name(r));
}

void td_assert_serving(const td *d) {
  sly_hello_info info;
  sly_error err = {0};
  /* BUSY is fair for a moment after a test closed connections at the
   * per-uid limit: the daemon may not have seen those closes yet. */
  long long end = td_now_ms() + 2000;
  int r;
  while ((r = td_try_hello(d, &info, &err)) == SLY_E_BUSY &&
         td_now_ms() < end)
    td_sleep_ms(20);
  cr_assert(r == 0, "a fresh connection was not served: %s (%s)",
            err.message, sly_code_name(r));
  cr_assert_eq(info.protocol, SLY_PROTOCOL_VERSION);
}

int td_fd_count(const td *d) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/fd", (long)d->pid);
  DIR *dir = opendir(path);
  cr_assert(dir, "%s: %s", path, strerror(errno));
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dir)))
    if (e->d_name[0] != '.')
      n++;
  closedir(dir);
  return n;
}

bool td_fd_count_wait(const td *d, int want, int timeout_ms) {
  long long end = td_now_ms() + timeout_ms;
  while (td_fd_count(d) != want) {
    if (td_now_ms() >= end)
      return false;
    td_sleep_ms(10);
  }
  return true;
}

bool td_maps_contains(const td *d, const char *needle) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/maps", (long)d->pid);
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s: %s", path, strerror(errno));
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f))
    found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

int td_maps_files(pid_t pid, const char *needle, unsigned long *inodes,
                  int max) {
  char path[64];
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%ld/maps", (long)pid);
  else
    snprintf(path, sizeof path, "/proc/self/maps");
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s: %s", path, strerror(errno));
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long ino = 0;
    /* address perms offset dev inode path */
    if (!strstr(line, needle) ||
        sscanf(line, "%*s %*s %*s %*s %lu", &ino) != 1)
      continue;
    bool seen = false;
    for (int i = 0; i < n && i < max && !seen; i++)
      seen = inodes[i] == ino;
    if (seen)
      continue;
    if (n < max)
      inodes[n] = ino;
    n++;
  }
  fclose(f);
  return n;
}

/* Appends what `fd` has to *buf; returns false at end of file. */
static bool td_slurp(int fd, char **buf, size_t *len) {
  char chunk[4096];
  ssize_t n = read(fd, chunk, sizeof chunk);
  if (n < 0 && errno == EINTR)
    return true;
  if (n <= 0)
    return false;
  char *grown = realloc(*buf, *len + (size_t)n + 1);
  cr_assert(grown, "out of memory");
  memcpy(grown + *len, chunk, (size_t)n);
  *len += (size_t)n;
  grown[*len] = '\0';
  *buf = grown;
  return true;
}

void td_assert_refused(td *d, const char *what, const char *a,
                       const char *b) {
  td_launch(d);
  cr_assert(!td_wait_notify(d, "READY=1", TD_READY_TIMEOUT_MS),
            "slyced started with %s", what);
  cr_assert(d->exited && WIFEXITED(d->status) && WEXITSTATUS(d->status) != 0,
            "slyced should exit non-zero with %s (status 0x%x)", what,
            d->status);
  char *logs = td_logs(d, 8000);
  cr_assert(logs && strstr(logs, a) && (b == NULL || strstr(logs, b)),
            "the log does not say what is wrong with %s (%s%s%s):\n%s", what,
            a, b ? ", " : "", b ? b : "", logs ? logs : "");
  free(logs);
}

void td_slyctl(const char *env_socket, const char *const argv[], td_cmd *r) {
  td_run(TD_SLYCTL, env_socket, argv, r);
}

void td_run(const char *prog, const char *env_socket, const char *const argv[],
            td_cmd *r) {
  cr_assert(access(prog, X_OK) == 0, "%s is not built", prog);
  int po[2], pe[2];
  cr_assert(pipe2(po, O_CLOEXEC) == 0 && pipe2(pe, O_CLOEXEC) == 0, "pipe");
  const char *args[32] = {prog};
  size_t n = 1;
  for (; argv[n - 1]; n++) {
    cr_assert(n < 31, "too many arguments");
    args[n] = argv[n - 1];
  }
  args[n] = NULL;
  pid_t pid = fork();
  cr_assert(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
      _exit(127);
    if (env_socket)
      setenv(SLY_SOCKET_ENV, env_socket, 1);
    else
      unsetenv(SLY_SOCKET_ENV);
    execv(prog, (char *const *)args);
    _exit(127);
  }
  close(po[1]);
  close(pe[1]);
  r->out = calloc(1, 1);
  r->err = calloc(1, 1);
  size_t out_len = 0, err_len = 0;
  bool out_open = true, err_open = true;
  long long end = td_now_ms() + 20000;
  while (out_open || err_open) {
    struct pollfd p[2] = {{.fd = out_open ? po[0] : -1, .events = POLLIN},
                          {.fd = err_open ? pe[0] : -1, .events = POLLIN}};
    long long left = end - td_now_ms();
    if (left <= 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      cr_assert_fail("%s %s ran longer than 20 s", prog, argv[0]);
    }
    if (poll(p, 2, (int)left) < 0 && errno != EINTR)
      cr_assert_fail("poll: %s", strerror(errno));
    if (p[0].revents)
      out_open = td_slurp(po[0], &r->out, &out_len);
    if (p[1].revents)
      err_open = td_slurp(pe[0], &r->err, &err_len);
  }
  close(po[0]);
  close(pe[0]);
  int status = 0;
  cr_assert(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
  r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status)
                                   : 128 + WTERMSIG(status);
}

void td_cmd_free(td_cmd *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

/* ---- Back to baseline ---------------------------------------------------- */

long td_rss_kib(const td *d) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/status", (long)d->pid);
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s: %s", path, strerror(errno));
  char line[256];
  long kib = -1;
  while (kib < 0 && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) != 1)
      kib = -1;
  fclose(f);
  cr_assert_geq(kib, 0, "no VmRSS in %s", path);
  return kib;
}

bool td_rss_meaningful(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return false;
#else
  const char *p = getenv("SLY_TEST_SLYCED");
  return p == NULL || p[0] == '\0';
#endif
}

void td_baseline_take(const td *d, td_baseline *b) {
  /* Counted while this probe is the only connection the daemon knows, so
   * every earlier one has been closed and freed; the probe's socket is the
   * one fd to leave out. */
  sly_conn *c = td_connect(d);
  sly_stats st = {0};
  sly_error err;
  long long end = td_now_ms() + TD_BASELINE_WAIT_MS;
  for (;;) {
    cr_assert_eq(sly_stats_get(c, &st, &err), 0, "stats: %s", err.message);
    if (st.connections == 1 || td_now_ms() >= end)
      break;
    td_sleep_ms(20);
  }
  cr_assert_eq(st.connections, 1, "%llu connections open at the baseline",
               (unsigned long long)st.connections);
  b->fds = td_fd_count(d) - 1;
  b->rss_kib = td_rss_kib(d);
  sly_close(c);
  /* Cases start with no connection open, the probe's included. */
  cr_assert(td_fd_count_wait(d, b->fds, TD_BASELINE_WAIT_MS),
            "the probe's close left %d fds, %d at the baseline",
            td_fd_count(d), b->fds);
}

void td_baseline_assert(const td *d, const td_baseline *b, long slack_kib,
                        const char *after) {
  cr_assert(!d->exited && kill(d->pid, 0) == 0, "%s: slyced is gone", after);
  bool fds_back = td_fd_count_wait(d, b->fds, TD_BASELINE_WAIT_MS);
  cr_assert(fds_back, "%s: slyced holds %d fds, %d at the baseline", after,
            td_fd_count(d), b->fds);
  long rss = td_rss_kib(d);
  cr_log_info("%s: fds %d, VmRSS %ld KiB (baseline %ld KiB, %+ld)", after,
              b->fds, rss, b->rss_kib, rss - b->rss_kib);
  if (td_rss_meaningful())
    cr_assert_leq(rss, b->rss_kib + slack_kib,
                  "%s: VmRSS %ld KiB, over the baseline %ld KiB + %ld KiB",
                  after, rss, b->rss_kib, slack_kib);
}

void td_assert_forward_ok(const td *d, const char *after) {
  sly_conn *c = NULL;
  sly_error err = {0};
  sly_hello_info info;
  long long end = td_now_ms() + 2000;
  int rc;
  /* BUSY for a moment after a case that filled max_conns_per_uid. */
  for (;;) {
    rc = sly_connect(d->sock, &c, &err);
    if (rc == 0)
      rc = sly_hello(c, "integ", &info, &err);
    if (rc != SLY_E_BUSY || td_now_ms() >= end)
      break;
    sly_close(c);
    c = NULL;
    td_sleep_ms(20);
  }
  cr_assert_eq(rc, 0, "%s: connect: %s (%s)", after, err.message,
               sly_code_name(rc));
  sly_arena *a = NULL;
  cr_assert_eq(sly_arena_create(c, 4096, &a, &err), 0, "%s: arena: %s", after,
               err.message);
  fx_array x, ref;
  fx_read("linear_w.in0.npy", &x);
  fx_read("linear_w.out0.npy", &ref);
  sly_tensor in = fx_put(a, &x);
  sly_result *r = NULL;
  rc = sly_forward(c, "lin", &in, 1, &r, &err);
  cr_assert_eq(rc, 0, "%s: good forward: %s: %s", after, sly_code_name(rc),
               err.message);
  fx_assert_match(sly_result_output(r, 0), &ref, FX_TOL_F32, after);
  sly_result_free(r);
  fx_array_free(&x);
  fx_array_free(&ref);
  sly_close(c);
}

void td_stop_clean(td *d) {
  cr_assert(!d->exited, "slyced exited before td_stop_clean (status 0x%x)",
            d->status);
  td_assert_serving(d);
  cr_assert(kill(d->pid, SIGTERM) == 0, "kill: %s", strerror(errno));
  bool gone = td_wait_exit(d, TD_EXIT_TIMEOUT_MS);
  char *err = td_read_tail(d->err_log, 1 << 16);
  bool report =
      err && (strstr(err, "Sanitizer") || strstr(err, "runtime error:"));
  free(err);
  if (!gone || !WIFEXITED(d->status) || WEXITSTATUS(d->status) != 0 ||
      report) {
    char *logs = td_logs(d, 8000);
    cr_assert_fail("after SIGTERM slyced %s (status 0x%x)%s; logs:\n%s",
                   gone ? "ended" : "still runs", d->status,
                   report ? " with a sanitizer report" : "", logs ? logs : "");
  }
  td_destroy(d);
}
