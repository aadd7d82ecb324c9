/* conn.c — frame assembly, fd reception and ordered replies for one client. */
#include "conn.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dispatch.h"
#include "frame.h"
#include "log.h"
#include "outpool.h"
#include "reply.h"
#include "slyced.h"

static void conn_update_poll(conn *c);
static void conn_flush(conn *c);

uint64_t conn_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void close_fds(int *fds, size_t n) {
  for (size_t i = 0; i < n; i++)
    close(fds[i]);
}

static void conn_reset_frame(conn *c) {
  free(c->body);
  c->body = NULL;
  c->body_len = 0;
  c->body_got = 0;
  c->hdr_got = 0;
  close_fds(c->fds, c->n_fds);
  c->n_fds = 0;
  c->fds_overflow = false;
  c->ctrunc = false;
}

static void out_free(conn_out *o) {
  close_fds(o->fds, o->n_fds);
  free(o->data);
  free(o);
}

#define CONN_TRIM_AFTER (1u << 20)

/* The last of the handles and the job references frees the connection. */
static void conn_free_if_done(conn *c) {
  if (c->open_handles > 0 || c->refs > 0)
    return;
  conn_reset_frame(c);
  while (c->out_head != NULL) {
    conn_out *o = c->out_head;
    c->out_head = o->next;
    out_free(o);
  }
  for (size_t i = 0; i < c->n_regions; i++)
    region_unref(c->regions[i]);
  free(c->regions);
  outpool_unref(c->pool);
  free(c->active_slice);
  peer_cred_free(&c->peer);
  bool trim = c->out_peak >= CONN_TRIM_AFTER;
  free(c);
  /* A client that let megabytes of small replies pile up leaves them in
   * malloc's heap, which keeps the memory: give it back to the system. */
  if (trim)
    malloc_trim(0);
}

static void conn_on_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->open_handles > 0)
    return;
  close(c->fd);
  server_conn_closed(&c->sd->srv, c);
  conn_free_if_done(c);
}

void conn_ref(conn *c) { c->refs++; }

void conn_unref(conn *c) {
  if (--c->refs == 0)
    conn_free_if_done(c);
}

void conn_close(conn *c) {
  if (c->closed)
    return;
  c->closed = true;
  c->closing = true;
  atomic_store(&c->abandoned, true);
  uv_timer_stop(&c->frame_timer);
  uv_close((uv_handle_t *)&c->poll, conn_on_handle_closed);
  uv_close((uv_handle_t *)&c->frame_timer, conn_on_handle_closed);
}

void conn_close_after_flush(conn *c) {
  if (c->closed)
    return;
  c->closing = true;
  if (c->out_head == NULL)
    conn_close(c);
  else
    conn_update_poll(c);
}

conn_out *conn_reserve(conn *c) {
  conn_out *o = calloc(1, sizeof(*o));
  if (o == NULL)
    return NULL;
  if (c->out_tail != NULL)
    c->out_tail->next = o;
  else
    c->out_head = o;
  c->out_tail = o;
  c->pending++;
  return o;
}

static void conn_unlink(conn *c, conn_out *slot) {
  conn_out **pp = &c->out_head, *prev = NULL;
  while (*pp != NULL && *pp != slot) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  if (*pp == NULL)
    return;
  *pp = slot->next;
  if (c->out_tail == slot)
    c->out_tail = prev;
}

void conn_fill(conn *c, conn_out *slot, int op, const cJSON *reply,
               const int *fds, size_t n_fds, uint64_t start_us) {
  int code = 0;
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
  if (cJSON_IsFalse(ok)) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(e, "code");
    code = cJSON_IsString(cs) ? proto_code_from_wire_name(cs->valuestring)
                              : SLY_E_INTERNAL;
  }
  /* A reply to a closed connection is dropped unsent: not a request served,
   * nor an error anyone saw. */
  if (!c->closed)
    stats_record(&c->sd->stats, op, code, conn_now_us() - start_us);
  c->pending--;
  if (n_fds > 0)
    memcpy(slot->fds, fds, n_fds * sizeof(int));
  slot->n_fds = n_fds;
  slot->owner = NULL;
  if (c->closed) {
    conn_unlink(c, slot);
    out_free(slot);
    return;
  }

  proto_error err;
  if (proto_reply_encode(reply, &slot->data, &slot->len, &err) < 0) {
    log_error("conn %llu: cannot encode a reply: %s", (unsigned long long)c->id,
              err.message);
    conn_close(c);
    return;
  }
  slot->ready = true;
  c->out_bytes += slot->len;
  if (c->out_bytes > c->out_peak)
    c->out_peak = c->out_bytes;
  if (c->out_head == slot)
    conn_flush(c);
  conn_update_poll(c);
}

