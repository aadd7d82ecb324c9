/* rpc.c — bench 1: what a forward through libslyce costs over a raw round
 * trip on a Unix socket, one client at a time and with 1, 4 and 16 clients.
 *
 * The floor is an echo server in a child process: one poll loop, like the
 * daemon's, that sends every frame (4-byte header + 4 KiB) straight back.
 * The measured path is a forward of a 4 KiB float32 tensor (in a shared
 * arena) on ts_double.pt (x * 2), its output in a server region released with
 * the next request: JSON both ways, the executor thread, libtorch. Blocks of
 * each alternate, so that drift in the machine's load falls on both, and
 * both run in the same fixed CPU layout (rpc_layout).
 */
#include "bench.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define RPC_BYTES 4096
#define RPC_ROUNDS 30
#define RPC_RATE_ROUNDS 3
#define RPC_MAX_CLIENTS 16
/* The echo server's connections: room for closes it has not seen yet. */
#define RPC_ECHO_SLOTS (4 * RPC_MAX_CLIENTS)
#define RPC_WARMUP 200

typedef struct {
  struct sockaddr_un addr;
  pid_t pid;
} rpc_echo;

/* ---- The floor: an echo server and its clients ---- */

static int rpc_full_io(int fd, void *buf, size_t len, bool write_it) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write_it ? send(fd, (char *)buf + done, len - done,
                                MSG_NOSIGNAL)
                         : recv(fd, (char *)buf + done, len - done,
                                MSG_WAITALL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    done += (size_t)n;
  }
  return 0;
}

/* The child's loop: echo every frame back to its sender. Never returns. */
static void rpc_echo_serve(int lfd) {
  struct pollfd p[RPC_ECHO_SLOTS + 1];
  static uint8_t buf[4 + RPC_BYTES];
  size_t n = 1;
  p[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
  for (;;) {
    if (poll(p, n, -1) < 0 && errno != EINTR)
      _exit(1);
    for (size_t i = n; i-- > 1;) {
      if (p[i].revents == 0)
        continue;
      uint32_t len = 0;
      bool ok = rpc_full_io(p[i].fd, buf, 4, false) == 0;
      memcpy(&len, buf, 4);
      ok = ok && len <= RPC_BYTES &&
           rpc_full_io(p[i].fd, buf + 4, len, false) == 0 &&
           rpc_full_io(p[i].fd, buf, 4 + len, true) == 0;
      if (!ok) {
        close(p[i].fd);
        p[i] = p[--n];
      }
    }
    if (p[0].revents & POLLIN) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0 && n <= RPC_ECHO_SLOTS)
        p[n++] = (struct pollfd){.fd = c, .events = POLLIN};
      else if (c >= 0)
        close(c);
    }
  }
}

static void rpc_echo_start(rpc_echo *e, const char *dir) {
  static const char name[] = "/echo.sock";
  size_t len = strlen(dir);
  if (len + sizeof(name) > sizeof(e->addr.sun_path))
    bk_die("socket path too long: %s%s", dir, name);
  e->addr = (struct sockaddr_un){.sun_family = AF_UNIX};
  memcpy(e->addr.sun_path, dir, len);
  memcpy(e->addr.sun_path + len, name, sizeof(name));
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0 ||
      bind(lfd, (struct sockaddr *)&e->addr, sizeof(e->addr)) < 0 ||
      listen(lfd, 64) < 0)
    bk_die("echo socket %s: %s", e->addr.sun_path, strerror(errno));
  pid_t parent = getpid();
  e->pid = fork();
  if (e->pid < 0)
    bk_die("fork: %s", strerror(errno));
  if (e->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(1);
    rpc_echo_serve(lfd);
  }
  close(lfd);
}

static void rpc_echo_stop(rpc_echo *e) {
  kill(e->pid, SIGKILL);
  waitpid(e->pid, NULL, 0);
}

static int rpc_echo_connect(const rpc_echo *e) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 ||
      connect(fd, (const struct sockaddr *)&e->addr, sizeof(e->addr)) < 0)
    bk_die("connect %s: %s", e->addr.sun_path, strerror(errno));
  return fd;
}

static void rpc_echo_once(int fd, uint8_t *frame) {
  if (rpc_full_io(fd, frame, 4 + RPC_BYTES, true) < 0 ||
      rpc_full_io(fd, frame, 4 + RPC_BYTES, false) < 0)
    bk_die("echo round trip failed");
}

