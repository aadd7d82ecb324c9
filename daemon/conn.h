/* conn.h — one client connection (daemon/).
 *
 * Owns: the socket of one client, watched with uv_poll_t because libuv's
 * stream API cannot hand over received fds; frame assembly across partial
 * reads (header, then exactly that frame's body, never past it); fds received
 * with a frame; the frame deadline; the ordered queue of replies with the fds
 * they carry; the client's regions. Everything runs on the loop thread.
 */
#ifndef DAEMON_CONN_H
#define DAEMON_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <uv.h>

#include "errors.h"
#include "limits.h"
#include "peer.h"
#include "region.h"

struct slyced;

/* Room for more fds than a frame may carry, so that "too many" is seen as
 * such instead of as truncated control data. */
#define CONN_FDS_SEEN_MAX 8
/* Stop reading from a client that lets this many reply bytes pile up. */
#define CONN_OUT_HIGH_WATER (8u << 20)

/* One reply in the connection's order. A slot is reserved when its request
 * is accepted and filled when the reply is ready; replies go out in order,
 * so a slow forward holds back the replies of later requests. */
typedef struct conn_out {
  struct conn_out *next;
  bool ready;
  /* For a slot a job will fill: the request it answers, and the job's
   * pointer to this slot (cleared when the slot is answered without it). */
  bool has_id;
  uint64_t id;
  int op;
  struct conn_out **owner;
  uint8_t *data;
  size_t len, off;
  int fds[PROTO_MAX_TENSORS]; /* sent with the frame's first byte, then closed */
  size_t n_fds;
} conn_out;

typedef struct conn {
  struct conn *prev, *next; /* the server's list */
  struct slyced *sd;
  uint64_t id; /* for logs */
  int fd;
  peer_cred peer;
  uv_poll_t poll;
  int poll_events; /* what `poll` watches now: uv_poll_start costs a syscall */
  uv_timer_t frame_timer;
  int open_handles; /* freed when both handles have closed and refs is 0 */
  int refs;         /* loop thread only: jobs in flight hold one each */
  bool closing;      /* no more reading; close once replies are sent */
  bool closed;       /* uv_close called */
  /* Nobody waits for its jobs' results any more (closed, or answered at the
   * drain's end): the workers skip what has not started and stop a
   * pipeline between slices. Written on the loop, read by the workers. */
  atomic_bool abandoned;
  bool read_eof;

  /* Frame being assembled. */
  uint8_t hdr[PROTO_HEADER_BYTES];
  size_t hdr_got;
  char *body;
  uint32_t body_len;
  size_t body_got;
  int fds[PROTO_MAX_FDS];
  size_t n_fds;
  bool fds_overflow; /* more fds than PROTO_MAX_FDS came with the frame */
  bool ctrunc;       /* control data was truncated */

  conn_out *out_head, *out_tail;
  size_t out_bytes;
  size_t out_peak; /* most out_bytes ever queued (see conn_free_if_done) */
  size_t pending; /* reserved slots not yet filled: requests in flight */
  size_t staged;  /* jobs on the loader: later ones follow them (forward.c) */

  region **regions; /* client regions, by id */
  size_t n_regions;
  struct outpool *pool; /* server regions, leases, region ids */
  char *active_slice;   /* set_active_slice; owned */
} conn;

/* Takes over an accepted socket (non-blocking, close-on-exec). On failure the
 * fd is closed. Returns 0 or a negative errno. */
int conn_start(struct slyced *sd, int fd, const peer_cred *peer, uint64_t id,
               conn **out);

/* Queues a reply frame; ownership of `reply` stays with the caller. Records
 * the request in stats with its op (-1: none) and code. */
void conn_reply(conn *c, int op, const cJSON *reply, uint64_t start_us);

/* Reserves the next reply slot for a request that completes later. Returns
 * NULL when out of memory. */
conn_out *conn_reserve(conn *c);
/* Fills a reserved slot; `fds` (taken over, closed after sending) ride on
 * the frame. Safe on a closed connection (everything is dropped, and the
 * request is not counted in stats). */
void conn_fill(conn *c, conn_out *slot, int op, const cJSON *reply,
               const int *fds, size_t n_fds, uint64_t start_us);

/* Answers every slot still waiting for a job with `e` (drain timeout); the
 * jobs' own answers are then dropped. */
void conn_abandon_pending(conn *c, const proto_error *e);

void conn_ref(conn *c);
void conn_unref(conn *c);
/* Queues an error reply (id null when !has_id). */
void conn_reply_error(conn *c, int op, bool has_id, uint64_t id,
                      const proto_error *e, uint64_t start_us);

/* Stops reading and closes once queued replies have been written. */
void conn_close_after_flush(conn *c);
/* Closes now, dropping queued replies. Idempotent. */
void conn_close(conn *c);

/* Region table of the connection. */
int conn_region_add(conn *c, region *r, proto_error *err);
region *conn_region_find(const conn *c, uint64_t id);
int conn_region_remove(conn *c, uint64_t id, proto_error *err);
/* BAD_REGION for `id`, which names none of the client's regions, prefixed
 * with `field` ("inputs[0]: ", or ""): a server region's id (client and
 * server regions share one numbering) is said to be one. */
int conn_no_region(conn *c, const char *field, uint64_t id, proto_error *err);

uint64_t conn_now_us(void);

#endif
