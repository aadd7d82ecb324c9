/* test_client_fake.c — libslyce and slyctl against a scripted fake server.
 *
 * Each test starts a fake slyced: a thread that listens on a socket in a
 * temporary folder, accepts one connection and plays a script (read a
 * request, check it, send bytes back). So the client's side of protocol v1 is
 * tested byte for byte, including replies a real daemon never sends: wrong
 * ids, oversized frames, fds where none belong. The fake thread records the
 * first failed check; the test asserts on it after joining.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cJSON.h>

#include "harness.h"
#include "limits.h"
#include "reply.h"
#include "slyce.h"

#define FAKE_TIMEOUT_MS 5000

typedef struct fake fake;
typedef void (*fake_script)(fake *f);

struct fake {
  char dir[64];
  char sock[80];
  int listen_fd;
  int fd; /* the accepted connection, while the script runs */
  pthread_t thread;
  fake_script script;
  char fail[512]; /* the first failed check of the script */
  uint64_t arg;   /* a number the test hands to its script */
};

static void fake_failf(fake *f, const char *fmt, ...) {
  if (f->fail[0] != '\0')
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->fail, sizeof(f->fail), fmt, ap);
  va_end(ap);
}

/* For scripts: record the failure and stop the script. */
#define FCHECK(f, cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fake_failf((f), __VA_ARGS__);                                            \
      return;                                                                  \
    }                                                                          \
  } while (0)

static void *fake_main(void *p) {
  fake *f = p;
  /* Signals a test raises are for the client's thread. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  struct pollfd pfd = {.fd = f->listen_fd, .events = POLLIN};
  if (poll(&pfd, 1, FAKE_TIMEOUT_MS) != 1) {
    fake_failf(f, "no client connected");
    return NULL;
  }
  f->fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (f->fd < 0) {
    fake_failf(f, "accept: %s", strerror(errno));
    return NULL;
  }
  struct timeval tv = {.tv_sec = FAKE_TIMEOUT_MS / 1000};
  setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  f->script(f);
  close(f->fd);
  f->fd = -1;
  return NULL;
}

static fake *fake_start(fake_script script, uint64_t arg) {
  fake *f = calloc(1, sizeof(*f));
  cr_assert(f != NULL);
  f->script = script;
  f->arg = arg;
  f->fd = -1;
  snprintf(f->dir, sizeof(f->dir), "/tmp/slyfake-XXXXXX");
  cr_assert(mkdtemp(f->dir) != NULL, "mkdtemp: %s", strerror(errno));
  snprintf(f->sock, sizeof(f->sock), "%s/s.sock", f->dir);
  f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
  cr_assert(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
            "bind: %s", strerror(errno));
  cr_assert(listen(f->listen_fd, 4) == 0);
  cr_assert(pthread_create(&f->thread, NULL, fake_main, f) == 0);
  return f;
}

/* Waits for the script to end and asserts that all its checks passed. */
static void fake_finish(fake *f) {
  pthread_join(f->thread, NULL);
  close(f->listen_fd);
  unlink(f->sock);
  rmdir(f->dir);
  char fail[sizeof(f->fail)];
  memcpy(fail, f->fail, sizeof(fail));
  free(f);
  cr_assert(fail[0] == '\0', "fake server: %s", fail);
}

/* Reads exactly len bytes, keeping any fds that arrive (closing extras). */
static int fake_read(fake *f, void *buf, size_t len, int *fds, size_t *nfds) {
  size_t got = 0;
  while (got < len) {
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * 8)];
    } ctl;
    struct iovec iov = {.iov_base = (char *)buf + got, .iov_len = len - got};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    ssize_t n = recvmsg(f->fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR)
      continue;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); n >= 0 && cm != NULL;
         cm = CMSG_NXTHDR(&msg, cm)) {
      size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        if (fds != NULL && *nfds < 8)
          fds[(*nfds)++] = fd;
        else
          close(fd);
      }
    }
    if (n <= 0)
      return n == 0 ? 0 : -1;
    got += (size_t)n;
  }
  return 1;
}

