/* slyced.h — the daemon object (daemon/).
 *
 * Owns: the state every module of the loop thread shares — the current
 * config, the listening server and its connections, statistics, systemd
 * notification — and the lifecycle: start, reload, drain, stop. One per
 * process, created by main.c and passed by pointer (no globals).
 */
#ifndef DAEMON_SLYCED_H
#define DAEMON_SLYCED_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "config.h"
#include "executor.h"
#include "notify.h"
#include "server.h"
#include "slices.h"
#include "stats.h"
#include "tiers.h"

typedef struct slyced {
  uv_loop_t *loop;
  config *cfg; /* owned; replaced whole by a successful reload */
  uid_t uid;   /* the daemon's own uid: its peers are admins */
  uint64_t start_ms;
  stats stats;
  notify notify;
  server srv;
  slice_registry slices;
  tiers tiers; /* the workers' (under its mutex), but for the stats atomics */
  executor exec; /* one device per daemon for now */
  executor loader; /* stages slices before their jobs reach exec (forward.c) */
  int cpus;        /* usable by this process when it started (syscpu.h) */
  bool draining;
  bool stopped; /* the drain is over and the loop was told to stop */
  bool device_lost; /* what is queued fails UNAVAILABLE; we exit 1 */
  int exit_code;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t drain_timer;
  uv_timer_t status_timer;
} slyced;

/* Takes ownership of `cfg`, opens the socket, installs signal handlers and
 * tells systemd it is ready. Returns 0 or -1 (logged). */
int slyced_start(slyced *sd, uv_loop_t *loop, config *cfg);

/* Re-reads the config file. A bad file changes nothing: returns -1 with the
 * message (file and key) in err, and the caller logs or replies it. Keys
 * read only at start (the socket, the device and the tiers' budgets) keep
 * their running values; the changed ones are logged and, when `start_only`
 * is an array, added to it as strings. */
#define SLYCED_START_ONLY_MAX 16
int slyced_reload(slyced *sd, cJSON *start_only, char err[CONFIG_ERROR_MAX]);

/* Stops accepting, lets in-flight requests finish within drain_timeout_ms,
 * then stops the loop. Idempotent. */
void slyced_begin_shutdown(slyced *sd, const char *why);

/* The device is lost (a sticky error): what is queued fails UNAVAILABLE,
 * replies go out, and the daemon exits with status 1 so that systemd
 * restarts it with a fresh context. Idempotent. */
void slyced_device_lost(slyced *sd, const char *why);

/* Called by the server when a connection goes away, so a drain can end. */
void slyced_conn_gone(slyced *sd);

/* Frees what is left after the loop has stopped. */
void slyced_free(slyced *sd);

uint64_t slyced_now_ms(void);

#endif
