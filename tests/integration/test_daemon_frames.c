/* test_daemon_frames.c — the frame layer of protocol v1 against a real
 * slyced: frames split and joined across writes, the frame timeout, and bad
 * frames, each answered with BAD_FRAME (id null) and a close while the
 * daemon goes on serving everyone else. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_frames, .timeout = 60, .fini = td_cleanup);

#define FRAMES_MAX 4096
#define FRAMES_CONFIG "\"max_frame_bytes\": 4096"

Test(daemon_frames, frame_written_one_byte_at_a_time_is_answered) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  const char body[] = "{\"id\": 7, \"op\": \"hello\"}";
  uint8_t frame[64];
  rc_header(sizeof body - 1, frame);
  memcpy(frame + 4, body, sizeof body - 1);
  for (size_t i = 0; i < 4 + sizeof body - 1; i++) {
    cr_assert_eq(rc_send(fd, frame + i, 1), 0, "write of byte %zu", i);
    td_sleep_ms(2);
  }
  cJSON *r = rc_read_reply(fd);
  rc_assert_ok(r, 7);
  cJSON_Delete(r);
  rc_assert_hello(fd, 8);
  close(fd);
  td_stop(d);
}

Test(daemon_frames, half_a_frame_on_one_connection_blocks_no_other) {
  td *d = td_start(NULL);
  int slow = rc_connect(d->sock);
  const char body[] = "{\"id\": 9, \"op\": \"hello\"}";
  uint8_t frame[64];
  rc_header(sizeof body - 1, frame);
  memcpy(frame + 4, body, sizeof body - 1);
  size_t half = 4 + (sizeof body - 1) / 2;
  cr_assert_eq(rc_send(slow, frame, half), 0);
  int other = rc_connect(d->sock);
  rc_assert_hello(other, 1);
  cr_assert_eq(rc_wait_closed(slow, 100), RC_TIMEOUT,
               "half a frame got an answer");
  cr_assert_eq(rc_send(slow, frame + half, 4 + sizeof body - 1 - half), 0);
  cJSON *r = rc_read_reply(slow);
  rc_assert_ok(r, 9);
  cJSON_Delete(r);
  close(slow);
  close(other);
  td_stop(d);
}

Test(daemon_frames, frames_joined_in_one_write_are_answered_in_order) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  const char *bodies[] = {"{\"id\": 1, \"op\": \"hello\"}",
                          "{\"id\": 2, \"op\": \"no_such_op\"}",
                          "{\"id\": 3, \"op\": \"list\"}",
                          "{\"id\": 4, \"op\": \"stats\"}"};
  uint8_t buf[512];
  size_t len = 0;
  for (size_t i = 0; i < 4; i++) {
    size_t n = strlen(bodies[i]);
    rc_header((uint32_t)n, buf + len);
    memcpy(buf + len + 4, bodies[i], n);
    len += 4 + n;
  }
  cr_assert_eq(rc_send(fd, buf, len), 0);
  cJSON *r = rc_read_reply(fd);
  rc_assert_ok(r, 1);
  cJSON_Delete(r);
  r = rc_read_reply(fd);
  rc_assert_error(r, 2, "UNKNOWN_OP");
  cJSON_Delete(r);
  r = rc_read_reply(fd);
  rc_assert_ok(r, 3);
  cr_assert(cJSON_GetObjectItemCaseSensitive(r, "slices"), "not a list reply");
  cJSON_Delete(r);
  r = rc_read_reply(fd);
  rc_assert_ok(r, 4);
  cr_assert(cJSON_GetObjectItemCaseSensitive(r, "uptime_s"),
            "not a stats reply");
  cJSON_Delete(r);
  close(fd);
  td_stop(d);
}

/* Sends `stall` (a frame's first bytes), then one more byte of the frame
 * every 50 ms, and asserts the server closes without a reply no sooner than
 * `timeout_ms` after the first byte and well before 10 times it. */
static void frames_expect_timeout(const td *d, const uint8_t *stall,
                                  size_t stall_len, bool trickle,
                                  int timeout_ms) {
  int fd = rc_connect(d->sock);
  long long start = td_now_ms();
  cr_assert_eq(rc_send(fd, stall, stall_len), 0);
  rc_status s = RC_TIMEOUT;
  while (s == RC_TIMEOUT && td_now_ms() - start < 10LL * timeout_ms) {
    s = rc_wait_closed(fd, 50);
    /* The server may close between our polls; a refused write is a close. */
    if (s == RC_TIMEOUT && trickle && rc_send(fd, " ", 1) != 0)
      s = rc_wait_closed(fd, 1000);
  }
  long long took = td_now_ms() - start;
  cr_assert(s == RC_CLOSED || s == RC_TRUNCATED,
            "expected a close without a reply, got %s after %lld ms",
            rc_status_name(s), took);
  cr_assert_geq(took, timeout_ms - 50, "closed after %lld ms", took);
  close(fd);
}