/* One request frame, parsed; fds attached to it go to fds/nfds (NULL: none
 * allowed). NULL (and a recorded failure) on EOF, timeout or bad JSON. */
static cJSON *fake_recv(fake *f, int *fds, size_t *nfds) {
  size_t none = 0;
  int spare[8];
  if (fds == NULL) {
    fds = spare;
    nfds = &none;
  }
  uint8_t h[4];
  if (fake_read(f, h, 4, fds, nfds) != 1) {
    fake_failf(f, "no request arrived");
    return NULL;
  }
  uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                 (uint32_t)h[3] << 24;
  char *body = malloc((size_t)len + 1);
  if (len == 0 || len > (1u << 20) || body == NULL ||
      fake_read(f, body, len, fds, nfds) != 1) {
    free(body);
    fake_failf(f, "bad request frame of %u bytes", len);
    return NULL;
  }
  body[len] = '\0';
  cJSON *j = cJSON_Parse(body);
  if (j == NULL)
    fake_failf(f, "request is not JSON: %s", body);
  free(body);
  if (fds == spare) {
    for (size_t i = 0; i < none; i++)
      close(spare[i]);
    if (none > 0) {
      fake_failf(f, "request carried %zu fds", none);
      cJSON_Delete(j);
      return NULL;
    }
  }
  return j;
}

/* Reads a request, checks its op and returns its id (or -1 on failure). */
static long long fake_expect(fake *f, const char *op) {
  cJSON *j = fake_recv(f, NULL, NULL);
  if (j == NULL)
    return -1;
  const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "op");
  uint64_t id;
  long long r = -1;
  if (!cJSON_IsString(o) || strcmp(o->valuestring, op) != 0)
    fake_failf(f, "expected op %s", op);
  else if (proto_json_u64(j, "id", &id) < 0)
    fake_failf(f, "request without an integer id");
  else
    r = (long long)id;
  cJSON_Delete(j);
  return r;
}

static void fake_send_fds(fake *f, const void *buf, size_t len,
                          const int *fds, size_t nfds) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 32)];
  } ctl;
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
  }
  if (sendmsg(f->fd, &msg, MSG_NOSIGNAL) != (ssize_t)len)
    fake_failf(f, "send: %s", strerror(errno));
}

static void fake_send_raw(fake *f, const void *buf, size_t len) {
  fake_send_fds(f, buf, len, NULL, 0);
}

/* Sends one frame with the body printf'd from fmt, fds on its first byte. */
static void fake_reply_fds(fake *f, const int *fds, size_t nfds,
                           const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *body = NULL;
  int n = vasprintf(&body, fmt, ap);
  va_end(ap);
  if (n < 0) {
    fake_failf(f, "vasprintf");
    return;
  }
  uint8_t *frame = malloc((size_t)n + 4);
  uint32_t len = (uint32_t)n;
  frame[0] = (uint8_t)len;
  frame[1] = (uint8_t)(len >> 8);
  frame[2] = (uint8_t)(len >> 16);
  frame[3] = (uint8_t)(len >> 24);
  memcpy(frame + 4, body, (size_t)n);
  fake_send_fds(f, frame, (size_t)n + 4, fds, nfds);
  free(frame);
  free(body);
}

#define fake_reply(f, ...) fake_reply_fds((f), NULL, 0, __VA_ARGS__)

/* Waits for the client to close the connection without sending more. */
static void fake_expect_eof(fake *f) {
  char c;
  int r = fake_read(f, &c, 1, NULL, NULL);
  /* A client that closes with a reply left unread resets the connection. */
  if (r < 0 && errno == ECONNRESET)
    r = 0;
  if (r != 0)
    fake_failf(f, "expected the client to close, got %s",
               r > 0 ? "more bytes" : "a timeout");
}

