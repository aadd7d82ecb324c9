/* slyced.c — the daemon's lifecycle: start, reload, drain, stop. */
#include "slyced.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "syscpu.h"

_Static_assert(CONFIG_LOADERS_MAX <= EXECUTOR_MAX_WORKERS,
               "each loader is a worker of the loaders' executor");

/* STATUS= is refreshed this often for `systemctl status`. */
#define SLYCED_STATUS_MS 10000

uint64_t slyced_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void poke_exec(void *exec) { executor_poke(exec); }

static void status_line(slyced *sd, char *buf, size_t len) {
  snprintf(buf, len, "%s; %zu connections; %zu slices",
           sd->draining ? "draining" : "serving", sd->srv.n_conns,
           sd->slices.n);
}

static void status_cb(uv_timer_t *t) {
  slyced *sd = t->data;
  char buf[128];
  status_line(sd, buf, sizeof(buf));
  notify_status(buf);
}

static void apply_log(const config *cfg) {
  int r = log_configure(cfg->log_level, cfg->log_console, cfg->log_file);
  if (r < 0)
    log_error("log.file %s: %s; keeping the previous log sinks",
              cfg->log_file ? cfg->log_file : "-", strerror(-r));
}

static bool same_str(const char *a, const char *b) {
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Replaces a string of `next` with a copy of the running one. */
static bool keep_str(char **next, const char *cur) {
  char *copy = NULL;
  if (cur != NULL && (copy = strdup(cur)) == NULL)
    return false;
  free(*next);
  *next = copy;
  return true;
}

/* Gives `next` the running values of the keys read only at start (the
 * listening socket, and what the executor's device and the tiers were set
 * up with in tiers_init), so that the running config says what runs (hello,
 * status) and the next reload compares the file with that again. Puts the
 * names of those whose value in the file differs in `changed`; returns how
 * many, or -1 when out of memory. */
static int keep_start_only(const config *cur, config *next,
                           const char *changed[SLYCED_START_ONLY_MAX]) {
  int n = 0;
#define KEEP(key, differs, copy)                                               \
  if (differs) {                                                               \
    changed[n++] = key;                                                        \
    copy;                                                                      \
  }
#define KEEP_NUM(key, field)                                                   \
  KEEP(key, next->field != cur->field, next->field = cur->field)
#define KEEP_STR(key, field)                                                   \
  KEEP(key, !same_str(next->field, cur->field),                                \
       if (!keep_str(&next->field, cur->field)) return -1)
  KEEP_STR("socket", socket)
  KEEP("socket_mode",
       next->has_socket_mode != cur->has_socket_mode ||
           next->socket_mode != cur->socket_mode,
       (next->has_socket_mode = cur->has_socket_mode,
        next->socket_mode = cur->socket_mode))
  KEEP_STR("device", device)
  KEEP_NUM("gpu_strategy", gpu_strategy)
  KEEP_NUM("max_gpu_mem_mb", max_gpu_mem_mb)
  KEEP_NUM("gpu_reserve_mb", gpu_reserve_mb)
  KEEP_NUM("max_cpu_mem_mb", max_cpu_mem_mb)
  KEEP_STR("disk_cache_path", disk_cache_path)
  KEEP_NUM("prefetch_depth", prefetch_depth)
  KEEP_NUM("loaders", loaders)
  KEEP_NUM("sim_copy_gbps", sim_copy_gbps)
  KEEP_NUM("max_registered_mb", limits.max_registered_mb)
#undef KEEP_STR
#undef KEEP_NUM
#undef KEEP
  return n;
}

int slyced_reload(slyced *sd, cJSON *start_only, char err[CONFIG_ERROR_MAX]) {
  config *next;
  if (config_load(sd->cfg->path, &next, err) < 0) {
    log_error("reload: %s; keeping the running config", err);
    return -1;
  }
  const char *later[SLYCED_START_ONLY_MAX];
  int n_later = keep_start_only(sd->cfg, next, later);
  if (n_later < 0 || slices_sync_config(&sd->slices, next) < 0) {
    snprintf(err, CONFIG_ERROR_MAX, "%s: out of memory applying the config",
             next->path);
    log_error("reload: %s", err);
    config_free(next);
    return -1;
  }
  if (n_later > 0) {
    char keys[512];
    size_t len = 0;
    keys[0] = '\0';
    for (int i = 0; i < n_later; i++) {
      int w = snprintf(keys + len, sizeof(keys) - len, "%s%s", i ? ", " : "",
                       later[i]);
      if (w > 0 && (size_t)w < sizeof(keys) - len)
        len += (size_t)w;
      if (start_only != NULL)
        cJSON_AddItemToArray(start_only, cJSON_CreateString(later[i]));
    }
    log_warn("reload: %s changed; read only at start, the new values take "
             "effect at the next restart", keys);
  }
  apply_log(next);
  config_free(sd->cfg);
  sd->cfg = next;
  log_info("reload: %s re-read; %zu slices, %zu pipelines", next->path,
           next->n_slices, next->n_pipelines);
  return 0;
}

/* Answers what has not started, on both workers, as cancelled. The loader
 * first: what it cancels is answered, not passed on to the executor. */
static void cancel_queued(slyced *sd) {
  executor_cancel_queued(&sd->loader);
  executor_cancel_queued(&sd->exec);
}

static void drain_finish(slyced *sd, const char *how) {
  if (sd->stopped)
    return;
  sd->stopped = true;
  log_info("drain %s; stopping", how);
  /* Prefetches queued for a pipeline that will not go on would each be a
   * whole move between here and the exit. */
  tiers_stop_prefetch(&sd->tiers);
  uv_timer_stop(&sd->drain_timer);
  server_close_all(&sd->srv);
  uv_stop(sd->loop);
}

/* Closes every connection whose replies have all gone out; the drain is over
 * when none is left. Later issues add requests still running on a device. */
static void drain_check(slyced *sd) {
  for (conn *c = sd->srv.conns; c != NULL; c = c->next)
    conn_close_after_flush(c);
  if (sd->srv.n_conns == 0)
    drain_finish(sd, "complete");
}

static void drain_timeout_cb(uv_timer_t *t) {
  slyced *sd = t->data;
  log_warn("drain_timeout_ms (%llu) passed with %zu connections left",
           (unsigned long long)sd->cfg->limits.drain_timeout_ms,
           sd->srv.n_conns);
  /* What has not run is answered SHUTTING_DOWN, and so is the forward still
   * running (its result is dropped): replies go out in order, and the
   * clients should not wait for a daemon that is leaving. The replies are
   * written before the connections close. */
  cancel_queued(sd);
  proto_error e;
  proto_fail(&e, SLY_E_SHUTTING_DOWN,
             "slyced stopped before this request finished");
  for (conn *c = sd->srv.conns; c != NULL; c = c->next)
    conn_abandon_pending(c, &e);
  drain_finish(sd, "timed out");
}

static void drain_start_cb(uv_timer_t *t) {
  slyced *sd = t->data;
  uv_timer_start(&sd->drain_timer, drain_timeout_cb,
                 sd->cfg->limits.drain_timeout_ms, 0);
  drain_check(sd);
}

void slyced_begin_shutdown(slyced *sd, const char *why) {
  if (sd->draining)
    return;
  sd->draining = true;
  log_info("%s: draining (drain_timeout_ms %llu)", why,
           (unsigned long long)sd->cfg->limits.drain_timeout_ms);
  notify_stopping();
  server_stop_accepting(&sd->srv);
  uv_timer_stop(&sd->status_timer);
  /* Start on the next loop turn: the request that asked for the shutdown has
   * its reply queued only after this returns. */
  sd->drain_timer.data = sd;
  uv_timer_start(&sd->drain_timer, drain_start_cb, 0, 0);
}

void slyced_device_lost(slyced *sd, const char *why) {
  if (sd->device_lost)
    return;
  sd->device_lost = true;
  sd->exit_code = 1;
  log_error("%s; failing queued requests and exiting for a restart", why);
  cancel_queued(sd);
  slyced_begin_shutdown(sd, "device lost");
}

void slyced_conn_gone(slyced *sd) {
  if (sd->draining && sd->srv.n_conns == 0)
    drain_finish(sd, "complete");
}

static void signal_cb(uv_signal_t *h, int signum) {
  slyced *sd = h->data;
  if (signum == SIGHUP) {
    char err[CONFIG_ERROR_MAX];
    log_info("SIGHUP: re-reading %s and reopening the log", sd->cfg->path);
    slyced_reload(sd, NULL, err); /* logged there */
    return;
  }
  slyced_begin_shutdown(sd, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int watch_signal(slyced *sd, uv_signal_t *h, int signum) {
  int r = uv_signal_init(sd->loop, h);
  if (r == 0)
    r = uv_signal_start(h, signal_cb, signum);
  if (r < 0) {
    log_error("signal %d: %s", signum, uv_strerror(r));
    return -1;
  }
  h->data = sd;
  return 0;
}

int slyced_start(slyced *sd, uv_loop_t *loop, config *cfg) {
  memset(sd, 0, sizeof(*sd));
  sd->loop = loop;
  sd->cfg = cfg;
  sd->srv.fd = -1;
  sd->uid = getuid();
  sd->start_ms = slyced_now_ms();
  uv_timer_init(loop, &sd->drain_timer);
  uv_timer_init(loop, &sd->status_timer);
  sd->status_timer.data = sd;

  if (watch_signal(sd, &sd->sig_term, SIGTERM) < 0 ||
      watch_signal(sd, &sd->sig_int, SIGINT) < 0 ||
      watch_signal(sd, &sd->sig_hup, SIGHUP) < 0)
    return -1;
  if (slices_sync_config(&sd->slices, cfg) < 0) {
    log_error("out of memory registering slices");
    return -1;
  }
  char terr[256];
  if (tiers_init(&sd->tiers, cfg, terr) < 0) {
    log_error("%s", terr);
    return -1;
  }
  /* A forward waiting for a move wakes when one ends (forward.c). */
  tiers_on_moved(&sd->tiers, poke_exec, &sd->exec);
  /* Only the device's executor spin-waits: the loaders' jobs are builds and
   * disk reads, which a few microseconds saved on a wake-up do not help. */
  sd->cpus = syscpu_usable();
  int e = executor_start(&sd->exec, loop, 1, sd->cpus >= 2);
  if (e == 0)
    e = executor_start(&sd->loader, loop, (int)sd->cfg->loaders, false);
  if (e < 0) {
    log_error("executor thread: %s", strerror(-e));
    return -1;
  }
  if (server_start(&sd->srv, sd) < 0)
    return -1;
  int r = notify_init(&sd->notify, loop);
  if (r < 0) {
    log_error("watchdog timer: %s", uv_strerror(r));
    return -1;
  }
  char buf[128];
  status_line(sd, buf, sizeof(buf));
  /* Slices load lazily (later issues), so READY never waits for them. */
  notify_ready(buf);
  uv_timer_start(&sd->status_timer, status_cb, SLYCED_STATUS_MS,
                 SLYCED_STATUS_MS);
  log_info("slyced %s ready (device %s, pid %d, %d usable CPU%s%s)",
           SLY_VERSION, cfg->device, (int)getpid(), sd->cpus,
           sd->cpus == 1 ? "" : "s",
           sd->cpus >= 2 ? "" : ": no spin-waits");
  return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void slyced_free(slyced *sd) {
  server_stop_accepting(&sd->srv);
  server_close_all(&sd->srv);
  /* Jobs still queued are answered SHUTTING_DOWN (to closed connections). */
  /* The loader first: what it finishes is passed on to exec, which then
   * cancels it. */
  executor_stop(&sd->loader);
  executor_stop(&sd->exec);
  tiers_close(&sd->tiers); /* the executor is gone: safe on this thread */
  notify_close(&sd->notify);
  uv_walk(sd->loop, close_walk_cb, NULL);
  /* Let the close callbacks run so every connection is freed. */
  uv_run(sd->loop, UV_RUN_DEFAULT);
  free(sd->srv.uids);
  slices_clear(&sd->slices);
  config_free(sd->cfg);
  sd->cfg = NULL;
}
