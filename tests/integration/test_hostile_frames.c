/* test_hostile_frames.c — hostile clients at the frame layer: frames sent one
 * byte a second until the frame deadline on every free slot, frames cut short
 * by a client that dies, a client that never reads its replies, and bad
 * frames over and over. After each case the daemon serves a good forward and
 * is back to its baseline of fds and memory. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(hostile_frames, .timeout = 90, .fini = td_cleanup);

/* Low limits so that crossing them is cheap; a frame deadline short enough
 * for a one-byte-a-second client to reach it in a few seconds. */
#define MAX_FRAME 4096
#define DEADLINE_MS 2500
#define MAX_CONNS 4
#define LIMITS                                                                 \
  "\"max_frame_bytes\": 4096, \"frame_timeout_ms\": 2500, "                    \
  "\"max_conns_per_uid\": 4"
/* glibc keeps part of what it freed (arenas of the executor threads, heap
 * fragments below a live block), so RSS after a case may sit above the
 * baseline by a few MiB without a leak; 8 MiB is well under what any case
 * here would leave if it leaked what it allocated (the unread replies alone
 * are 8 MiB). */
#define RSS_SLACK_KIB (8 * 1024)

static td *start(td_baseline *b) {
  char *cfg = fx_config(NULL, LIMITS);
  td *d = td_start(cfg);
  free(cfg);
  /* Loads lin and lets the allocators reach their working size. */
  for (int i = 0; i < 3; i++)
    td_assert_forward_ok(d, "warm-up");
  td_baseline_take(d, b);
  return d;
}

static void recovered(const td *d, const td_baseline *b, const char *after) {
  td_assert_forward_ok(d, after);
  td_baseline_assert(d, b, RSS_SLACK_KIB, after);
}

/* A whole hello frame with `id`; returns its length. */
static size_t hello_frame(uint8_t *buf, size_t cap, int id) {
  char body[64];
  int n = snprintf(body, sizeof body, "{\"id\": %d, \"op\": \"hello\"}", id);
  cr_assert(n > 0 && (size_t)n + 4 <= cap);
  rc_header((uint32_t)n, buf);
  memcpy(buf + 4, body, (size_t)n);
  return (size_t)n + 4;
}

/* Connects and asserts BUSY with id null, then a close. */
static void expect_busy(const td *d) {
  int fd = rc_connect(d->sock);
  cJSON *r = rc_read_reply(fd);
  rc_assert_error(r, RC_ID_NULL, "BUSY");
  cJSON_Delete(r);
  rc_assert_closed(fd);
  close(fd);
}

#define SLOW 3

Test(hostile_frames, one_byte_a_second_on_every_slot_is_cut_at_the_deadline) {
  td_baseline b;
  td *d = start(&b);
  int by = rc_connect(d->sock);
  rc_assert_hello(by, 1);
  int slow[SLOW];
  long long first[SLOW], closed_at[SLOW];
  for (int i = 0; i < SLOW; i++) {
    slow[i] = rc_connect(d->sock);
    closed_at[i] = -1;
  }
  /* The slow clients and the bystander fill max_conns_per_uid. */
  expect_busy(d);

  uint8_t frame[64];
  size_t len = hello_frame(frame, sizeof frame, 9);
  long long start_ms = td_now_ms();
  int open = SLOW;
  for (size_t k = 0; open > 0 && k < len; k++) {
    cr_assert_lt(td_now_ms() - start_ms, 10LL * DEADLINE_MS,
                 "slow frames still open after %d ms", 10 * DEADLINE_MS);
    for (int i = 0; i < SLOW; i++) {
      if (closed_at[i] >= 0)
        continue;
      if (k == 0)
        first[i] = td_now_ms();
      /* A refused write means the daemon closed: seen by the poll below. */
      (void)rc_send(slow[i], frame + k, 1);
    }
    long long next = td_now_ms() + 1000;
    for (long long left; (left = next - td_now_ms()) > 0 && open > 0;) {
      struct pollfd p[SLOW];
      for (int i = 0; i < SLOW; i++)
        p[i] = (struct pollfd){.fd = closed_at[i] < 0 ? slow[i] : -1,
                               .events = POLLIN};
      if (poll(p, SLOW, (int)left) <= 0)
        continue;
      for (int i = 0; i < SLOW; i++) {
        if (p[i].fd < 0 || p[i].revents == 0)
          continue;
        rc_status s = rc_wait_closed(slow[i], 1000);
        cr_assert_eq(s, RC_CLOSED, "slow client %d: %s instead of a close", i,
                     rc_status_name(s));
        closed_at[i] = td_now_ms();
        open--;
      }
    }
    /* Others are served all along. */
    rc_assert_hello(by, 100 + k);
  }
  for (int i = 0; i < SLOW; i++) {
    cr_assert_geq(closed_at[i], 0, "slow client %d was never cut off", i);
    long long took = closed_at[i] - first[i];
    cr_log_info("slow client %d closed %lld ms after its first byte", i, took);
    cr_assert_geq(took, DEADLINE_MS - 50, "closed after %lld ms", took);
    close(slow[i]);
  }
  rc_assert_hello(by, 2);
  close(by);
  recovered(d, &b, "slow frames");
  td_stop_clean(d);
}