void conn_abandon_pending(conn *c, const proto_error *e) {
  uint64_t now = conn_now_us();
  atomic_store(&c->abandoned, true);
  for (conn_out *o = c->out_head; o != NULL && !c->closed;) {
    conn_out *next = o->next; /* o may be sent and freed by conn_fill */
    if (!o->ready) {
      if (o->owner != NULL)
        *o->owner = NULL;
      cJSON *reply = proto_reply_error(o->has_id, o->id, e);
      if (reply == NULL) {
        conn_close(c);
        return;
      }
      conn_fill(c, o, o->op, reply, NULL, 0, now);
      cJSON_Delete(reply);
    }
    o = next;
  }
}

void conn_reply(conn *c, int op, const cJSON *reply, uint64_t start_us) {
  conn_out *slot = conn_reserve(c);
  if (slot == NULL) {
    log_error("conn %llu: out of memory queueing a reply, closing",
              (unsigned long long)c->id);
    conn_close(c);
    return;
  }
  conn_fill(c, slot, op, reply, NULL, 0, start_us);
}

void conn_reply_error(conn *c, int op, bool has_id, uint64_t id,
                      const proto_error *e, uint64_t start_us) {
  log_debug("conn %llu: %s: %s", (unsigned long long)c->id,
            proto_code_wire_name(e->code), e->message);
  cJSON *reply = proto_reply_error(has_id, id, e);
  if (reply == NULL) {
    log_error("conn %llu: out of memory building an error reply, closing",
              (unsigned long long)c->id);
    conn_close(c);
    return;
  }
  conn_reply(c, op, reply, start_us);
  cJSON_Delete(reply);
}

/* Sends what is left of `o`; the fds go with its first byte. */
static ssize_t conn_send(conn *c, conn_out *o) {
  struct iovec iov = {.iov_base = o->data + o->off, .iov_len = o->len - o->off};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  union {
    char buf[CMSG_SPACE(PROTO_MAX_TENSORS * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  if (o->off == 0 && o->n_fds > 0) {
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(o->n_fds * sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(o->n_fds * sizeof(int));
    memcpy(CMSG_DATA(cm), o->fds, o->n_fds * sizeof(int));
  }
  ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n > 0 && o->n_fds > 0) {
    close_fds(o->fds, o->n_fds); /* the client has its copies now */
    o->n_fds = 0;
  }
  return n;
}

static void conn_flush(conn *c) {
  while (c->out_head != NULL && c->out_head->ready && !c->closed) {
    conn_out *o = c->out_head;
    ssize_t n = conn_send(c, o);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      log_debug("conn %llu: send: %s, closing", (unsigned long long)c->id,
                strerror(errno));
      conn_close(c);
      return;
    }
    o->off += (size_t)n;
    c->out_bytes -= (size_t)n;
    if (o->off == o->len) {
      c->out_head = o->next;
      if (c->out_head == NULL)
        c->out_tail = NULL;
      out_free(o);
    }
  }
  if (c->out_head == NULL && c->closing)
    conn_close(c);
}

/* A frame-level failure: one error reply with id null, then close. */
static void conn_bad_frame(conn *c, const char *why) {
  proto_error e;
  proto_fail(&e, SLY_E_BAD_FRAME, "%s", why);
  log_info("conn %llu (uid %u pid %d): bad frame: %s, closing",
           (unsigned long long)c->id, (unsigned)c->peer.uid, (int)c->peer.pid,
           why);
  conn_reply_error(c, -1, false, 0, &e, conn_now_us());
  conn_close_after_flush(c);
}

static void conn_handle_frame(conn *c) {
  uint64_t start = conn_now_us();
  uv_timer_stop(&c->frame_timer);
  if (c->fds_overflow || c->ctrunc) {
    conn_bad_frame(c, c->ctrunc ? "control data was truncated"
                                : "more than one fd came with the frame");
    conn_reset_frame(c);
    return;
  }

  proto_request req;
  proto_error err;
  int r = proto_request_parse(c->body, c->body_len, &req, &err);
  /* The fds now belong to the request's handling. */
  int fds[PROTO_MAX_FDS];
  size_t n_fds = c->n_fds;
  memcpy(fds, c->fds, n_fds * sizeof(int));
  c->n_fds = 0;
  conn_reset_frame(c);

  if (r == SLY_E_BAD_FRAME) {
    close_fds(fds, n_fds);
    conn_bad_frame(c, err.message);
  } else if (r < 0) {
    close_fds(fds, n_fds);
    conn_reply_error(c, -1, req.has_id, req.id, &err, start);
  } else {
    dispatch_request(c, &req, fds, n_fds, start);
  }
  proto_request_free(&req);
}

static void conn_take_fds(conn *c, struct msghdr *msg) {
  if (msg->msg_flags & MSG_CTRUNC)
    c->ctrunc = true;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL;
       cm = CMSG_NXTHDR(msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *in = (int *)CMSG_DATA(cm);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, &in[i], sizeof(fd));
      if (c->n_fds < PROTO_MAX_FDS) {
        c->fds[c->n_fds++] = fd;
      } else {
        close(fd);
        c->fds_overflow = true;
      }
    }
  }
}

