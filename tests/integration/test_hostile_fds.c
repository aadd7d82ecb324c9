/* test_hostile_fds.c — hostile clients that send file descriptors: fds that
 * are no usable memfd (pipes, sockets, devices, directories, O_PATH and
 * read-only reopenings, unsealable or hugetlbfs memfds), more fds than a frame
 * may carry up to SCM_MAX_FD, fds on frames that fail, fds riding a later
 * byte of a frame, regions sealed against writes named as `out`, and a memfd
 * grown after it was mapped. After each case the daemon serves a good
 * forward, holds none of the fds, and is back to its baseline. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(hostile_fds, .timeout = 60, .fini = td_cleanup);

#define LIMITS "\"max_regions_per_conn\": 2, \"max_region_mb\": 1"
/* As in test_hostile_frames.c: what glibc may keep of what it freed. */
#define RSS_SLACK_KIB (8 * 1024)
/* SCM_MAX_FD: the most fds one sendmsg may carry. */
#define FDS_MAX 253

static td *start(td_baseline *b) {
  char *cfg = fx_config(NULL, LIMITS);
  td *d = td_start(cfg);
  free(cfg);
  for (int i = 0; i < 3; i++)
    td_assert_forward_ok(d, "warm-up");
  td_baseline_take(d, b);
  return d;
}

static void recovered(const td *d, const td_baseline *b, const char *after) {
  td_assert_forward_ok(d, after);
  td_baseline_assert(d, b, RSS_SLACK_KIB, after);
}

/* Sends map_region `id` with `fd` attached and returns the reply. */
static cJSON *map(int conn, int fd, uint64_t id) {
  char req[96];
  snprintf(req, sizeof req, "{\"id\": %llu, \"op\": \"map_region\"}",
           (unsigned long long)id);
  cr_assert_eq(rc_send_body(conn, req, strlen(req), &fd, 1), 0);
  return rc_read_reply(conn);
}

/* map_region with `fd` gets BAD_REGION; the daemon keeps no copy of it (its
 * fd count is the baseline plus this connection) and the connection goes on. */
static void refused(const td *d, const td_baseline *b, int conn, int fd,
                    uint64_t id, const char *what) {
  cr_log_info("map_region: %s", what);
  cJSON *r = map(conn, fd, id);
  rc_assert_error(r, (long long)id, "BAD_REGION");
  cJSON_Delete(r);
  close(fd);
  rc_assert_hello(conn, id + 1000);
  cr_assert(td_fd_count_wait(d, b->fds + 1, 2000),
            "%s: the daemon holds %d fds, %d expected", what, td_fd_count(d),
            b->fds + 1);
}

/* `path` opened again through /proc/self/fd with `flags`. */
static int reopen(int fd, int flags) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int r = open(path, flags | O_CLOEXEC);
  cr_assert_geq(r, 0, "open %s: %s", path, strerror(errno));
  return r;
}

Test(hostile_fds, fds_that_are_no_usable_memfd_get_bad_region) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  rc_assert_hello(c, 1);

  int fd = memfd_create("integ-nosealing", MFD_CLOEXEC);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, 4096), 0);
  refused(d, &b, c, fd, 10, "a memfd made without MFD_ALLOW_SEALING");
  fd = rc_memfd("integ-write-only-seal", 4096, F_SEAL_WRITE);
  refused(d, &b, c, fd, 11, "a memfd sealed against writes, not shrinking");
  int m = rc_memfd("integ-opath", 4096, F_SEAL_SHRINK);
  refused(d, &b, c, reopen(m, O_PATH), 12, "an O_PATH fd of a sealed memfd");
  /* The daemon maps a region without F_SEAL_WRITE for writing: the mmap of
   * a read-only fd fails, and that is BAD_REGION, not a crash. */
  refused(d, &b, c, reopen(m, O_RDONLY), 13,
          "a read-only fd of a writable sealed memfd");
  close(m);
  refused(d, &b, c, eventfd(0, EFD_CLOEXEC), 14, "an eventfd");
  fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  refused(d, &b, c, fd, 15, "/dev/null");
  fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  refused(d, &b, c, fd, 16, "a directory");
  int sp[2];
  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  close(sp[1]);
  refused(d, &b, c, sp[0], 17, "one end of a socketpair");
  /* Hugetlbfs only where the kernel lets us make one (any size works: the
   * daemon refuses it before it looks at the size). */
  fd =
      memfd_create("integ-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
  if (fd >= 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0)
    refused(d, &b, c, fd, 18, "a hugetlbfs memfd");
  else if (fd >= 0)
    close(fd);
  else
    cr_log_info("no hugetlbfs memfd here (%s): case skipped", strerror(errno));

  /* A read-only fd is fine when the memfd is sealed against writes too. */
  m = rc_memfd("integ-ro", 4096, F_SEAL_SHRINK | F_SEAL_WRITE);
  fd = reopen(m, O_RDONLY);
  close(m);
  cJSON *r = map(c, fd, 20);
  close(fd);
  rc_assert_ok(r, 20);
  cJSON_Delete(r);
  close(c);
  recovered(d, &b, "fds that are no usable memfd");
  td_stop_clean(d);
}