/* Open fds of this process whose link names contain `needle`. */
static int count_fds(const char *needle) {
  DIR *d = opendir("/proc/self/fd");
  cr_assert(d != NULL);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char path[300], link[300];
    snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(path, link, sizeof(link) - 1);
    if (k <= 0)
      continue;
    link[k] = '\0';
    if (strstr(link, needle) != NULL)
      n++;
  }
  closedir(d);
  return n;
}

static sly_conn *connect_to(fake *f) {
  sly_conn *c = NULL;
  sly_error err = {0};
  int rc = sly_connect(f->sock, &c, &err);
  cr_assert(rc == 0, "connect: %s", err.message);
  return c;
}

/* A hello reply with every limit; max_frame_bytes from f->arg when set. */
static void send_hello(fake *f, long long id) {
  proto_limits l;
  proto_limits_default(&l);
  if (f->arg != 0)
    l.max_frame_bytes = f->arg;
  cJSON *r = proto_reply_ok((uint64_t)id);
  cJSON_AddStringToObject(r, "server", "slyced 0.1.0");
  cJSON_AddNumberToObject(r, "protocol", 1);
  cJSON_AddStringToObject(r, "device", "sim");
  cJSON_AddTrueToObject(r, "admin");
  proto_reply_add_limits(r, &l);
  char *s = cJSON_PrintUnformatted(r);
  fake_reply(f, "%s", s);
  free(s);
  cJSON_Delete(r);
}

static const char *const LIST_TWO =
    "\"slices\":[{\"name\":\"enc\",\"constructor\":\"linear\",\"bytes\":"
    "1048576,\"tier\":\"gpu\",\"state\":\"resident\",\"pinned\":true,"
    "\"hits\":12,\"loads\":3,\"last_used\":1700000000.5},"
    "{\"name\":\"dec\",\"constructor\":\"mlp\",\"bytes\":512,\"tier\":"
    "\"none\",\"state\":\"unloaded\",\"pinned\":false,\"hits\":0,\"loads\":0,"
    "\"last_used\":0}],\"pipelines\":[]";

static const char *const STATS_BODY =
    "\"uptime_s\":3723.5,\"process\":{\"rss_bytes\":52428800,"
    "\"mem_available_bytes\":8589934592,\"mem_total_bytes\":17179869184},"
    "\"connections\":{\"open\":2,\"accepted\":9,\"rejected\":1},"
    "\"requests\":{\"total\":120,\"errors\":3,\"by_op\":{\"hello\":9},"
    "\"by_error\":{\"NOT_FOUND\":3},\"latency_us\":{\"p50\":80,\"p90\":200,"
    "\"p99\":1500,\"max\":2500000}}";

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
  send_hello(f, (long long)id);
  fake_expect_eof(f);
}

Test(client_fake, hello_reads_identity_and_every_limit, .timeout = 20) {
  fake *f = fake_start(script_hello, 0);
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_stats st;
  cr_assert(eq(int, sly_stats_get(c, &st, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "does not match") != NULL, "%s", err.message);
  fake_finish(f); /* the client closed its socket: the fake saw EOF */
  cr_assert(eq(int, sly_stats_get(c, &st, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed"));
  sly_close(c);
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
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  cr_assert(eq(str, err.message, "connection closed by slyced"));
  fake_finish(f);
  sly_close(c);
}

static void script_close_at_once(fake *f) { (void)f; }

Test(client_fake, sending_to_a_closed_server_is_an_io_error_not_sigpipe,
     .timeout = 20) {
  fake *f = fake_start(script_close_at_once, 0);
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  fake_finish(f);
  cr_assert(eq(int, count_fds("memfd:fake-stray"), 0));
  sly_close(c);
}

Test(client_fake, more_fds_than_a_reply_may_carry_are_closed_and_refused,
     .timeout = 20) {
  fake *f = fake_start(script_stray_fds, 17);
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "file descriptors") != NULL, "%s",
            err.message);
  fake_finish(f);
  cr_assert(eq(int, count_fds("memfd:fake-stray"), 0));
  sly_close(c);
}

/* ---- typed replies ---- */

static void script_list_stats(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, LIST_TWO);
  id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, STATS_BODY);
  fake_expect_eof(f);
}

