/* syscpu.c — CPU figures from sched_getaffinity and the cgroup files. */
#include "syscpu.h"

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Past this many CPUs the mask is not read: spin-waits pay anyway. */
#define SYSCPU_MAX_CPUS (1 << 16)
/* A cgroup folder's path: the mount point, the controller list, the path
 * from /proc/self/cgroup (a line of at most 4095 bytes). */
#define SYSCPU_DIR_MAX 8448

int syscpu_from_cfs(long long quota_us, long long period_us) {
  if (quota_us < 0)
    return 0;
  if (period_us <= 0)
    return -1;
  long long n = quota_us / period_us;
  return n < 1 ? 1 : n > SYSCPU_MAX_CPUS ? SYSCPU_MAX_CPUS : (int)n;
}

int syscpu_from_cpu_max(const char *line) {
  char quota[32];
  long long period;
  if (sscanf(line, "%31s %lld", quota, &period) != 2)
    return -1;
  if (strcmp(quota, "max") == 0)
    return 0;
  char *end;
  errno = 0;
  long long q = strtoll(quota, &end, 10);
  if (*end != '\0' || q < 0 || errno != 0)
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

/* The quota of the cgroup in folder `dir`, in CPUs; 0 for none or
 * unreadable. `v1`: the cfs files, else cpu.max. */
static int quota_in(const char *dir, bool v1) {
  char path[SYSCPU_DIR_MAX + 32], line[128];
  if (!v1) {
    snprintf(path, sizeof(path), "%s/cpu.max", dir);
    int n = read_line(path, line, sizeof(line)) ? syscpu_from_cpu_max(line) : 0;
    return n > 0 ? n : 0;
  }
  long long q = 0, p = 0;
  snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir);
  if (!read_line(path, line, sizeof(line)) || sscanf(line, "%lld", &q) != 1)
    return 0;
  snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dir);
  if (!read_line(path, line, sizeof(line)) || sscanf(line, "%lld", &p) != 1)
    return 0;
  int n = syscpu_from_cfs(q, p);
  return n > 0 ? n : 0;
}

/* The smallest quota from cgroup `rel` (a path under `mount`, changed in
 * place) up to the mount's root; 0 where none limits. */
static int quota_up_from(const char *mount, char *rel, bool v1) {
  int best = 0;
  for (;;) {
    char dir[SYSCPU_DIR_MAX];
    snprintf(dir, sizeof(dir), "%s%s", mount, rel);
    int n = quota_in(dir, v1);
    if (n > 0 && (best == 0 || n < best))
      best = n;
    char *slash = strrchr(rel, '/');
    if (slash == NULL)
      return best;
    *slash = '\0';
  }
}

/* Whether comma-separated `list` names controller `name`. */
static bool names(const char *list, const char *name) {
  size_t len = strlen(name);
  for (const char *p = list; *p != '\0';) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    if (n == len && strncmp(p, name, len) == 0)
      return true;
    p += n + (comma != NULL);
  }
  return false;
}

/* The quota of the cgroup one line of /proc/self/cgroup names, and of its
 * ancestors: "0::/path" (v2), or "N:cpu,cpuacct:/path" (v1); 0 for a line
 * of another v1 controller, or none. `line` is changed in place. */
static int quota_of_line(const char *root, char *line) {
  char *c1 = strchr(line, ':');
  char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  if (c2 == NULL)
    return 0;
  *c2 = '\0';
  const char *ctrl = c1 + 1;
  char *rel = c2 + 1;
  if (strcmp(rel, "/") == 0)
    rel[0] = '\0'; /* the root: its own files only */
  if (ctrl[0] == '\0')
    return quota_up_from(root, rel, false);
  if (!names(ctrl, "cpu"))
    return 0;
  /* Usually /sys/fs/cgroup/cpu, a link to cpu,cpuacct; some systems have
   * only the folder the list names. The walk shortens its path: a copy. */
  char mount[SYSCPU_DIR_MAX - 4096], copy[4096];
  snprintf(copy, sizeof(copy), "%s", rel);
  snprintf(mount, sizeof(mount), "%s/cpu", root);
  int n = quota_up_from(mount, copy, true);
  if (n > 0)
    return n;
  snprintf(mount, sizeof(mount), "%s/%s", root, ctrl);
  return quota_up_from(mount, rel, true);
}

int syscpu_cgroup_quota(const char *root, const char *proc_cgroup) {
  int best = 0;
  for (const char *line = proc_cgroup; *line != '\0';) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    char buf[4096];
    if (len < sizeof(buf)) { /* a longer path is not one we can open */
      memcpy(buf, line, len);
      buf[len] = '\0';
      int n = quota_of_line(root, buf);
      if (n > 0 && (best == 0 || n < best))
        best = n;
    }
    line += len + (nl != NULL);
  }
  return best;
}

/* CPUs in the affinity mask, from a set large enough for the machine. */
static int mask_count(void) {
  for (int n = 1024; n <= SYSCPU_MAX_CPUS; n *= 4) {
    cpu_set_t *set = CPU_ALLOC((size_t)n);
    if (set == NULL)
      return 0;
    size_t size = CPU_ALLOC_SIZE((size_t)n);
    int rc = sched_getaffinity(0, size, set);
    int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    CPU_FREE(set);
    if (rc == 0 || errno != EINVAL)
      return count;
  }
  return SYSCPU_MAX_CPUS;
}

int syscpu_usable(void) {
  int n = mask_count();
  if (n < 1)
    n = 1;
  char text[16384];
  size_t len = 0;
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (f != NULL) {
    len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
  }
  text[len] = '\0';
  int q = syscpu_cgroup_quota("/sys/fs/cgroup", text);
  return q > 0 && q < n ? q : n;
}
