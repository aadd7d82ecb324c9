/* soak.c — many clients drive one slyced with evictions all the time for a
 * set time, and the daemon's RSS, open fds and forward latency are compared
 * from start to end (make soak; tests/soak/README.md).
 *
 * Owns: the run: options, the soaked daemon (tiny GPU and host budgets, a
 * disk cache) and its reference without budgets, the client threads, the
 * windows' figures, the table and the verdict. Every reply is checked;
 * forward outputs must equal the reference's bit for bit.
 */
#include "soak.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *g_slyced;
int g_clients = 16;
double g_copy_gbps;
static int g_windows = 10;
static double g_seconds = 60;
sk_daemon g_soak, g_ref_d;
float g_in[SK_INPUTS][SK_FLOATS];
float g_ref[SK_SLICES + 1][SK_INPUTS][SK_FLOATS];
sk_window *g_w;
_Atomic int g_win;
atomic_bool g_stop;
pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_barrier_t g_bar;
double g_phase_end;

static double sk_pct(double *v, size_t n, double p) {
  if (n == 0)
    return NAN;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

static int sk_cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int sk_cmp_l(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

static long sk_rss_median(sk_window *w) {
  if (w->n_rss == 0)
    return -1;
  qsort(w->rss, w->n_rss, sizeof *w->rss, sk_cmp_l);
  return w->rss[w->n_rss / 2];
}

/* Evictions so far, from a short-lived connection. */
static double sk_evictions(void) {
  sk_client k = {.id = -1};
  sly_error err;
  double ev = -1;
  if (sly_connect(g_soak.sock, &k.c, &err) == 0)
    sk_stats(&k, &ev);
  sly_close(k.c);
  return ev;
}

/* Samples the daemon until `end`, then prints window w's row; at the end
 * of a phase, once the clients' last requests are in (they meet main at
 * g_bar). */
static void sk_window_run(int w, double end, bool phase_end, uint64_t *ops0,
                          uint64_t *unexp0, double *ev0) {
  sk_window *win = &g_w[w];
  double start = sk_now();
  atomic_store(&g_win, w);
  while (sk_now() < end && !atomic_load(&g_stop)) {
    sk_sleep(SK_SAMPLE_S);
    if (!sk_alive(&g_soak)) {
      atomic_store(&g_stop, true);
      break;
    }
    win->rss = realloc(win->rss, (win->n_rss + 1) * sizeof *win->rss);
    if (win->rss == NULL)
      sk_die("out of memory");
    win->rss[win->n_rss++] = sk_rss_kib(g_soak.pid);
    int fds = sk_fds(g_soak.pid);
    win->fds_max = fds > win->fds_max ? fds : win->fds_max;
  }
  if (phase_end)
    pthread_barrier_wait(&g_bar);
  double ev = sk_alive(&g_soak) ? sk_evictions() : *ev0;
  pthread_mutex_lock(&g_mu);
  win->secs = sk_now() - start;
  win->ops = atomic_load(&g_ops) - *ops0;
  win->unexp = atomic_load(&g_unexp) + atomic_load(&g_wrong) - *unexp0;
  win->evictions = (uint64_t)(ev - *ev0);
  *ops0 += win->ops;
  *unexp0 += win->unexp;
  *ev0 = ev;
  if (win->n > 0)
    qsort(win->lat, win->n, sizeof *win->lat, sk_cmp_d);
  pthread_mutex_unlock(&g_mu);
  long med = sk_rss_median(win);
  printf("%3d %-7s %6.1f %7.0f %7.0f %6llu %6llu %8.1f %8.1f %5d %8.2f %8.2f\n",
         w, w == 0 ? "warm-up" : "soak", win->secs,
         (double)win->ops / win->secs, (double)win->n / win->secs,
         (unsigned long long)win->unexp, (unsigned long long)win->evictions,
         med / 1024.0, win->n_rss ? win->rss[win->n_rss - 1] / 1024.0 : -1.0,
         win->fds_max, sk_pct(win->lat, win->n, 0.5),
         sk_pct(win->lat, win->n, 0.99));
  fflush(stdout);
}

static void sk_options(int argc, char **argv) {
  const char *e;
  if ((e = getenv("SOAK_SECONDS")))
    g_seconds = atof(e);
  if ((e = getenv("SOAK_CLIENTS")))
    g_clients = atoi(e);
  if ((e = getenv("SOAK_COPY_GBPS")) && *e)
    g_copy_gbps = atof(e);
  g_slyced = getenv("SOAK_SLYCED");
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--slyced"))
      g_slyced = argv[i + 1];
    else if (!strcmp(argv[i], "--seconds"))
      g_seconds = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--clients"))
      g_clients = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--windows"))
      g_windows = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--copy-gbps"))
      g_copy_gbps = atof(argv[i + 1]);
    else
      sk_die("unknown option %s", argv[i]);
  }
  if (g_slyced == NULL || access(g_slyced, X_OK) != 0)
    sk_die("usage: soak --slyced PATH [--seconds S] [--clients N] [--windows W]"
           " [--copy-gbps G] (slyced: %s)",
           g_slyced ? g_slyced : "not given");
  if (g_clients < 1 || g_clients > 1000 || g_windows < 2 ||
      g_seconds < g_windows)
    sk_die(
        "need 1..1000 clients, 2+ windows, and a second per window at least");
  if (!(g_copy_gbps >= 0 && g_copy_gbps <= 10000)) /* sim_copy_gbps' range */
    sk_die("--copy-gbps: 0 (copies at memcpy speed) to 10000");
}

static bool sk_rss_judged(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return false; /* the quarantine keeps freed memory resident on purpose */
#else
  const char *e = getenv("SOAK_RSS_CHECK");
  return e == NULL || strcmp(e, "0") != 0;
#endif
}

/* Prints a verdict line; returns whether it passed. */
static bool sk_verdict(const char *what, bool ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  %-10s %-6s ", what, ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  putchar('\n');
  va_end(ap);
  return ok;
}

/* What the run leaves for the verdict. */
typedef struct {
  bool alive;
  int fds_start, fds_end; /* with no client connected */
  long rss_start, rss_end;
  int status, san, log_errors;
} sk_outcome;

/* Warm-up window, idle figures, the soak's windows, idle figures again. */
static void sk_run(sk_client *ks, pthread_t *th, sk_outcome *o) {
  double win_s = g_seconds / g_windows, ev = sk_evictions();
  uint64_t ops0 = 0, unexp0 = 0;
  pthread_barrier_init(&g_bar, NULL, (unsigned)g_clients + 1);
  g_phase_end = sk_now() + win_s;
  for (int i = 0; i < g_clients; i++) {
    ks[i] = (sk_client){.id = i, .rng = 0x50a4ull * 977 + (uint64_t)i};
    if (pthread_create(&th[i], NULL, sk_client_main, &ks[i]) != 0)
      sk_die("pthread_create failed");
  }
  sk_window_run(0, g_phase_end, true, &ops0, &unexp0, &ev);
  o->fds_start = sk_idle_fds(-1);
  o->rss_start = sk_rss_kib(g_soak.pid);
  g_phase_end = sk_now() + win_s * (g_windows - 1);
  pthread_barrier_wait(&g_bar);
  for (int w = 1; w < g_windows; w++)
    sk_window_run(w, g_phase_end - win_s * (g_windows - 1 - w),
                  w == g_windows - 1, &ops0, &unexp0, &ev);
  o->alive = sk_alive(&g_soak);
  o->fds_end = o->alive ? sk_idle_fds(o->fds_start) : -1;
  o->rss_end = o->alive ? sk_rss_kib(g_soak.pid) : -1;
  pthread_barrier_wait(&g_bar);
  for (int i = 0; i < g_clients; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&g_bar);
}

/* A fresh connection gets every answer right once more; then SIGTERM, and
 * the daemon's stderr and log are read. */
static void sk_finish(sk_outcome *o) {
  sk_client k = {.id = -1, .rng = 1};
  sly_error err;
  if (o->alive && sk_open(&k, g_soak.sock, &err) == 0) {
    for (int s = 0; s < SK_SLICES; s++)
      sk_forward(&k, s, 0, NULL, NULL, 0, false);
    sk_forward(&k, -1, 0, NULL, NULL, 0, false);
    sk_stats(&k, NULL);
    sk_close(&k);
  } else if (o->alive) {
    sk_unexpected(NULL, false, "final connect: %s", err.message);
  }
  o->status = sk_stop(&g_soak);
  o->san =
      sk_grep(g_soak.err, "Sanitizer") + sk_grep(g_soak.err, "runtime error");
  o->log_errors = sk_grep(g_soak.log, " error ");
}

/* Prints the counts and the verdict; returns whether the soak passed. */
static bool sk_report(const sk_outcome *o) {
  sk_window *first = &g_w[1], *last = &g_w[g_windows - 1];
  long first_med = sk_rss_median(first), last_med = sk_rss_median(last);
  long bound = SK_RSS_SLACK_KIB + (long)(SK_RSS_SLACK_FRAC * (double)first_med);
  long qbound =
      SK_RSS_SLACK_KIB + (long)(SK_RSS_SLACK_FRAC * (double)o->rss_start);
  double p50a = sk_pct(first->lat, first->n, 0.5);
  double p50b = sk_pct(last->lat, last->n, 0.5);
  bool judged = sk_rss_judged(), ok = true;
  uint64_t evictions = 0;
  for (int w = 0; w < g_windows; w++)
    evictions += g_w[w].evictions;
  printf("ops:");
  for (int i = 0; i < SK_KINDS; i++)
    printf(" %s %llu%s", sk_kind_name[i], (unsigned long long)g_kind[i],
           i + 1 < SK_KINDS ? "," : "");
  printf(" (%llu failed as they must)\n", (unsigned long long)g_expected);
  printf("verdict (window 1 against window %d; idle = no client connected):\n",
         g_windows - 1);
  ok &= sk_verdict("daemon", o->alive && o->status == 0 && o->san == 0,
                   "%s, exit status 0x%x after SIGTERM, %d sanitizer lines, "
                   "%d error lines in its log (reported)",
                   o->alive ? "alive to the end" : "DIED during the run",
                   o->status, o->san, o->log_errors);
  ok &= sk_verdict("outputs", g_wrong == 0, "%llu forwards, %llu wrong",
                   (unsigned long long)g_fwd, (unsigned long long)g_wrong);
  ok &= sk_verdict("errors", g_unexp == 0, "%llu unexpected",
                   (unsigned long long)g_unexp);
  ok &= sk_verdict("evictions", evictions > 0, "%llu (must happen)",
                   (unsigned long long)evictions);
  ok &= sk_verdict("fds idle", o->fds_start >= 0 && o->fds_end == o->fds_start,
                   "%d at start, %d at end", o->fds_start, o->fds_end);
  bool rss_ok =
      last_med - first_med <= bound && o->rss_end - o->rss_start <= qbound;
  ok &= sk_verdict("rss", rss_ok || !judged,
                   "window median %.1f -> %.1f MiB (%+.1f), idle %.1f -> %.1f "
                   "MiB (%+.1f); bound +%.1f / +%.1f MiB%s",
                   first_med / 1024.0, last_med / 1024.0,
                   (last_med - first_med) / 1024.0, o->rss_start / 1024.0,
                   o->rss_end / 1024.0, (o->rss_end - o->rss_start) / 1024.0,
                   bound / 1024.0, qbound / 1024.0,
                   judged ? "" : " (not judged: sanitizer)");
  printf("  %-10s %-6s p50 %.2f -> %.2f ms (x%.2f), p99 %.2f -> %.2f ms\n",
         "latency", "report", p50a, p50b, p50b / p50a,
         sk_pct(first->lat, first->n, 0.99), sk_pct(last->lat, last->n, 0.99));
  bool target = ok && rss_ok && p50b / p50a <= SK_P50_TARGET;
  printf("target (no growth beyond noise: rss within bound, fds equal, p50 "
         "within x%.1f): %s\n",
         SK_P50_TARGET, target ? "met" : "missed");
  return ok;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  sk_options(argc, argv);
  setvbuf(stdout, NULL, _IOLBF, 0);
  g_w = calloc((size_t)g_windows, sizeof *g_w);
  sk_client *ks = calloc((size_t)g_clients, sizeof *ks);
  pthread_t *th = calloc((size_t)g_clients, sizeof *th);
  if (!g_w || !ks || !th)
    sk_die("out of memory");
  sk_reference();
  sk_start(&g_soak, true);
  char pace[48] = "memcpy speed";
  if (g_copy_gbps > 0)
    snprintf(pace, sizeof pace, "%g GB/s (sim_copy_gbps)", g_copy_gbps);
  printf("soak: %s, %d clients, %.0f s in %d windows (the first is warm-up); "
         "%d mlp slices of %.1f MiB, gpu %d MiB (reserve %d), cpu %d MiB, disk "
         "cache, copies at %s; folder %s\n",
         g_slyced, g_clients, g_seconds, g_windows, SK_SLICES,
         (2.0 * SK_HIDDEN * SK_FEATURES * 4 + 8192) / 1048576.0, SK_GPU_MB,
         SK_RESERVE_MB, SK_CPU_MB, pace, g_soak.dir);
  printf("win phase     secs   ops/s   fwd/s  unexp  evict  rss_med  rss_max "
         "  fds   p50_ms   p99_ms\n");
  sk_outcome o = {0};
  sk_run(ks, th, &o);
  sk_finish(&o);
  bool ok = sk_report(&o);
  printf("soak: %s\n", ok ? "PASS" : "FAIL");
  if (ok && !getenv("SOAK_KEEP"))
    sk_rm_all(g_soak.dir);
  else
    printf("soak: kept %s\n", g_soak.dir);
  for (int w = 0; w < g_windows; w++) {
    free(g_w[w].lat);
    free(g_w[w].rss);
  }
  free(g_w);
  free(ks);
  free(th);
  return ok ? 0 : 1;
}
