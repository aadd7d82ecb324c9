/* conn_internal.h — what libslyce's files share (client/, not installed).
 *
 * Owns: the layout of sly_conn and sly_arena, the error helpers that fill a
 * sly_error, and the request/reply round trip (wire.c) that every op uses.
 * Only the files of client/ include this; the public API is slyce.h.
 */
#ifndef CLIENT_CONN_INTERNAL_H
#define CLIENT_CONN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "errors.h"
#include "slyce.h"

/* File descriptors one reply may carry: a forward names at most
 * PROTO_MAX_TENSORS outputs, so at most that many new server regions. */
#define SLY__MAX_REPLY_FDS 16

struct sly_conn {
  int fd;    /* -1 once the connection is dead */
  bool dead; /* later calls fail with SLY_E_IO "connection closed" */
  uint64_t next_id;
  /* Largest request frame the server accepts: the largest value a config may
   * set until hello reports the real one. */
  uint64_t max_frame_bytes;
  sly_arena *arenas; /* every live arena of this connection */
};

struct sly_arena {
  sly_conn *conn;
  void *base;
  size_t size;
  size_t used; /* bump pointer */
  uint64_t region;
  sly_arena *prev, *next;
};

/* One reply as it came off the wire. */
typedef struct {
  cJSON *json;   /* the whole reply object (ok true or false) */
  char *body;    /* the reply text, NUL-terminated */
  size_t body_len;
  int fds[SLY__MAX_REPLY_FDS]; /* received with the reply, in order */
  size_t n_fds;
} sly__reply;

/* Fills `err` (printf-style, one line) and returns `code`. err may be NULL. */
int sly__fail(sly_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like sly__fail with ": strerror(errnum)" appended. */
int sly__fail_errno(sly_error *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Fills `err` from an error the server sent and returns its code. */
int sly__fail_remote(sly_error *err, const proto_error *remote);

/* Closes the socket; every later call fails with SLY_E_IO. */
void sly__conn_kill(sly_conn *c);
/* Fails with SLY_E_IO "connection closed" when the connection is dead. */
int sly__conn_check(sly_conn *c, sly_error *err);

/* Sends `req` (a JSON object; an "id" is added when it has none) with `fd`
 * attached when fd >= 0, and reads its reply into *rep. Returns 0 for an ok
 * reply, the server's code for an error reply (with *rep filled too, and
 * `err` holding the server's message), or SLY_E_IO / SLY_E_PROTOCOL /
 * SLY_E_INVALID_ARG / SLY_E_NO_MEMORY with *rep empty. Every failure except
 * INVALID_ARG and NO_MEMORY before sending leaves the connection dead when
 * the stream can no longer be trusted. The caller frees *rep with
 * sly__reply_free(), which closes the fds it still holds (set a slot to -1 to
 * keep one). `fd` stays the caller's. */
int sly__call(sly_conn *c, cJSON *req, int fd, sly__reply *rep,
              sly_error *err);
void sly__reply_free(sly__reply *rep);

/* A request object {"op": op}; NULL when out of memory. */
cJSON *sly__request(const char *op);

#endif
