/* slyce.h — libslyce, the C client of slyced (the only installed header).
 *
 * Owns: the public error list (one table that yields the enum, the wire name
 * and the message, used by the daemon too), the connection handle, the
 * shared-memory arena and the typed views of hello/list/stats replies.
 *
 * Threads: no global state. A sly_conn is used by one thread at a time; share
 * it across threads only under a lock of your own. Every call blocks until
 * its reply has arrived.
 *
 * Errors: every call returns 0 or a negative sly_code and, when `err` is not
 * NULL, fills it with the code and a one-line message (the server's message
 * for errors the server sent). Output parameters are not written on failure.
 */
#ifndef SLYCE_H
#define SLYCE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLY_PROTOCOL_VERSION 1
#define SLY_DEFAULT_SOCKET "/run/slyced/slyced.sock"
#define SLY_SOCKET_ENV "SLYCE_SOCKET"

/* Codes the server sends on the wire: X(NAME, value, message). */
#define SLY_WIRE_CODE_MAP(X)                                                   \
  X(BAD_FRAME, -1, "malformed frame")                                          \
  X(BAD_REQUEST, -2, "invalid request")                                        \
  X(UNKNOWN_OP, -3, "unknown operation")                                       \
  X(NOT_FOUND, -4, "no such slice or pipeline")                                \
  X(EXISTS, -5, "already exists")                                              \
  X(BAD_TENSOR, -6, "invalid tensor")                                          \
  X(BAD_REGION, -7, "invalid shared-memory region")                            \
  X(PERMISSION_DENIED, -8, "permission denied")                                \
  X(BUSY, -9, "server busy, try again later")                                  \
  X(NO_MEMORY, -10, "not enough memory")                                       \
  X(UNAVAILABLE, -11, "unavailable")                                           \
  X(INTERNAL, -12, "internal server error")                                    \
  X(SHUTTING_DOWN, -13, "server is shutting down")

/* Codes only the client produces; never sent on the wire. */
#define SLY_CLIENT_CODE_MAP(X)                                                 \
  X(IO, -32, "connection to slyced failed")                                    \
  X(PROTOCOL, -33, "malformed reply from slyced")                              \
  X(INVALID_ARG, -34, "invalid argument")

#define SLY_CODE_MAP(X) SLY_WIRE_CODE_MAP(X) SLY_CLIENT_CODE_MAP(X)

typedef enum {
  SLY_OK = 0,
#define SLY__CODE_ENUM(name, value, msg) SLY_E_##name = value,
  SLY_CODE_MAP(SLY__CODE_ENUM)
#undef SLY__CODE_ENUM
} sly_code;

/* "NOT_FOUND" for SLY_E_NOT_FOUND; "OK" for 0; "UNKNOWN" otherwise. */
const char *sly_code_name(int code);
/* The generic message of a code (not the server's detailed one). */
const char *sly_code_message(int code);

#define SLY_ERROR_MESSAGE_MAX 512

typedef struct {
  int code;                            /* 0 or a negative sly_code */
  char message[SLY_ERROR_MESSAGE_MAX]; /* one line, never empty on error */
  uint64_t needed; /* bytes, set with NO_MEMORY or a too-small out */
} sly_error;

typedef struct sly_conn sly_conn;

/* Connects to `path`, or to $SLYCE_SOCKET, or to SLY_DEFAULT_SOCKET when
 * `path` is NULL. The caller closes the connection with sly_close(). */
int sly_connect(const char *path, sly_conn **out, sly_error *err);
/* Closes the socket and unmaps every arena and server region of the
 * connection; results not yet freed lose their views (free them first).
 * Accepts NULL. */
void sly_close(sly_conn *c);
/* Gives up on a reply (or a send) that makes no progress for `ms`
 * milliseconds: the call fails with SLY_E_IO and the connection is closed,
 * since the late reply would answer the wrong request. 0, the default,
 * waits for as long as it takes; a forward on a big model may take long.
 * The request given up on may still run in slyced: a forward with `out`
 * in an arena may write there later, so reuse no arena memory of a timed-out
 * connection (sly_close unmaps it). connect() itself is not timed. */
int sly_set_timeout(sly_conn *c, unsigned ms, sly_error *err);

