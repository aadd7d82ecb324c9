/* log.h — the daemon's log (daemon/).
 *
 * Owns: the process's one log sink set — console (stderr), an optional log
 * file, and journald when stderr is connected to the journal — and its level.
 * This is process-wide state on purpose: every module and thread logs, and
 * passing a logger everywhere buys nothing. Thread-safe (one mutex).
 * Lines read "2026-11-28T02:10:00.123Z info  slice=enc moved ...".
 */
#ifndef DAEMON_LOG_H
#define DAEMON_LOG_H

#include <stdbool.h>

typedef enum {
  LOG_LEVEL_ERROR = 0,
  LOG_LEVEL_WARN = 1,
  LOG_LEVEL_INFO = 2,
  LOG_LEVEL_DEBUG = 3,
} log_level;

/* "error", "warn", "info", "debug" -> level; returns 0 or -1. */
int log_level_parse(const char *s, log_level *out);
const char *log_level_name(log_level l);

/* Sets the sinks. `file` may be NULL (no file); the file is opened for
 * appending, created 0640 with its directory missing being an error. Returns
 * 0 or -errno, leaving the previous sinks in place on failure. Also used by
 * SIGHUP to reopen the file after rotation. */
int log_configure(log_level level, bool console, const char *file);
/* Closes the file. Logging afterwards goes to stderr only. */
void log_shutdown(void);

void log_write(log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