Test(client_fake, list_and_stats_are_read_into_structs, .timeout = 20) {
  fake *f = fake_start(script_list_stats, 0);
  sly_conn *c = connect_to(f);
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
  cr_assert(eq(u64, a->hits, 12));
  cr_assert(eq(u64, a->loads, 3));
  cr_assert(eq(dbl, a->last_used, 1700000000.5));
  cr_assert(eq(str, b->state, "unloaded"));
  cr_assert(eq(int, b->pinned, 0));
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

static void script_list_missing_field(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[{\"name\":\"x\"}]}", id);
  fake_expect_eof(f);
}

Test(client_fake, a_reply_missing_a_promised_field_is_a_protocol_error,
     .timeout = 20) {
  fake *f = fake_start(script_list_missing_field, 0);
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_slice_list *l = (sly_slice_list *)0x1;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "constructor") != NULL, "%s", err.message);
  cr_assert(l == (sly_slice_list *)0x1);
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
  sly_conn *c = connect_to(f);
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
  send_hello(f, id);
  id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "the refused requests were sent");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             id);
  fake_expect_eof(f);
}

Test(client_fake, requests_the_server_would_reject_as_frames_are_not_sent,
     .timeout = 20) {
  fake *f = fake_start(script_small_frames, 4096);
  sly_conn *c = connect_to(f);
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
  sly_conn *c = connect_to(f);
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

/* ---- arenas ---- */

#define ARENA_BYTES 12345
#define ARENA_REGION 7

static void script_arena(fake *f) {
  int fds[8];
  size_t n = 0;
  cJSON *j = fake_recv(f, fds, &n);
  FCHECK(f, j != NULL, "no map_region");
  const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
  bool is_map = cJSON_IsString(op) && strcmp(op->valuestring, "map_region") == 0;
  uint64_t id = 0;
  proto_json_u64(j, "id", &id);
  cJSON_Delete(j);
  FCHECK(f, is_map, "expected map_region");
  FCHECK(f, n == 1, "map_region carried %zu fds, not 1", n);
  int fd = fds[0];
  char path[64], link[256] = "";
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t k = readlink(path, link, sizeof(link) - 1);
  link[k > 0 ? k : 0] = '\0';
  int seals = fcntl(fd, F_GET_SEALS);
  struct stat sb;
  fstat(fd, &sb);
  void *m = mmap(NULL, ARENA_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  bool can_grow = ftruncate(fd, ARENA_BYTES * 2) == 0;
  close(fd);
  FCHECK(f, strncmp(link, "/memfd:", 7) == 0, "fd is %s, not a memfd", link);
  FCHECK(f, seals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
         "seals are %#x", seals);
  FCHECK(f, sb.st_size == ARENA_BYTES, "memfd of %lld bytes",
         (long long)sb.st_size);
  FCHECK(f, !can_grow, "the memfd could grow");
  FCHECK(f, m != MAP_FAILED, "mmap: %s", strerror(errno));
  strcpy(m, "from the server");
  fake_reply(f, "{\"id\":%llu,\"ok\":true,\"region\":%d,\"bytes\":%d}",
             (unsigned long long)id, ARENA_REGION, ARENA_BYTES);

  j = fake_recv(f, NULL, NULL);
  bool good = false;
  if (j != NULL) {
    uint64_t region = 0;
    op = cJSON_GetObjectItemCaseSensitive(j, "op");
    good = cJSON_IsString(op) &&
           strcmp(op->valuestring, "unmap_region") == 0 &&
           proto_json_u64(j, "id", &id) == 0 &&
           proto_json_u64(j, "region", &region) == 0 &&
           region == ARENA_REGION;
    cJSON_Delete(j);
  }
  bool shared = strcmp((char *)m + 100, "from the client") == 0;
  munmap(m, ARENA_BYTES);
  FCHECK(f, good, "expected unmap_region of region %d", ARENA_REGION);
  FCHECK(f, shared, "the client's write is not visible here");
  fake_reply(f, "{\"id\":%llu,\"ok\":true}", (unsigned long long)id);
  fake_expect_eof(f);
}

Test(client_fake, an_arena_is_one_sealed_memfd_shared_with_the_server,
     .timeout = 20) {
  fake *f = fake_start(script_arena, 0);
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_arena *a = NULL;
  cr_assert(eq(int, sly_arena_create(c, ARENA_BYTES, &a, &err), 0), "%s",
            err.message);
  cr_assert(eq(u64, sly_arena_region(a), ARENA_REGION));
  cr_assert(eq(sz, sly_arena_size(a), ARENA_BYTES));
  char *base = sly_arena_base(a);
  cr_assert(eq(str, base, "from the server"));
  strcpy(base + 100, "from the client");
  /* The fd went to the server and was closed here. */
  cr_assert(eq(int, count_fds("memfd:slyce-arena"), 0));

  /* Bump allocation: aligned offsets, NULL when full, reset starts over. */
  char *p1 = sly_arena_alloc(a, 3, 1);
  char *p2 = sly_arena_alloc(a, 8, 64);
  cr_assert(p1 == base && p2 == base + 64);
  cr_assert(sly_arena_alloc(a, 8, 3) == NULL, "non power of two");
  cr_assert(sly_arena_alloc(a, 8, 8192) == NULL, "alignment over 4096");
  cr_assert(sly_arena_alloc(a, ARENA_BYTES, 1) == NULL, "full");
  cr_assert(sly_arena_alloc(a, SIZE_MAX, 1) == NULL, "overflow");
  cr_assert(sly_arena_alloc(a, ARENA_BYTES - 72, 8) == base + 72);
  cr_assert(sly_arena_alloc(a, 1, 1) == NULL);
  cr_assert(sly_arena_alloc(a, 0, 1) == base + ARENA_BYTES, "empty tensor");
  sly_arena_reset(a);
  cr_assert(sly_arena_alloc(a, 16, 16) == base);

  sly_arena_destroy(a);
  sly_close(c);
  fake_finish(f);
}

static void script_arena_refused(fake *f) {
  int fds[8];
  size_t n = 0;
  cJSON *j = fake_recv(f, fds, &n);
  FCHECK(f, j != NULL, "no map_region");
  uint64_t id = 0;
  proto_json_u64(j, "id", &id);
  cJSON_Delete(j);
  for (size_t i = 0; i < n; i++)
    close(fds[i]);
  fake_reply(f,
             "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":\"BAD_REGION\","
             "\"message\":\"more than 16 regions\"}}",
             (unsigned long long)id);
  long long lid = fake_expect(f, "list");
  FCHECK(f, lid >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             lid);
  fake_expect_eof(f);
}

Test(client_fake, a_refused_arena_leaves_no_fd_or_mapping, .timeout = 20) {
  fake *f = fake_start(script_arena_refused, 0);
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_arena *a = (sly_arena *)0x1;
  cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), SLY_E_BAD_REGION));
  cr_assert(eq(str, err.message, "more than 16 regions"));
  cr_assert(a == (sly_arena *)0x1);
  cr_assert(eq(int, count_fds("memfd:slyce-arena"), 0));
  cr_assert(eq(int, sly_arena_create(c, 0, &a, &err), SLY_E_INVALID_ARG));
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