/* A client that sends `n` bytes of `bytes` (with `fd` on the first, when
 * not -1) and dies. */
static void send_and_die(const td *d, const void *bytes, size_t n, int fd) {
  int c = rc_connect(d->sock);
  cr_assert_eq(rc_send_fds(c, bytes, n, &fd, fd >= 0 ? 1 : 0), 0);
  close(c);
}

Test(hostile_frames, frames_cut_short_by_a_dying_client_leave_nothing) {
  td_baseline b;
  td *d = start(&b);
  uint8_t frame[4 + 100];
  rc_header(100, frame);
  memset(frame + 4, ' ', 100);
  memcpy(frame + 4, "{\"id\": 1, \"op\": \"hello\"", 23);
  frame[103] = '}';

  send_and_die(d, frame, 2, -1);
  recovered(d, &b, "half a header");
  send_and_die(d, frame, 4, -1);
  recovered(d, &b, "a header, no body");
  send_and_die(d, frame, 4 + 50, -1);
  recovered(d, &b, "half a body");
  send_and_die(d, frame, 4 + 99, -1);
  recovered(d, &b, "all but the last byte");

  /* The fd of the unfinished frame goes too. */
  int p[2];
  rc_pipe(p);
  send_and_die(d, frame, 4 + 99, p[1]);
  close(p[1]);
  cr_assert(rc_eof_within(p[0], 5000),
            "the daemon kept the fd of a frame that never ended");
  close(p[0]);
  recovered(d, &b, "an fd on an unfinished frame");

  /* One whole frame answered, then the client dies inside the next. */
  int c = rc_connect(d->sock);
  uint8_t two[64 + 3];
  size_t len = hello_frame(two, sizeof two, 5);
  memcpy(two + len, frame, 3);
  cr_assert_eq(rc_send(c, two, len + 3), 0);
  cJSON *r = rc_read_reply(c);
  rc_assert_ok(r, 5);
  cJSON_Delete(r);
  close(c);
  recovered(d, &b, "a frame and a half");
  td_stop_clean(d);
}

/* list frames back to back, as many as fit in about 64 KiB. */
static uint8_t *list_frames(size_t *len) {
  const char body[] = "{\"id\": 3, \"op\": \"list\"}";
  size_t one = 4 + sizeof body - 1, n = 65536 / one;
  uint8_t *buf = malloc(n * one);
  cr_assert(buf);
  for (size_t i = 0; i < n; i++) {
    rc_header(sizeof body - 1, buf + i * one);
    memcpy(buf + i * one + 4, body, sizeof body - 1);
  }
  *len = n * one;
  return buf;
}

/* Replies the daemon may queue for one client (CONN_OUT_HIGH_WATER), and
 * what it may take beyond them before it stops reading. */
#define QUEUED_MAX_KIB (8 * 1024)
#define UNREAD_SLACK_KIB (24 * 1024)
/* Sending this much without the daemon pushing back is a failure. */
#define WRITE_CAP (256u << 20)