/* ---- The measured path: forward through libslyce ---- */

typedef struct {
  sly_conn *c;
  sly_tensor in;
} rpc_client;

static void rpc_client_open(rpc_client *k, const bk_daemon *d) {
  k->c = bk_connect(d);
  sly_arena *a;
  sly_error err;
  int r = sly_arena_create(k->c, 64 * 1024, &a, &err);
  if (r < 0)
    bk_die("arena: %s: %s", sly_code_name(r), err.message);
  float *x = sly_arena_alloc(a, RPC_BYTES, 64);
  for (size_t i = 0; i < RPC_BYTES / sizeof(float); i++)
    x[i] = (float)i;
  k->in = (sly_tensor){.dtype = SLY_FLOAT32,
                       .ndim = 1,
                       .shape = {RPC_BYTES / sizeof(float)},
                       .data = x};
}

/* One forward; the daemon's timing goes to *tm when it is not NULL. */
static void rpc_forward_once(rpc_client *k, sly_timing *tm) {
  sly_result *res;
  sly_error err;
  int r = sly_forward(k->c, "triv", &k->in, 1, &res, &err);
  if (r < 0)
    bk_die("forward: %s: %s", sly_code_name(r), err.message);
  const sly_tensor *y = sly_result_output(res, 0);
  if (y == NULL || ((const float *)y->data)[3] != 6.0f)
    bk_die("forward on triv gave a wrong output");
  if (tm != NULL)
    *tm = sly_result_timing(res);
  sly_result_free(res);
}

/* ---- Requests per second with N clients ---- */

typedef struct {
  const rpc_echo *echo;   /* the floor, or */
  const bk_daemon *d;     /* the daemon */
  pthread_barrier_t *go;
  const double *deadline_at; /* set between the two barrier waits */
  uint64_t done;
} rpc_worker;

static void *rpc_worker_run(void *arg) {
  rpc_worker *w = arg;
  int fd = -1;
  uint8_t frame[4 + RPC_BYTES] = {0};
  uint32_t len = RPC_BYTES;
  memcpy(frame, &len, 4);
  rpc_client k = {0};
  if (w->echo != NULL)
    fd = rpc_echo_connect(w->echo);
  else
    rpc_client_open(&k, w->d);
  pthread_barrier_wait(w->go);
  pthread_barrier_wait(w->go); /* the deadline is set between the two */
  double deadline = *w->deadline_at;
  while (bk_now() < deadline) {
    if (fd >= 0) {
      rpc_echo_once(fd, frame);
      memcpy(frame, &len, 4);
    } else {
      rpc_forward_once(&k, NULL);
    }
    w->done++;
  }
  if (fd >= 0)
    close(fd);
  else
    sly_close(k.c);
  return NULL;
}

/* Requests n clients (each a thread with its connection) complete in about
 * `seconds`; the time it took goes to *elapsed. */
static double rpc_count(const rpc_echo *echo, const bk_daemon *d, int n,
                        double seconds, double *elapsed) {
  pthread_t th[RPC_MAX_CLIENTS];
  rpc_worker w[RPC_MAX_CLIENTS];
  pthread_barrier_t go;
  double deadline = 0;
  pthread_barrier_init(&go, NULL, (unsigned)n + 1);
  for (int i = 0; i < n; i++) {
    w[i] = (rpc_worker){.echo = echo, .d = d, .go = &go,
                        .deadline_at = &deadline};
    if (pthread_create(&th[i], NULL, rpc_worker_run, &w[i]) != 0)
      bk_die("pthread_create failed");
  }
  pthread_barrier_wait(&go); /* every client connected */
  double start = bk_now();
  deadline = start + seconds;
  pthread_barrier_wait(&go);
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    total += w[i].done;
  }
  *elapsed = bk_now() - start;
  pthread_barrier_destroy(&go);
  return (double)total;
}

/* Requests per second of n clients, raw and through slyced, measured in
 * RPC_RATE_ROUNDS alternating windows that add up to `seconds` each. */
