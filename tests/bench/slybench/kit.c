/* kit.c — daemons, clocks and the result table of slybench. */
#include "kit.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#define BK_READY_TIMEOUT_S 60.0
#define BK_EXIT_TIMEOUT_S 60.0
#define BK_MAX_ROWS 32
#define BK_MAX_LIVE 4
#define BK_SETTLE_TIMEOUT_S 10.0

bk_env bk_env_now;

/* Daemons still running, so that bk_die can stop them on its way out. */
static bk_daemon *bk_live[BK_MAX_LIVE];

typedef struct {
  char id[8];
  char what[64];
  char measured[40];
  char floor[40];
  double ratio;
  bk_goal goal;
  double target;
} bk_result;

static bk_result bk_rows[BK_MAX_ROWS];
static size_t bk_n_rows;

double bk_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void bk_sleep(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int bk_rm_entry(const char *path, const struct stat *st, int flag,
                       struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

static void bk_forget(bk_daemon *d) {
  for (int i = 0; i < BK_MAX_LIVE; i++)
    if (bk_live[i] == d)
      bk_live[i] = NULL;
}

/* Kills and removes whatever is left; for bk_die. */
static void bk_kill_all(void) {
  for (int i = 0; i < BK_MAX_LIVE; i++) {
    bk_daemon *d = bk_live[i];
    if (d == NULL)
      continue;
    bk_live[i] = NULL;
    if (d->pid > 0) {
      kill(d->pid, SIGKILL);
      waitpid(d->pid, NULL, 0);
    }
    if (getenv("SLYBENCH_KEEP") != NULL)
      fprintf(stderr, "slybench: kept %s\n", d->dir);
    else if (d->dir[0] != '\0')
      nftw(d->dir, bk_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  }
}

void bk_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("slybench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  bk_kill_all();
  exit(1);
}

static void bk_path(char out[BK_PATH_MAX], const char *dir, const char *name) {
  if (snprintf(out, BK_PATH_MAX, "%s/%s", dir, name) >= BK_PATH_MAX)
    bk_die("path too long: %s/%s", dir, name);
}

void bk_prepare(bk_daemon *d) {
  memset(d, 0, sizeof(*d));
  snprintf(d->dir, sizeof(d->dir), "/tmp/slybench-XXXXXX");
  if (mkdtemp(d->dir) == NULL)
    bk_die("mkdtemp: %s", strerror(errno));
  bk_path(d->sock, d->dir, "s.sock");
  bk_path(d->config, d->dir, "slyced.json");
  bk_path(d->log, d->dir, "slyced.log");
  for (int i = 0; i < BK_MAX_LIVE; i++)
    if (bk_live[i] == NULL) {
      bk_live[i] = d;
      return;
    }
  bk_die("more than %d daemons at once", BK_MAX_LIVE);
}

static void bk_write_config(const bk_daemon *d, const char *extra_json) {
  FILE *f = fopen(d->config, "w");
  if (f == NULL)
    bk_die("%s: %s", d->config, strerror(errno));
  /* Info level: the daemon logs every move, which costs nothing measurable
   * at these sizes and tells what happened when a figure looks odd. */
  fprintf(f,
          "{\"socket\": \"%s\",\n"
          " \"log\": {\"file\": \"%s\", \"level\": \"info\", "
          "\"console\": false}%s%s}\n",
          d->sock, d->log, extra_json ? ",\n " : "",
          extra_json ? extra_json : "");
  if (fclose(f) != 0)
    bk_die("%s: write failed", d->config);
}

/* Runs in the forked child: never returns. */
static void bk_exec(const bk_daemon *d, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* no daemon outlives the benchmark */
  if (getppid() != parent)
    _exit(127);
  char err_log[BK_PATH_MAX];
  bk_path(err_log, d->dir, "stderr.log");
  int in = open("/dev/null", O_RDONLY);
  int out = open(err_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
      dup2(out, 2) < 0)
    _exit(127);
  close_range(3, ~0U, 0);
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("NOTIFY_SOCKET");
  execl(bk_env_now.slyced, bk_env_now.slyced, "-c", d->config, "--foreground",
        (char *)NULL);
  _exit(127);
}

/* One connect and hello; 0 or the sly_code. */
static int bk_try_hello(const bk_daemon *d) {
  sly_conn *c = NULL;
  sly_error err;
  sly_hello_info info;
  int r = sly_connect(d->sock, &c, &err);
  if (r == 0)
    r = sly_hello(c, "slybench", &info, &err);
  sly_close(c);
  return r;
}

void bk_launch(bk_daemon *d, const char *extra_json) {
  if (access(bk_env_now.slyced, X_OK) != 0)
    bk_die("%s is not built", bk_env_now.slyced);
  bk_write_config(d, extra_json);
  fflush(NULL);
  pid_t parent = getpid();
  d->pid = fork();
  if (d->pid < 0)
    bk_die("fork: %s", strerror(errno));
  if (d->pid == 0)
    bk_exec(d, parent);
  /* READY comes once the socket listens, so a hello that works is READY. */
  double end = bk_now() + BK_READY_TIMEOUT_S;
  for (;;) {
    if (bk_try_hello(d) == 0)
      return;
    int status;
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
      d->pid = 0;
      bk_die("slyced exited at start (status 0x%x); see %s/stderr.log and "
             "%s",
             status, d->dir, d->log);
    }
    if (bk_now() > end)
      bk_die("slyced did not answer within %.0f s", BK_READY_TIMEOUT_S);
    bk_sleep(0.02);
  }
}

void bk_stop(bk_daemon *d) {
  if (d->pid > 0) {
    kill(d->pid, SIGTERM);
    double end = bk_now() + BK_EXIT_TIMEOUT_S;
    int status = 0;
    while (waitpid(d->pid, &status, WNOHANG) == 0) {
      if (bk_now() > end) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
        break;
      }
      bk_sleep(0.01);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fprintf(stderr, "slybench: slyced ended with status 0x%x\n", status);
    d->pid = 0;
  }
  bk_forget(d);
  if (getenv("SLYBENCH_KEEP") == NULL)
    nftw(d->dir, bk_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  else
    fprintf(stderr, "slybench: kept %s\n", d->dir);
}

sly_conn *bk_connect(const bk_daemon *d) {
  sly_conn *c = NULL;
  sly_error err = {0};
  sly_hello_info info;
  int r = sly_connect(d->sock, &c, &err);
  if (r == 0)
    r = sly_hello(c, "slybench", &info, &err);
  if (r < 0)
    bk_die("connect %s: %s: %s", d->sock, sly_code_name(r), err.message);
  return c;
}

bool bk_stat_opt(sly_conn *c, const char *path, double *out) {
  char *text = NULL;
  sly_error err = {0};
  int r = sly_request_json(c, "{\"op\": \"stats\"}", &text, &err);
  if (r < 0)
    bk_die("stats: %s: %s", sly_code_name(r), err.message);
  cJSON *j = cJSON_Parse(text);
  free(text);
  const cJSON *at = j;
  char key[64];
  for (const char *p = path; at != NULL && *p != '\0';) {
    size_t n = strcspn(p, ".");
    if (n >= sizeof(key))
      bk_die("stats path too long: %s", path);
    memcpy(key, p, n);
    key[n] = '\0';
    at = cJSON_GetObjectItemCaseSensitive(at, key);
    p += n + (p[n] == '.');
  }
  bool found = cJSON_IsNumber(at);
  if (found)
    *out = at->valuedouble;
  cJSON_Delete(j);
  return found;
}

double bk_stat(sly_conn *c, const char *path) {
  double v;
  if (!bk_stat_opt(c, path, &v))
    bk_die("stats reply has no number at %s", path);
  return v;
}

void bk_print_prefetch(sly_conn *c) {
  double done, hits, wasted = 0;
  if (!bk_stat_opt(c, "prefetch.done", &done) ||
      !bk_stat_opt(c, "prefetch.hits", &hits))
    return;
  bk_stat_opt(c, "prefetch.wasted_bytes", &wasted);
  printf("   the daemon's prefetch over the whole run: %.0f done, %.0f hits, "
         "%.0f MiB wasted\n",
         done, hits, wasted / BK_MIB);
}

void bk_settle(sly_conn *c, const char *path) {
  double end = bk_now() + BK_SETTLE_TIMEOUT_S;
  double last = bk_stat(c, path);
  while (bk_now() < end) {
    bk_sleep(0.05);
    double pending = 0, now = bk_stat(c, path);
    bk_stat_opt(c, "prefetch.pending", &pending);
    if (pending == 0 && now == last)
      return;
    last = now;
  }
  fprintf(stderr, "slybench: %s still moving after %.0f s\n", path,
          BK_SETTLE_TIMEOUT_S);
}

static int bk_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double bk_median(double *v, size_t n) {
  if (n == 0)
    return 0;
  qsort(v, n, sizeof(*v), bk_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void *bk_alloc_touched(size_t bytes) {
  size_t span = (bytes + 4095) / 4096 * 4096;
  void *p = aligned_alloc(4096, span ? span : 4096);
  if (p == NULL)
    bk_die("out of memory for %zu bytes", bytes);
  memset(p, 0, span);
  return p;
}

uint64_t bk_free_bytes(const char *path) {
  struct statvfs s;
  if (statvfs(path, &s) != 0)
    return 0;
  return (uint64_t)s.f_bavail * s.f_frsize;
}

void bk_fmt_time(char *out, size_t n, double s) {
  if (s < 1e-3)
    snprintf(out, n, "%.1f us", s * 1e6);
  else if (s < 1.0)
    snprintf(out, n, "%.2f ms", s * 1e3);
  else
    snprintf(out, n, "%.2f s", s);
}

void bk_row(const char *id, const char *what, const char *measured,
            const char *floor, double ratio, bk_goal goal, double target) {
  if (bk_n_rows == BK_MAX_ROWS)
    bk_die("more than %d result rows", BK_MAX_ROWS);
  bk_result *r = &bk_rows[bk_n_rows++];
  snprintf(r->id, sizeof(r->id), "%s", id);
  snprintf(r->what, sizeof(r->what), "%s", what);
  snprintf(r->measured, sizeof(r->measured), "%s", measured);
  snprintf(r->floor, sizeof(r->floor), "%s", floor);
  r->ratio = ratio;
  r->goal = goal;
  r->target = target;
}

static const char *bk_verdict(const bk_result *r) {
  if (r->goal == BK_NONE)
    return "-";
  bool met = r->goal == BK_AT_MOST ? r->ratio <= r->target
                                   : r->ratio >= r->target;
  return met ? "target met" : "target missed";
}

void bk_table_print(void) {
  printf("\n%-3s %-40s %-16s %-16s %7s %7s  %s\n", "#", "what", "measured",
         "floor / ref", "ratio", "target", "verdict");
  for (size_t i = 0; i < bk_n_rows; i++) {
    const bk_result *r = &bk_rows[i];
    char target[16] = "-";
    if (r->goal != BK_NONE)
      snprintf(target, sizeof(target), "%s%.2f",
               r->goal == BK_AT_MOST ? "<=" : ">=", r->target);
    printf("%-3s %-40s %-16s %-16s %6.2fx %7s  %s\n", r->id, r->what,
           r->measured, r->floor, r->ratio, target, bk_verdict(r));
  }
}
