/* peer.h — who is on the other end of a connection (daemon/).
 *
 * Owns: peer_cred, the credentials the kernel recorded when the peer
 * connected (SO_PEERCRED, SO_PEERGROUPS), and the admin rule: uid 0, the
 * daemon's own uid, or membership of admin_group.
 */
#ifndef DAEMON_PEER_H
#define DAEMON_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
  pid_t pid;
  uid_t uid;
  gid_t gid;
  gid_t *groups; /* supplementary groups (owned), n_groups entries */
  size_t n_groups;
} peer_cred;

/* Reads the peer's credentials from a connected Unix socket. The caller
 * frees them with peer_cred_free(). Returns 0 or -errno. */
int peer_cred_read(int fd, peer_cred *out);
void peer_cred_free(peer_cred *p);

bool peer_is_admin(const peer_cred *p, uid_t daemon_uid, bool has_admin_gid,
                   gid_t admin_gid);

#endif