static void rpc_rates(const rpc_echo *echo, const bk_daemon *d, int n,
                      double seconds, double *raw_rps, double *fwd_rps) {
  double raw = 0, raw_t = 0, fwd = 0, fwd_t = 0, t;
  for (int r = 0; r < RPC_RATE_ROUNDS; r++) {
    raw += rpc_count(echo, NULL, n, seconds / RPC_RATE_ROUNDS, &t);
    raw_t += t;
    fwd += rpc_count(NULL, d, n, seconds / RPC_RATE_ROUNDS, &t);
    fwd_t += t;
  }
  *raw_rps = raw / raw_t;
  *fwd_rps = fwd / fwd_t;
}

/* ---- The benchmark ---- */

/* Where the client runs and where the servers (the echo server and slyced)
 * run. Left to the scheduler, the floor alone moved between 5 and 85 us on
 * the 2-CPU VM: the kernel puts a waking echo server on its client's CPU
 * or not, and waking an idle virtual CPU costs about 40 us each way. A
 * fixed layout, the same for the floor and the forward, measures both under
 * the same wake-ups. */
typedef struct {
  const char *name;
  cpu_set_t client, server;
} rpc_layout;

/* "separate CPUs" (the client on the first, the servers on the others),
 * "one CPU" (all on the first) and "any CPU" (placement left to the
 * scheduler, as before); *n of them (no "separate CPUs" on one CPU). */
#define RPC_LAYOUTS 3
static void rpc_layouts(rpc_layout out[RPC_LAYOUTS], int *n) {
  cpu_set_t all;
  if (sched_getaffinity(0, sizeof(all), &all) != 0)
    bk_die("sched_getaffinity: %s", strerror(errno));
  int first = -1;
  for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
    if (CPU_ISSET(i, &all))
      first = i;
  cpu_set_t one, rest = all;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  CPU_CLR(first, &rest);
  *n = 0;
  if (CPU_COUNT(&rest) > 0)
    out[(*n)++] = (rpc_layout){"separate CPUs", one, rest};
  out[(*n)++] = (rpc_layout){"one CPU", one, one};
  out[(*n)++] = (rpc_layout){"any CPU", all, all};
}

static void rpc_pin(const cpu_set_t *set) {
  if (sched_setaffinity(0, sizeof(*set), set) != 0)
    bk_die("sched_setaffinity: %s", strerror(errno));
}

/* Starts slyced with the trivial slice, and the echo server beside it. */
static void rpc_servers_start(bk_daemon *d, rpc_echo *echo) {
  bk_prepare(d);
  char extra[512];
  snprintf(extra, sizeof(extra),
           "\"device\": \"cpu\", \"slices\": [{\"name\": \"triv\", "
           "\"constructor\": \"torchscript\", \"config\": {\"path\": "
           "\"%s/tests/fixtures/ts_double.pt\"}}]",
           bk_env_now.source_dir);
  bk_launch(d, extra);
  rpc_echo_start(echo, d->dir);
}

/* Median latency of the raw round trip and of the forward, in blocks that
 * alternate, with the servers started (and so kept) on l->server and this
 * thread on l->client; prints the figures, adds the row. */
