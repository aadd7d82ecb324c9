/* fakeserver.c — a scripted stand-in for slyced, for client tests. */
#include "fakeserver.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

#include "limits.h"
#include "reply.h"
#include "tensor.h"

/* Two slices, as a list reply shows them (without id and ok). */
const char FAKE_LIST_TWO[] =
    "\"slices\":[{\"name\":\"enc\",\"constructor\":\"linear\",\"bytes\":"
    "1048576,\"tier\":\"gpu\",\"state\":\"resident\",\"pinned\":\"cpu\","
    "\"hits\":12,\"loads\":3,\"last_used\":1700000000.5},"
    "{\"name\":\"dec\",\"constructor\":\"mlp\",\"bytes\":512,\"tier\":"
    "\"none\",\"state\":\"unloaded\",\"pinned\":false,\"hits\":0,\"loads\":0,"
    "\"last_used\":0}],\"pipelines\":[]";

/* A stats reply's fields (without id and ok). */
const char FAKE_STATS_BODY[] =
    "\"uptime_s\":3723.5,\"process\":{\"rss_bytes\":52428800,"
    "\"mem_available_bytes\":8589934592,\"mem_total_bytes\":17179869184},"
    "\"connections\":{\"open\":2,\"accepted\":9,\"rejected\":1},"
    "\"queued\":4,\"staging\":3,\"loaders\":2,\"interleaved\":17,"
    "\"requests\":{\"total\":120,\"errors\":3,\"by_op\":{\"hello\":9},"
    "\"by_error\":{\"NOT_FOUND\":3},\"latency_us\":{\"p50\":80,\"p90\":200,"
    "\"p99\":1500,\"max\":2500000}}";

void fake_failf(fake *f, const char *fmt, ...) {
  if (f->fail[0] != '\0')
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->fail, sizeof(f->fail), fmt, ap);
  va_end(ap);
}

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

fake *fake_start(fake_script script, uint64_t arg) {
  fake *f = calloc(1, sizeof(*f));
  cr_assert(f != NULL);
  f->script = script;
  f->arg = arg;
  f->fd = -1;
  f->next_region = 1;
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

void fake_finish(fake *f) {
  pthread_join(f->thread, NULL);
  close(f->listen_fd);
  unlink(f->sock);
  rmdir(f->dir);
  for (size_t i = 0; i < f->n_regions; i++) {
    munmap(f->regions[i].base, f->regions[i].size);
    if (f->regions[i].fd >= 0)
      close(f->regions[i].fd);
  }
  char fail[sizeof(f->fail)];
  memcpy(fail, f->fail, sizeof(fail));
  free(f);
  cr_assert(fail[0] == '\0', "fake server: %s", fail);
}

int fake_read(fake *f, void *buf, size_t len, int *fds, size_t *nfds) {
  size_t got = 0;
  while (got < len) {
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * 8)];
    } ctl;
    struct iovec iov = {.iov_base = (char *)buf + got, .iov_len = len - got};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
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

cJSON *fake_recv(fake *f, int *fds, size_t *nfds) {
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

cJSON *fake_expect_json(fake *f, const char *op, uint64_t *id) {
  cJSON *j = fake_recv(f, NULL, NULL);
  if (j == NULL)
    return NULL;
  const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "op");
  if (!cJSON_IsString(o) || strcmp(o->valuestring, op) != 0) {
    char *text = cJSON_PrintUnformatted(j);
    fake_failf(f, "expected op %s, got %s", op, text);
    free(text);
  } else if (proto_json_u64(j, "id", id) < 0) {
    fake_failf(f, "request without an integer id");
  } else {
    return j;
  }
  cJSON_Delete(j);
  return NULL;
}

long long fake_expect(fake *f, const char *op) {
  uint64_t id;
  cJSON *j = fake_expect_json(f, op, &id);
  cJSON_Delete(j);
  return j != NULL ? (long long)id : -1;
}

