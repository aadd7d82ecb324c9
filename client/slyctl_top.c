/* slyctl_top.c — `slyctl top`: a live view of slyced, refreshed in place.
 *
 * Each frame is one `stats` and one `list`: the daemon, memory per tier,
 * bytes moved per path (the average so far and the rate since the last
 * frame), hits, evictions, prefetch, then the slices' table. On a terminal
 * each frame replaces the last; into a pipe the frames follow each other,
 * separated by a blank line, so that scripts and tests can read them.
 */
#include "slyctl_top.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "slyctl_fmt.h"
#include "slyctl_forward.h"

#define TOP_INTERVAL_MIN_MS 100
#define TOP_INTERVAL_MAX_MS 60000
#define TOP_INTERVAL_DEFAULT_MS 1000

typedef struct {
  long interval_ms;
  long count; /* frames to show; 0 = until interrupted */
} top_opts;

static const char *const top_paths[] = {"disk_to_cpu", "cpu_to_gpu",
                                        "disk_to_gpu", "build"};
#define TOP_PATHS 4

/* A positive integer in [lo, hi], or -1. */
static long top_number(const char *s, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *s == '\0' || *end != '\0' || v < lo || v > hi)
    return -1;
  return v;
}

static int top_parse(int argc, char **argv, top_opts *o) {
  o->interval_ms = TOP_INTERVAL_DEFAULT_MS;
  o->count = 0;
  for (int i = 0; i < argc; i++) {
    bool interval = strcmp(argv[i], "--interval") == 0;
    if (!interval && strcmp(argv[i], "--count") != 0) {
      fprintf(stderr, "slyctl: top: unknown argument '%s'\n", argv[i]);
      return SLY__CTL_USAGE;
    }
    if (i + 1 == argc) {
      fprintf(stderr, "slyctl: top: %s needs a value\n", argv[i]);
      return SLY__CTL_USAGE;
    }
    long v = interval ? top_number(argv[i + 1], TOP_INTERVAL_MIN_MS,
                                   TOP_INTERVAL_MAX_MS)
                      : top_number(argv[i + 1], 1, 1000000);
    if (v < 0) {
      fprintf(stderr, "slyctl: top: %s '%s': want %s\n", argv[i], argv[i + 1],
              interval ? "milliseconds, 100..60000" : "a count, 1..1000000");
      return SLY__CTL_USAGE;
    }
    *(interval ? &o->interval_ms : &o->count) = v;
    i++;
  }
  return 0;
}

