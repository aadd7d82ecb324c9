/* test_daemon_requests.c — well-formed frames holding bad requests: each
 * gets its error reply and the connection stays. Also fds on a frame that
 * takes none, and more fds than a frame may carry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_requests, .timeout = 60, .fini = td_cleanup);

typedef struct {
  const char *json;
  long long id; /* RC_ID_NULL, RC_ID_ANY or the id */
  const char *code;
  const char *needle; /* in the message, or NULL */
} req_case;

/* Runs every case on one connection, which must stay open throughout. */
static void req_run(const req_case *cases, size_t n) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  for (size_t i = 0; i < n; i++) {
    cr_log_info("request: %s", cases[i].json);
    cJSON *r = rc_call(fd, cases[i].json);
    rc_assert_error_msg(r, cases[i].id, cases[i].code, cases[i].needle);
    cJSON_Delete(r);
    rc_assert_hello(fd, 1000 + i);
  }
  close(fd);
  td_assert_serving(d);
  td_stop(d);
}

#define REQ_RUN(cases) req_run(cases, sizeof(cases) / sizeof(cases[0]))

Test(daemon_requests, bad_id_gets_bad_request_with_null_id_and_conn_stays) {
  static const req_case cases[] = {
      {"{\"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": -1, \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": 9007199254740992, \"op\": \"hello\"}", RC_ID_NULL,
       "BAD_REQUEST", "id"},
      {"{\"id\": 1.5, \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": 1e300, \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": \"1\", \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": null, \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": true, \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": [1], \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
  };
  REQ_RUN(cases);
}

Test(daemon_requests, ids_at_both_ends_of_the_range_are_echoed) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 0);
  rc_assert_hello(fd, 9007199254740991ULL);
  /* Ids need not be unique or increasing: they are the client's business. */
  rc_assert_hello(fd, 5);
  rc_assert_hello(fd, 5);
  rc_assert_hello(fd, 1);
  close(fd);
  td_stop(d);
}

Test(daemon_requests, bad_op_is_named_in_the_error_and_conn_stays) {
  static const req_case cases[] = {
      {"{\"id\": 5, \"op\": \"frobnicate\"}", 5, "UNKNOWN_OP", "frobnicate"},
      {"{\"id\": 6, \"op\": \"\"}", 6, "UNKNOWN_OP", NULL},
      {"{\"id\": 7, \"op\": \"HELLO\"}", 7, "UNKNOWN_OP", "HELLO"},
      {"{\"id\": 8}", 8, "BAD_REQUEST", "op"},
      {"{\"id\": 9, \"op\": 1}", 9, "BAD_REQUEST", "op"},
      {"{\"id\": 10, \"op\": null}", 10, "BAD_REQUEST", "op"},
  };
  REQ_RUN(cases);
}

Test(daemon_requests, unknown_or_duplicate_field_gets_bad_request_naming_it) {
  static const req_case cases[] = {
      {"{\"id\": 3, \"op\": \"hello\", \"bogus\": 1}", 3, "BAD_REQUEST",
       "bogus"},
      {"{\"id\": 4, \"op\": \"list\", \"verbose\": true}", 4, "BAD_REQUEST",
       "verbose"},
      {"{\"id\": 5, \"op\": \"stats\", \"Id\": 5}", 5, "BAD_REQUEST", "Id"},
      {"{\"id\": 6, \"op\": \"hello\", \"op\": \"list\"}", RC_ID_ANY,
       "BAD_REQUEST", "op"},
      {"{\"id\": 7, \"op\": \"hello\", \"client\": \"a\", \"client\": \"b\"}",
       RC_ID_ANY, "BAD_REQUEST", "client"},
      {"{\"id\": 8, \"id\": 9, \"op\": \"hello\"}", RC_ID_ANY, "BAD_REQUEST",
       "id"},
  };
  REQ_RUN(cases);
}

Test(daemon_requests, hello_checks_version_and_client) {
  static const req_case cases[] = {
      {"{\"id\": 1, \"op\": \"hello\", \"version\": 2}", 1, "BAD_REQUEST",
       "unsupported protocol version 2"},
      {"{\"id\": 2, \"op\": \"hello\", \"version\": 0}", 2, "BAD_REQUEST",
       "unsupported protocol version 0"},
      {"{\"id\": 3, \"op\": \"hello\", \"version\": \"1\"}", 3, "BAD_REQUEST",
       "version"},
      {"{\"id\": 4, \"op\": \"hello\", \"client\": 5}", 4, "BAD_REQUEST",
       "client"},
      /* 129 bytes: one over PROTO_CLIENT_MAX. */
      {"{\"id\": 5, \"op\": \"hello\", \"client\": \""
       "0123456789012345678901234567890123456789012345678901234567890123"
       "0123456789012345678901234567890123456789012345678901234567890123"
       "x\"}",
       5, "BAD_REQUEST", "client"},
  };
  REQ_RUN(cases);
}