Test(hostile_frames, a_client_that_never_reads_is_throttled_then_dropped) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  cr_assert_eq(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK), 0);
  size_t len;
  uint8_t *buf = list_frames(&len);
  /* The buffer is whole frames, so cycling through it keeps the stream a
   * sequence of frames wherever a write stops. */
  size_t sent = 0;
  for (;;) {
    struct pollfd p = {.fd = c, .events = POLLOUT};
    if (poll(&p, 1, 1000) == 0)
      break; /* a second without room: the daemon stopped reading */
    ssize_t n = send(c, buf + sent % len, len - sent % len, MSG_NOSIGNAL);
    cr_assert(n > 0 || errno == EAGAIN || errno == EINTR, "send: %s",
              strerror(errno));
    if (n > 0)
      sent += (size_t)n;
    cr_assert_lt(sent, WRITE_CAP,
                 "the daemon read %u MiB of requests from a client that "
                 "reads no reply",
                 WRITE_CAP >> 20);
  }
  free(buf);
  long rss = td_rss_kib(d);
  cr_log_info("pushed back after %zu KiB of requests; VmRSS %ld KiB (%+ld)",
              sent >> 10, rss, rss - b.rss_kib);
  if (td_rss_meaningful())
    cr_assert_leq(rss, b.rss_kib + QUEUED_MAX_KIB + UNREAD_SLACK_KIB,
                  "VmRSS %ld KiB with replies piled up, baseline %ld KiB", rss,
                  b.rss_kib);
  /* The stalled client holds up nobody else. */
  td_assert_forward_ok(d, "beside a client that reads nothing");
  close(c);
  recovered(d, &b, "a client that never read");
  td_stop_clean(d);
}

/* Sends `bytes` (with `nfds` copies of `fd`) on a fresh connection and
 * asserts BAD_FRAME with id null, then a close. */
static void expect_bad_frame(const td *d, const void *bytes, size_t n, int fd,
                             size_t nfds) {
  int c = rc_connect(d->sock);
  int fds[16];
  for (size_t i = 0; i < nfds; i++)
    fds[i] = fd;
  cr_assert_eq(rc_send_fds(c, bytes, n, fds, nfds), 0);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
  cJSON_Delete(r);
  rc_assert_closed(c);
  close(c);
}

#define ROUNDS 10

Test(hostile_frames, bad_frames_over_and_over_leak_nothing) {
  td_baseline b;
  td *d = start(&b);
  int p[2];
  rc_pipe(p);
  uint8_t hello[64];
  size_t hello_len = hello_frame(hello, sizeof hello, 1);
  static const char not_utf8[] = "{\"id\": 1, \"op\": \"hel\xff\"}";
  static const char not_object[] = "[1, 2, 3]";
  uint8_t frame[4 + MAX_FRAME + 64];
  for (int round = 0; round < ROUNDS; round++) {
    /* A good frame behind a bad header is never read. */
    rc_header(0, frame);
    memcpy(frame + 4, hello, hello_len);
    expect_bad_frame(d, frame, 4 + hello_len, -1, 0);
    rc_header(MAX_FRAME + 1, frame);
    expect_bad_frame(d, frame, 4, -1, 0);
    rc_header(sizeof not_utf8 - 1, frame);
    memcpy(frame + 4, not_utf8, sizeof not_utf8 - 1);
    expect_bad_frame(d, frame, 4 + sizeof not_utf8 - 1, -1, 0);
    rc_header(sizeof not_object - 1, frame);
    memcpy(frame + 4, not_object, sizeof not_object - 1);
    expect_bad_frame(d, frame, 4 + sizeof not_object - 1, -1, 0);
    /* A full-size body that turns bad in its last byte. */
    rc_header(MAX_FRAME, frame);
    memset(frame + 4, ' ', MAX_FRAME);
    memcpy(frame + 4, "{\"id\": 1, \"op\": \"hello\"}", 24);
    frame[4 + MAX_FRAME - 1] = 'x';
    expect_bad_frame(d, frame, 4 + MAX_FRAME, -1, 0);
    /* Two fds, and more than the daemon's control buffer holds. */
    expect_bad_frame(d, hello, hello_len, p[1], 2);
    expect_bad_frame(d, hello, hello_len, p[1], 16);
    /* A good frame, then a bad header in the same write. */
    memcpy(frame, hello, hello_len);
    rc_header(0, frame + hello_len);
    int c = rc_connect(d->sock);
    cr_assert_eq(rc_send(c, frame, hello_len + 4), 0);
    cJSON *r = rc_read_reply(c);
    rc_assert_ok(r, 1);
    cJSON_Delete(r);
    r = rc_read_reply(c);
    rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
    cJSON_Delete(r);
    rc_assert_closed(c);
    close(c);
  }
  close(p[1]);
  cr_assert(rc_eof_within(p[0], 5000), "the daemon kept a refused fd");
  close(p[0]);
  recovered(d, &b, "80 bad frames");
  td_stop_clean(d);
}
