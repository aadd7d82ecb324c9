/* peer.c — peer credentials and the admin rule. */
#include "peer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* More groups than this is implausible; a bound keeps a hostile setup from
 * making us allocate without limit. */
#define PEER_MAX_GROUPS 65536

int peer_cred_read(int fd, peer_cred *out) {
  struct ucred uc;
  socklen_t len = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
    return -errno;

  size_t cap = 64;
  gid_t *groups = NULL;
  socklen_t glen;
  for (;;) {
    gid_t *g = realloc(groups, cap * sizeof(gid_t));
    if (g == NULL) {
      free(groups);
      return -ENOMEM;
    }
    groups = g;
    glen = (socklen_t)(cap * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
      break;
    if (errno != ERANGE || glen / sizeof(gid_t) <= cap ||
        glen / sizeof(gid_t) > PEER_MAX_GROUPS) {
      int r = errno == ERANGE ? -E2BIG : -errno;
      free(groups);
      return r;
    }
    cap = glen / sizeof(gid_t);
  }

  out->pid = uc.pid;
  out->uid = uc.uid;
  out->gid = uc.gid;
  out->groups = groups;
  out->n_groups = glen / sizeof(gid_t);
  return 0;
}

void peer_cred_free(peer_cred *p) {
  if (p == NULL)
    return;
  free(p->groups);
  p->groups = NULL;
  p->n_groups = 0;
}

bool peer_is_admin(const peer_cred *p, uid_t daemon_uid, bool has_admin_gid,
                   gid_t admin_gid) {
  if (p->uid == 0 || p->uid == daemon_uid)
    return true;
  if (!has_admin_gid)
    return false;
  if (p->gid == admin_gid)
    return true;
  for (size_t i = 0; i < p->n_groups; i++)
    if (p->groups[i] == admin_gid)
      return true;
  return false;
}
