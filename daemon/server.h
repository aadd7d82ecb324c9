/* server.h — the listening socket and the set of connections (daemon/).
 *
 * Owns: the listening Unix socket (bound here with socket_mode and the admin
 * group, or inherited through socket activation), the accept loop, the list
 * of open connections and the per-uid connection counts that
 * max_conns_per_uid is checked against.
 */
#ifndef DAEMON_SERVER_H
#define DAEMON_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <uv.h>

struct slyced;
struct conn;

typedef struct {
  uid_t uid;
  size_t count;
} server_uid_count;

typedef struct server {
  struct slyced *sd;
  int fd;
  bool activated; /* from systemd: not ours to unlink */
  char *path;     /* bound path (owned), NULL when activated */
  uv_poll_t poll;
  bool poll_open;
  uv_timer_t retry; /* accept paused after EMFILE */
  bool retry_open;
  struct conn *conns; /* doubly linked list */
  size_t n_conns;
  server_uid_count *uids;
  size_t n_uids;
  uint64_t next_conn_id;
} server;

/* Binds (or inherits) the socket and starts accepting. Returns 0 or -1
 * (logged: this is where the decision is made). */
int server_start(server *s, struct slyced *sd);
/* Stops accepting and removes the socket file we created. Idempotent. */
void server_stop_accepting(server *s);
/* Closes every connection (replies still queued are dropped). */
void server_close_all(server *s);

/* Called by conn when it has fully closed. */
void server_conn_closed(server *s, struct conn *c);

#endif