/* Sends a frame with `n` copies of `wr` and asserts BAD_FRAME, a close, and
 * the baseline fds (the caller checks the pipe's end of file at the end). */
static void too_many(const td *d, const td_baseline *b, int wr, size_t n,
                     const char *json) {
  static int fds[FDS_MAX];
  for (size_t i = 0; i < n; i++)
    fds[i] = wr;
  int c = rc_connect(d->sock);
  cr_assert_eq(rc_send_body(c, json, strlen(json), fds, n), 0);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
  cJSON_Delete(r);
  rc_assert_closed(c);
  close(c);
  char what[64];
  snprintf(what, sizeof what, "%zu fds on one frame", n);
  recovered(d, b, what);
}

Test(hostile_fds, more_fds_than_one_up_to_scm_max_fd_close_every_copy) {
  td_baseline b;
  td *d = start(&b);
  int p[2];
  rc_pipe(p);
  const char *map_json = "{\"id\": 1, \"op\": \"map_region\"}";
  /* 8 fit the daemon's control buffer (counted, then refused), 9 do not
   * (MSG_CTRUNC), 253 is all one sendmsg can carry. */
  too_many(d, &b, p[1], 8, map_json);
  too_many(d, &b, p[1], 9, map_json);
  too_many(d, &b, p[1], FDS_MAX, "{\"id\": 1, \"op\": \"hello\"}");
  close(p[1]);
  cr_assert(rc_eof_within(p[0], 5000), "the daemon kept a copy of the pipe");
  close(p[0]);

  /* A good memfd beside a pipe: neither is taken, nothing is mapped. */
  char name[64];
  snprintf(name, sizeof name, "integ-beside-%ld", (long)getpid());
  int two[2] = {rc_memfd(name, 4096, F_SEAL_SHRINK), -1};
  rc_pipe(p);
  two[1] = p[1];
  int c = rc_connect(d->sock);
  cr_assert_eq(rc_send_body(c, map_json, strlen(map_json), two, 2), 0);
  close(two[0]);
  close(p[1]);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
  cJSON_Delete(r);
  rc_assert_closed(c);
  close(c);
  cr_assert(rc_eof_within(p[0], 5000), "the daemon kept the pipe");
  close(p[0]);
  cr_assert(!td_maps_contains(d, name), "the memfd was mapped");
  recovered(d, &b, "a memfd and a pipe on one frame");
  td_stop_clean(d);
}

/* Sends `json` with a pipe's write end attached and asserts the reply's
 * code and id; the daemon must close its copy of the pipe. */
static void fd_on(int c, const char *json, long long id, const char *code) {
  cr_log_info("fd on: %s", json);
  int p[2];
  rc_pipe(p);
  cr_assert_eq(rc_send_body(c, json, strlen(json), &p[1], 1), 0);
  close(p[1]);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, id, code);
  cJSON_Delete(r);
  cr_assert(rc_eof_within(p[0], 5000), "%s: the daemon kept the fd", json);
  close(p[0]);
}

Test(hostile_fds, fds_on_requests_that_fail_are_closed) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  rc_call_error(c, "{\"id\": 1, \"op\": \"map_region\"}", 1, "BAD_REQUEST");
  fd_on(c, "{\"op\": \"map_region\"}", RC_ID_NULL, "BAD_REQUEST");
  fd_on(c, "{\"id\": 2, \"op\": \"map_region\", \"x\": 1}", 2, "BAD_REQUEST");
  fd_on(c, "{\"id\": 3, \"op\": \"map_region\", \"release\": [77]}", 3,
        "NOT_FOUND");
  fd_on(c, "{\"id\": 4, \"op\": \"frobnicate\"}", 4, "UNKNOWN_OP");
  fd_on(c,
        "{\"id\": 5, \"op\": \"forward\", \"slice\": \"lin\", "
        "\"inputs\": []}",
        5, "BAD_REQUEST");
  fd_on(c, "{\"id\": 6, \"op\": \"shutdown\", \"id\": 7}", RC_ID_NULL,
        "BAD_REQUEST");
  rc_assert_hello(c, 8);
  /* A memfd with a failing request is not mapped either. */
  char name[64];
  snprintf(name, sizeof name, "integ-notfound-%ld", (long)getpid());
  int m = rc_memfd(name, 4096, F_SEAL_SHRINK);
  const char *json = "{\"id\": 9, \"op\": \"map_region\", \"release\": [78]}";
  cr_assert_eq(rc_send_body(c, json, strlen(json), &m, 1), 0);
  close(m);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, 9, "NOT_FOUND");
  cJSON_Delete(r);
  cr_assert(!td_maps_contains(d, name), "a refused map_region was mapped");
  /* And a body that is no JSON: BAD_FRAME, the fd goes with the frame. */
  fd_on(c, "{\"id\": 10, \"op\":", RC_ID_NULL, "BAD_FRAME");
  rc_assert_closed(c);
  close(c);
  recovered(d, &b, "fds on failing requests");
  td_stop_clean(d);
}