static void script_two_arenas(fake *f) {
  for (int i = 1; i <= 2; i++) {
    int fds[8];
    size_t n = 0;
    cJSON *j = fake_recv(f, fds, &n);
    FCHECK(f, j != NULL && n == 1, "no map_region with one fd");
    uint64_t id = 0;
    proto_json_u64(j, "id", &id);
    cJSON_Delete(j);
    close(fds[0]);
    fake_reply(f, "{\"id\":%llu,\"ok\":true,\"region\":%d,\"bytes\":4096}",
               (unsigned long long)id, i);
  }
  /* sly_close unmaps locally: the server drops regions with the socket. */
  fake_expect_eof(f);
}

Test(client_fake, close_frees_the_arenas_left, .timeout = 20) {
  fake *f = fake_start(script_two_arenas, 0);
  sly_conn *c = connect_to(f);
  sly_error err = {0};
  sly_arena *a = NULL, *b = NULL;
  cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), 0), "%s",
            err.message);
  cr_assert(eq(int, sly_arena_create(c, 4096, &b, &err), 0), "%s",
            err.message);
  cr_assert(eq(u64, sly_arena_region(b), 2));
  sly_close(c); /* ASan's leak check fails the test if an arena is left */
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
  sly_conn *c = connect_to(f);
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