int sly__ctl_top_check(int argc, char **argv) {
  top_opts o;
  return top_parse(argc, argv, &o);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "12.0 MiB of 64.0 MiB" for a tier, "-" parts when the reply lacks them. */
static void print_tier(const cJSON *r, const char *tier) {
  char path[64], a[32], b[32];
  snprintf(path, sizeof(path), "memory.%s.used", tier);
  double used = sly__ctl_jnum(r, path);
  snprintf(path, sizeof(path), "memory.%s.budget", tier);
  double budget = sly__ctl_jnum(r, path);
  printf("  %s %s of %s", tier, sly__ctl_fmt_bytes(used, a, sizeof(a)),
         budget > 0 ? sly__ctl_fmt_bytes(budget, b, sizeof(b)) : "no budget");
}

static void print_frame(const cJSON *r, const double prev[TOP_PATHS],
                        double dt) {
  char up[32], rss[32], conns[32], reqs[32], errs[32], p50[32], p99[32];
  printf("slyced: up %s, rss %s, %s connections, %s requests (%s errors), "
         "p50 %s, p99 %s\n",
         sly__ctl_fmt_duration(sly__ctl_jnum(r, "uptime_s"), up, sizeof(up)),
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "process.rss_bytes"), rss,
                            sizeof(rss)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "connections.open"), conns,
                            sizeof(conns)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "requests.total"), reqs,
                            sizeof(reqs)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "requests.errors"), errs,
                            sizeof(errs)),
         sly__ctl_fmt_us(sly__ctl_jnum(r, "requests.latency_us.p50"), p50,
                         sizeof(p50)),
         sly__ctl_fmt_us(sly__ctl_jnum(r, "requests.latency_us.p99"), p99,
                         sizeof(p99)));
  char a[32], b[32];
  printf("memory");
  print_tier(r, "gpu");
  printf(" (high %s)",
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "memory.gpu.high_water"), a,
                            sizeof(a)));
  print_tier(r, "cpu");
  printf(" (pinned %s)  disk %s written\n",
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "memory.cpu.pinned"), a,
                            sizeof(a)),
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "memory.disk.written"), b,
                            sizeof(b)));
  printf("moved ");
  for (int i = 0; i < TOP_PATHS; i++) {
    char path[64];
    snprintf(path, sizeof(path), "transfers.%s.bytes", top_paths[i]);
    double bytes = sly__ctl_jnum(r, path);
    snprintf(path, sizeof(path), "transfers.%s.gbps", top_paths[i]);
    double gbps = sly__ctl_jnum(r, path);
    double rate = dt > 0 && !isnan(prev[i]) ? (bytes - prev[i]) / dt : NAN;
    /* Both rates in GB/s (10^9), as stats gives them, so that they compare
     * at a glance; amounts stay in binary units like every other. */
    if (isnan(rate))
      snprintf(b, sizeof(b), "-");
    else
      snprintf(b, sizeof(b), "%.2f", rate / 1e9);
    printf("  %s %s at %.2f GB/s, now %s GB/s", top_paths[i],
           sly__ctl_fmt_bytes(bytes, a, sizeof(a)), isnan(gbps) ? 0.0 : gbps,
           b);
  }
  printf("\nslices   hits %.0f, misses %.0f; evicted: policy %.0f, explicit "
         "%.0f, removed %.0f, failed %.0f\n",
         sly__ctl_jnum(r, "hits"), sly__ctl_jnum(r, "misses"),
         sly__ctl_jnum(r, "evictions.policy"),
         sly__ctl_jnum(r, "evictions.explicit"),
         sly__ctl_jnum(r, "evictions.removed"),
         sly__ctl_jnum(r, "evictions.failed"));
  printf("prefetch done %.0f, hits %.0f, wasted %s, pending %.0f (depth "
         "%.0f)\n\n",
         sly__ctl_jnum(r, "prefetch.done"), sly__ctl_jnum(r, "prefetch.hits"),
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "prefetch.wasted_bytes"), a,
                            sizeof(a)),
         sly__ctl_jnum(r, "prefetch.pending"),
         sly__ctl_jnum(r, "prefetch.depth"));
}

int sly__ctl_top(sly_conn *c, int argc, char **argv, sly_error *err) {
  top_opts o;
  int rc = top_parse(argc, argv, &o);
  if (rc != 0)
    return rc;
  bool tty = isatty(STDOUT_FILENO);
  double prev[TOP_PATHS] = {NAN, NAN, NAN, NAN}, prev_t = 0;
  for (long frame = 0; o.count == 0 || frame < o.count; frame++) {
    if (frame > 0) {
      struct timespec ts = {o.interval_ms / 1000,
                            (o.interval_ms % 1000) * 1000000};
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    }
    cJSON *r = NULL;
    sly_slice_list *l = NULL;
    if ((rc = sly__ctl_request(c, "stats", &r, err)) < 0 ||
        (rc = sly_list(c, &l, err)) < 0) {
      cJSON_Delete(r);
      return rc;
    }
    double t = now_s();
    printf(tty ? "\033[H\033[J" : frame > 0 ? "\n" : "");
    print_frame(r, prev, frame > 0 ? t - prev_t : 0);
    rc = sly__ctl_print_slices(l, err);
    for (int i = 0; i < TOP_PATHS; i++) {
      char path[64];
      snprintf(path, sizeof(path), "transfers.%s.bytes", top_paths[i]);
      prev[i] = sly__ctl_jnum(r, path);
    }
    prev_t = t;
    cJSON_Delete(r);
    sly_slice_list_free(l);
    if (rc < 0)
      return rc;
    if (fflush(stdout) != 0) {
      snprintf(err->message, sizeof(err->message), "stdout: %s",
               strerror(errno));
      return err->code = SLY_E_IO;
    }
  }
  return 0;
}