Test(daemon_requests, hello_accepts_version_1_and_a_128_byte_client) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  cJSON *r = rc_call(
      fd, "{\"id\": 1, \"op\": \"hello\", \"version\": 1, \"client\": \""
          "0123456789012345678901234567890123456789012345678901234567890123"
          "0123456789012345678901234567890123456789012345678901234567890123"
          "\"}");
  rc_assert_ok(r, 1);
  cJSON_Delete(r);
  close(fd);
  td_stop(d);
}

Test(daemon_requests, release_ids_are_bounded_and_typed) {
  char json[2048];
  int n = snprintf(json, sizeof json,
                   "{\"id\": 1, \"op\": \"list\", \"release\": [");
  for (int i = 0; i < 65; i++)
    n += snprintf(json + n, sizeof json - (size_t)n, "%s%d", i ? ", " : "",
                  i + 1);
  snprintf(json + n, sizeof json - (size_t)n, "]}");
  const req_case cases[] = {
      {json, 1, "BAD_REQUEST", "release"},
      {"{\"id\": 2, \"op\": \"list\", \"release\": 3}", 2, "BAD_REQUEST",
       "release"},
      {"{\"id\": 3, \"op\": \"list\", \"release\": [-1]}", 3, "BAD_REQUEST",
       "release"},
      {"{\"id\": 4, \"op\": \"list\", \"release\": [\"x\"]}", 4,
       "BAD_REQUEST", "release"},
      {"{\"id\": 5, \"op\": \"release\"}", 5, "BAD_REQUEST", "leases"},
  };
  REQ_RUN(cases);
}

Test(daemon_requests, fd_on_a_request_that_takes_none_is_closed_and_refused) {
  td *d = td_start(NULL);
  int fd = rc_connect(d->sock);
  rc_assert_hello(fd, 1); /* accepted: the count below includes fd */
  int base = td_fd_count(d);
  int p[2];
  rc_pipe(p);
  const char hello[] = "{\"id\": 4, \"op\": \"hello\"}";
  cr_assert_eq(rc_send_body(fd, hello, sizeof hello - 1, &p[1], 1), 0);
  close(p[1]);
  cJSON *r = rc_read_reply(fd);
  rc_assert_error(r, 4, "BAD_REQUEST");
  cJSON_Delete(r);
  /* End of file on the read end: the daemon closed its copy too. */
  cr_assert(rc_eof_within(p[0], 5000), "the daemon kept the fd it refused");
  close(p[0]);
  cr_assert_eq(td_fd_count(d), base, "the daemon's fd count changed");
  rc_assert_hello(fd, 5);
  close(fd);
  td_stop(d);
}

/* Sends `json` with `nfds` pipe write ends attached and asserts BAD_FRAME
 * with id null, a close, and that the daemon kept none of the fds. */
static void req_expect_fds_refused(const td *d, int bystander,
                                   const char *json, size_t nfds) {
  int base = td_fd_count(d);
  int fd = rc_connect(d->sock);
  int rd[64], wr[64];
  cr_assert_leq(nfds, 64);
  for (size_t i = 0; i < nfds; i++) {
    int p[2];
    rc_pipe(p);
    rd[i] = p[0];
    wr[i] = p[1];
  }
  cr_assert_eq(rc_send_body(fd, json, strlen(json), wr, nfds), 0);
  for (size_t i = 0; i < nfds; i++)
    close(wr[i]);
  cJSON *r = rc_read_reply(fd);
  rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
  cJSON_Delete(r);
  rc_assert_closed(fd);
  close(fd);
  for (size_t i = 0; i < nfds; i++) {
    cr_assert(rc_eof_within(rd[i], 5000), "the daemon kept fd %zu of %zu", i,
              nfds);
    close(rd[i]);
  }
  cr_assert(td_fd_count_wait(d, base, 2000), "daemon fds: %d before, %d now",
            base, td_fd_count(d));
  rc_assert_hello(bystander, 2);
}

Test(daemon_requests, two_fds_on_map_region_get_bad_frame_and_close) {
  td *d = td_start(NULL);
  int by = rc_connect(d->sock);
  rc_assert_hello(by, 1);
  req_expect_fds_refused(d, by, "{\"id\": 1, \"op\": \"map_region\"}", 2);
  req_expect_fds_refused(d, by, "{\"id\": 1, \"op\": \"hello\"}", 2);
  close(by);
  td_assert_serving(d);
  td_stop(d);
}

Test(daemon_requests, more_fds_than_the_control_buffer_holds_get_bad_frame) {
  td *d = td_start(NULL);
  int by = rc_connect(d->sock);
  rc_assert_hello(by, 1);
  /* The kernel truncates the control data (MSG_CTRUNC) and closes what did
   * not fit; the daemon must close what did. */
  req_expect_fds_refused(d, by, "{\"id\": 1, \"op\": \"map_region\"}", 64);
  close(by);
  td_assert_serving(d);
  td_stop(d);
}
