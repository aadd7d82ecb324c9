/* proto_request_util.h — helpers shared by the request-parsing unit tests
 * (test_proto_request.c, test_proto_ops.c): build a request with printf,
 * parse it expecting success or a given code and message. One copy per test
 * binary (static), which is what Criterion binaries want. */
#ifndef TESTS_UNIT_PROTO_REQUEST_UTIL_H
#define TESTS_UNIT_PROTO_REQUEST_UTIL_H

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

static char buf[1 << 16];

/* printf into a shared buffer: requests are built from parts in many tests. */
static const char *J(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  cr_assert(n > 0 && (size_t)n < sizeof(buf));
  return buf;
}

static void parse_ok(const char *json, proto_request *req) {
  proto_error e = {0};
  int r = proto_request_parse(json, strlen(json), req, &e);
  cr_assert_eq(r, 0, "%s\n  -> %s: %s", json, sly_code_name(r), e.message);
  cr_assert(req->has_id);
}

/* Parses `len` bytes expecting `code` with a message containing `msg`. */
static proto_request parse_fail_n(const char *json, size_t len, int code,
                                  const char *msg) {
  proto_request req;
  proto_error e = {0};
  int r = proto_request_parse(json, len, &req, &e);
  cr_assert_eq(r, code, "%.*s\n  -> %s (%s), want %s", (int)len, json,
               sly_code_name(r), r ? e.message : "", sly_code_name(code));
  cr_assert_eq(e.code, code);
  cr_assert(strstr(e.message, msg) != NULL, "message \"%s\" lacks \"%s\"",
            e.message, msg);
  proto_request_free(&req);
  return req;
}

static proto_request parse_fail(const char *json, int code, const char *msg) {
  return parse_fail_n(json, strlen(json), code, msg);
}

#endif