/* Limits and identity the server reports in its hello reply. */
typedef struct {
  char server[64];   /* "slyced 0.1.0" */
  int protocol;      /* SLY_PROTOCOL_VERSION */
  char device[32];   /* "cpu", "sim", "cuda:0" */
  uint64_t max_frame_bytes;
  uint64_t frame_timeout_ms;
  uint64_t max_conns_per_uid;
  uint64_t max_regions_per_conn;
  uint64_t max_region_mb;
  uint64_t max_registered_mb;
  uint64_t max_inflight_per_conn;
  uint64_t queue_depth;
  uint64_t max_output_mb;
  uint64_t drain_timeout_ms;
} sly_hello_info;

/* `client` names this program in the server's log (NULL: "libslyce"). */
int sly_hello(sly_conn *c, const char *client, sly_hello_info *out,
              sly_error *err);

typedef struct {
  char name[129];
  char constructor[64];
  char tier[8];   /* "gpu", "cpu", "disk", "none" */
  char state[16]; /* "resident", "loading", "evicting", "failed" */
  uint64_t bytes;
  int pinned; /* 1 or 0; where: sly_list_pinned_tier */
  uint64_t hits;
  uint64_t loads;
  double last_used; /* seconds since the epoch, 0 when never used */
} sly_slice_info;

typedef struct {
  size_t count;
  sly_slice_info *slices;
} sly_slice_list;

/* The caller frees the result with sly_slice_list_free(). */
int sly_list(sly_conn *c, sly_slice_list **out, sly_error *err);
/* The tier slice i of a list from sly_list is pinned at ("gpu", "cpu",
 * "disk"; "" when the daemon did not say; valid while the list is), or
 * NULL when it is not pinned or i is past the end. A function, so that
 * sly_slice_info keeps its size; a list made by hand has no tiers. */
const char *sly_list_pinned_tier(const sly_slice_list *l, size_t i);
void sly_slice_list_free(sly_slice_list *l);

typedef struct {
  uint64_t rss_bytes;           /* the daemon's resident set */
  uint64_t mem_available_bytes; /* the system's MemAvailable */
  uint64_t mem_total_bytes;
  uint64_t connections;
  uint64_t requests;
  uint64_t errors;
  double uptime_s;
} sly_stats;

int sly_stats_get(sly_conn *c, sly_stats *out, sly_error *err);

/* Sends one request given as a JSON object (an "id" is added when missing)
 * and returns the whole reply as JSON text, also when the reply is an error
 * (then the return value is that error's code). The caller frees *reply_json
 * with free(). For read-only ops and scripting; fds cannot travel this way. */
int sly_request_json(sly_conn *c, const char *request_json, char **reply_json,
                     sly_error *err);

/* Admin ops: the caller must be root, the daemon's user or in admin_group. */
int sly_reload(sly_conn *c, sly_error *err);
int sly_shutdown(sly_conn *c, sly_error *err);

/* A shared-memory arena: one sealed memfd of a fixed size, mapped here and
 * registered with the server as a region of this connection. Tensors are
 * allocated in it so that they cross to slyced without a copy. */
typedef struct sly_arena sly_arena;

/* The arena belongs to `c`: destroy it with sly_arena_destroy() before
 * sly_close(), or let sly_close() free it. */
int sly_arena_create(sly_conn *c, size_t bytes, sly_arena **out,
                     sly_error *err);
/* Unregisters the region from the server and unmaps it. Accepts NULL. */
void sly_arena_destroy(sly_arena *a);
void *sly_arena_base(const sly_arena *a);
size_t sly_arena_size(const sly_arena *a);
uint64_t sly_arena_region(const sly_arena *a); /* the server's region id */
/* Bump allocation aligned to `align` (a power of two, at most 4096); returns
 * NULL when the arena is full. Memory returns to the arena on reset. */
void *sly_arena_alloc(sly_arena *a, size_t bytes, size_t align);
void sly_arena_reset(sly_arena *a);


/* ---- Tensors and forward ------------------------------------------------ */

/* Same order and names as the protocol's dtypes. */
typedef enum {
  SLY_FLOAT32,
  SLY_FLOAT64,
  SLY_FLOAT16,
  SLY_BFLOAT16,
  SLY_INT64,
  SLY_INT32,
  SLY_INT16,
  SLY_INT8,
  SLY_UINT8,
  SLY_BOOL,
} sly_dtype;

#define SLY_MAX_DIMS 8
#define SLY_MAX_TENSORS 16

