/* syscpu.h — how many CPUs this process may use (daemon/).
 *
 * The executor spin-waits only when another CPU can run the thread it waits
 * for; on one CPU, or under a quota of one, the spinning thread holds up the
 * very work it waits for (a 4 KiB forward took 280 us instead of 110 us on
 * the 2-CPU VM with slyced confined to one CPU).
 *
 * Reads the affinity mask and the cgroup's CPU quota (v2 cpu.max, or v1
 * cpu.cfs_quota_us over cpu.cfs_period_us) of every cgroup up to the root;
 * no state.
 */
#ifndef DAEMON_SYSCPU_H
#define DAEMON_SYSCPU_H

/* The CPUs this process may use: the CPUs in its affinity mask, fewer where
 * a cgroup quota allows less (rounded up: a quota of 1.5 CPUs counts 2).
 * At least 1. */
int syscpu_usable(void);

/* CPUs a cgroup v2 "cpu.max" line allows ("max 100000": 0, no limit;
 * "150000 100000": 2), or -1 when the line cannot be read. */
int syscpu_from_cpu_max(const char *line);

/* The same for cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (quota
 * -1: 0, no limit). */
int syscpu_from_cfs(long long quota_us, long long period_us);

#endif
