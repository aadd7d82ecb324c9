/* log.c — the daemon's log: console, log file and journald (see log.h).
 *
 * Every call produces at most one line, written with one write(2) per sink so
 * that lines from several threads never interleave. Control characters in the
 * formatted message are escaped, because messages carry client-controlled
 * strings (slice names, error text) that must not be able to forge lines.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

/* Longest message kept, before escaping; longer ones are cut and marked. */
#define LOG__MSG_MAX 4096
/* Escaping can grow each byte to 4 ("\x1b"); plus timestamp, level, marker. */
#define LOG__LINE_MAX (LOG__MSG_MAX * 4 + 128)
#define LOG__TRUNCATED " [truncated]"

/* The sink set. Process-wide on purpose (see log.h); guarded by log__lock. */
static pthread_mutex_t log__lock = PTHREAD_MUTEX_INITIALIZER;
static log_level log__level = LOG_LEVEL_INFO;
static bool log__console = true;
static int log__fd = -1;
static bool log__journal_checked;
static bool log__journal;

static const char *const log__names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s, log_level *out) {
  if (!s)
    return -1;
  for (size_t i = 0; i < sizeof(log__names) / sizeof(log__names[0]); i++) {
    if (strcmp(s, log__names[i]) == 0) {
      *out = (log_level)i;
      return 0;
    }
  }
  return -1;
}

const char *log_level_name(log_level l) {
  if ((unsigned)l >= sizeof(log__names) / sizeof(log__names[0]))
    return "?";
  return log__names[l];
}

/* systemd sets JOURNAL_STREAM to "dev:ino" of the stream it connected to
 * stderr; when it still matches fd 2, a console line would reach the journal
 * a second time, without a priority, so we send to journald instead. */
static bool log__stderr_is_journal(void) {
  const char *e = getenv("JOURNAL_STREAM");
  if (!e || !*e)
    return false;
  char *end;
  errno = 0;
  unsigned long long dev = strtoull(e, &end, 10);
  if (errno || end == e || *end != ':')
    return false;
  const char *ino_s = end + 1;
  unsigned long long ino = strtoull(ino_s, &end, 10);
  if (errno || end == ino_s || *end)
    return false;
  struct stat st;
  if (fstat(STDERR_FILENO, &st) < 0)
    return false;
  if ((unsigned long long)st.st_dev != dev ||
      (unsigned long long)st.st_ino != ino)
    return false;
  /* sd_journal_send reports success when journald's socket is missing (it
   * drops the line), so a stale JOURNAL_STREAM must not silence us. */
  return access("/run/systemd/journal/socket", F_OK) == 0;
}

int log_configure(log_level level, bool console, const char *file) {
  if ((unsigned)level > LOG_LEVEL_DEBUG)
    return -EINVAL;
  int fd = -1;
  if (file) {
    fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
              0640);
    if (fd < 0)
      return -errno;
  }
  bool journal = log__stderr_is_journal();

  pthread_mutex_lock(&log__lock);
  int old = log__fd;
  log__fd = fd;
  log__level = level;
  log__console = console;
  log__journal = journal;
  log__journal_checked = true;
  pthread_mutex_unlock(&log__lock);

  if (old >= 0)
    close(old);
  return 0;
}

void log_shutdown(void) {
  pthread_mutex_lock(&log__lock);
  int old = log__fd;
  log__fd = -1;
  log__console = true; /* late errors must still be seen somewhere */
  pthread_mutex_unlock(&log__lock);
  if (old >= 0)
    close(old);
}

/* Writes all of buf; a short write to a log is retried, an error dropped
 * (there is nowhere left to report it). */
static void log__write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    buf += n;
    len -= (size_t)n;
  }
}

/* Copies msg into out, escaping every control byte so the result is one line;
 * returns the bytes written (out has room for 4 * strlen(msg) + 1). */
static size_t log__escape(char *out, const char *msg) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
    unsigned char c = *p;
    if (c == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    } else if (c == '\r') {
      out[o++] = '\\';
      out[o++] = 'r';
    } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = '\0';
  return o;
}

static int log__priority(log_level level) {
  switch (level) {
  case LOG_LEVEL_ERROR: return 3; /* LOG_ERR */
  case LOG_LEVEL_WARN: return 4;  /* LOG_WARNING */
  case LOG_LEVEL_INFO: return 6;  /* LOG_INFO */
  default: return 7;              /* LOG_DEBUG */
  }
}

void log_write(log_level level, const char *fmt, ...) {
  int saved_errno = errno; /* callers may log with %m and then use errno */

  pthread_mutex_lock(&log__lock);
  if (!log__journal_checked) {
    log__journal = log__stderr_is_journal();
    log__journal_checked = true;
  }
  bool wanted = level <= log__level;
  pthread_mutex_unlock(&log__lock);
  if (!wanted) {
    errno = saved_errno;
    return;
  }

  /* Formatting happens outside the lock: it may be slow, and %m must see
   * the caller's errno. */
  char msg[LOG__MSG_MAX + sizeof(LOG__TRUNCATED)];
  va_list ap;
  va_start(ap, fmt);
  errno = saved_errno;
  int n = vsnprintf(msg, LOG__MSG_MAX, fmt, ap);
  va_end(ap);
  if (n < 0)
    snprintf(msg, LOG__MSG_MAX, "(unformattable log message: %s)", fmt);
  else if (n >= LOG__MSG_MAX)
    strcat(msg, LOG__TRUNCATED);

  static _Thread_local char line[LOG__LINE_MAX];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int head = snprintf(line, sizeof(line),
                      "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                      tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                      log_level_name(level));
  if (head < 0 || (size_t)head >= sizeof(line))
    head = 0;
  size_t body = log__escape(line + head, msg);
  size_t len = (size_t)head + body;
  line[len++] = '\n';

  pthread_mutex_lock(&log__lock);
  /* Under systemd the journal is the console: it takes the line in its
   * place, with a priority, and follows the same `console` switch. */
  bool to_console = log__console;
  if (to_console && log__journal &&
      sd_journal_send("MESSAGE=%.*s", (int)body, line + head, "PRIORITY=%d",
                      log__priority(level), "SYSLOG_IDENTIFIER=%s",
                      program_invocation_short_name, NULL) >= 0)
    to_console = false; /* on failure stderr is all that is left */
  if (to_console)
    log__write_all(STDERR_FILENO, line, len);
  if (log__fd >= 0)
    log__write_all(log__fd, line, len);
  pthread_mutex_unlock(&log__lock);

  errno = saved_errno;
}
