/* notify.h — talking to systemd (daemon/).
 *
 * Owns: the service-manager notifications (READY, STATUS, STOPPING) and the
 * watchdog timer on the loop. Pings come from the loop thread on purpose: a
 * loop that stops turning stops the pings, and systemd restarts the service.
 * Without NOTIFY_SOCKET every call is a no-op.
 */
#ifndef DAEMON_NOTIFY_H
#define DAEMON_NOTIFY_H

#include <uv.h>

typedef struct {
  uv_timer_t watchdog;
  int watchdog_on;
} notify;

/* Starts the watchdog timer when systemd asked for one. Returns 0 or a
 * negative libuv error. */
int notify_init(notify *n, uv_loop_t *loop);
void notify_ready(const char *status);
void notify_status(const char *status);
void notify_stopping(void);
void notify_close(notify *n);

#endif
