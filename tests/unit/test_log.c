/* test_log.c — the daemon's log: levels, one line per call, file and
 * console sinks, journald detection, and log_configure keeping the old sinks
 * when the new ones cannot be opened.
 *
 * Criterion runs each test in its own process, so the process-wide sink set
 * starts fresh in every test.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static char tmp[PATH_MAX];
static char logfile[PATH_MAX + 16];

static void setup(void) {
  char t[] = "/tmp/slyced-log-XXXXXX";
  cr_assert_not_null(mkdtemp(t));
  cr_assert_not_null(realpath(t, tmp));
  snprintf(logfile, sizeof(logfile), "%s/d.log", tmp);
}

static void teardown(void) {
  log_shutdown();
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
  cr_assert_eq(system(cmd), 0);
}

TestSuite(log, .init = setup, .fini = teardown);

/* The whole file; the caller frees it. */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s", path);
  static const size_t cap = 1 << 20;
  char *buf = calloc(1, cap + 1);
  cr_assert_not_null(buf);
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static size_t count_lines(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

static size_t count_of(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* "2026-11-28T02:10:00.123Z " : digits where digits go, UTC marker. */
static void assert_timestamp(const char *line) {
  const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
  for (size_t i = 0; shape[i]; i++) {
    if (shape[i] == 'd')
      cr_assert(line[i] >= '0' && line[i] <= '9', "bad timestamp: %s", line);
    else
      cr_assert_eq(line[i], shape[i], "bad timestamp: %s", line);
  }
}

Test(log, level_names_round_trip_and_nothing_else_parses) {
  const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++) {
    log_level l = LOG_LEVEL_ERROR;
    cr_assert_eq(log_level_parse(names[i], &l), 0);
    cr_assert_eq(l, (log_level)i);
    cr_assert_str_eq(log_level_name(l), names[i]);
  }
  log_level l = LOG_LEVEL_WARN;
  cr_assert_eq(log_level_parse("INFO", &l), -1);
  cr_assert_eq(log_level_parse("", &l), -1);
  cr_assert_eq(log_level_parse("warning", &l), -1);
  cr_assert_eq(log_level_parse(NULL, &l), -1);
  cr_assert_eq(l, LOG_LEVEL_WARN, "untouched on failure");
}

Test(log, the_file_gets_one_line_with_timestamp_and_level) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("slice=%s moved %d bytes", "enc", 4096);
  char *text = slurp(logfile);
  cr_assert_eq(count_lines(text), 1, "%s", text);
  assert_timestamp(text);
  cr_assert_str_eq(text + 25, "info  slice=enc moved 4096 bytes\n");
  free(text);

  struct stat st;
  cr_assert_eq(stat(logfile, &st), 0);
  cr_assert_eq(st.st_mode & 0777 & ~0640, 0, "created at most 0640");
  int fl = -1;
  /* The fd must not leak into children (O_CLOEXEC): find it by its path. */
  for (int fd = 3; fd < 64; fd++) {
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n > 0) {
      target[n] = '\0';
      if (!strcmp(target, logfile))
        fl = fcntl(fd, F_GETFD);
    }
  }
  cr_assert_geq(fl, 0, "log fd not found");
  cr_assert(fl & FD_CLOEXEC);
}

Test(log, lines_below_the_level_are_dropped) {
  cr_assert_eq(log_configure(LOG_LEVEL_WARN, false, logfile), 0);
  log_debug("d-line");
  log_info("i-line");
  log_warn("w-line");
  log_error("e-line");
  char *text = slurp(logfile);
  cr_assert_eq(count_lines(text), 2, "%s", text);
  cr_assert_null(strstr(text, "d-line"));
  cr_assert_null(strstr(text, "i-line"));
  cr_assert_not_null(strstr(text, " warn  w-line\n"));
  cr_assert_not_null(strstr(text, " error e-line\n"));
  free(text);

  cr_assert_eq(log_configure(LOG_LEVEL_DEBUG, false, logfile), 0);
  log_debug("d-line");
  text = slurp(logfile);
  cr_assert_not_null(strstr(text, " debug d-line\n"));
  free(text);
}

Test(log, a_message_cannot_forge_a_second_line) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("slice=%s", "x\n2026-01-01T00:00:00.000Z error forged\r\x1b[2J");
  char *text = slurp(logfile);
  cr_assert_eq(count_lines(text), 1, "%s", text);
  cr_assert_not_null(
      strstr(text, "slice=x\\n2026-01-01T00:00:00.000Z error forged\\r"
                   "\\x1b[2J\n"),
      "%s", text);
  free(text);
}

