/* soak.h — what the parts of the soak program share (tests/soak/).
 *
 * Owns nothing itself: the daemons and figures live in soak.c, the clients
 * in soak_mix.c, the daemons' start, stop and /proc readings in
 * soak_daemon.c. The globals below are the run's shared state: one run per
 * process, read by every client thread.
 */
#ifndef SLY_SOAK_H
#define SLY_SOAK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "slyce.h"

#define SK_ROWS 4
#define SK_FEATURES 1024
#define SK_FLOATS (SK_ROWS * SK_FEATURES)
#define SK_BYTES (SK_FLOATS * sizeof(float))
#define SK_HIDDEN 512  /* 4 MiB + 8 KiB of weights per slice */
#define SK_SLICES 10   /* 40 MiB: about twice each budget */
#define SK_PIPE 4      /* the pipeline "p" is s0..s3 */
#define SK_PIN_FIRST 8 /* only s8, s9 are pinned, and never evicted */
#define SK_INPUTS 4
/* Each budget holds five slices: a pinned one, the one running, the next of
 * a pipeline, one moved ahead by prefetch and one a client's load moves. */
#define SK_GPU_MB 26
#define SK_RESERVE_MB 4
#define SK_CPU_MB 26
#define SK_HELD 4
#define SK_ARENA (1u << 20)
#define SK_PATH 200
#define SK_MAX_PRINTED 30
#define SK_SAMPLE_S 0.2
/* RSS may grow by this much from start to end: glibc keeps some of what
 * it freed, per-thread arenas settle at their own pace. */
#define SK_RSS_SLACK_KIB (16 * 1024)
#define SK_RSS_SLACK_FRAC 0.05
#define SK_P50_TARGET 1.5 /* reported only: the machine is shared */
#define SK_KINDS 9

typedef struct {
  char dir[SK_PATH], sock[SK_PATH], config[SK_PATH], log[SK_PATH];
  char err[SK_PATH], cache[SK_PATH];
  pid_t pid;
  int status;
  bool exited;
} sk_daemon;

typedef struct {
  double *lat; /* single-slice forward latencies, ms (under g_mu) */
  size_t n, cap;
  long *rss; /* VmRSS samples, KiB (main thread only) */
  size_t n_rss;
  int fds_max;
  double secs;
  uint64_t ops, unexp, evictions;
} sk_window;

typedef struct {
  int id;
  uint64_t rng;
  sly_conn *c;
  sly_arena *a;
  float *in[SK_INPUTS];
  float *out;
  sly_result *held[SK_HELD];
  int held_ref[SK_HELD];
  size_t n_held;
  unsigned gen; /* connections opened: a change means the arenas are gone */
} sk_client;

/* soak.c: options, the two daemons, inputs and references, the windows. */
extern const char *g_slyced;
extern int g_clients;
extern double g_copy_gbps; /* the soaked daemon's sim_copy_gbps; 0: none */
extern sk_daemon g_soak, g_ref_d;
extern float g_in[SK_INPUTS][SK_FLOATS];
/* References: [slice][input], and the pipeline's after the slices. */
extern float g_ref[SK_SLICES + 1][SK_INPUTS][SK_FLOATS];
extern sk_window *g_w;
extern _Atomic int g_win;       /* the window clients record latencies in */
extern atomic_bool g_stop;      /* the daemon died: clients stop */
extern pthread_mutex_t g_mu;    /* windows' latencies, printed errors */
extern pthread_barrier_t g_bar; /* clients and main, at each phase's end */
extern double g_phase_end;      /* set by main between barriers */

/* soak_mix.c: counters of the whole run. */
extern _Atomic uint64_t g_ops, g_unexp, g_wrong, g_expected, g_fwd;
extern _Atomic uint64_t g_kind[SK_KINDS];
extern const char *const sk_kind_name[SK_KINDS];

/* soak_daemon.c */
double sk_now(void);
void sk_sleep(double s);
/* Prints "soak: <message>", kills the daemons (keeping their folders) and
 * exits 2: for failures of the harness itself, not of the daemon. */
_Noreturn void sk_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* Makes a folder in /tmp, writes the config (budgets: the soaked daemon;
 * else the CPU reference), starts slyced and waits for a hello. */
void sk_start(sk_daemon *d, bool budgets);
/* SIGTERM; the wait status, or -1 when it was killed after 60 s. */
int sk_stop(sk_daemon *d);
bool sk_alive(sk_daemon *d);
void sk_rm_all(const char *dir);
long sk_rss_kib(pid_t pid); /* VmRSS */
int sk_fds(pid_t pid);      /* entries of /proc/PID/fd */
/* The soaked daemon's fds once they stop changing, or once they equal
 * `want` (>= 0); at most 15 s. */
int sk_idle_fds(int want);
/* Lines of `path` holding `needle`; the first goes to stderr. */
int sk_grep(const char *path, const char *needle);
/* Starts the reference daemon, fills g_in and g_ref, stops it. */
void sk_reference(void);

/* soak_mix.c */
/* A float32 [SK_ROWS, cols] tensor at `data`. */
void sk_tensor(sly_tensor *t, void *data, uint64_t cols);
int sk_open(sk_client *k, const char *sock, sly_error *err);
/* Frees held results, closes the connection (and its arenas). */
void sk_close(sk_client *k);
/* Runs `slice` (-1: the pipeline) on a random input, checks the output. */
void sk_forward(sk_client *k, int slice, int act, float *in, void *out,
                size_t out_bytes, bool hold);
/* Stats as JSON, with the budgets checked; evictions so far when asked. */
void sk_stats(sk_client *k, double *evictions);
/* Counts and prints (the first few) an unexpected outcome; k may be NULL. */
void sk_unexpected(const sk_client *k, bool wrong, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A client thread: two phases (warm-up, soak) of the mix, each ended by
 * closing its connection and meeting main at g_bar twice. */
void *sk_client_main(void *arg);

#endif