static void conn_frame_timeout(uv_timer_t *t) {
  conn *c = t->data;
  log_info("conn %llu (uid %u pid %d): frame not complete within %llu ms, "
           "closing",
           (unsigned long long)c->id, (unsigned)c->peer.uid, (int)c->peer.pid,
           (unsigned long long)c->sd->cfg->limits.frame_timeout_ms);
  conn_close(c);
}

static void conn_read(conn *c) {
  while (!c->closing && c->out_bytes < CONN_OUT_HIGH_WATER) {
    bool in_header = c->hdr_got < PROTO_HEADER_BYTES;
    struct iovec iov;
    if (in_header) {
      iov.iov_base = c->hdr + c->hdr_got;
      iov.iov_len = PROTO_HEADER_BYTES - c->hdr_got;
    } else {
      iov.iov_base = c->body + c->body_got;
      iov.iov_len = c->body_len - c->body_got;
    }
    union {
      char buf[CMSG_SPACE(CONN_FDS_SEEN_MAX * sizeof(int))];
      struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        log_debug("conn %llu: recvmsg: %s, closing", (unsigned long long)c->id,
                  strerror(errno));
        conn_close(c);
      }
      return;
    }
    conn_take_fds(c, &msg);
    if (n == 0) {
      if (c->hdr_got > 0)
        log_debug("conn %llu: peer closed in the middle of a frame",
                  (unsigned long long)c->id);
      c->read_eof = true;
      /* A peer that only shut its writing side still reads its replies; one
       * that has closed (or died: POLLHUP, both sides shut) never will, and
       * its queued requests are dropped rather than run for no one. */
      struct pollfd p = {.fd = c->fd, .events = POLLOUT};
      if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
        log_debug("conn %llu: peer gone with %zu requests in flight",
                  (unsigned long long)c->id, c->pending);
        conn_close(c);
      } else {
        conn_close_after_flush(c);
      }
      return;
    }
    if (c->hdr_got == 0 && c->body_got == 0)
      uv_timer_start(&c->frame_timer, conn_frame_timeout,
                     c->sd->cfg->limits.frame_timeout_ms, 0);

    if (in_header) {
      c->hdr_got += (size_t)n;
      if (c->hdr_got < PROTO_HEADER_BYTES)
        continue;
      proto_error err;
      uint32_t len;
      if (proto_frame_header_decode(c->hdr, c->sd->cfg->limits.max_frame_bytes,
                                    &len, &err) < 0) {
        conn_bad_frame(c, err.message);
        conn_reset_frame(c);
        return;
      }
      c->body = malloc(len);
      if (c->body == NULL) {
        log_error("conn %llu: out of memory for a %u-byte frame, closing",
                  (unsigned long long)c->id, len);
        conn_close(c);
        return;
      }
      c->body_len = len;
    } else {
      c->body_got += (size_t)n;
    }
    if (c->hdr_got == PROTO_HEADER_BYTES && c->body_got == c->body_len) {
      /* One frame per wake-up: epoll (level-triggered) reports the next
       * one, which spares a recvmsg that would only say EAGAIN after each
       * request of a client that waits for its reply, and lets the other
       * connections in between the frames of a busy one. */
      conn_handle_frame(c);
      return;
    }
  }
}

