/* test_proto_doc.c — proto/PROTOCOL.md agrees with the code: every example
 * request parses, every example reply decodes, every op has an example, and
 * the limits table carries the defaults and ranges of PROTO_LIMIT_MAP. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"
#include "request.h"

/* Tests run from the repository root (make check), where this is. */
#define DOC "proto/PROTOCOL.md"

static char *read_doc(void) {
  FILE *f = fopen(DOC, "r");
  cr_assert_not_null(f, "cannot open %s: run from the repository root", DOC);
  static char text[1 << 18];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  cr_assert(feof(f), "%s is larger than this test expects", DOC);
  fclose(f);
  text[n] = '\0';
  return text;
}

/* Calls fn on the body of each ```json block. */
static int each_json_block(const char *text,
                           void (*fn)(const char *body, size_t len, void *arg),
                           void *arg) {
  int blocks = 0;
  const char *p = text;
  while ((p = strstr(p, "```json\n")) != NULL) {
    p += strlen("```json\n");
    const char *end = strstr(p, "```");
    cr_assert_not_null(end, "unterminated block");
    fn(p, (size_t)(end - p), arg);
    blocks++;
    p = end + 3;
  }
  return blocks;
}

static void check_block(const char *body, size_t len, void *arg) {
  bool *seen = arg;
  char *copy = strndup(body, len);
  if (strstr(copy, "\"id\"") == NULL) {
    /* A lone tensor descriptor: it must be valid inside a forward. */
    char req[1024];
    snprintf(req, sizeof(req), "{\"id\":0,\"op\":\"forward\",\"inputs\":[%s]}",
             copy);
    proto_request r;
    proto_error e = {0};
    cr_assert_eq(proto_request_parse(req, strlen(req), &r, &e), 0,
                 "example descriptor is refused: %s\n%s", e.message, copy);
  } else if (strstr(copy, "\"op\"") != NULL) {
    proto_request req;
    proto_error e = {0};
    int r = proto_request_parse(body, len, &req, &e);
    cr_assert_eq(r, 0, "example request does not parse: %s\n%s", e.message,
                 copy);
    seen[req.op] = true;
    proto_request_free(&req);
  } else {
    cJSON *out = NULL;
    bool id_null;
    uint64_t id;
    proto_error remote = {0};
    int r = proto_reply_decode(body, len, &out, &id_null, &id, &remote);
    cr_assert(r == 0 || proto_code_wire_name(r) != NULL,
              "example reply does not decode: %s\n%s", remote.message, copy);
    cr_assert(!id_null);
    cJSON_Delete(out);
  }
  free(copy);
}

Test(doc, every_example_parses_and_every_op_has_one) {
  char *text = read_doc();
  bool seen[PROTO_OP_COUNT] = {false};
  int blocks = each_json_block(text, check_block, seen);
  cr_assert_geq(blocks, 2 * PROTO_OP_COUNT, "a request and a reply per op");
  for (unsigned op = 0; op < PROTO_OP_COUNT; op++)
    cr_assert(seen[op], "no example request for %s", proto_op_name(op));
}

Test(doc, the_limits_table_matches_proto_limit_map) {
  char *text = read_doc();
#define CHECK(key, def, lo, hi)                                                \
  do {                                                                         \
    const char *row = strstr(text, "| `" #key "`");                            \
    cr_assert_not_null(row, "no row for " #key);                               \
    const char *eol = strchr(row, '\n');                                       \
    char want[96];                                                             \
    snprintf(want, sizeof(want), "| %llu | %llu .. %llu |",                    \
             (unsigned long long)def, (unsigned long long)lo,                  \
             (unsigned long long)hi);                                          \
    const char *hit = strstr(row, want);                                       \
    cr_assert(hit != NULL && hit < eol, #key ": row lacks \"%s\"", want);      \
  } while (0);
  PROTO_LIMIT_MAP(CHECK)
#undef CHECK
}

Test(doc, every_wire_code_has_a_row_in_the_code_table) {
  char *text = read_doc();
#define CHECK(name, value, msg)                                                \
  do {                                                                         \
    char want[64];                                                             \
    snprintf(want, sizeof(want), "| `%s` | %d |", #name, value);               \
    cr_assert_not_null(strstr(text, want), "no row \"%s\"", want);             \
  } while (0);
  SLY_WIRE_CODE_MAP(CHECK)
#undef CHECK
}