void fake_send_fds(fake *f, const void *buf, size_t len, const int *fds,
                   size_t nfds) {
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

void fake_send_raw(fake *f, const void *buf, size_t len) {
  fake_send_fds(f, buf, len, NULL, 0);
}

static void send_body(fake *f, const char *body, size_t n, const int *fds,
                      size_t nfds) {
  uint8_t *frame = malloc(n + 4);
  uint32_t len = (uint32_t)n;
  frame[0] = (uint8_t)len;
  frame[1] = (uint8_t)(len >> 8);
  frame[2] = (uint8_t)(len >> 16);
  frame[3] = (uint8_t)(len >> 24);
  memcpy(frame + 4, body, n);
  fake_send_fds(f, frame, n + 4, fds, nfds);
  free(frame);
}

void fake_reply_fds(fake *f, const int *fds, size_t nfds, const char *fmt,
                    ...) {
  va_list ap;
  va_start(ap, fmt);
  char *body = NULL;
  int n = vasprintf(&body, fmt, ap);
  va_end(ap);
  if (n < 0) {
    fake_failf(f, "vasprintf");
    return;
  }
  send_body(f, body, (size_t)n, fds, nfds);
  free(body);
}

void fake_reply_json(fake *f, const cJSON *reply, const int *fds, size_t nfds) {
  char *s = cJSON_PrintUnformatted(reply);
  send_body(f, s, strlen(s), fds, nfds);
  free(s);
}

void fake_send_hello(fake *f, long long id) {
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
  fake_reply_json(f, r, NULL, 0);
  cJSON_Delete(r);
}

void fake_expect_eof(fake *f) {
  char c;
  int r = fake_read(f, &c, 1, NULL, NULL);
  /* A client that closes with a reply left unread resets the connection. */
  if (r < 0 && errno == ECONNRESET)
    r = 0;
  if (r != 0)
    fake_failf(f, "expected the client to close, got %s",
               r > 0 ? "more bytes" : "a timeout");
}

static fake_region *add_region(fake *f, int fd, size_t size, bool keep_fd) {
  if (f->n_regions == FAKE_MAX_REGIONS) {
    fake_failf(f, "more than %d regions", FAKE_MAX_REGIONS);
    close(fd);
    return NULL;
  }
  void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    fake_failf(f, "mmap region: %s", strerror(errno));
    close(fd);
    return NULL;
  }
  if (!keep_fd) {
    close(fd);
    fd = -1;
  }
  fake_region *r = &f->regions[f->n_regions++];
  *r = (fake_region){.id = f->next_region++, .base = m, .size = size, .fd = fd};
  return r;
}

fake_region *fake_accept_region(fake *f) {
  int fds[8];
  size_t n = 0;
  cJSON *j = fake_recv(f, fds, &n);
  if (j == NULL)
    return NULL;
  const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
  bool is_map =
      cJSON_IsString(op) && strcmp(op->valuestring, "map_region") == 0;
  uint64_t id = 0;
  proto_json_u64(j, "id", &id);
  cJSON_Delete(j);
  for (size_t i = 1; i < n; i++)
    close(fds[i]);
  if (!is_map || n != 1) {
    if (n > 0)
      close(fds[0]);
    fake_failf(f, "expected map_region with one fd");
    return NULL;
  }
  struct stat st;
  if (fstat(fds[0], &st) < 0 || st.st_size <= 0) {
    close(fds[0]);
    fake_failf(f, "map_region fd of no size");
    return NULL;
  }
  fake_region *r = add_region(f, fds[0], (size_t)st.st_size, false);
  if (r != NULL)
    fake_reply(f, "{\"id\":%llu,\"ok\":true,\"region\":%llu,\"bytes\":%zu}",
               (unsigned long long)id, (unsigned long long)r->id, r->size);
  return r;
}

fake_region *fake_server_region(fake *f, size_t size) {
  int fd = memfd_create("fake-out", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
    fake_failf(f, "server memfd: %s", strerror(errno));
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  return add_region(f, fd, size, true);
}

fake_region *fake_region_find(fake *f, uint64_t id) {
  for (size_t i = 0; i < f->n_regions; i++)
    if (f->regions[i].id == id)
      return &f->regions[i];
  return NULL;
}

void *fake_tensor_data(fake *f, const cJSON *desc, uint64_t *nbytes) {
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(desc, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(desc, "shape");
  proto_dtype d;
  uint64_t dims[PROTO_MAX_DIMS], region, offset, n;
  uint32_t ndim = 0;
  if (!cJSON_IsString(dt) || proto_dtype_from_name(dt->valuestring, &d) < 0 ||
      !cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > PROTO_MAX_DIMS ||
      proto_json_u64(desc, "region", &region) < 0 ||
      proto_json_u64(desc, "offset", &offset) < 0) {
    fake_failf(f, "malformed tensor descriptor");
    return NULL;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, shape) dims[ndim++] = (uint64_t)it->valuedouble;
  fake_region *r = fake_region_find(f, region);
  if (proto_tensor_nbytes(d, ndim, dims, &n, NULL) < 0 || r == NULL ||
      offset % proto_dtype_size(d) != 0 || offset > r->size ||
      n > r->size - offset) {
    fake_failf(f, "tensor descriptor out of its region %llu",
               (unsigned long long)region);
    return NULL;
  }
  if (nbytes != NULL)
    *nbytes = n;
  return (char *)r->base + offset;
}

int fake_count_fds(const char *needle) {
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

int fake_count_maps(const char *needle, const char *perms) {
  FILE *m = fopen("/proc/self/maps", "r");
  cr_assert(m != NULL);
  char line[512];
  int n = 0;
  while (fgets(line, sizeof(line), m) != NULL) {
    /* "start-end perms offset dev inode name" */
    const char *p = strchr(line, ' ');
    if (strstr(line, needle) != NULL &&
        (perms == NULL || (p != NULL && strncmp(p + 1, perms, 4) == 0)))
      n++;
  }
  fclose(m);
  return n;
}

sly_conn *fake_connect(fake *f) {
  sly_conn *c = NULL;
  sly_error err = {0};
  int rc = sly_connect(f->sock, &c, &err);
  cr_assert(rc == 0, "connect: %s", err.message);
  return c;
}