Test(daemon_frames, frame_not_finished_within_frame_timeout_is_closed) {
  td *d = td_start("\"frame_timeout_ms\": 300");
  int bystander = rc_connect(d->sock);
  rc_assert_hello(bystander, 1);

  /* Half a header, then nothing. */
  uint8_t hdr[4];
  rc_header(200, hdr);
  frames_expect_timeout(d, hdr, 2, false, 300);

  /* A whole header and a body trickling in, each byte well within the
   * timeout: the clock runs from the frame's first byte, not the last. */
  uint8_t start[5];
  rc_header(200, start);
  start[4] = '{';
  frames_expect_timeout(d, start, sizeof start, true, 300);

  rc_assert_hello(bystander, 2);
  td_assert_serving(d);
  close(bystander);
  td_stop(d);
}

Test(daemon_frames, idle_connection_outlives_frame_timeout) {
  td *d = td_start("\"frame_timeout_ms\": 300");
  int quiet = rc_connect(d->sock);
  int used = rc_connect(d->sock);
  rc_assert_hello(used, 1);
  td_sleep_ms(700);
  rc_assert_hello(quiet, 1);
  rc_assert_hello(used, 2);
  close(quiet);
  close(used);
  td_stop(d);
}

/* Sends `len` bytes on a fresh connection and asserts BAD_FRAME with id null
 * and a close, while `bystander` keeps being served. */
static void frames_expect_bad(const td *d, int bystander, const void *bytes,
                              size_t len, const char *what) {
  static uint64_t next_id = 100;
  cr_log_info("bad frame: %s", what);
  int fd = rc_connect(d->sock);
  cr_assert_eq(rc_send(fd, bytes, len), 0, "%s: send", what);
  char *body = NULL;
  uint32_t blen;
  rc_status s = rc_read_frame(fd, RC_REPLY_TIMEOUT_MS, &body, &blen, NULL);
  cr_assert(s == RC_FRAME, "%s: expected a BAD_FRAME reply, got %s", what,
            rc_status_name(s));
  cJSON *r = cJSON_ParseWithLength(body, blen);
  cr_assert(r, "%s: reply is not JSON: %s", what, body);
  free(body);
  rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
  cJSON_Delete(r);
  s = rc_wait_closed(fd, RC_REPLY_TIMEOUT_MS);
  cr_assert(s == RC_CLOSED, "%s: expected a close after BAD_FRAME, got %s",
            what, rc_status_name(s));
  close(fd);
  rc_assert_hello(bystander, next_id++);
}

static void frames_expect_bad_body(const td *d, int bystander,
                                   const char *body, size_t len,
                                   const char *what) {
  uint8_t *frame = malloc(len + 4);
  cr_assert(frame);
  rc_header((uint32_t)len, frame);
  memcpy(frame + 4, body, len);
  frames_expect_bad(d, bystander, frame, len + 4, what);
  free(frame);
}

#define FRAMES_BAD(d, by, lit, what)                                           \
  frames_expect_bad_body(d, by, lit, sizeof(lit) - 1, what)

Test(daemon_frames, bad_length_in_header_gets_bad_frame_then_close) {
  td *d = td_start(FRAMES_CONFIG);
  int bystander = rc_connect(d->sock);
  rc_assert_hello(bystander, 1);
  uint8_t hdr[4];

  rc_header(0, hdr);
  frames_expect_bad(d, bystander, hdr, 4, "length 0");
  /* Only the header is sent: the answer must not wait for a body. */
  rc_header(FRAMES_MAX + 1, hdr);
  frames_expect_bad(d, bystander, hdr, 4, "length max_frame_bytes + 1");
  rc_header(0xffffffffu, hdr);
  frames_expect_bad(d, bystander, hdr, 4, "length 2^32 - 1");

  td_assert_serving(d);
  close(bystander);
  td_stop(d);
}

