/* test_client_fake.c — libslyce against a scripted fake server
 * (fakeserver.h): connecting, hello, error replies, replies that break the
 * protocol, typed list/stats, sly_request_json, signals. Arenas, forward and
 * server regions are in test_client_forward_fake.c, slyctl in
 * test_slyctl_fake.c.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cJSON.h>

#include "fakeserver.h"
#include "limits.h"
#include "reply.h"
#include "slyce.h"

/* ---- connecting ---- */

static void script_hello(fake *f) {
  cJSON *j = fake_recv(f, NULL, NULL);
  FCHECK(f, j != NULL, "no hello");
  const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
  const cJSON *client = cJSON_GetObjectItemCaseSensitive(j, "client");
  uint64_t id = 0, version = 0;
  bool good = cJSON_IsString(op) && strcmp(op->valuestring, "hello") == 0 &&
              cJSON_IsString(client) &&
              strcmp(client->valuestring, "tester") == 0 &&
              proto_json_u64(j, "id", &id) == 0 &&
              proto_json_u64(j, "version", &version) == 0 && version == 1 &&
              cJSON_GetArraySize(j) == 4;
  char *text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!good)
    fake_failf(f, "bad hello request %s", text);
  free(text);
  FCHECK(f, good, "bad hello");
  fake_send_hello(f, (long long)id);
  fake_expect_eof(f);
}

Test(client_fake, hello_reads_identity_and_every_limit, .timeout = 20) {
  fake *f = fake_start(script_hello, 0);
  sly_conn *c = fake_connect(f);
  sly_hello_info h;
  sly_error err = {0};
  cr_assert(eq(int, sly_hello(c, "tester", &h, &err), 0), "%s", err.message);
  cr_assert(eq(str, h.server, "slyced 0.1.0"));
  cr_assert(eq(int, h.protocol, 1));
  cr_assert(eq(str, h.device, "sim"));
  proto_limits l;
  proto_limits_default(&l);
#define CHECK_LIMIT(key, def, lo, hi) cr_assert(eq(u64, h.key, l.key), #key);
  PROTO_LIMIT_MAP(CHECK_LIMIT)
#undef CHECK_LIMIT
  sly_close(c);
  fake_finish(f);
}

Test(client_fake, connect_uses_SLYCE_SOCKET_when_no_path_is_given,
     .timeout = 20) {
  fake *f = fake_start(script_hello, 0);
  setenv(SLY_SOCKET_ENV, f->sock, 1);
  sly_conn *c = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_connect(NULL, &c, &err), 0), "%s", err.message);
  sly_hello_info h;
  cr_assert(eq(int, sly_hello(c, "tester", &h, &err), 0), "%s", err.message);
  sly_close(c);
  fake_finish(f);
}

Test(client_fake, connect_to_a_missing_socket_names_path_and_errno) {
  sly_conn *c = (sly_conn *)0x1;
  sly_error err = {0};
  int rc = sly_connect("/nonexistent-slyce/x.sock", &c, &err);
  cr_assert(eq(int, rc, SLY_E_IO));
  cr_assert(eq(int, err.code, SLY_E_IO));
  cr_assert(eq(str, err.message,
               "connect /nonexistent-slyce/x.sock: No such file or directory"));
  cr_assert(c == (sly_conn *)0x1, "output written on failure");
}

Test(client_fake, a_socket_path_too_long_for_sun_path_is_invalid) {
  char path[200];
  memset(path, 'a', sizeof(path) - 1);
  path[0] = '/';
  path[sizeof(path) - 1] = '\0';
  sly_conn *c = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_connect(path, &c, &err), SLY_E_INVALID_ARG));
  cr_assert(c == NULL);
  cr_assert(eq(int, sly_connect("", &c, &err), SLY_E_INVALID_ARG));
}

/* ---- error replies ---- */

static void script_errors(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f,
             "{\"id\":%lld,\"ok\":false,\"error\":{\"code\":\"NO_MEMORY\","
             "\"message\":\"slice big needs 4 GiB\",\"needed\":4294967296}}",
             id);
  id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f,
             "{\"id\":%lld,\"ok\":false,\"error\":{\"code\":\"NOT_FOUND\","
             "\"message\":\"line one\\nline two\"}}",
             id);
  id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no second list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             id);
  fake_expect_eof(f);
}

