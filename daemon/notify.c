/* notify.c — sd_notify and the watchdog. */
#include "notify.h"

#include <stdint.h>
#include <systemd/sd-daemon.h>

#include "log.h"

static void watchdog_cb(uv_timer_t *t) {
  (void)t;
  sd_notify(0, "WATCHDOG=1");
}

int notify_init(notify *n, uv_loop_t *loop) {
  n->watchdog_on = 0;
  uint64_t usec = 0;
  int r = sd_watchdog_enabled(0, &usec);
  if (r <= 0 || usec == 0)
    return 0;
  int e = uv_timer_init(loop, &n->watchdog);
  if (e < 0)
    return e;
  /* Half the interval, as sd_watchdog_enabled(3) advises. */
  uint64_t ms = usec / 2000 > 0 ? usec / 2000 : 1;
  e = uv_timer_start(&n->watchdog, watchdog_cb, ms, ms);
  if (e < 0)
    return e;
  n->watchdog_on = 1;
  log_info("watchdog: pinging systemd every %llu ms", (unsigned long long)ms);
  return 0;
}

void notify_ready(const char *status) {
  sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_status(const char *status) { sd_notifyf(0, "STATUS=%s", status); }

void notify_stopping(void) { sd_notify(0, "STOPPING=1\nSTATUS=draining"); }

void notify_close(notify *n) {
  if (n->watchdog_on) {
    uv_timer_stop(&n->watchdog);
    uv_close((uv_handle_t *)&n->watchdog, NULL);
    n->watchdog_on = 0;
  }
}