Test(daemon_frames, frame_of_exactly_max_frame_bytes_is_accepted) {
  td *d = td_start(FRAMES_CONFIG);
  int bystander = rc_connect(d->sock);
  rc_assert_hello(bystander, 1);
  /* {"id": 5, <spaces> "op": "hello"}: whitespace is valid JSON. */
  const char head[] = "{\"id\": 5, ";
  const char tail[] = "\"op\": \"hello\"}";
  char body[FRAMES_MAX + 2];
  for (size_t n = FRAMES_MAX; n <= FRAMES_MAX + 1; n++) {
    memset(body, ' ', sizeof body);
    memcpy(body, head, sizeof head - 1);
    memcpy(body + n - (sizeof tail - 1), tail, sizeof tail - 1);
    if (n == FRAMES_MAX) {
      int fd = rc_connect(d->sock);
      cr_assert_eq(rc_send_body(fd, body, n, NULL, 0), 0);
      cJSON *r = rc_read_reply(fd);
      rc_assert_ok(r, 5);
      cJSON_Delete(r);
      close(fd);
    } else {
      frames_expect_bad_body(d, bystander, body, n, "max_frame_bytes + 1");
    }
  }
  td_stop(d);
}

Test(daemon_frames, body_that_is_not_a_json_object_gets_bad_frame) {
  td *d = td_start(FRAMES_CONFIG);
  int by = rc_connect(d->sock);
  rc_assert_hello(by, 1);
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\"", "truncated JSON");
  FRAMES_BAD(d, by, "hello", "not JSON");
  FRAMES_BAD(d, by, "[{\"id\": 1, \"op\": \"hello\"}]", "a JSON array");
  FRAMES_BAD(d, by, "42", "a JSON number");
  FRAMES_BAD(d, by, "\"hello\"", "a JSON string");
  FRAMES_BAD(d, by, "null", "JSON null");
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\"} x", "trailing garbage");
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\"}{\"id\": 2}",
             "two objects in one frame");
  td_assert_serving(d);
  close(by);
  td_stop(d);
}

Test(daemon_frames, body_with_invalid_utf8_or_nul_gets_bad_frame) {
  td *d = td_start(FRAMES_CONFIG);
  int by = rc_connect(d->sock);
  rc_assert_hello(by, 1);
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\", \"client\": \"\xff\"}",
             "byte 0xff");
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\", \"client\": \"\xc0\xaf\"}",
             "overlong encoding");
  FRAMES_BAD(d, by,
             "{\"id\": 1, \"op\": \"hello\", \"client\": \"\xed\xa0\x80\"}",
             "UTF-16 surrogate");
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\", \"client\": \"\xe2\x82\"}",
             "truncated sequence");
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hel\0lo\"}", "NUL inside a string");
  FRAMES_BAD(d, by, "{\"id\": 1, \"op\": \"hello\"}\0", "NUL after the object");
  td_assert_serving(d);
  close(by);
  td_stop(d);
}

/* 2000 nested arrays are valid JSON, but deeper than a recursive parser
 * should go: a daemon may refuse the frame (BAD_FRAME, close) or parse it
 * and refuse the unknown field (BAD_REQUEST); it must not crash. */
Test(daemon_frames, deeply_nested_json_is_refused_without_harm) {
  td *d = td_start(FRAMES_CONFIG);
  int by = rc_connect(d->sock);
  rc_assert_hello(by, 1);
  const char head[] = "{\"id\": 1, \"op\": \"hello\", \"x\": ";
  size_t depth = (FRAMES_MAX - sizeof head - 2) / 2;
  char body[FRAMES_MAX];
  size_t n = 0;
  memcpy(body, head, sizeof head - 1);
  n += sizeof head - 1;
  memset(body + n, '[', depth);
  n += depth;
  memset(body + n, ']', depth);
  n += depth;
  body[n++] = '}';
  cr_assert_leq(n, FRAMES_MAX);
  int fd = rc_connect(d->sock);
  cr_assert_eq(rc_send_body(fd, body, n, NULL, 0), 0);
  cJSON *r = rc_read_reply(fd);
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(r, "error"), "code");
  cr_assert(cJSON_IsString(code), "expected an error reply");
  if (strcmp(code->valuestring, "BAD_FRAME") == 0) {
    rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
    rc_assert_closed(fd);
  } else {
    rc_assert_error(r, 1, "BAD_REQUEST");
    rc_assert_hello(fd, 2);
  }
  cJSON_Delete(r);
  close(fd);
  rc_assert_hello(by, 2);
  td_assert_serving(d);
  close(by);
  td_stop(d);
}