Test(log, a_very_long_message_is_cut_but_stays_one_line) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  size_t n = 100000;
  char *big = malloc(n + 1);
  cr_assert_not_null(big);
  for (size_t i = 0; i < n; i++)
    big[i] = i % 100 == 99 ? '\n' : 'a';
  big[n] = '\0';
  log_info("%s", big);
  free(big);
  char *text = slurp(logfile);
  cr_assert_eq(count_lines(text), 1);
  cr_assert_not_null(strstr(text, " [truncated]\n"));
  free(text);
}

Test(log, errno_survives_a_log_call_and_percent_m_sees_it) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  errno = ENOENT;
  log_info("open: %m");
  cr_assert_eq(errno, ENOENT);
  log_debug("filtered");
  cr_assert_eq(errno, ENOENT);
  char *text = slurp(logfile);
  cr_assert_not_null(strstr(text, "open: No such file or directory\n"), "%s",
                     text);
  free(text);
}

Test(log, a_failed_configure_keeps_the_old_sinks) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("before");

  char missing[PATH_MAX + 32];
  snprintf(missing, sizeof(missing), "%s/no-such-dir/d.log", tmp);
  cr_assert_eq(log_configure(LOG_LEVEL_DEBUG, false, missing), -ENOENT);
  cr_assert_eq(log_configure(LOG_LEVEL_DEBUG, false, tmp), -EISDIR);

  log_info("after");
  log_debug("still filtered: the old level stays too");
  char *text = slurp(logfile);
  cr_assert_eq(count_lines(text), 2, "%s", text);
  cr_assert_not_null(strstr(text, "info  before\n"));
  cr_assert_not_null(strstr(text, "info  after\n"));
  free(text);
  cr_assert_eq(access(missing, F_OK), -1);
}

/* Points fd 2 at a file so the console sink can be read back. */
static void capture_stderr(char path[PATH_MAX + 16]) {
  snprintf(path, PATH_MAX + 16, "%s/stderr", tmp);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  cr_assert_geq(fd, 0);
  cr_assert_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
  close(fd);
}

Test(log, configuring_again_switches_files_as_for_rotation) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("one");
  char rotated[PATH_MAX + 32];
  snprintf(rotated, sizeof(rotated), "%s.1", logfile);
  cr_assert_eq(rename(logfile, rotated), 0);
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("two");
  char *a = slurp(rotated), *b = slurp(logfile);
  cr_assert(strstr(a, "one") && !strstr(a, "two"), "%s", a);
  cr_assert(strstr(b, "two") && !strstr(b, "one"), "%s", b);
  free(a);
  free(b);

  /* Appending, not truncating. */
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("three");
  b = slurp(logfile);
  cr_assert_eq(count_lines(b), 2, "%s", b);
  free(b);

  char err_path[PATH_MAX + 16];
  capture_stderr(err_path);
  log_shutdown();
  log_info("four");
  b = slurp(logfile);
  cr_assert_null(strstr(b, "four"), "the file is closed after log_shutdown");
  free(b);
  b = slurp(err_path);
  cr_assert_not_null(strstr(b, "info  four\n"), "and stderr gets it: %s", b);
  free(b);
}

Test(log, the_console_gets_the_line_only_when_asked) {
  char err_path[PATH_MAX + 16];
  capture_stderr(err_path);
  unsetenv("JOURNAL_STREAM");
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, true, logfile), 0);
  log_info("to both");
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  log_info("file only");
  char *e = slurp(err_path), *f = slurp(logfile);
  cr_assert_eq(count_of(e, "to both"), 1, "%s", e);
  cr_assert_null(strstr(e, "file only"));
  cr_assert_eq(count_of(f, "to both"), 1);
  cr_assert_eq(count_of(f, "file only"), 1);
  assert_timestamp(e);
  free(e);
  free(f);
}

/* A stand-in journald: a datagram socket at journald's path, made only where
 * there is none (as in a container) and removed by teardown. */
#define JOURNAL_DIR "/run/systemd/journal"
#define JOURNAL_SOCKET JOURNAL_DIR "/socket"
static int fake_journal = -1;
static bool made_run_systemd, made_journal_dir;

static void fake_journal_remove(void) {
  if (fake_journal < 0)
    return;
  close(fake_journal);
  unlink(JOURNAL_SOCKET);
  if (made_journal_dir)
    rmdir(JOURNAL_DIR);
  if (made_run_systemd)
    rmdir("/run/systemd");
  fake_journal = -1;
}

