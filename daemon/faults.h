/* faults.h — fault injection points for the fault tests (daemon/).
 *
 * Owns: the table of armed faults, parsed once at start from the
 * SLYCED_FAULTS environment variable, which the tests set; unset (as in
 * production) every point is a single relaxed atomic load that says no.
 * The points sit where the real failures come from — the cache file's
 * writes and reads, device allocations and copies — so a test drives the
 * same recovery code a full disk or a dying GPU would. Thread-safe.
 *
 *   SLYCED_FAULTS="disk_write=ENOSPC,disk_read=EIO:2,device_alloc=3,device_lost=5"
 *
 *   disk_write=ERR[:N|*][@K]  N (default 1; * = every) cache file writes
 *                         fail with errno ERR after the header is written,
 *                         after K that succeed
 *   disk_read=ERR[:N|*][@K]   the same for cache file reads
 *   device_alloc=N[@K]    N device allocations fail as if full, after K
 *                         (default 0) that succeed
 *   forward_oom=N[@K]     N slice forwards fail as libtorch's do when the
 *                         device has no room for their activations, after K
 *   device_lost=N         the N-th copy to the device (N >= 1) finds it lost:
 *                         a sticky error, as CUDA reports after a device-side
 *                         assert; every later device call fails too
 * ERR is one of ENOSPC, EIO, EDQUOT, EROFS, ENOMEM.
 */
#ifndef DAEMON_FAULTS_H
#define DAEMON_FAULTS_H

#include <stdbool.h>

typedef enum {
  FAULT_DISK_WRITE,
  FAULT_DISK_READ,
  FAULT_DEVICE_ALLOC,
  FAULT_DEVICE_LOST,
  FAULT_FORWARD_OOM,
  FAULT_N
} fault_point;

/* Arms the faults `spec` names (NULL or "" arms none). Returns 0, or -1 with
 * err naming the bad item; nothing is armed then. */
int faults_init(const char *spec, char err[256]);

/* Whether the fault at `p` fires now (counting it): the errno to inject for
 * the disk points, 1 for the device points; 0 when it does not fire. */
int faults_take(fault_point p);

/* Whether any fault is armed (for a warning at start). */
bool faults_armed(void);

#endif