Test(hostile_fds, an_fd_riding_a_later_byte_belongs_to_that_frame) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  const char body[] = "{\"id\": 1, \"op\": \"hello\"}";
  uint8_t hdr[4];
  rc_header(sizeof body - 1, hdr);
  int p[2];
  rc_pipe(p);
  /* The header alone, then the body with the fd. */
  cr_assert_eq(rc_send(c, hdr, 4), 0);
  cr_assert_eq(rc_send_fds(c, body, sizeof body - 1, &p[1], 1), 0);
  close(p[1]);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, 1, "BAD_REQUEST");
  cJSON_Delete(r);
  cr_assert(rc_eof_within(p[0], 5000), "the daemon kept the fd");
  close(p[0]);
  rc_assert_hello(c, 2);

  /* Other ancillary data (our own credentials) is not an fd: ignored. */
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(struct ucred))];
  } ctl = {0};
  uint8_t frame[64];
  rc_header(sizeof body - 1, frame);
  memcpy(frame + 4, body, sizeof body - 1);
  struct iovec iov = {frame, 4 + sizeof body - 1};
  struct msghdr m = {.msg_iov = &iov,
                     .msg_iovlen = 1,
                     .msg_control = ctl.buf,
                     .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_CREDENTIALS;
  cm->cmsg_len = CMSG_LEN(sizeof(struct ucred));
  struct ucred me = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
  memcpy(CMSG_DATA(cm), &me, sizeof me);
  cr_assert_eq(sendmsg(c, &m, MSG_NOSIGNAL), (ssize_t)iov.iov_len, "%s",
               strerror(errno));
  r = rc_read_reply(c);
  rc_assert_ok(r, 1);
  cJSON_Delete(r);
  close(c);
  recovered(d, &b, "fds on a later byte");
  td_stop_clean(d);
}

/* A forward of lin on [4, 16] float32 at offset 0 of region `in`, with `out`
 * (JSON, or "" for none). */
static void lin_json(char *buf, size_t len, int id, uint64_t in,
                     const char *out) {
  snprintf(buf, len,
           "{\"id\": %d, \"op\": \"forward\", \"slice\": \"lin\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [4, 16], \"region\": %llu, "
           "\"offset\": 0}]%s}",
           id, (unsigned long long)in, out);
}

Test(hostile_fds, regions_sealed_against_writes_are_no_out_but_inputs) {
  td_baseline b;
  td *d = start(&b);
  fx_array x;
  fx_read("linear_w.in0.npy", &x);
  int c = rc_connect(d->sock);
  static const unsigned seals[] = {F_SEAL_SHRINK | F_SEAL_WRITE,
                                   F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE};
  for (int i = 0; i < 2; i++) {
    int m = rc_memfd("integ-sealed", 4096, F_SEAL_SHRINK);
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    cr_assert(p != MAP_FAILED);
    memcpy(p, x.data, x.nbytes);
    munmap(p, 4096);
    cr_assert_eq(fcntl(m, F_ADD_SEALS, seals[i]), 0, "%s", strerror(errno));
    uint64_t reg = rc_map_region(c, m, 1);
    close(m);
    char json[512], out[128];
    snprintf(out, sizeof out,
             ", \"out\": {\"region\": %llu, \"offset\": 1024, \"bytes\": 1024}",
             (unsigned long long)reg);
    lin_json(json, sizeof json, 2, reg, out);
    rc_call_error(c, json, 2, "BAD_REGION");
    /* As an input it serves. */
    lin_json(json, sizeof json, 3, reg, "");
    cJSON *r = rc_call(c, json);
    rc_assert_ok(r, 3);
    cJSON_Delete(r);
    char unmap[96];
    snprintf(unmap, sizeof unmap,
             "{\"id\": 4, \"op\": \"unmap_region\", \"region\": %llu}",
             (unsigned long long)reg);
    r = rc_call(c, unmap);
    rc_assert_ok(r, 4);
    cJSON_Delete(r);
  }
  close(c);
  fx_array_free(&x);
  recovered(d, &b, "out in sealed regions");
  td_stop_clean(d);
}

Test(hostile_fds, a_memfd_grown_after_mapping_keeps_its_mapped_size) {
  td_baseline b;
  td *d = start(&b);
  int c = rc_connect(d->sock);
  int m = rc_memfd("integ-grows", 4096, F_SEAL_SHRINK);
  uint64_t reg = rc_map_region(c, m, 1);
  cr_assert_eq(ftruncate(m, 8192), 0, "%s", strerror(errno));
  char json[512];
  snprintf(json, sizeof json,
           "{\"id\": 2, \"op\": \"forward\", \"slice\": \"lin\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [4, 16], \"region\": %llu, "
           "\"offset\": 4096}]}",
           (unsigned long long)reg);
  rc_call_error(c, json, 2, "BAD_REGION");
  /* Mapped again, it is the bigger region it now is. */
  cJSON *r = map(c, m, 3);
  rc_assert_ok(r, 3);
  cr_assert_eq(rc_u64(r, "bytes"), 8192);
  cJSON_Delete(r);
  close(m);
  close(c);
  recovered(d, &b, "a memfd grown after mapping");
  td_stop_clean(d);
}
