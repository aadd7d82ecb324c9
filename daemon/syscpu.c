/* syscpu.c — CPU figures from sched_getaffinity and the cgroup files. */
#include "syscpu.h"

#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYSCPU_CGROUP_ROOT "/sys/fs/cgroup"

int syscpu_from_cfs(long long quota_us, long long period_us) {
  if (quota_us < 0)
    return 0;
  if (period_us <= 0)
    return -1;
  long long n = (quota_us + period_us - 1) / period_us;
  return n < 1 ? 1 : n > 1 << 20 ? 1 << 20 : (int)n;
}

int syscpu_from_cpu_max(const char *line) {
  char quota[32];
  long long period;
  if (sscanf(line, "%31s %lld", quota, &period) != 2)
    return -1;
  if (strcmp(quota, "max") == 0)
    return 0;
  char *end;
  long long q = strtoll(quota, &end, 10);
  if (*end != '\0' || q < 0)
    return -1;
  return syscpu_from_cfs(q, period);
}

static bool read_line(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return false;
  bool ok = fgets(buf, (int)size, f) != NULL;
  fclose(f);
  return ok;
}

/* The smallest quota on the way from cgroup `rel` (under `root`) up to the
 * root, in CPUs; 0 where none limits. `v1`: the cfs files, else cpu.max. */
static int quota_up_from(const char *root, char *rel, bool v1) {
  int best = 0;
  for (;;) {
    char path[4096], line[128];
    int n = 0;
    if (v1) {
      long long q = 0, p = 0;
      snprintf(path, sizeof(path), "%s%s/cpu.cfs_quota_us", root, rel);
      bool ok = read_line(path, line, sizeof(line)) && sscanf(line, "%lld", &q) == 1;
      snprintf(path, sizeof(path), "%s%s/cpu.cfs_period_us", root, rel);
      ok = ok && read_line(path, line, sizeof(line)) &&
           sscanf(line, "%lld", &p) == 1;
      n = ok ? syscpu_from_cfs(q, p) : 0;
    } else {
      snprintf(path, sizeof(path), "%s%s/cpu.max", root, rel);
      n = read_line(path, line, sizeof(line)) ? syscpu_from_cpu_max(line) : 0;
    }
    if (n > 0 && (best == 0 || n < best))
      best = n;
    char *slash = strrchr(rel, '/');
    if (slash == NULL)
      return best;
    *slash = '\0';
  }
}

/* The quota of this process's cgroup, in CPUs; 0 where none limits or the
 * files cannot be read (then nothing is assumed). */
static int cgroup_quota(void) {
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (f == NULL)
    return 0;
  char line[4096];
  int best = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    /* "0::/path" (v2), or "N:cpu,cpuacct:/path" (v1). */
    char *c1 = strchr(line, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (c2 == NULL)
      continue;
    *c2 = '\0';
    const char *ctrl = c1 + 1;
    char *rel = c2 + 1;
    if (strcmp(rel, "/") == 0)
      rel[0] = '\0'; /* the root: its own files only */
    int n = 0;
    if (ctrl[0] == '\0') {
      n = quota_up_from(SYSCPU_CGROUP_ROOT, rel, false);
    } else {
      char list[256];
      snprintf(list, sizeof(list), ",%s,", ctrl);
      if (strstr(list, ",cpu,") != NULL) {
        char root[300];
        snprintf(root, sizeof(root), SYSCPU_CGROUP_ROOT "/%s", ctrl);
        n = quota_up_from(root, rel, true);
      }
    }
    if (n > 0 && (best == 0 || n < best))
      best = n;
  }
  fclose(f);
  return best;
}

int syscpu_usable(void) {
  cpu_set_t set;
  int n = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    n = CPU_COUNT(&set);
  if (n < 1)
    n = 1;
  int q = cgroup_quota();
  return q > 0 && q < n ? q : n;
}