const char *sly_dtype_name(sly_dtype d); /* "float32"; NULL if invalid */
/* Returns 0 and sets *out, or SLY_E_INVALID_ARG for an unknown name. */
int sly_dtype_from_name(const char *name, sly_dtype *out);
size_t sly_dtype_size(sly_dtype d); /* 0 if invalid */

/* A row-major, contiguous tensor. As an input, `data` must lie inside an
 * arena of the connection it is sent on (that is what makes it zero-copy).
 * As an output, `data` points into memory the result owns. */
typedef struct {
  sly_dtype dtype;
  uint32_t ndim;
  uint64_t shape[SLY_MAX_DIMS];
  void *data;
} sly_tensor;

/* Element count times element size; 0 on overflow or a bad dtype. */
uint64_t sly_tensor_nbytes(const sly_tensor *t);

typedef struct {
  uint64_t queue_us, load_us, compute_us, total_us;
} sly_timing;

typedef struct sly_result sly_result;

/* Runs `slice` (NULL: the connection's active slice) on the inputs. On success
 * the caller owns *out: its outputs are views into shared memory, valid until
 * sly_result_free(), which must come before sly_close(). */
int sly_forward(sly_conn *c, const char *slice, const sly_tensor *inputs,
                size_t n_inputs, sly_result **out, sly_error *err);
/* Runs the slices of `pipeline` in order; activations stay in the daemon. */
int sly_forward_pipeline(sly_conn *c, const char *pipeline,
                         const sly_tensor *inputs, size_t n_inputs,
                         sly_result **out, sly_error *err);

/* Everything a forward can say. `slice` and `pipeline` as above (at most one);
 * when `out` is not NULL, outputs are written there, one after another, each
 * aligned to its element size, instead of into the daemon's memory: `out`
 * must lie inside an arena of the connection. Too small gives
 * SLY_E_BAD_TENSOR with err->needed. */
typedef struct {
  const char *slice;
  const char *pipeline;
  void *out;
  size_t out_bytes;
} sly_forward_opts;

int sly_forward_ex(sly_conn *c, const sly_forward_opts *opts,
                   const sly_tensor *inputs, size_t n_inputs, sly_result **out,
                   sly_error *err);

size_t sly_result_count(const sly_result *r);
/* Output i, or NULL when i is out of range. Outputs in the daemon's memory
 * (no `out` given) are mapped read-only: writing to them faults. */
const sly_tensor *sly_result_output(const sly_result *r, size_t i);
sly_timing sly_result_timing(const sly_result *r);
/* The server's lease id for these outputs (for logs and debugging). */
uint64_t sly_result_lease(const sly_result *r);
/* Gives the outputs back: the lease is released with the connection's next
 * request (or at once when many are pending). Accepts NULL. */
void sly_result_free(sly_result *r);

/* Makes `slice` the connection's default for sly_forward(NULL, ...) and loads
 * it; with `wait` the call returns once it is loaded. `tier` (may be NULL)
 * receives where it now lives: "gpu", "cpu", "disk" or "none". */
int sly_set_active_slice(sly_conn *c, const char *slice, int wait,
                         char tier[8], sly_error *err);

/* Tiers, as in list: "gpu", "cpu", "disk". */
/* Brings `slice` up to `tier`; `where` (may be NULL) receives the best tier
 * now holding it. */
int sly_load(sly_conn *c, const char *slice, const char *tier, char where[8],
             sly_error *err);
/* Leaves `slice` at most at `tier` (its copies above are freed). */
int sly_evict(sly_conn *c, const char *slice, const char *tier, char where[8],
              sly_error *err);
/* Admin: keeps `slice` at `tier` (loading it there) until sly_unpin. */
int sly_pin(sly_conn *c, const char *slice, const char *tier, sly_error *err);
int sly_unpin(sly_conn *c, const char *slice, sly_error *err);

/* Admin: adds a slice at runtime (kept across reloads); `config_json` is the
 * constructor's config object as JSON text (NULL: {}). */
int sly_add_slice(sly_conn *c, const char *name, const char *constructor,
                  const char *config_json, sly_error *err);
/* Admin: removes a slice; forwards already running on it finish first. */
int sly_remove_slice(sly_conn *c, const char *name, sly_error *err);

#ifdef __cplusplus
}
#endif
#endif /* SLYCE_H */