/* ---- slyctl ---- */

static void script_ctl_list(fake *f) {
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  if (f->arg == 0)
    fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, LIST_TWO);
  else
    fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
               id);
  fake_expect_eof(f);
}

static void run_ctl(fake *f, const char *const argv[], td_cmd *r) {
  td_slyctl(f != NULL ? f->sock : "/nonexistent-slyce/s.sock", argv, r);
}

Test(slyctl_fake, list_prints_one_row_per_slice_under_a_header,
     .timeout = 30) {
  fake *f = fake_start(script_ctl_list, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.err, ""));
  cr_assert(eq(str, r.out,
               "NAME  CONSTRUCTOR  TIER  STATE     BYTES    PINNED  HITS  LOADS\n"
               "enc   linear       gpu   resident  1.0 MiB  yes     12    3\n"
               "dec   mlp          none  unloaded  512 B    no      0     0\n"));
  td_cmd_free(&r);
}

Test(slyctl_fake, list_of_nothing_says_no_slices, .timeout = 30) {
  fake *f = fake_start(script_ctl_list, 1);
  td_cmd r;
  run_ctl(f, (const char *const[]){"list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.out, "no slices\n"));
  td_cmd_free(&r);
}

Test(slyctl_fake, json_prints_the_reply_without_id_and_ok, .timeout = 30) {
  fake *f = fake_start(script_ctl_list, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"--json", "list", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cJSON *j = cJSON_Parse(r.out);
  cr_assert(j != NULL, "%s", r.out);
  cr_assert(cJSON_GetObjectItemCaseSensitive(j, "id") == NULL);
  cr_assert(cJSON_GetObjectItemCaseSensitive(j, "ok") == NULL);
  cr_assert(eq(int, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                        j, "slices")), 2));
  cJSON_Delete(j);
  td_cmd_free(&r);
}

static void script_ctl_denied(fake *f) {
  long long id = fake_expect(f, "shutdown");
  FCHECK(f, id >= 0, "no shutdown");
  fake_reply(f,
             "{\"id\":%lld,\"ok\":false,\"error\":{\"code\":"
             "\"PERMISSION_DENIED\",\"message\":\"shutdown needs admin\"}}",
             id);
  fake_expect_eof(f);
}

Test(slyctl_fake, an_error_is_one_line_on_stderr_and_exit_1, .timeout = 30) {
  fake *f = fake_start(script_ctl_denied, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"shutdown", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 1));
  cr_assert(eq(str, r.err, "slyctl: PERMISSION_DENIED: shutdown needs admin\n"));
  cr_assert(eq(str, r.out, ""));
  td_cmd_free(&r);

  run_ctl(NULL, (const char *const[]){"list", NULL}, &r);
  cr_assert(eq(int, r.exit_code, 1));
  cr_assert(eq(str, r.err, "slyctl: IO: connect /nonexistent-slyce/s.sock: "
                           "No such file or directory\n"));
  td_cmd_free(&r);
}

