/* rawconn.h — talking to slyced byte by byte, below libslyce.
 *
 * Owns: raw connections for tests that send what libslyce never would —
 * split, joined, oversized or malformed frames, frames with fds attached —
 * and the checks of what comes back: one reply frame parsed with cJSON, an
 * error reply of a given code and id, or the server closing the connection.
 * Functions named rc_try_* or returning a status never assert, so they are
 * safe in a forked child; the others abort the Criterion test on failure.
 */
#ifndef SLY_TEST_RAWCONN_H
#define SLY_TEST_RAWCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

/* Replies are expected well within this. */
#define RC_REPLY_TIMEOUT_MS 5000
/* Ids for rc_assert_error(): a reply whose id is null, or any id. */
#define RC_ID_NULL (-1LL)
#define RC_ID_ANY (-2LL)

/* Connects to `path`; returns the fd or -errno. */
int rc_try_connect(const char *path);
/* Connects to `path`; aborts the test on failure. */
int rc_connect(const char *path);

/* Writes all of buf (MSG_NOSIGNAL); fds, when nfds > 0, ride on the first
 * sendmsg. Returns 0 or -errno. */
int rc_send(int fd, const void *buf, size_t len);
int rc_send_fds(int fd, const void *buf, size_t len, const int *fds,
                size_t nfds);
/* The 4-byte little-endian header of a frame of `len` bytes. */
void rc_header(uint32_t len, uint8_t out[4]);
/* Sends header + body in one write, with `nfds` fds attached. Returns 0 or
 * -errno. */
int rc_send_body(int fd, const void *body, size_t len, const int *fds,
                 size_t nfds);
int rc_send_json(int fd, const char *json);

typedef enum {
  RC_FRAME,    /* a whole frame arrived */
  RC_CLOSED,   /* end of file (or reset) before any byte of a frame */
  RC_TIMEOUT,  /* nothing complete within the timeout */
  RC_TRUNCATED, /* the connection ended inside a frame */
  RC_ERROR,    /* a read failed otherwise */
} rc_status;

/* Reads exactly one frame. On RC_FRAME, *body (NUL-terminated, caller frees)
 * and *len are set, and fds that came with it are closed and counted in
 * *nfds (may be NULL). */
rc_status rc_read_frame(int fd, int timeout_ms, char **body, uint32_t *len,
                        int *nfds);
/* Waits for the server to close: RC_CLOSED when end of file comes first,
 * RC_FRAME when a frame arrives instead (it is discarded). */
rc_status rc_wait_closed(int fd, int timeout_ms);
const char *rc_status_name(rc_status s);

/* Reads one reply and parses it; aborts unless it is a JSON object. The
 * caller frees it with cJSON_Delete(). */
cJSON *rc_read_reply(int fd);
/* The same, waiting up to `timeout_ms` (a reply behind slow work). */
cJSON *rc_read_reply_within(int fd, int timeout_ms);
/* Sends `json` and reads its reply. */
cJSON *rc_call(int fd, const char *json);

/* The reply is {"id": id, "ok": true, ...}. */
void rc_assert_ok(const cJSON *reply, uint64_t id);
/* The reply is {"id": id (or null: RC_ID_NULL; RC_ID_ANY), "ok": false,
 * "error": {"code": code, "message": a non-empty string}}. */
void rc_assert_error(const cJSON *reply, long long id, const char *code);
/* Same, and the message contains `needle`. */
void rc_assert_error_msg(const cJSON *reply, long long id, const char *code,
                         const char *needle);
/* Sends `json`, asserts an error reply, frees it. */
void rc_call_error(int fd, const char *json, long long id, const char *code);
/* Asserts the server closes the connection now (no further frame). */
void rc_assert_closed(int fd);
/* Sends a hello with `id` and asserts it succeeds: the connection serves. */
void rc_assert_hello(int fd, uint64_t id);

/* An integer field 0..2^53-1 of an object; aborts when missing. */
uint64_t rc_u64(const cJSON *obj, const char *key);

/* A memfd of `size` bytes with `seals` (F_SEAL_*) added; aborts on failure. */
int rc_memfd(const char *name, size_t size, unsigned seals);

/* Sends map_region (request id `id`) with `memfd` attached; asserts the
 * reply is ok and returns the new region's id. */
uint64_t rc_map_region(int fd, int memfd, uint64_t id);

/* A sealed memfd holding `len` bytes of `data` (size rounded up to whole
 * pages), mapped with rc_map_region(); returns the region id. */
uint64_t rc_map_data(int fd, const void *data, size_t len, uint64_t id);

/* A pipe with close-on-exec ends: p[0] read, p[1] write. */
void rc_pipe(int p[2]);
/* Whether reading `fd` reaches end of file within the timeout: every write
 * end, including copies held by the daemon, has been closed. */
bool rc_eof_within(int fd, int timeout_ms);

#endif
