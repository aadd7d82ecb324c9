/* conn_internal.h — what libslyce's files share (client/, not installed).
 *
 * Owns: the layout of sly_conn, sly_arena and sly_result, the error helpers
 * that fill a sly_error, the request/reply round trip (wire.c) that every op
 * uses, the table of server regions (regions.c) and the leases waiting to be
 * released (release.c). Only the files of client/ include this; the public
 * API is slyce.h.
 */
#ifndef CLIENT_CONN_INTERNAL_H
#define CLIENT_CONN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "errors.h"
#include "limits.h"
#include "slyce.h"
#include "tensor.h"

/* File descriptors one reply may carry: a forward names at most
 * PROTO_MAX_TENSORS outputs, so at most that many new server regions. */
#define SLY__MAX_REPLY_FDS 16
/* Body bytes read with a reply's header: most replies fit. */
#define SLY__REPLY_FIRST_READ 4096

/* A server region mapped here: outputs of forwards live in these. */
typedef struct {
  uint64_t id;
  void *base; /* PROT_READ, MAP_SHARED */
  size_t size;
} sly__region;

struct sly_conn {
  int fd;    /* -1 once the connection is dead */
  bool dead; /* later calls fail with SLY_E_IO "connection closed" */
  unsigned timeout_ms; /* sly_set_timeout; 0: none */
  uint64_t next_id;
  /* Largest request frame the server accepts: the largest value a config may
   * set until hello reports the real one. */
  uint64_t max_frame_bytes;
  sly_arena *arenas; /* every live arena of this connection */
  /* Server regions, mapped when their fd arrives, unmapped when a reply
   * lists them in retired_regions or the connection closes. */
  sly__region *regions;
  size_t n_regions, cap_regions;
  /* Leases of freed results, sent in the "release" field of the next
   * request. Never more than the protocol's 64. */
  uint64_t pending[PROTO_MAX_IDS];
  size_t n_pending;
  sly_result *results; /* live results, detached by sly_close() */
};

struct sly_result {
  sly_conn *conn; /* NULL once the connection is closed */
  uint64_t lease;
  sly_timing timing;
  size_t count;
  sly_tensor *outputs;
  uint64_t *regions; /* the region id of each output */
  sly_result *prev, *next;
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
  cJSON *json; /* the whole reply object (ok true or false) */
  char *body;  /* the reply text, NUL-terminated */
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

/* Sends `req` (a JSON object; an "id" is added when it has none, and the
 * pending lease releases as "release") with `fd` attached when fd >= 0, and
 * reads its reply into *rep; what the reply says about server regions is
 * applied (sly__regions_update). Returns 0 for an ok
 * reply, the server's code for an error reply (with *rep filled too, and
 * `err` holding the server's message), or SLY_E_IO / SLY_E_PROTOCOL /
 * SLY_E_INVALID_ARG / SLY_E_NO_MEMORY with *rep empty. Every failure except
 * INVALID_ARG and NO_MEMORY before sending leaves the connection dead when
 * the stream can no longer be trusted. The caller frees *rep with
 * sly__reply_free(), which closes the fds it still holds (set a slot to -1 to
 * keep one). `fd` stays the caller's. */
int sly__call(sly_conn *c, cJSON *req, int fd, sly__reply *rep, sly_error *err);
/* sly__call without the pending releases (release.c uses it to send them).
 * *sent tells whether any byte of the request left (else it was refused
 * here and the connection is as it was). */
int sly__round_trip(sly_conn *c, cJSON *req, int fd, sly__reply *rep,
                    bool *sent, sly_error *err);
void sly__reply_free(sly__reply *rep);

/* A request object {"op": op}; NULL when out of memory. */
cJSON *sly__request(const char *op);

/* True when `item` is a JSON integer in 0..2^53-1; sets *out. */
bool sly__json_u53(const cJSON *item, uint64_t *out);

/* ---- result.c ---- */

/* Reads an ok forward reply into a new result linked to `c`. `out` is the
 * request's "out" range, or NULL when outputs go to server regions. Every
 * output must be a known dtype of at most 8 dims lying wholly inside its
 * region (inside `out` when given), else SLY_E_PROTOCOL. */
int sly__result_parse(sly_conn *c, const cJSON *reply, const proto_range *out,
                      sly_result **res, sly_error *err);
/* Leaves every live result without its connection (sly_close). */
void sly__results_detach(sly_conn *c);

/* ---- regions.c ---- */

/* Reads what every reply may say about server regions, in the order the
 * server did it: "retired_regions" are unmapped, then the fds of the reply
 * are mapped as the new regions its "outputs" name, in the order they first
 * appear. The reply's fds are consumed (closed) either way. Returns 0 or
 * SLY_E_PROTOCOL (the connection can no longer be trusted; the caller kills
 * it) or SLY_E_NO_MEMORY / SLY_E_IO when a region cannot be mapped. */
int sly__regions_update(sly_conn *c, sly__reply *rep, sly_error *err);
/* The server region `id`, or NULL. */
const sly__region *sly__region_find(const sly_conn *c, uint64_t id);
/* The arena of `c` whose region id is `id`, or NULL. */
sly_arena *sly__arena_by_region(const sly_conn *c, uint64_t id);
/* The arena of `c` holding [p, p + bytes) (a 0-byte range may sit at the
 * arena's end), or NULL. */
sly_arena *sly__arena_holding(const sly_conn *c, const void *p, size_t bytes);
/* Unmaps every server region (sly_close). */
void sly__regions_drop(sly_conn *c);

/* ---- release.c ---- */

/* Adds the pending lease ids to `req` as "release" (unless it has that field
 * already) and moves them to sent[] (room for PROTO_MAX_IDS), *n_sent their
 * count. Returns 0 or SLY_E_NO_MEMORY (nothing moved). */
int sly__release_attach(sly_conn *c, cJSON *req, uint64_t *sent,
                        size_t *n_sent);
/* After an error reply to a request that carried `ids` in "release": the
 * server may have refused the request before it released them (a bad field,
 * PERMISSION_DENIED), or after. Releases them with the op release, one by one
 * when the whole list is NOT_FOUND, so none stays held. */
void sly__release_settle(sly_conn *c, const uint64_t *ids, size_t n);
/* Queues `lease` for release; sends the op release at once when the queue
 * is full. */
void sly__release_queue(sly_conn *c, uint64_t lease);

#endif
