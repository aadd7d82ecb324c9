/* wire.c — one request/reply round trip over a blocking socket (client/).
 *
 * Owns: framing on the client side (sendmsg with an optional SCM_RIGHTS fd on
 * the frame's first byte, recvmsg of exactly one reply frame and the fds that
 * come with it), request ids, and the checks every reply passes: its size,
 * its JSON shape (proto_reply_decode) and its id.
 */
#include "conn_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "frame.h"
#include "limits.h"
#include "reply.h"
#include "request.h"

/* What a close or reset before the reply most likely means, said so that a
 * user knows to look at the daemon rather than at the request. */
#define CLOSED_BY_SLYCED                                                       \
  "connection closed by slyced (it may be stopping or restarting; its log "   \
  "says why)"

cJSON *sly__request(const char *op) {
  cJSON *req = cJSON_CreateObject();
  if (req != NULL && cJSON_AddStringToObject(req, "op", op) == NULL) {
    cJSON_Delete(req);
    return NULL;
  }
  return req;
}

bool sly__json_u53(const cJSON *item, uint64_t *out) {
  if (!cJSON_IsNumber(item))
    return false;
  double v = item->valuedouble;
  /* The range check comes first, so that the cast below is defined. */
  if (!(v >= 0 && v <= (double)PROTO_MAX_INT) || v != (double)(uint64_t)v)
    return false;
  *out = (uint64_t)v;
  return true;
}

void sly__reply_free(sly__reply *rep) {
  if (rep == NULL)
    return;
  cJSON_Delete(rep->json);
  free(rep->body);
  for (size_t i = 0; i < rep->n_fds; i++)
    if (rep->fds[i] >= 0)
      close(rep->fds[i]);
  memset(rep, 0, sizeof(*rep));
}

/* Writes one frame (header and body), the fd riding on its first byte. After
 * a failure the connection is of no use (a frame cut short cannot be
 * resumed), but the caller may still read what the server said last. */
static int send_frame(sly_conn *c, const uint8_t *frame, size_t len, int fd,
                      sly_error *err) {
  struct iovec iov[1] = {{.iov_base = (void *)frame, .iov_len = len}};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  memset(&ctl, 0, sizeof(ctl));
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 1};
  if (fd >= 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  }
  while (msg.msg_iovlen > 0) {
    ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      /* The connection stays open for parting_words(); the caller kills. */
      if (e == EAGAIN || e == EWOULDBLOCK)
        return sly__fail(err, SLY_E_IO, "slyced took nothing in %u ms (the "
                         "timeout); the connection is closed", c->timeout_ms);
      if (e == EPIPE || e == ECONNRESET)
        return sly__fail(err, SLY_E_IO, "%s", CLOSED_BY_SLYCED);
      return sly__fail_errno(err, SLY_E_IO, e, "send to slyced");
    }
    /* The fd went with the first bytes; the rest goes without it. */
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
    size_t left = (size_t)n;
    while (msg.msg_iovlen > 0 && left >= msg.msg_iov->iov_len) {
      left -= msg.msg_iov->iov_len;
      msg.msg_iov++;
      msg.msg_iovlen--;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + left;
      msg.msg_iov->iov_len -= left;
    }
  }
  return 0;
}

/* Keeps the fds of every SCM_RIGHTS message in `msg`; returns false when
 * there were more than a reply may carry (the extra ones are closed). */
static bool take_fds(struct msghdr *msg, sly__reply *rep) {
  bool fit = true;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL;
       cm = CMSG_NXTHDR(msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
      if (rep->n_fds < SLY__MAX_REPLY_FDS) {
        rep->fds[rep->n_fds++] = fd;
      } else {
        close(fd);
        fit = false;
      }
    }
  }
  return fit;
}

/* Waits until the socket has something to read: 1, or 0 when the timeout
 * passed first, or -1 with errno. A recvmsg that blocks sleeps on the
 * socket's one wait queue, and the kernel wakes every sleeper there each
 * time the server reads one of our frames (the write space the read
 * frees): a round trip cost its client two wake-ups, and the server's loop
 * thread the work of the first. poll sleeps for POLLIN alone. Measured
 * with bench 1 on the 2-CPU VM, side by side: 16 clients 53-55k -> 69-70k
 * forwards a second; one client alone on its CPU 84-85 -> 91-98 us a
 * forward (the needless wake-up had also woken its idle virtual CPU before
 * the reply came). */
static int wait_readable(const sly_conn *c) {
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  const unsigned most = ~0u >> 1; /* poll's int; ~24 days */
  unsigned ms = c->timeout_ms < most ? c->timeout_ms : most;
  return poll(&p, 1, ms == 0 ? -1 : (int)ms);
}

/* Reads at least `min` and at most `max` bytes into buf, collecting fds into
 * `rep`; *got says how many. Any failure kills the connection. */
