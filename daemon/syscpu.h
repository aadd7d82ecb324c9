/* syscpu.h — how many CPUs this process may use (daemon/).
 *
 * The executor spin-waits only when another CPU can run the thread it waits
 * for; on one CPU, or under a quota of less than two, the spinning thread
 * holds up the very work it waits for, or spends the quota that work needs
 * (a 4 KiB forward took 280 us instead of 110 us on the 2-CPU VM with
 * slyced confined to one CPU).
 *
 * Reads the affinity mask and the CPU quota of every cgroup from the
 * process's own up to the root: cgroup v2's cpu.max, or v1's
 * cpu.cfs_quota_us over cpu.cfs_period_us under /sys/fs/cgroup/cpu (or the
 * folder named by the controller list). A v1 hierarchy mounted elsewhere is
 * not found: then only the mask counts. No state.
 */
#ifndef DAEMON_SYSCPU_H
#define DAEMON_SYSCPU_H

#include <stddef.h>

/* The CPUs this process may use: the CPUs in its affinity mask, fewer where
 * a cgroup quota allows less (whole CPUs' worth of time, rounded down: a
 * quota of 1.5 CPUs counts 1). At least 1. */
int syscpu_usable(void);

/* The smallest quota, in whole CPUs (rounded down, at least 1), of the
 * cgroups that `proc_cgroup` (the text of /proc/self/cgroup) puts the
 * process in and of their ancestors, read from the files under `root`
 * (/sys/fs/cgroup); 0 where none limits or nothing can be read. */
int syscpu_cgroup_quota(const char *root, const char *proc_cgroup);

/* CPUs a cgroup v2 "cpu.max" line allows ("max 100000": 0, no limit;
 * "250000 100000": 2), or -1 when the line cannot be read. */
int syscpu_from_cpu_max(const char *line);

/* The same for cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (quota
 * -1: 0, no limit). */
int syscpu_from_cfs(long long quota_us, long long period_us);

#endif
