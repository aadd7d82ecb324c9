/* fakeserver.h — a scripted stand-in for slyced, for client tests.
 *
 * Owns: one fake per test: a thread that listens on a socket in a temporary
 * folder, accepts one connection and plays a script (read a request, check
 * it, send bytes back), and the regions it shares with that client — the
 * client's arenas it maps from map_region, and server regions (memfds) whose
 * fds it attaches to replies. So the client's side of protocol v1 is tested
 * byte for byte, including replies a real daemon never sends: wrong ids,
 * oversized frames, fds where none belong, outputs out of bounds. A script
 * records its first failed check with FCHECK/fake_failf and returns; the test
 * asserts on it with fake_finish() after the thread has ended.
 */
#ifndef SLY_TEST_FAKESERVER_H
#define SLY_TEST_FAKESERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "slyce.h"

#define FAKE_TIMEOUT_MS 5000
#define FAKE_MAX_REGIONS 16

typedef struct fake fake;
typedef void (*fake_script)(fake *f);

/* A region the fake shares with its client, mapped read-write here. */
typedef struct {
  uint64_t id;
  void *base;
  size_t size;
  int fd; /* server regions: the memfd to attach; client regions: -1 */
} fake_region;

struct fake {
  char dir[64];
  char sock[80];
  int listen_fd;
  int fd; /* the accepted connection, while the script runs */
  pthread_t thread;
  fake_script script;
  char fail[512];       /* the first failed check of the script */
  uint64_t arg;         /* a number the test hands to its script */
  void *data;           /* anything else the test hands to its script */
  uint64_t next_region; /* region ids, client and server alike, from 1 */
  fake_region regions[FAKE_MAX_REGIONS];
  size_t n_regions;
};

/* Records the first failure of the script (later ones are dropped). */
void fake_failf(fake *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* For scripts: record the failure and stop the script. */
#define FCHECK(f, cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fake_failf((f), __VA_ARGS__);                                            \
      return;                                                                  \
    }                                                                          \
  } while (0)

/* Starts the fake's thread, which waits for one client and runs `script`. */
fake *fake_start(fake_script script, uint64_t arg);
/* Waits for the script to end, frees the fake and asserts that all its checks
 * passed. */
void fake_finish(fake *f);

/* Reads exactly len bytes, keeping fds that arrive (closing extras).
 * Returns 1, 0 at end of file, -1 on error or timeout. */
int fake_read(fake *f, void *buf, size_t len, int *fds, size_t *nfds);
/* One request frame, parsed; fds attached to it go to fds/nfds (NULL: none
 * allowed). NULL (and a recorded failure) on EOF, timeout or bad JSON. */
cJSON *fake_recv(fake *f, int *fds, size_t *nfds);
/* Reads a request, checks its op and returns its id (or -1 on failure). */
long long fake_expect(fake *f, const char *op);
/* Reads a request of `op` and returns it whole (the caller frees it), its id
 * in *id; NULL on failure. */
cJSON *fake_expect_json(fake *f, const char *op, uint64_t *id);

void fake_send_fds(fake *f, const void *buf, size_t len, const int *fds,
                   size_t nfds);
void fake_send_raw(fake *f, const void *buf, size_t len);
/* Sends one frame with the body printf'd from fmt, fds on its first byte. */
void fake_reply_fds(fake *f, const int *fds, size_t nfds, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define fake_reply(f, ...) fake_reply_fds((f), NULL, 0, __VA_ARGS__)
/* Sends a cJSON reply (not freed). */
void fake_reply_json(fake *f, const cJSON *reply, const int *fds, size_t nfds);
/* A hello reply with every limit; max_frame_bytes from f->arg when set. */
void fake_send_hello(fake *f, long long id);
/* Waits for the client to close the connection without sending more. */
void fake_expect_eof(fake *f);

/* Answers a map_region: maps the client's memfd read-write, gives it the
 * next region id. NULL (and a recorded failure) when none came. */
fake_region *fake_accept_region(fake *f);
/* A new server region: a sealed memfd named "fake-out" of `size` bytes. */
fake_region *fake_server_region(fake *f, size_t size);
fake_region *fake_region_find(fake *f, uint64_t id);
/* Where a tensor descriptor's bytes lie in the fake's mapping of its region,
 * after checking dtype, offset and bounds; NULL (and a recorded failure) if
 * they do not. */
void *fake_tensor_data(fake *f, const cJSON *desc, uint64_t *nbytes);

/* Open fds of this process whose link names contain `needle`. */
int fake_count_fds(const char *needle);
/* Mappings in /proc/self/maps whose name contains `needle` and whose
 * permissions are `perms` ("r--s": how libslyce maps server regions; the
 * fake's own mappings are "rw-s"), or any when perms is NULL. */
int fake_count_maps(const char *needle, const char *perms);

/* Bodies of replies, without "id" and "ok": two slices (list), and every
 * stats figure slyctl shows. */
extern const char FAKE_LIST_TWO[];
extern const char FAKE_STATS_BODY[];

/* Connects libslyce to the fake; aborts the test on failure. */
sly_conn *fake_connect(fake *f);

#endif
