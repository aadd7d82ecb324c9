/* server.c — the listening socket: bind or inherit, accept, count per uid. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "conn.h"
#include "frame.h"
#include "log.h"
#include "reply.h"
#include "slyced.h"

/* After EMFILE/ENFILE, accepting again at once would spin: wait a little. */
#define SERVER_ACCEPT_RETRY_MS 100

static void server_on_poll(uv_poll_t *h, int status, int events);

static server_uid_count *uid_slot(server *s, uid_t uid, bool create) {
  for (size_t i = 0; i < s->n_uids; i++)
    if (s->uids[i].uid == uid)
      return &s->uids[i];
  if (!create)
    return NULL;
  server_uid_count *v = realloc(s->uids, (s->n_uids + 1) * sizeof(*v));
  if (v == NULL)
    return NULL;
  s->uids = v;
  s->uids[s->n_uids] = (server_uid_count){.uid = uid, .count = 0};
  return &s->uids[s->n_uids++];
}

/* A path that answers connect() belongs to a live daemon; one that refuses
 * is a stale socket left by a crash and may be replaced. Anything that is not
 * a socket is not ours to delete. Returns 0 when the path is free. */
static int clear_stale_socket(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) {
    if (errno == ENOENT)
      return 0;
    log_error("socket %s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISSOCK(st.st_mode)) {
    log_error("socket %s exists and is not a socket; refusing to replace it",
              path);
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log_error("socket(): %s", strerror(errno));
    return -1;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  int e = errno;
  close(fd);
  if (r == 0) {
    log_error("socket %s: another slyced is already serving it", path);
    return -1;
  }
  if (e != ECONNREFUSED) {
    log_error("socket %s: cannot tell whether it is stale: %s", path,
              strerror(e));
    return -1;
  }
  log_info("socket %s: removing a stale socket", path);
  if (unlink(path) < 0 && errno != ENOENT) {
    log_error("socket %s: unlink: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

static int bind_socket(server *s, const config *cfg) {
  const char *path = cfg->socket;
  if (clear_stale_socket(path) < 0)
    return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log_error("socket(): %s", strerror(errno));
    return -1;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1);
  /* Created owner-only, then opened up with chmod: no moment where the
   * socket is wider than socket_mode. */
  mode_t old = umask(0177);
  int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  int e = errno;
  umask(old);
  if (r < 0) {
    log_error("socket %s: bind: %s (config key socket)", path, strerror(e));
    goto fail;
  }
  unsigned mode = cfg->has_socket_mode ? cfg->socket_mode : 0660;
  if (cfg->has_admin_gid && chown(path, (uid_t)-1, cfg->admin_gid) < 0) {
    log_error("socket %s: chown to admin_group %s: %s", path, cfg->admin_group,
              strerror(errno));
    goto fail_unlink;
  }
  if (chmod(path, mode) < 0) {
    log_error("socket %s: chmod to socket_mode %04o: %s", path, mode,
              strerror(errno));
    goto fail_unlink;
  }
  if (listen(fd, SOMAXCONN) < 0) {
    log_error("socket %s: listen: %s", path, strerror(errno));
    goto fail_unlink;
  }
  s->fd = fd;
  s->path = strdup(path);
  if (s->path == NULL) {
    log_error("out of memory");
    goto fail_unlink;
  }
  log_info("listening on %s (mode %04o)", path, mode);
  return 0;

fail_unlink:
  unlink(path);
fail:
  close(fd);
  return -1;
}

static int inherit_socket(server *s, int n) {
  if (n != 1) {
    log_error("socket activation passed %d fds; slyced takes exactly one", n);
    return -1;
  }
  int fd = SD_LISTEN_FDS_START;
  if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
    log_error("socket activation: fd %d is not a listening Unix stream "
              "socket", fd);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    log_error("socket activation: fcntl: %s", strerror(errno));
    return -1;
  }
  s->fd = fd;
  s->activated = true;
  log_info("listening on the socket systemd passed (fd %d)", fd);
  return 0;
}

int server_start(server *s, slyced *sd) {
  s->sd = sd;
  s->fd = -1;
  s->next_conn_id = 1;
  int n = sd_listen_fds(1);
  if (n < 0) {
    log_error("sd_listen_fds: %s", strerror(-n));
    return -1;
  }
  if ((n > 0 ? inherit_socket(s, n) : bind_socket(s, sd->cfg)) < 0)
    return -1;
  int r = uv_poll_init_socket(sd->loop, &s->poll, s->fd);
  if (r == 0)
    r = uv_poll_start(&s->poll, UV_READABLE, server_on_poll);
  if (r < 0) {
    log_error("uv_poll on the listening socket: %s", uv_strerror(r));
    return -1;
  }
  s->poll.data = s;
  s->poll_open = true;
  uv_timer_init(sd->loop, &s->retry);
  s->retry.data = s;
  s->retry_open = true;
  return 0;
}

/* Best effort: the socket is fresh, so a small frame fits in its buffer. */
static void reject_busy(int fd, const char *why) {
  proto_error e;
  proto_fail(&e, SLY_E_BUSY, "%s", why);
  cJSON *reply = proto_reply_error(false, 0, &e);
  uint8_t *frame;
  size_t len;
  if (reply != NULL && proto_reply_encode(reply, &frame, &len, NULL) == 0) {
    ssize_t w = send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    free(frame);
  }
  cJSON_Delete(reply);
  close(fd);
}

static void server_accept_one(server *s, int fd) {
  slyced *sd = s->sd;
  peer_cred peer;
  int r = peer_cred_read(fd, &peer);
  if (r < 0) {
    log_warn("accept: cannot read peer credentials: %s", strerror(-r));
    close(fd);
    return;
  }
  server_uid_count *u = uid_slot(s, peer.uid, true);
  if (u == NULL || u->count >= sd->cfg->limits.max_conns_per_uid) {
    sd->stats.conns_rejected++;
    log_warn("uid %u (pid %d) has %zu connections (max_conns_per_uid %llu); "
             "refusing another",
             (unsigned)peer.uid, (int)peer.pid, u ? u->count : 0,
             (unsigned long long)sd->cfg->limits.max_conns_per_uid);
    reject_busy(fd, "too many connections from this uid (max_conns_per_uid)");
    peer_cred_free(&peer);
    return;
  }
  conn *c;
  uint64_t id = s->next_conn_id++;
  r = conn_start(sd, fd, &peer, id, &c);
  if (r < 0) {
    log_error("accept: cannot start connection: %s", strerror(-r));
    peer_cred_free(&peer);
    return;
  }
  u->count++;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->n_conns++;
  sd->stats.conns_accepted++;
  log_debug("conn %llu: uid %u pid %d connected", (unsigned long long)id,
            (unsigned)peer.uid, (int)peer.pid);
}

static void server_retry_cb(uv_timer_t *t) {
  server *s = t->data;
  if (s->poll_open && !s->sd->draining)
    uv_poll_start(&s->poll, UV_READABLE, server_on_poll);
}

static void server_on_poll(uv_poll_t *h, int status, int events) {
  server *s = h->data;
  (void)events;
  if (status < 0) {
    log_error("listening socket: %s", uv_strerror(status));
    return;
  }
  for (;;) {
    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      server_accept_one(s, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
        errno == ENOMEM) {
      log_warn("accept: %s; pausing accepts for %d ms", strerror(errno),
               SERVER_ACCEPT_RETRY_MS);
      uv_poll_stop(&s->poll);
      uv_timer_start(&s->retry, server_retry_cb, SERVER_ACCEPT_RETRY_MS, 0);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      log_error("accept: %s", strerror(errno));
    }
    return;
  }
}

void server_stop_accepting(server *s) {
  if (s->poll_open) {
    uv_close((uv_handle_t *)&s->poll, NULL);
    s->poll_open = false;
  }
  if (s->retry_open) {
    uv_close((uv_handle_t *)&s->retry, NULL);
    s->retry_open = false;
  }
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  if (s->path != NULL) {
    unlink(s->path);
    free(s->path);
    s->path = NULL;
  }
}

void server_close_all(server *s) {
  for (conn *c = s->conns; c != NULL; c = c->next)
    conn_close(c);
}

void server_conn_closed(server *s, conn *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  s->n_conns--;
  server_uid_count *u = uid_slot(s, c->peer.uid, false);
  if (u != NULL && --u->count == 0)
    *u = s->uids[--s->n_uids]; /* keep the table as small as the uids */
  log_debug("conn %llu: closed", (unsigned long long)c->id);
  slyced_conn_gone(s->sd);
}