static void conn_on_poll(uv_poll_t *h, int status, int events) {
  conn *c = h->data;
  if (status < 0) {
    log_debug("conn %llu: poll: %s, closing", (unsigned long long)c->id,
              uv_strerror(status));
    conn_close(c);
    return;
  }
  if (events & UV_WRITABLE)
    conn_flush(c);
  if (!c->closed && (events & (UV_READABLE | UV_DISCONNECT)))
    conn_read(c);
  if (!c->closed)
    conn_update_poll(c);
}

static void conn_update_poll(conn *c) {
  if (c->closed)
    return;
  int events = 0;
  if (!c->closing && !c->read_eof && c->out_bytes < CONN_OUT_HIGH_WATER)
    events |= UV_READABLE;
  if (c->out_head != NULL && c->out_head->ready)
    events |= UV_WRITABLE;
  /* libuv re-arms the fd in the kernel on every uv_poll_start, even with
   * the same events: one epoll_ctl per call, several per request. */
  if (events == c->poll_events)
    return;
  c->poll_events = events;
  if (events == 0)
    uv_poll_stop(&c->poll);
  else
    uv_poll_start(&c->poll, events, conn_on_poll);
}

int conn_start(slyced *sd, int fd, const peer_cred *peer, uint64_t id,
               conn **out) {
  conn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    close(fd);
    return -ENOMEM;
  }
  c->sd = sd;
  c->id = id;
  c->fd = fd;
  c->peer = *peer;
  c->pool = outpool_new();
  if (c->pool == NULL) {
    close(fd);
    free(c);
    return -ENOMEM;
  }
  int r = uv_poll_init_socket(sd->loop, &c->poll, fd);
  if (r < 0) {
    close(fd);
    outpool_unref(c->pool);
    free(c);
    return r;
  }
  uv_timer_init(sd->loop, &c->frame_timer);
  c->poll.data = c;
  c->frame_timer.data = c;
  c->open_handles = 2;
  conn_update_poll(c);
  *out = c;
  return 0;
}

int conn_region_add(conn *c, region *r, proto_error *err) {
  if (c->n_regions >= c->sd->cfg->limits.max_regions_per_conn)
    return proto_fail(err, SLY_E_BAD_REGION,
                      "the connection already has %zu regions "
                      "(max_regions_per_conn)",
                      c->n_regions);
  region **v = realloc(c->regions, (c->n_regions + 1) * sizeof(*v));
  if (v == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  c->regions = v;
  r->id = outpool_next_region_id(c->pool);
  c->regions[c->n_regions++] = r;
  return 0;
}

region *conn_region_find(const conn *c, uint64_t id) {
  for (size_t i = 0; i < c->n_regions; i++)
    if (c->regions[i]->id == id)
      return c->regions[i];
  return NULL;
}

int conn_region_remove(conn *c, uint64_t id, proto_error *err) {
  for (size_t i = 0; i < c->n_regions; i++) {
    if (c->regions[i]->id != id)
      continue;
    region_unref(c->regions[i]);
    c->regions[i] = c->regions[--c->n_regions];
    return 0;
  }
  return conn_no_region(c, "", id, err);
}

int conn_no_region(conn *c, const char *field, uint64_t id, proto_error *err) {
  if (c->pool != NULL && outpool_has_region(c->pool, id))
    return proto_fail(err, SLY_E_BAD_REGION,
                      "%sregion %llu is a server region (it holds slyced's "
                      "outputs); only a region this client mapped fits here",
                      field, (unsigned long long)id);
  return proto_fail(err, SLY_E_BAD_REGION, "%sno region %llu on this connection",
                    field, (unsigned long long)id);
}