static void rpc_latency(const rpc_layout *l, int iters) {
  cpu_set_t mine;
  if (sched_getaffinity(0, sizeof(mine), &mine) != 0)
    bk_die("sched_getaffinity: %s", strerror(errno));
  rpc_pin(&l->server); /* the children inherit it */
  bk_daemon d;
  rpc_echo echo;
  rpc_servers_start(&d, &echo);
  rpc_pin(&l->client);

  int fd = rpc_echo_connect(&echo);
  rpc_client k;
  rpc_client_open(&k, &d);
  double cpus = bk_stat(k.c, "process.cpus"); /* spin-waits from 2 */
  uint8_t frame[4 + RPC_BYTES] = {0};
  uint32_t len = RPC_BYTES;
  for (int i = 0; i < RPC_WARMUP; i++) {
    memcpy(frame, &len, 4);
    rpc_echo_once(fd, frame);
    rpc_forward_once(&k, NULL);
  }
  double *raw = calloc((size_t)iters, sizeof(double));
  double *fwd = calloc((size_t)iters, sizeof(double));
  double *srv = calloc((size_t)iters, sizeof(double)); /* total_us */
  double *cmp = calloc((size_t)iters, sizeof(double)); /* compute_us */
  if (raw == NULL || fwd == NULL || srv == NULL || cmp == NULL)
    bk_die("out of memory");
  int per = iters / RPC_ROUNDS;
  for (int r = 0; r < RPC_ROUNDS; r++) {
    for (int i = r * per; i < (r + 1) * per; i++) {
      memcpy(frame, &len, 4);
      double t0 = bk_now();
      rpc_echo_once(fd, frame);
      raw[i] = bk_now() - t0;
    }
    for (int i = r * per; i < (r + 1) * per; i++) {
      sly_timing tm;
      double t0 = bk_now();
      rpc_forward_once(&k, &tm);
      fwd[i] = bk_now() - t0;
      srv[i] = (double)tm.total_us * 1e-6;
      cmp[i] = (double)tm.compute_us * 1e-6;
    }
  }
  close(fd);
  sly_close(k.c);
  rpc_echo_stop(&echo);
  bk_stop(&d);
  rpc_pin(&mine);

  int n = per * RPC_ROUNDS;
  double raw_med = bk_median(raw, (size_t)n), fwd_med = bk_median(fwd, (size_t)n);
  double raw_p99 = raw[n * 99 / 100], fwd_p99 = fwd[n * 99 / 100];
  printf("   %s (client on %d CPU, servers on %d; slyced uses %.0f): %d "
         "round trips each: raw median %.1f us (p99 %.1f), forward median "
         "%.1f us (p99 %.1f); the daemon's total_us median %.1f us, of which "
         "compute_us %.1f us\n",
         l->name, CPU_COUNT(&l->client), CPU_COUNT(&l->server),
         cpus, n, raw_med * 1e6, raw_p99 * 1e6,
         fwd_med * 1e6, fwd_p99 * 1e6, bk_median(srv, (size_t)n) * 1e6,
         bk_median(cmp, (size_t)n) * 1e6);
  free(raw);
  free(fwd);
  free(srv);
  free(cmp);
  char m[40], f[40], what[64];
  snprintf(m, sizeof(m), "%.1f us", fwd_med * 1e6);
  snprintf(f, sizeof(f), "%.1f us raw", raw_med * 1e6);
  snprintf(what, sizeof(what), "forward 4 KiB, median, %s", l->name);
  /* The target is the separate CPUs' (a client process beside a daemon,
   * each with a CPU): on one CPU the daemon's loop and executor threads
   * make four context switches a request to the echo server's two; left to
   * the scheduler, the floor is either of the other two. */
  bool target = strcmp(l->name, "separate CPUs") == 0;
  bk_row("1", what, m, f, fwd_med / raw_med, target ? BK_AT_MOST : BK_NONE,
         target ? 2.0 : 0);
}

void bench_rpc(void) {
  const bool quick = bk_env_now.quick;
  const int iters = quick ? 500 : 3000;
  const double rate_s = quick ? 0.3 : 1.5;
  printf("== 1. RPC overhead: forward of a 4 KiB tensor vs a raw 4 KiB "
         "round trip\n");
  rpc_layout layouts[RPC_LAYOUTS];
  int n_layouts;
  rpc_layouts(layouts, &n_layouts);
  for (int i = 0; i < n_layouts; i++)
    rpc_latency(&layouts[i], iters);

  /* The rates: placement left to the scheduler, as a user's would be. */
  bk_daemon d;
  rpc_echo echo;
  rpc_servers_start(&d, &echo);
  static const int clients[] = {1, 4, 16};
  for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
    int c = clients[i];
    double raw_rps, fwd_rps;
    rpc_rates(&echo, &d, c, rate_s, &raw_rps, &fwd_rps);
    printf("   %2d client%s for %.1f s each, in %d alternating windows "
           "(any CPU): raw %.0f req/s, forward %.0f req/s\n",
           c, c == 1 ? " " : "s", rate_s, RPC_RATE_ROUNDS, raw_rps, fwd_rps);
    char what[64], m[40], f[40];
    snprintf(what, sizeof(what), "forward 4 KiB, %d client%s (cost/req)", c,
             c == 1 ? "" : "s");
    snprintf(m, sizeof(m), "%.0f req/s", fwd_rps);
    snprintf(f, sizeof(f), "%.0f req/s raw", raw_rps);
    bk_row("1", what, m, f, raw_rps / fwd_rps, BK_NONE, 0);
  }
  rpc_echo_stop(&echo);
  bk_stop(&d);
}
