/* rawconn.c — raw frames to and from slyced, for tests. */
#include "rawconn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

/* Replies the tests read are small; this bounds a runaway length. */
#define RC_MAX_REPLY (64u << 20)
#define RC_MAX_RECV_FDS 16

static long long rc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rc_try_connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return -ENAMETOOLONG;
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

int rc_connect(const char *path) {
  int fd = rc_try_connect(path);
  cr_assert(fd >= 0, "connect %s: %s", path, strerror(-fd));
  return fd;
}

int rc_send_fds(int fd, const void *buf, size_t len, const int *fds,
                size_t nfds) {
  const char *p = buf;
  size_t off = 0;
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * 253)];
  } ctl;
  if (nfds > 253)
    return -EINVAL;
  while (off < len) {
    struct iovec iov = {(void *)(p + off), len - off};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0 && off == 0) {
      memset(&ctl, 0, sizeof ctl);
      m.msg_control = ctl.buf;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    off += (size_t)n;
  }
  return 0;
}

int rc_send(int fd, const void *buf, size_t len) {
  return rc_send_fds(fd, buf, len, NULL, 0);
}

void rc_header(uint32_t len, uint8_t out[4]) {
  out[0] = (uint8_t)len;
  out[1] = (uint8_t)(len >> 8);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 24);
}

int rc_send_body(int fd, const void *body, size_t len, const int *fds,
                 size_t nfds) {
  uint8_t *frame = malloc(len + 4);
  if (!frame)
    return -ENOMEM;
  rc_header((uint32_t)len, frame);
  memcpy(frame + 4, body, len);
  int r = rc_send_fds(fd, frame, len + 4, fds, nfds);
  free(frame);
  return r;
}

int rc_send_json(int fd, const char *json) {
  return rc_send_body(fd, json, strlen(json), NULL, 0);
}

/* Reads exactly `len` bytes by the deadline; counts and closes fds that
 * arrive. Returns RC_FRAME once all came; *got says how many did. */
static rc_status rc_read_exact(int fd, void *buf, size_t len,
                               long long deadline, int *nfds, size_t *got) {
  *got = 0;
  while (*got < len) {
    long long left = deadline - rc_now_ms();
    if (left <= 0)
      return RC_TIMEOUT;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, (int)left);
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr < 0)
      return RC_ERROR;
    if (pr == 0)
      return RC_TIMEOUT;
    union {
      struct cmsghdr h;
      char buf[CMSG_SPACE(sizeof(int) * RC_MAX_RECV_FDS)];
    } ctl;
    struct iovec iov = {(char *)buf + *got, len - *got};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == ECONNRESET)
      return RC_CLOSED;
    if (n < 0)
      return RC_ERROR;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int rfd;
        memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
        close(rfd);
      }
      if (nfds)
        *nfds += (int)k;
    }
    if (n == 0)
      return RC_CLOSED;
    *got += (size_t)n;
  }
  return RC_FRAME;
}

