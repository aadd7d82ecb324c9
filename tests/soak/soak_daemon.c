/* soak_daemon.c — the soak's daemons: started from a config it writes,
 * watched through /proc, stopped with SIGTERM; and the reference outputs of
 * a daemon without budgets. */
#include "soak.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double sk_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sk_sleep(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Stops whatever is running and exits; for failures of the harness itself. */
_Noreturn void sk_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("soak: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  sk_daemon *all[] = {&g_soak, &g_ref_d};
  for (int i = 0; i < 2; i++)
    if (all[i]->pid > 0 && !all[i]->exited) {
      kill(all[i]->pid, SIGKILL);
      waitpid(all[i]->pid, NULL, 0);
      fprintf(stderr, "soak: kept %s\n", all[i]->dir);
    }
  exit(2);
}

static void sk_path(char out[SK_PATH], const char *dir, const char *name) {
  if (snprintf(out, SK_PATH, "%s/%s", dir, name) >= SK_PATH)
    sk_die("path too long: %s/%s", dir, name);
}

static void sk_write_config(const sk_daemon *d, bool budgets) {
  FILE *f = fopen(d->config, "w");
  if (f == NULL)
    sk_die("%s: %s", d->config, strerror(errno));
  fprintf(f,
          "{\"socket\": \"%s\", \"max_conns_per_uid\": %d,\n"
          " \"log\": {\"file\": \"%s\", \"level\": \"info\", \"console\": "
          "false},\n",
          d->sock, g_clients + 16, d->log);
  if (budgets)
    fprintf(f,
            " \"device\": \"sim\", \"gpu_strategy\": \"limit_gpu\", "
            "\"max_gpu_mem_mb\": %d, \"gpu_reserve_mb\": %d,\n"
            " \"max_cpu_mem_mb\": %d, \"disk_cache_path\": \"%s\",\n",
            SK_GPU_MB, SK_RESERVE_MB, SK_CPU_MB, d->cache);
  if (budgets && g_copy_gbps > 0)
    fprintf(f, " \"sim_copy_gbps\": %g,\n", g_copy_gbps);
  else
    fprintf(f, " \"device\": \"cpu\",\n");
  fprintf(f, " \"slices\": [");
  for (int i = 0; i < SK_SLICES; i++)
    fprintf(f,
            "%s\n  {\"name\": \"s%d\", \"constructor\": \"mlp\", \"config\": "
            "{\"in_features\": %d, \"hidden_features\": [%d], "
            "\"out_features\": %d, \"seed\": %d}}",
            i ? "," : "", i, SK_FEATURES, SK_HIDDEN, SK_FEATURES, 1000 + i);
  fprintf(f, "],\n \"pipelines\": {\"p\": [");
  for (int i = 0; i < SK_PIPE; i++)
    fprintf(f, "%s\"s%d\"", i ? ", " : "", i);
  fprintf(f, "]}}\n");
  if (fclose(f) != 0)
    sk_die("%s: write failed", d->config);
}

static int sk_try_hello(const char *sock) {
  sly_conn *c = NULL;
  sly_error err;
  sly_hello_info info;
  int r = sly_connect(sock, &c, &err);
  if (r == 0)
    r = sly_hello(c, "soak", &info, &err);
  sly_close(c);
  return r;
}

bool sk_alive(sk_daemon *d) {
  if (!d->exited && waitpid(d->pid, &d->status, WNOHANG) == d->pid)
    d->exited = true;
  return !d->exited;
}