Test(client_fake, an_error_reply_gives_code_message_and_needed,
     .timeout = 20) {
  fake *f = fake_start(script_errors, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = (sly_slice_list *)0x1;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_NO_MEMORY));
  cr_assert(eq(int, err.code, SLY_E_NO_MEMORY));
  cr_assert(eq(str, err.message, "slice big needs 4 GiB"));
  cr_assert(eq(u64, err.needed, 4294967296ull));
  cr_assert(l == (sly_slice_list *)0x1, "output written on failure");

  /* The connection stays usable; the message stays one line; needed is 0
   * when the server sends none. */
  sly_stats st;
  memset(&st, 0xab, sizeof(st));
  cr_assert(eq(int, sly_stats_get(c, &st, &err), SLY_E_NOT_FOUND));
  cr_assert(eq(str, err.message, "line one line two"));
  cr_assert(eq(u64, err.needed, 0));
  cr_assert(eq(u64, st.rss_bytes, 0xababababababababull));

  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  cr_assert(eq(sz, l->count, 0));
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

static void script_wrong_id(fake *f) {
  long long id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true}", id + 1);
  fake_expect_eof(f);
}

Test(client_fake, a_reply_with_another_id_is_a_protocol_error_and_closes,
     .timeout = 20) {
  fake *f = fake_start(script_wrong_id, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_stats st;
  cr_assert(eq(int, sly_stats_get(c, &st, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "does not match") != NULL, "%s", err.message);
  fake_finish(f); /* the client closed its socket: the fake saw EOF */
  cr_assert(eq(int, sly_stats_get(c, &st, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed"));
  sly_close(c);
}

/* Reads the request, never answers, and waits for the client to give up. */
static void script_silent(fake *f) {
  FCHECK(f, fake_expect(f, "list") >= 0, "no list");
  fake_expect_eof(f);
}

/* A server that has stopped answering (SIGSTOP, a hung executor) ends the
 * call after the timeout instead of never, and the connection is closed:
 * its late reply would answer the next request. */
Test(client_fake, a_reply_that_never_comes_ends_at_the_timeout,
     .timeout = 20) {
  fake *f = fake_start(script_silent, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  cr_assert(eq(int, sly_set_timeout(c, 200, &err), 0), "%s", err.message);
  sly_slice_list *l = NULL;
  struct timeval t0, t1;
  gettimeofday(&t0, NULL);
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  gettimeofday(&t1, NULL);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
  cr_assert(ms >= 150, "gave up after %ld ms, before the timeout", ms);
  cr_assert(eq(str, err.message, "no reply from slyced in 200 ms (the "
                                 "timeout); the connection is closed"));
  cr_assert(l == NULL);
  fake_finish(f); /* the client closed its socket: the fake saw EOF */
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed"));
  cr_assert(eq(int, sly_set_timeout(c, 200, &err), SLY_E_IO));
  sly_close(c);
  cr_assert(eq(int, sly_set_timeout(NULL, 200, &err), SLY_E_INVALID_ARG));
}

/* Answers f->arg lists, each a few milliseconds after reading it. */
static void script_slow_lists(fake *f) {
  for (uint64_t i = 0; i < f->arg; i++) {
    long long id = fake_expect(f, "list");
    FCHECK(f, id >= 0, "no list %llu", (unsigned long long)i);
    usleep(5000);
    fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
               id);
  }
  fake_expect_eof(f);
}

/* A client waiting for a reply sleeps until the reply comes. A recvmsg that
 * blocks is also woken when the server reads the request (the socket's
 * write space wakes every sleeper on it), which doubled the thread wake-ups
 * of every round trip; libslyce waits in poll for POLLIN alone. */
Test(client_fake, a_client_waiting_for_its_reply_wakes_once_per_reply,
     .timeout = 20) {
  enum { ROUNDS = 20 };
  fake *f = fake_start(script_slow_lists, ROUNDS);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  struct rusage r0, r1;
  getrusage(RUSAGE_THREAD, &r0);
  for (int i = 0; i < ROUNDS; i++) {
    sly_slice_list *l = NULL;
    cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
    sly_slice_list_free(l);
  }
  getrusage(RUSAGE_THREAD, &r1);
  long woke = r1.ru_nvcsw - r0.ru_nvcsw;
  /* One sleep a reply, and a little slack for the rest of the process. */
  cr_assert(woke <= ROUNDS + ROUNDS / 4,
            "%ld voluntary context switches over %d round trips", woke,
            ROUNDS);
  sly_close(c);
  fake_finish(f);
}

/* Takes nothing from the socket for a while, then leaves. */
static void script_deaf(fake *f) { usleep(1500 * 1000); (void)f; }

/* A request bigger than the socket's buffers to a server that reads
 * nothing: the send gives up at the timeout too, and closes. */
Test(client_fake, a_send_that_never_drains_ends_at_the_timeout,
     .timeout = 20) {
  fake *f = fake_start(script_deaf, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  cr_assert(eq(int, sly_set_timeout(c, 200, &err), 0), "%s", err.message);
  size_t n = 8u << 20; /* past any Unix socket buffer */
  char *cfg = malloc(n + 16);
  cr_assert_not_null(cfg);
  memcpy(cfg, "{\"pad\": \"", 9);
  memset(cfg + 9, 'x', n);
  memcpy(cfg + 9 + n, "\"}", 3);
  cr_assert(eq(int, sly_add_slice(c, "big", "linear", cfg, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "slyced took nothing in 200 ms (the "
                                 "timeout); the connection is closed"));
  free(cfg);
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed"));
  sly_close(c);
  fake_finish(f);
}

static void script_oversize(fake *f) {
  FCHECK(f, fake_expect(f, "list") >= 0, "no list");
  uint32_t n = (uint32_t)f->arg;
  uint8_t h[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16),
                  (uint8_t)(n >> 24)};
  fake_send_raw(f, h, sizeof(h));
  fake_expect_eof(f);
}

Test(client_fake, a_reply_over_the_reply_limit_is_a_protocol_error,
     .timeout = 20) {
  fake *f = fake_start(script_oversize, PROTO_MAX_REPLY_BYTES + 1ull);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(l == NULL);
  fake_finish(f);
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  sly_close(c);
}

Test(client_fake, a_reply_of_length_zero_is_a_protocol_error, .timeout = 20) {
  fake *f = fake_start(script_oversize, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  fake_finish(f);
  sly_close(c);
}

static void script_not_json(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true", id);
  fake_expect_eof(f);
}

Test(client_fake, a_reply_that_is_not_json_is_a_protocol_error,
     .timeout = 20) {
  fake *f = fake_start(script_not_json, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  fake_finish(f);
  sly_close(c);
}

static void script_null_id(fake *f) {
  FCHECK(f, fake_expect(f, "list") >= 0, "no list");
  fake_reply(f, "{\"id\":null,\"ok\":false,\"error\":{\"code\":\"BUSY\","
                "\"message\":\"too many connections for uid 1000\"}}");
  fake_expect_eof(f);
}

Test(client_fake, an_error_with_id_null_returns_its_code_and_closes,
     .timeout = 20) {
  fake *f = fake_start(script_null_id, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_BUSY));
  cr_assert(eq(str, err.message, "too many connections for uid 1000"));
  fake_finish(f);
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed"));
  sly_close(c);
}

static void script_cut_short(fake *f) {
  FCHECK(f, fake_expect(f, "list") >= 0, "no list");
  fake_send_raw(f, "\x40\x00\x00\x00{\"id\":", 10);
}

Test(client_fake, a_reply_cut_short_is_an_io_error, .timeout = 20) {
  fake *f = fake_start(script_cut_short, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed by slyced (it may be "
                               "stopping or restarting; its log says why)"));
  fake_finish(f);
  sly_close(c);
}

/* A reply and, in the same write, a second frame nobody asked for. */
static void script_extra_frame(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  char body[128], both[320];
  int n = snprintf(body, sizeof(body),
                   "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
                   id);
  size_t k = 0;
  for (int i = 0; i < 2; i++) {
    uint8_t h[4] = {(uint8_t)n, 0, 0, 0};
    memcpy(both + k, h, 4);
    memcpy(both + k + 4, body, (size_t)n);
    k += 4 + (size_t)n;
  }
  fake_send_raw(f, both, k);
  fake_expect_eof(f);
}

Test(client_fake, bytes_past_the_reply_are_a_protocol_error, .timeout = 20) {
  fake *f = fake_start(script_extra_frame, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "past its reply") != NULL, "%s", err.message);
  fake_finish(f);
  sly_close(c);
}

/* A reply larger than what libslyce reads with its header (4 KiB), sent in
 * three writes that split the header itself. */
#define BIG_PAD (12u << 10)
static void script_big_reply(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  size_t pad = BIG_PAD;
  char *body = malloc(pad + 128);
  FCHECK(f, body != NULL, "out of memory");
  int n = snprintf(body, 128, "{\"id\":%lld,\"ok\":true,\"pad\":\"", id);
  memset(body + n, 'x', pad);
  n += (int)pad;
  n += snprintf(body + n, 16, "\"}");
  uint8_t h[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), 0};
  fake_send_raw(f, h, 2);
  usleep(20 * 1000);
  fake_send_raw(f, h + 2, 2);
  fake_send_raw(f, body, (size_t)n);
  free(body);
  fake_expect_eof(f);
}

Test(client_fake, a_reply_larger_than_the_first_read_arrives_whole,
     .timeout = 20) {
  fake *f = fake_start(script_big_reply, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  char *reply = NULL;
  cr_assert(eq(int, sly_request_json(c, "{\"op\":\"list\"}", &reply, &err),
               0), "%s", err.message);
  cJSON *r = cJSON_Parse(reply);
  cr_assert(r != NULL);
  const cJSON *pad = cJSON_GetObjectItemCaseSensitive(r, "pad");
  cr_assert(cJSON_IsString(pad) &&
            strlen(pad->valuestring) == BIG_PAD);
  cJSON_Delete(r);
  free(reply);
  sly_close(c);
  fake_finish(f);
}

static void script_close_at_once(fake *f) { (void)f; }

Test(client_fake, sending_to_a_closed_server_is_an_io_error_not_sigpipe,
     .timeout = 20) {
  fake *f = fake_start(script_close_at_once, 0);
  sly_conn *c = fake_connect(f);
  fake_finish(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  int rc = sly_list(c, &l, &err);
  cr_assert(eq(int, rc, SLY_E_IO));
  cr_assert(strstr(err.message, "slyced") != NULL, "%s", err.message);
  sly_close(c);
}

/* A memfd the fake attaches to replies that must not carry one. */
static int stray_memfd(void) {
  int fd = memfd_create("fake-stray", MFD_CLOEXEC);
  if (fd >= 0 && ftruncate(fd, 4096) < 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

static void script_stray_fds(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  int fds[17];
  size_t n = (size_t)f->arg;
  for (size_t i = 0; i < n; i++)
    fds[i] = stray_memfd();
  fake_reply_fds(f, fds, n,
                 "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
                 id);
  for (size_t i = 0; i < n; i++)
    close(fds[i]);
  fake_expect_eof(f);
}

Test(client_fake, fds_on_a_reply_that_takes_none_are_closed_and_refused,
     .timeout = 20) {
  fake *f = fake_start(script_stray_fds, 1);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  fake_finish(f);
  cr_assert(eq(int, fake_count_fds("memfd:fake-stray"), 0));
  sly_close(c);
}

Test(client_fake, more_fds_than_a_reply_may_carry_are_closed_and_refused,
     .timeout = 20) {
  fake *f = fake_start(script_stray_fds, 17);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "file descriptors") != NULL, "%s",
            err.message);
  fake_finish(f);
  cr_assert(eq(int, fake_count_fds("memfd:fake-stray"), 0));
  sly_close(c);
}

/* ---- typed replies ---- */

static void script_list_stats(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, FAKE_LIST_TWO);
  id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, FAKE_STATS_BODY);
  fake_expect_eof(f);
}

Test(client_fake, list_and_stats_are_read_into_structs, .timeout = 20) {
  fake *f = fake_start(script_list_stats, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  cr_assert(eq(sz, l->count, 2));
  sly_slice_info *a = &l->slices[0], *b = &l->slices[1];
  cr_assert(eq(str, a->name, "enc"));
  cr_assert(eq(str, a->constructor, "linear"));
  cr_assert(eq(str, a->tier, "gpu"));
  cr_assert(eq(str, a->state, "resident"));
  cr_assert(eq(u64, a->bytes, 1048576));
  cr_assert(eq(int, a->pinned, 1));
  cr_assert(eq(str, (char *)sly_list_pinned_tier(l, 0), "cpu"));
  cr_assert(eq(u64, a->hits, 12));
  cr_assert(eq(u64, a->loads, 3));
  cr_assert(eq(dbl, a->last_used, 1700000000.5));
  cr_assert(eq(str, b->state, "unloaded"));
  cr_assert(eq(int, b->pinned, 0));
  cr_assert(sly_list_pinned_tier(l, 1) == NULL);
  cr_assert(sly_list_pinned_tier(l, 2) == NULL, "past the end");
  cr_assert(sly_list_pinned_tier(NULL, 0) == NULL);
  sly_slice_list_free(l);

  sly_stats st;
  cr_assert(eq(int, sly_stats_get(c, &st, &err), 0), "%s", err.message);
  cr_assert(eq(dbl, st.uptime_s, 3723.5));
  cr_assert(eq(u64, st.rss_bytes, 52428800));
  cr_assert(eq(u64, st.mem_available_bytes, 8589934592ull));
  cr_assert(eq(u64, st.mem_total_bytes, 17179869184ull));
  cr_assert(eq(u64, st.connections, 2));
  cr_assert(eq(u64, st.requests, 120));
  cr_assert(eq(u64, st.errors, 3));
  sly_close(c);
  fake_finish(f);
}

/* A list reply a field of which is missing (arg 0) or of the wrong type
 * (arg 1: "pinned" neither a bool nor a tier). */
static void script_list_bad(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  if (f->arg == 0)
    fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[{\"name\":\"x\"}]}",
               id);
  else
    fake_reply(f,
               "{\"id\":%lld,\"ok\":true,\"slices\":[{\"name\":\"x\","
               "\"constructor\":\"linear\",\"bytes\":8,\"tier\":\"cpu\","
               "\"state\":\"resident\",\"pinned\":2,\"hits\":0,"
               "\"loads\":0,\"last_used\":0}],\"pipelines\":[]}",
               id);
  fake_expect_eof(f);
}

/* sly_list fails with PROTOCOL, naming the field, and leaves *out alone. */
static void list_is_a_protocol_error(int arg, const char *field) {
  fake *f = fake_start(script_list_bad, arg);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = (sly_slice_list *)0x1;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, field) != NULL, "%s", err.message);
  cr_assert(l == (sly_slice_list *)0x1);
  sly_close(c);
  fake_finish(f);
}

Test(client_fake, a_reply_missing_a_promised_field_is_a_protocol_error,
     .timeout = 20) {
  list_is_a_protocol_error(0, "constructor");
}

Test(client_fake, a_pin_neither_a_bool_nor_a_tier_is_a_protocol_error,
     .timeout = 20) {
  list_is_a_protocol_error(1, "pinned");
}

static void script_list_pins(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  static const char slice[] =
      "{\"name\":\"%s\",\"constructor\":\"linear\",\"bytes\":8,"
      "\"tier\":\"cpu\",\"state\":\"resident\",\"pinned\":%s,\"hits\":0,"
      "\"loads\":0,\"last_used\":0}";
  char a[256], b[256];
  snprintf(a, sizeof a, slice, "old", "true");
  snprintf(b, sizeof b, slice, "new", "\"nvme\"");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[%s,%s],"
                "\"pipelines\":[]}",
             id, a, b);
  fake_expect_eof(f);
}

/* A daemon that says only that a slice is pinned (true), or names a tier
 * this library does not know, is read as "tier" is: pinned, at "" or at
 * that name. */
Test(client_fake, a_pin_without_a_tier_or_at_a_new_tier_reads_as_pinned,
     .timeout = 20) {
  fake *f = fake_start(script_list_pins, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  cr_assert(eq(sz, l->count, 2));
  cr_assert(eq(int, l->slices[0].pinned, 1));
  cr_assert(eq(str, (char *)sly_list_pinned_tier(l, 0), ""));
  cr_assert(eq(int, l->slices[1].pinned, 1));
  cr_assert(eq(str, (char *)sly_list_pinned_tier(l, 1), "nvme"));
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

static void script_admin(fake *f) {
  long long id = fake_expect(f, "reload");
  FCHECK(f, id >= 0, "no reload");
  fake_reply(f, "{\"id\":%lld,\"ok\":true}", id);
  id = fake_expect(f, "shutdown");
  FCHECK(f, id >= 0, "no shutdown");
  fake_reply(f,
             "{\"id\":%lld,\"ok\":false,\"error\":{\"code\":"
             "\"PERMISSION_DENIED\",\"message\":\"shutdown needs admin\"}}",
             id);
  fake_expect_eof(f);
}

Test(client_fake, reload_and_shutdown_send_their_ops, .timeout = 20) {
  fake *f = fake_start(script_admin, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  cr_assert(eq(int, sly_reload(c, &err), 0), "%s", err.message);
  cr_assert(eq(int, sly_shutdown(c, &err), SLY_E_PERMISSION_DENIED));
  cr_assert(eq(str, err.message, "shutdown needs admin"));
  sly_close(c);
  fake_finish(f);
}

/* ---- limits the client checks before sending ---- */

static void script_small_frames(fake *f) {
  long long id = fake_expect(f, "hello");
  FCHECK(f, id >= 0, "no hello");
  fake_send_hello(f, id);
  id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "the refused requests were sent");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             id);
  fake_expect_eof(f);
}

Test(client_fake, requests_the_server_would_reject_as_frames_are_not_sent,
     .timeout = 20) {
  fake *f = fake_start(script_small_frames, 4096);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_hello_info h;
  char name[PROTO_CLIENT_MAX + 2];
  memset(name, 'n', sizeof(name) - 1);
  name[sizeof(name) - 1] = '\0';
  cr_assert(eq(int, sly_hello(c, name, &h, &err), SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_hello(c, "bad \xff utf-8", &h, &err),
               SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_hello(c, "tester", &h, &err), 0), "%s", err.message);
  cr_assert(eq(u64, h.max_frame_bytes, 4096));

  /* Over the server's max_frame_bytes: refused here, connection kept. */
  char *big = malloc(5000);
  int n = snprintf(big, 5000, "{\"op\":\"list\",\"pad\":\"");
  memset(big + n, 'x', 5000 - (size_t)n - 3);
  memcpy(big + 4997, "\"}", 3);
  char *reply = (char *)0x1;
  cr_assert(eq(int, sly_request_json(c, big, &reply, &err),
               SLY_E_INVALID_ARG));
  cr_assert(strstr(err.message, "max_frame_bytes 4096") != NULL, "%s",
            err.message);
  free(big);
  cr_assert(eq(int, sly_request_json(c, "{\"op\":\"list\",\"x\":\"\xc3\"}",
                                     &reply, &err),
               SLY_E_INVALID_ARG));
  cr_assert(reply == (char *)0x1);
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

/* ---- sly_request_json ---- */

static void script_json(fake *f) {
  /* No id given: the library adds one; the rest arrives as given. */
  cJSON *j = fake_recv(f, NULL, NULL);
  FCHECK(f, j != NULL, "no request");
  uint64_t id = 0;
  const cJSON *slice = cJSON_GetObjectItemCaseSensitive(j, "slice");
  bool good = proto_json_u64(j, "id", &id) == 0 && cJSON_IsString(slice) &&
              strcmp(slice->valuestring, "enc") == 0 &&
              cJSON_GetArraySize(j) == 3;
  cJSON_Delete(j);
  FCHECK(f, good, "request without its id or fields");
  fake_reply(f, "{\"id\":%llu,\"ok\":true,\"slice\":\"enc\",\"tier\":\"gpu\"}",
             (unsigned long long)id);
  /* An id given is kept. */
  FCHECK(f, fake_expect(f, "list") == 9007199254740991ll, "id not kept");
  fake_reply(f,
             "{\"id\":9007199254740991,\"ok\":false,\"error\":{\"code\":"
             "\"UNKNOWN_OP\",\"message\":\"no op lst\"}}");
  fake_expect_eof(f);
}

Test(client_fake, request_json_adds_an_id_and_returns_the_reply_text,
     .timeout = 20) {
  fake *f = fake_start(script_json, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  char *reply = NULL;
  /* Refused before sending: not JSON, not an object, a bad id. */
  cr_assert(eq(int, sly_request_json(c, "{\"op\":", &reply, &err),
               SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_request_json(c, "[1]", &reply, &err),
               SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_request_json(c, "{\"id\":-1,\"op\":\"list\"}", &reply,
                                     &err),
               SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_request_json(c, "{\"id\":1.5,\"op\":\"list\"}",
                                     &reply, &err),
               SLY_E_INVALID_ARG));
  cr_assert(reply == NULL);

  int rc = sly_request_json(
      c, "{\"op\":\"set_active_slice\",\"slice\":\"enc\"}", &reply, &err);
  cr_assert(eq(int, rc, 0), "%s", err.message);
  cJSON *r = cJSON_Parse(reply);
  cr_assert(r != NULL);
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
  cr_assert(eq(str, cJSON_GetObjectItemCaseSensitive(r, "tier")->valuestring,
               "gpu"));
  cJSON_Delete(r);
  free(reply);
  reply = NULL;

  /* An error reply is returned as text too, with its code. */
  rc = sly_request_json(c, "{\"op\":\"list\",\"id\":9007199254740991}", &reply,
                        &err);
  cr_assert(eq(int, rc, SLY_E_UNKNOWN_OP), "%s", err.message);
  cr_assert(eq(str, err.message, "no op lst"));
  cr_assert(reply != NULL && strstr(reply, "UNKNOWN_OP") != NULL);
  free(reply);
  sly_close(c);
  fake_finish(f);
}

/* ---- signals ---- */

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
  (void)sig;
  alarms++;
}

static void script_slow(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  usleep(200 * 1000);
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             id);
  fake_expect_eof(f);
}

Test(client_fake, a_call_interrupted_by_signals_still_completes,
     .timeout = 20) {
  struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
  sigaction(SIGALRM, &sa, NULL);
  fake *f = fake_start(script_slow, 0);
  sly_conn *c = fake_connect(f);
  struct itimerval it = {.it_interval = {0, 5000}, .it_value = {0, 5000}};
  setitimer(ITIMER_REAL, &it, NULL);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  int rc = sly_list(c, &l, &err);
  struct itimerval off = {0};
  setitimer(ITIMER_REAL, &off, NULL);
  cr_assert(eq(int, rc, 0), "%s", err.message);
  cr_assert(alarms > 0, "no signal arrived during the call");
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

static void script_busy_at_once(fake *f) {
  fake_reply(f, "{\"id\":null,\"ok\":false,\"error\":{\"code\":\"BUSY\","
                "\"message\":\"too many connections for uid 1000\"}}");
}

Test(client_fake, a_server_that_refused_before_the_request_is_heard_out,
     .timeout = 20) {
  fake *f = fake_start(script_busy_at_once, 0);
  sly_conn *c = fake_connect(f);
  fake_finish(f); /* it sent its error and closed */
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_BUSY), "%s", err.message);
  cr_assert(eq(str, err.message, "too many connections for uid 1000"));
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  sly_close(c);
}
