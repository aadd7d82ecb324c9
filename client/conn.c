/* conn.c — connecting to slyced and the error helpers of libslyce (client/).
 *
 * Owns: the socket path rule (argument, $SLYCE_SOCKET, SLY_DEFAULT_SOCKET),
 * the lifetime of a sly_conn, and how a sly_error is filled.
 */
#include "conn_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "limits.h"
#include "reply.h"

/* Replaces line breaks and other control bytes so a message stays one line,
 * whatever the server or strerror put in it. */
static void one_line(char *s) {
  for (; *s != '\0'; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      *s = ' ';
}

static int vfail(sly_error *err, int code, int errnum, const char *fmt,
                 va_list ap) {
  if (err == NULL)
    return code;
  err->code = code;
  err->needed = 0;
  int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
  if (n < 0)
    err->message[0] = '\0';
  if (errnum != 0) {
    size_t len = strlen(err->message);
    snprintf(err->message + len, sizeof(err->message) - len, "%s%s",
             len > 0 ? ": " : "", strerror(errnum));
  }
  one_line(err->message);
  if (err->message[0] == '\0')
    snprintf(err->message, sizeof(err->message), "%s",
             sly_code_message(code));
  return code;
}

int sly__fail(sly_error *err, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(err, code, 0, fmt, ap);
  va_end(ap);
  return code;
}

int sly__fail_errno(sly_error *err, int code, int errnum, const char *fmt,
                    ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(err, code, errnum, fmt, ap);
  va_end(ap);
  return code;
}

int sly__fail_remote(sly_error *err, const proto_error *remote) {
  sly__fail(err, remote->code, "%s", remote->message);
  if (err != NULL && remote->has_needed)
    err->needed = remote->needed;
  return remote->code;
}

void sly__conn_kill(sly_conn *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->dead = true;
}

int sly__conn_check(sly_conn *c, sly_error *err) {
  if (c == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "connection is NULL");
  if (c->dead)
    return sly__fail(err, SLY_E_IO, "connection closed");
  return 0;
}

/* Picks the socket path: the argument, then $SLYCE_SOCKET, then the default.
 * An empty $SLYCE_SOCKET counts as unset, as an empty path means nothing. */
static const char *socket_path(const char *path) {
  if (path != NULL)
    return path;
  const char *env = getenv(SLY_SOCKET_ENV);
  if (env != NULL && env[0] != '\0')
    return env;
  return SLY_DEFAULT_SOCKET;
}

/* Before hello the server's max_frame_bytes is unknown: allow the largest a
 * config may set, so that the server, not a guess, refuses a large frame. */
static uint64_t frame_limit_unknown(void) {
#define LIMIT_HI(key, def, lo, hi)                                             \
  if (strcmp(#key, "max_frame_bytes") == 0)                                   \
    return (uint64_t)(hi);
  PROTO_LIMIT_MAP(LIMIT_HI)
#undef LIMIT_HI
  return (uint64_t)PROTO_MAX_REPLY_BYTES;
}

/* The caller closes the connection with sly_close(). */
int sly_connect(const char *path, sly_conn **out, sly_error *err) {
  if (out == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "no place for the connection");
  const char *p = socket_path(path);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t len = strlen(p);
  if (len == 0)
    return sly__fail(err, SLY_E_INVALID_ARG, "socket path is empty");
  if (len >= sizeof(sa.sun_path))
    return sly__fail(err, SLY_E_INVALID_ARG,
                     "socket path is %zu bytes, longer than the %zu a Unix "
                     "socket allows",
                     len, sizeof(sa.sun_path) - 1);
  memcpy(sa.sun_path, p, len + 1);

  sly_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  int rc;
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    rc = sly__fail_errno(err, SLY_E_IO, errno, "socket");
    goto fail;
  }
  /* A Unix stream connect interrupted while waiting for backlog space has
   * not changed the socket, so it can simply be retried. */
  while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    if (errno == EINTR)
      continue;
    if (errno == EISCONN)
      break;
    rc = sly__fail_errno(err, SLY_E_IO, errno, "connect %s", p);
    goto fail;
  }
  c->next_id = 1;
  c->max_frame_bytes = frame_limit_unknown();
  *out = c;
  return 0;

fail:
  if (c->fd >= 0)
    close(c->fd);
  free(c);
  return rc;
}

/* SO_RCVTIMEO and SO_SNDTIMEO bound each blocking recvmsg and sendmsg, so
 * a server that has stopped (SIGSTOP, a hung executor) ends the call with
 * EAGAIN instead of never (wire.c turns that into the message). */
int sly_set_timeout(sly_conn *c, unsigned ms, sly_error *err) {
  int rc = sly__conn_check(c, err);
  if (rc < 0)
    return rc;
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
      setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
    return sly__fail_errno(err, SLY_E_IO, errno, "set the timeout");
  c->timeout_ms = ms;
  return 0;
}

/* Results still open keep their memory, but their views die here: the
 * server regions are unmapped (the server frees them with the connection). */
void sly_close(sly_conn *c) {
  if (c == NULL)
    return;
  sly__results_detach(c);
  sly__regions_drop(c);
  /* The server unmaps a connection's regions when it closes, so the arenas
   * are only unmapped here, without unmap_region requests. */
  sly_arena *a = c->arenas;
  while (a != NULL) {
    sly_arena *next = a->next;
    munmap(a->base, a->size);
    free(a);
    a = next;
  }
  if (c->fd >= 0)
    close(c->fd);
  free(c);
}