Test(slyctl_fake, usage_errors_exit_2_with_the_usage_line) {
  const char *const *cases[] = {
      (const char *const[]){NULL},
      (const char *const[]){"frobnicate", NULL},
      (const char *const[]){"list", "extra", NULL},
      (const char *const[]){"--bogus", "list", NULL},
      (const char *const[]){"-s", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    td_cmd r;
    run_ctl(NULL, cases[i], &r);
    cr_assert(eq(int, r.exit_code, 2), "case %zu: %s", i, r.err);
    cr_assert(strstr(r.err, "usage: slyctl") != NULL, "case %zu", i);
    cr_assert(eq(str, r.out, ""));
    td_cmd_free(&r);
  }
  td_cmd r;
  run_ctl(NULL, (const char *const[]){"--help", NULL}, &r);
  cr_assert(eq(int, r.exit_code, 0));
  cr_assert(strstr(r.out, "shutdown") != NULL);
  td_cmd_free(&r);
}

static void script_ctl_status(fake *f) {
  long long id = fake_expect(f, "hello");
  FCHECK(f, id >= 0, "no hello");
  send_hello(f, id);
  id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, STATS_BODY);
  id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, LIST_TWO);
  fake_expect_eof(f);
}

Test(slyctl_fake, status_summarises_server_socket_slices_and_memory,
     .timeout = 30) {
  fake *f = fake_start(script_ctl_status, 0);
  char want[256];
  snprintf(want, sizeof(want),
           "server    slyced 0.1.0\nprotocol  1\ndevice    sim\n"
           "socket    %s\nslices    2\nuptime    1h 02m 03s\n"
           "rss       50.0 MiB\n",
           f->sock);
  td_cmd r;
  run_ctl(f, (const char *const[]){"status", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(eq(str, r.out, want));
  td_cmd_free(&r);
}

static void script_ctl_stats(fake *f) {
  long long id = fake_expect(f, "stats");
  FCHECK(f, id >= 0, "no stats");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,%s}", id, STATS_BODY);
  fake_expect_eof(f);
}

Test(slyctl_fake, stats_prints_readable_figures, .timeout = 30) {
  fake *f = fake_start(script_ctl_stats, 0);
  td_cmd r;
  run_ctl(f, (const char *const[]){"stats", NULL}, &r);
  fake_finish(f);
  cr_assert(eq(int, r.exit_code, 0), "%s", r.err);
  cr_assert(strstr(r.out, "rss          50.0 MiB\n") != NULL, "%s", r.out);
  cr_assert(strstr(r.out, "memory       8.0 GiB available of 16.0 GiB\n") != NULL,
            "%s", r.out);
  cr_assert(strstr(r.out, "connections  2 open, 9 accepted, 1 rejected\n") != NULL,
            "%s", r.out);
  cr_assert(strstr(r.out, "requests     120 total, 3 errors\n") != NULL, "%s", r.out);
  cr_assert(strstr(r.out, "latency      p50 80 us, p90 200 us, p99 1.5 ms, "
                          "max 2.50 s\n") != NULL, "%s", r.out);
  cr_assert(strstr(r.out, "by error     NOT_FOUND 3\n") != NULL, "%s", r.out);
  td_cmd_free(&r);
}

static void script_busy_at_once(fake *f) {
  fake_reply(f, "{\"id\":null,\"ok\":false,\"error\":{\"code\":\"BUSY\","
                "\"message\":\"too many connections for uid 1000\"}}");
}

Test(client_fake, a_server_that_refused_before_the_request_is_heard_out,
     .timeout = 20) {
  fake *f = fake_start(script_busy_at_once, 0);
  sly_conn *c = connect_to(f);
  fake_finish(f); /* it sent its error and closed */
  sly_error err = {0};
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_BUSY), "%s", err.message);
  cr_assert(eq(str, err.message, "too many connections for uid 1000"));
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_IO));
  sly_close(c);
}