/* Makes the folder, writes the config, starts slyced, waits for a hello. */
void sk_start(sk_daemon *d, bool budgets) {
  memset(d, 0, sizeof *d);
  snprintf(d->dir, sizeof d->dir, "/tmp/slysoak-XXXXXX");
  if (mkdtemp(d->dir) == NULL)
    sk_die("mkdtemp: %s", strerror(errno));
  sk_path(d->sock, d->dir, "s.sock");
  sk_path(d->config, d->dir, "slyced.json");
  sk_path(d->log, d->dir, "slyced.log");
  sk_path(d->err, d->dir, "stderr.log");
  sk_path(d->cache, d->dir, "cache");
  if (mkdir(d->cache, 0700) != 0)
    sk_die("mkdir %s: %s", d->cache, strerror(errno));
  sk_write_config(d, budgets);
  fflush(NULL);
  pid_t parent = getpid();
  d->pid = fork();
  if (d->pid < 0)
    sk_die("fork: %s", strerror(errno));
  if (d->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* no daemon outlives the soak */
    int in = open("/dev/null", O_RDONLY);
    int out = open(d->err, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (getppid() != parent || in < 0 || out < 0 || dup2(in, 0) < 0 ||
        dup2(out, 1) < 0 || dup2(out, 2) < 0)
      _exit(127);
    close_range(3, ~0U, 0);
    unsetenv("LISTEN_FDS");
    unsetenv("NOTIFY_SOCKET");
    execl(g_slyced, g_slyced, "-c", d->config, "--foreground", (char *)NULL);
    _exit(127);
  }
  for (double end = sk_now() + 120; sk_try_hello(d->sock) != 0;) {
    if (!sk_alive(d))
      sk_die("slyced exited at start (status 0x%x); see %s", d->status, d->err);
    if (sk_now() > end)
      sk_die("slyced did not answer within 120 s");
    sk_sleep(0.05);
  }
}

/* SIGTERM; returns the wait status, or -1 when it did not exit in 60 s. */
int sk_stop(sk_daemon *d) {
  if (d->exited)
    return d->status;
  kill(d->pid, SIGTERM);
  for (double end = sk_now() + 60; sk_alive(d);) {
    if (sk_now() > end) {
      kill(d->pid, SIGKILL);
      waitpid(d->pid, &d->status, 0);
      d->exited = true;
      return -1;
    }
    sk_sleep(0.05);
  }
  return d->status;
}

static int sk_rm_entry(const char *path, const struct stat *st, int flag,
                       struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

void sk_rm_all(const char *dir) {
  nftw(dir, sk_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

long sk_rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
  FILE *f = fopen(path, "r");
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

int sk_fds(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
  DIR *dir = opendir(path);
  int n = 0;
  struct dirent *e;
  while (dir && (e = readdir(dir)))
    n += e->d_name[0] != '.';
  if (dir)
    closedir(dir);
  return dir ? n : -1;
}

/* Counts lines of `path` holding `needle`; the first goes to stderr. */
int sk_grep(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  char line[1024];
  int n = 0;
  while (f && fgets(line, sizeof line, f))
    if (strstr(line, needle) && n++ == 0)
      fprintf(stderr, "soak: %s: %s", path, line);
  if (f)
    fclose(f);
  return n;
}

/* Waits until the daemon's fd count has not changed for a second (closes
 * are asynchronous), or equals `want` when want >= 0; at most 15 s. */
int sk_idle_fds(int want) {
  int last = -1, same = 0;
  for (double end = sk_now() + 15; sk_now() < end; sk_sleep(0.05)) {
    int n = sk_fds(g_soak.pid);
    same = n == last ? same + 1 : 0;
    last = n;
    if (n == want || (want < 0 && same >= 20))
      break;
  }
  return last;
}

/* Every slice and the pipeline on every input, from a daemon on the CPU
 * without budgets; the pipeline equals its slices chained. */
void sk_reference(void) {
  for (int i = 0; i < SK_INPUTS; i++)
    for (int j = 0; j < SK_FLOATS; j++)
      g_in[i][j] = (float)((j * 7 + i * 131) % 97 - 48) / 32.0f;
  sk_start(&g_ref_d, false);
  sk_client k = {.id = -1};
  sly_error err;
  if (sk_open(&k, g_ref_d.sock, &err) != 0)
    sk_die("reference: %s", err.message);
  for (int s = 0; s <= SK_SLICES; s++)
    for (int i = 0; i < SK_INPUTS; i++) {
      sly_tensor t;
      sk_tensor(&t, k.in[i], SK_FEATURES);
      char name[16];
      snprintf(name, sizeof name, "s%d", s);
      sly_result *r = NULL;
      int rc = s < SK_SLICES ? sly_forward(k.c, name, &t, 1, &r, &err)
                             : sly_forward_pipeline(k.c, "p", &t, 1, &r, &err);
      const sly_tensor *o = rc == 0 ? sly_result_output(r, 0) : NULL;
      if (o == NULL || sly_tensor_nbytes(o) != SK_BYTES)
        sk_die("reference %s: %s", name, rc ? err.message : "bad output");
      memcpy(g_ref[s][i], o->data, SK_BYTES);
      sly_result_free(r);
    }
  float *buf[2] = {k.out, sly_arena_alloc(k.a, SK_BYTES, 4096)};
  for (int i = 0; i < SK_INPUTS; i++) { /* chain s0..s3 by hand */
    memcpy(buf[0], g_in[i], SK_BYTES);
    for (int s = 0; s < SK_PIPE; s++) {
      sly_tensor t;
      sk_tensor(&t, buf[s % 2], SK_FEATURES);
      char name[16];
      snprintf(name, sizeof name, "s%d", s);
      sly_forward_opts o = {
          .slice = name, .out = buf[(s + 1) % 2], .out_bytes = SK_BYTES};
      sly_result *r = NULL;
      if (sly_forward_ex(k.c, &o, &t, 1, &r, &err) != 0)
        sk_die("reference chain %s: %s", name, err.message);
      sly_result_free(r);
    }
    if (memcmp(buf[SK_PIPE % 2], g_ref[SK_SLICES][i], SK_BYTES) != 0)
      sk_die("reference: the pipeline differs from its slices chained");
  }
  sk_close(&k);
  int st = sk_stop(&g_ref_d);
  if (st != 0)
    sk_die("reference daemon ended with status 0x%x; see %s", st, g_ref_d.err);
  sk_rm_all(g_ref_d.dir);
}