static int recv_upto(sly_conn *c, void *buf, size_t min, size_t max,
                     size_t *got, sly__reply *rep, sly_error *err) {
  *got = 0;
  while (*got < min) {
    /* Room for one fd more than allowed, so that too many is seen as such
     * rather than as truncated control data. */
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * (SLY__MAX_REPLY_FDS + 1))];
    } ctl;
    struct iovec iov = {.iov_base = (char *)buf + *got, .iov_len = max - *got};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    int ready = wait_readable(c);
    if (ready < 0 && errno == EINTR)
      continue;
    ssize_t n;
    if (ready == 0) {
      n = -1;
      errno = EAGAIN; /* what SO_RCVTIMEO would have said */
    } else {
      n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
    }
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      sly__conn_kill(c);
      if (e == EAGAIN || e == EWOULDBLOCK)
        return sly__fail(err, SLY_E_IO, "no reply from slyced in %u ms (the "
                         "timeout); the connection is closed", c->timeout_ms);
      /* A reset is a close with our request still unread: the same news. */
      if (e == ECONNRESET)
        return sly__fail(err, SLY_E_IO, "%s", CLOSED_BY_SLYCED);
      return sly__fail_errno(err, SLY_E_IO, e, "receive from slyced");
    }
    bool fit = take_fds(&msg, rep);
    if (!fit || (msg.msg_flags & MSG_CTRUNC)) {
      sly__conn_kill(c);
      return sly__fail(err, SLY_E_PROTOCOL,
                       "reply carried more than %d file descriptors",
                       SLY__MAX_REPLY_FDS);
    }
    if (n == 0) {
      sly__conn_kill(c);
      return sly__fail(err, SLY_E_IO, "%s", CLOSED_BY_SLYCED);
    }
    *got += (size_t)n;
  }
  return 0;
}

/* Reads one reply frame. One request is out at a time, so what the socket
 * holds is this reply and nothing after it: the header comes with the
 * start of the body in one recvmsg (all of a small reply, which most are),
 * and only a larger one takes a second. Bytes past the frame mean the
 * server sent what was not asked for. */
static int recv_frame(sly_conn *c, sly__reply *rep, sly_error *err) {
  uint8_t first[PROTO_HEADER_BYTES + SLY__REPLY_FIRST_READ];
  size_t got;
  int rc = recv_upto(c, first, PROTO_HEADER_BYTES, sizeof(first), &got, rep,
                     err);
  if (rc < 0)
    return rc;
  uint32_t len;
  proto_error perr;
  if (proto_frame_header_decode(first, PROTO_MAX_REPLY_BYTES, &len, &perr) <
      0) {
    sly__conn_kill(c);
    return sly__fail(err, SLY_E_PROTOCOL, "reply %s", perr.message);
  }
  size_t have = got - PROTO_HEADER_BYTES;
  if (have > len) {
    sly__conn_kill(c);
    return sly__fail(err, SLY_E_PROTOCOL,
                     "slyced sent %zu bytes past its reply", have - len);
  }
  char *body = malloc((size_t)len + 1);
  if (body == NULL) {
    sly__conn_kill(c);
    return sly__fail(err, SLY_E_NO_MEMORY,
                     "out of memory reading a reply of %u bytes", len);
  }
  memcpy(body, first + PROTO_HEADER_BYTES, have);
  size_t more;
  rc = recv_upto(c, body + have, len - have, len - have, &more, rep, err);
  if (rc < 0) {
    free(body);
    return rc;
  }
  body[len] = '\0';
  rep->body = body;
  rep->body_len = len;
  return 0;
}

/* Sets the request's id: its own when it has one (sly_request_json checked
 * it), else the connection's next one. */
static int request_id(sly_conn *c, cJSON *req, uint64_t *id, sly_error *err) {
  if (cJSON_GetObjectItemCaseSensitive(req, "id") != NULL) {
    if (proto_json_u64(req, "id", id) < 0)
      return sly__fail(err, SLY_E_INVALID_ARG,
                       "request id must be an integer in 0..2^53-1");
    return 0;
  }
  if (c->next_id > PROTO_MAX_INT)
    c->next_id = 1;
  if (cJSON_AddNumberToObject(req, "id", (double)c->next_id) == NULL)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  *id = c->next_id++;
  return 0;
}

/* Checks the reply's shape and id. An id of null on an error is the server
 * giving up on the connection (a bad frame, too many connections): its code
 * is returned and the connection dies. */
static int check_reply(sly_conn *c, uint64_t id, sly__reply *rep,
                       sly_error *err) {
  cJSON *json = NULL;
  bool id_null = false;
  uint64_t rid = 0;
  proto_error remote = {0};
  int rc = proto_reply_decode(rep->body, rep->body_len, &json, &id_null, &rid,
                              &remote);
  /* Without a parsed reply the failure is ours (PROTOCOL, or NO_MEMORY while
   * parsing); with one, a negative code is what the server sent. */
  if (json == NULL) {
    sly__conn_kill(c);
    if (rc == SLY_E_NO_MEMORY)
      return sly__fail(err, rc, "out of memory parsing a reply");
    return sly__fail(err, SLY_E_PROTOCOL, "%s",
                     rc < 0 ? remote.message : "reply could not be read");
  }
  rep->json = json;
  if (id_null) {
    sly__conn_kill(c);
    if (rc == 0)
      return sly__fail(err, SLY_E_PROTOCOL, "ok reply without an id");
    return sly__fail_remote(err, &remote);
  }
  if (rid != id) {
    sly__conn_kill(c);
    return sly__fail(err, SLY_E_PROTOCOL,
                     "reply id %llu does not match request id %llu",
                     (unsigned long long)rid, (unsigned long long)id);
  }
  if (rc < 0)
    return sly__fail_remote(err, &remote);
  return 0;
}