static bool fake_journal_start(void) {
  made_run_systemd = mkdir("/run/systemd", 0755) == 0;
  made_journal_dir = mkdir(JOURNAL_DIR, 0755) == 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, JOURNAL_SOCKET);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(fd);
    if (made_journal_dir)
      rmdir(JOURNAL_DIR);
    if (made_run_systemd)
      rmdir("/run/systemd");
    return false;
  }
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  fake_journal = fd;
  return true;
}

/* Under systemd, stderr is the journal: the line goes to journald with its
 * priority instead of the console, never to both. A JOURNAL_STREAM left
 * over from a parent whose journald is gone must not swallow lines
 * (sd_journal_send drops them silently then): the console keeps them. */
Test(log, a_journal_on_stderr_replaces_the_console_line,
     .fini = fake_journal_remove) {
  char err_path[PATH_MAX + 16], env[64], want[64];
  capture_stderr(err_path);
  struct stat st;
  cr_assert_eq(fstat(STDERR_FILENO, &st), 0);
  snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino);
  cr_assert_eq(setenv("JOURNAL_STREAM", env, 1), 0);

  bool real = access(JOURNAL_SOCKET, F_OK) == 0;
  if (!real) {
    cr_assert_eq(log_configure(LOG_LEVEL_INFO, true, NULL), 0);
    log_warn("still-seen");
    char *e = slurp(err_path);
    cr_assert_eq(count_of(e, "still-seen"), 1, "%s", e);
    free(e);
  }

  bool fake = !real && fake_journal_start();
  if (!real && !fake)
    cr_skip_test("no journald and no right to stand one in");
  /* console false turns the journal off too: it stands in for stderr. */
  char silent[64];
  snprintf(silent, sizeof(silent), "journal-silent %d\n", (int)getpid());
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, NULL), 0);
  log_warn("journal-silent %d", (int)getpid());
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, true, NULL), 0);
  snprintf(want, sizeof(want), "MESSAGE=journal-test %d\n", (int)getpid());
  log_warn("journal-test %d", (int)getpid());
  char *e = slurp(err_path);
  cr_assert_eq(count_of(e, "journal-test"), 0, "not on the console too: %s",
               e);
  free(e);
  if (!fake)
    return;
  /* Another run may share the stand-in; skip datagrams that are not ours. */
  for (;;) {
    char d[4096];
    ssize_t n = recv(fake_journal, d, sizeof(d) - 1, 0);
    cr_assert_gt(n, 0, "journald got nothing");
    d[n] = '\0';
    cr_assert_null(strstr(d, silent), "sent with console off: %s", d);
    if (!strstr(d, want))
      continue;
    cr_assert_not_null(strstr(d, "PRIORITY=4\n"), "%s", d);
    cr_assert_not_null(strstr(d, "SYSLOG_IDENTIFIER="), "%s", d);
    break;
  }
}

Test(log, a_journal_stream_of_another_file_is_ignored) {
  char err_path[PATH_MAX + 16];
  capture_stderr(err_path);
  const char *bogus[] = {"1:2", "garbage", "12", ":", "1:2:3", ""};
  for (size_t i = 0; i < sizeof(bogus) / sizeof(bogus[0]); i++) {
    cr_assert_eq(setenv("JOURNAL_STREAM", bogus[i], 1), 0);
    cr_assert_eq(log_configure(LOG_LEVEL_INFO, true, NULL), 0);
    log_info("console-%zu", i);
  }
  char *e = slurp(err_path);
  cr_assert_eq(count_lines(e), 6, "%s", e);
  free(e);
}

static void *writer(void *arg) {
  int id = (int)(intptr_t)arg;
  for (int i = 0; i < 500; i++)
    log_info("thread=%d line=%d %s", id, i, "payload-payload-payload");
  return NULL;
}

Test(log, lines_from_many_threads_never_interleave) {
  cr_assert_eq(log_configure(LOG_LEVEL_INFO, false, logfile), 0);
  pthread_t t[8];
  for (int i = 0; i < 8; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, writer, (void *)(intptr_t)i), 0);
  for (int i = 0; i < 8; i++)
    pthread_join(t[i], NULL);
  char *text = slurp(logfile);
  cr_assert_eq(count_lines(text), 8 * 500);
  for (char *line = text; *line;) {
    char *nl = strchr(line, '\n');
    cr_assert_not_null(nl);
    *nl = '\0';
    assert_timestamp(line);
    int id, i;
    cr_assert_eq(sscanf(line + 25, "info  thread=%d line=%d", &id, &i), 2,
                 "%s", line);
    cr_assert(strlen(line) > 24 &&
                  !strcmp(line + strlen(line) - 23, "payload-payload-payload"),
              "%s", line);
    line = nl + 1;
  }
  free(text);
}