rc_status rc_read_frame(int fd, int timeout_ms, char **body, uint32_t *len,
                        int *nfds) {
  long long deadline = rc_now_ms() + timeout_ms;
  uint8_t hdr[4];
  size_t got;
  if (nfds)
    *nfds = 0;
  rc_status s = rc_read_exact(fd, hdr, sizeof hdr, deadline, nfds, &got);
  if (s != RC_FRAME)
    return s == RC_CLOSED && got > 0 ? RC_TRUNCATED : s;
  uint32_t n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 |
               (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
  if (n == 0 || n > RC_MAX_REPLY)
    return RC_ERROR;
  char *b = malloc((size_t)n + 1);
  if (!b)
    return RC_ERROR;
  s = rc_read_exact(fd, b, n, deadline, nfds, &got);
  if (s != RC_FRAME) {
    free(b);
    return s == RC_CLOSED ? RC_TRUNCATED : s;
  }
  b[n] = '\0';
  *body = b;
  *len = n;
  return RC_FRAME;
}

rc_status rc_wait_closed(int fd, int timeout_ms) {
  char *body = NULL;
  uint32_t len;
  rc_status s = rc_read_frame(fd, timeout_ms, &body, &len, NULL);
  free(body);
  return s;
}

const char *rc_status_name(rc_status s) {
  switch (s) {
  case RC_FRAME:
    return "a frame";
  case RC_CLOSED:
    return "closed";
  case RC_TIMEOUT:
    return "timeout";
  case RC_TRUNCATED:
    return "closed inside a frame";
  case RC_ERROR:
    return "read error";
  }
  return "?";
}

cJSON *rc_read_reply(int fd) {
  return rc_read_reply_within(fd, RC_REPLY_TIMEOUT_MS);
}

cJSON *rc_read_reply_within(int fd, int timeout_ms) {
  char *body = NULL;
  uint32_t len = 0;
  rc_status s = rc_read_frame(fd, timeout_ms, &body, &len, NULL);
  cr_assert(s == RC_FRAME, "expected a reply frame, got %s",
            rc_status_name(s));
  cJSON *j = cJSON_ParseWithLength(body, len);
  cr_assert(j && cJSON_IsObject(j), "reply is not a JSON object: %s", body);
  free(body);
  return j;
}

cJSON *rc_call(int fd, const char *json) {
  int r = rc_send_json(fd, json);
  cr_assert(r == 0, "send %s: %s", json, strerror(-r));
  return rc_read_reply(fd);
}

/* The reply as text, for messages; caller frees. */
static char *rc_text(const cJSON *j) {
  char *s = cJSON_PrintUnformatted(j);
  return s ? s : strdup("?");
}

void rc_assert_ok(const cJSON *reply, uint64_t id) {
  char *t = rc_text(reply);
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
  cr_assert(cJSON_IsTrue(ok), "expected ok:true, got %s", t);
  const cJSON *jid = cJSON_GetObjectItemCaseSensitive(reply, "id");
  cr_assert(cJSON_IsNumber(jid) && jid->valuedouble == (double)id,
            "expected id %llu, got %s", (unsigned long long)id, t);
  free(t);
}

static void rc_check_error(const cJSON *reply, long long id, const char *code,
                           const char *needle) {
  char *t = rc_text(reply);
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
  cr_assert(cJSON_IsFalse(ok), "expected ok:false (%s), got %s", code, t);
  const cJSON *jid = cJSON_GetObjectItemCaseSensitive(reply, "id");
  if (id == RC_ID_NULL)
    cr_assert(cJSON_IsNull(jid), "expected id null, got %s", t);
  else if (id >= 0)
    cr_assert(cJSON_IsNumber(jid) && jid->valuedouble == (double)id,
              "expected id %lld, got %s", id, t);
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
  cr_assert(cJSON_IsString(c) && strcmp(c->valuestring, code) == 0,
            "expected code %s, got %s", code, t);
  cr_assert(cJSON_IsString(m) && m->valuestring[0] != '\0',
            "expected a message, got %s", t);
  if (needle)
    cr_assert(strstr(m->valuestring, needle), "expected \"%s\" in %s", needle,
              t);
  free(t);
}

void rc_assert_error(const cJSON *reply, long long id, const char *code) {
  rc_check_error(reply, id, code, NULL);
}

void rc_assert_error_msg(const cJSON *reply, long long id, const char *code,
                         const char *needle) {
  rc_check_error(reply, id, code, needle);
}

void rc_call_error(int fd, const char *json, long long id, const char *code) {
  cJSON *r = rc_call(fd, json);
  rc_check_error(r, id, code, NULL);
  cJSON_Delete(r);
}

void rc_assert_closed(int fd) {
  rc_status s = rc_wait_closed(fd, RC_REPLY_TIMEOUT_MS);
  cr_assert(s == RC_CLOSED, "expected the server to close, got %s",
            rc_status_name(s));
}

void rc_assert_hello(int fd, uint64_t id) {
  char req[96];
  snprintf(req, sizeof req, "{\"id\": %llu, \"op\": \"hello\"}",
           (unsigned long long)id);
  cJSON *r = rc_call(fd, req);
  rc_assert_ok(r, id);
  cJSON_Delete(r);
}

uint64_t rc_u64(const cJSON *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  cr_assert(cJSON_IsNumber(v) && v->valuedouble >= 0 &&
                v->valuedouble <= 9007199254740991.0 &&
                v->valuedouble == (double)(uint64_t)v->valuedouble,
            "\"%s\" is not an integer 0..2^53-1", key);
  return (uint64_t)v->valuedouble;
}

uint64_t rc_map_region(int fd, int memfd, uint64_t id) {
  char req[96];
  snprintf(req, sizeof req, "{\"id\": %llu, \"op\": \"map_region\"}",
           (unsigned long long)id);
  int r = rc_send_body(fd, req, strlen(req), &memfd, 1);
  cr_assert(r == 0, "send map_region: %s", strerror(-r));
  cJSON *reply = rc_read_reply(fd);
  rc_assert_ok(reply, id);
  uint64_t region = rc_u64(reply, "region");
  cJSON_Delete(reply);
  return region;
}

uint64_t rc_map_data(int fd, const void *data, size_t len, uint64_t id) {
  size_t bytes = (len + 4095) / 4096 * 4096;
  int m = rc_memfd("rc-data", bytes > 0 ? bytes : 4096, F_SEAL_SHRINK);
  if (len > 0) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    cr_assert(p != MAP_FAILED, "mmap: %s", strerror(errno));
    memcpy(p, data, len);
    munmap(p, bytes);
  }
  uint64_t region = rc_map_region(fd, m, id);
  close(m);
  return region;
}

int rc_memfd(const char *name, size_t size, unsigned seals) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  cr_assert(fd >= 0, "memfd_create: %s", strerror(errno));
  cr_assert(ftruncate(fd, (off_t)size) == 0, "ftruncate: %s", strerror(errno));
  if (seals)
    cr_assert(fcntl(fd, F_ADD_SEALS, seals) == 0, "F_ADD_SEALS: %s",
              strerror(errno));
  return fd;
}

void rc_pipe(int p[2]) {
  cr_assert(pipe2(p, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
}

bool rc_eof_within(int fd, int timeout_ms) {
  long long end = rc_now_ms() + timeout_ms;
  for (;;) {
    long long left = end - rc_now_ms();
    if (left <= 0)
      return false;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)left) <= 0)
      continue;
    char c;
    ssize_t n = read(fd, &c, 1);
    if (n == 0)
      return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN)
      return false;
  }
}