/* A server that refuses a connection (BUSY: too many for this uid) or a
 * frame sends one error with id null and closes, possibly before our
 * request is out. When sending fails because it closed, that error, if it is
 * waiting to be read, says more than "Broken pipe". */
static int parting_words(sly_conn *c, int send_rc, sly__reply *rep,
                         sly_error *err) {
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  sly_error mine;
  int rc = send_rc;
  if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN) &&
      recv_frame(c, rep, &mine) == 0) {
    /* No request id matches UINT64_MAX, so only an error with id null comes
     * back as a server code. */
    int said = check_reply(c, UINT64_MAX, rep, &mine);
    if (said < 0 && said != SLY_E_PROTOCOL && rep->json != NULL) {
      rc = said;
      if (err != NULL)
        *err = mine;
    } else {
      sly__reply_free(rep);
    }
  }
  sly__conn_kill(c);
  return rc;
}

int sly__round_trip(sly_conn *c, cJSON *req, int fd, sly__reply *rep,
                    bool *sent, sly_error *err) {
  memset(rep, 0, sizeof(*rep));
  *sent = false;
  int rc = sly__conn_check(c, err);
  if (rc < 0)
    return rc;
  uint64_t id;
  rc = request_id(c, req, &id, err);
  if (rc < 0)
    return rc;
  /* proto_json_frame, not cJSON's printer, so that integers up to 2^53-1
   * cross exactly. */
  uint8_t *frame = NULL;
  size_t len = 0;
  proto_error perr;
  rc = proto_json_frame(req, c->max_frame_bytes, &frame, &len, &perr);
  if (rc == SLY_E_NO_MEMORY)
    return sly__fail(err, rc, "out of memory");
  if (rc < 0)
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "request exceeds max_frame_bytes %llu",
                     (unsigned long long)c->max_frame_bytes);
  /* The server closes the connection on a bad frame; refuse here what it
   * would refuse there, so that a bad argument costs only this call. */
  if (!proto_utf8_valid((const char *)frame + PROTO_HEADER_BYTES,
                        len - PROTO_HEADER_BYTES)) {
    free(frame);
    return sly__fail(err, SLY_E_INVALID_ARG, "request is not valid UTF-8");
  }
  *sent = true;
  rc = send_frame(c, frame, len, fd, err);
  free(frame);
  if (rc < 0)
    rc = parting_words(c, rc, rep, err);
  else if ((rc = recv_frame(c, rep, err)) == 0)
    rc = check_reply(c, id, rep, err);
  /* Any reply the stream still trusts, ok or not, may retire regions or
   * bring new ones; a reply that breaks those rules breaks the stream. */
  if (rep->json != NULL && !c->dead) {
    int r = sly__regions_update(c, rep, err);
    if (r < 0) {
      sly__conn_kill(c);
      rc = r;
      sly__reply_free(rep);
    }
  }
  /* A server error leaves the reply for the caller (sly_request_json returns
   * its text); a failure of ours leaves nothing. */
  if (rc < 0 && (rep->json == NULL || rc == SLY_E_PROTOCOL))
    sly__reply_free(rep);
  return rc;
}

int sly__call(sly_conn *c, cJSON *req, int fd, sly__reply *rep,
              sly_error *err) {
  memset(rep, 0, sizeof(*rep));
  int rc = sly__conn_check(c, err);
  if (rc < 0)
    return rc;
  uint64_t sent_ids[PROTO_MAX_IDS];
  size_t n_sent = 0;
  if (sly__release_attach(c, req, sent_ids, &n_sent) < 0)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  bool sent;
  rc = sly__round_trip(c, req, fd, rep, &sent, err);
  if (n_sent == 0)
    return rc;
  /* The request object goes back to the caller as it came. */
  cJSON_DeleteItemFromObjectCaseSensitive(req, "release");
  if (!sent) {
    memcpy(c->pending, sent_ids, n_sent * sizeof(sent_ids[0]));
    c->n_pending = n_sent;
  } else if ((rc == SLY_E_BAD_REQUEST || rc == SLY_E_UNKNOWN_OP) &&
             rep->json != NULL && !c->dead) {
    /* The server applies "release" right after parsing (PROTOCOL.md), so
     * only a request that did not parse left the leases held. */
    sly__release_settle(c, sent_ids, n_sent);
  }
  return rc;
}
