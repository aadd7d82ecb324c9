/* test_syscpu.c — the CPUs slyced may use: the cgroup quota files, read
 * from trees made in a temporary folder, and the affinity mask (syscpu.h).
 * Criterion runs each test in its own process, so a test may narrow its own
 * mask. */
#include <criterion/criterion.h>
#include <linux/limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syscpu.h"

static char root[PATH_MAX];

static void setup(void) {
  char t[] = "/tmp/slyced-syscpu-XXXXXX";
  cr_assert_not_null(mkdtemp(t));
  snprintf(root, sizeof(root), "%s", t);
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
  cr_assert_eq(system(cmd), 0);
}

/* Writes `text` to root/rel/name, making the folders on the way. */
static void put(const char *rel, const char *name, const char *text) {
  char path[PATH_MAX * 2];
  snprintf(path, sizeof(path), "%s/%s", root, rel);
  for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
    *p = '\0';
    mkdir(path, 0700);
    *p = '/';
  }
  mkdir(path, 0700);
  snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", name);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s", path);
  fputs(text, f);
  fclose(f);
}

TestSuite(syscpu_cgroup, .init = setup, .fini = teardown);

Test(syscpu_cgroup, v2_takes_the_smallest_quota_up_to_the_root) {
  put("system.slice/slyced.service", "cpu.max", "max 100000\n");
  put("system.slice", "cpu.max", "300000 100000\n");
  cr_assert_eq(syscpu_cgroup_quota(root, "0::/system.slice/slyced.service\n"),
               3);
  put("system.slice/slyced.service", "cpu.max", "150000 100000\n");
  cr_assert_eq(syscpu_cgroup_quota(root, "0::/system.slice/slyced.service\n"),
               1);
}

Test(syscpu_cgroup, v2_in_a_namespace_reads_the_root_folder) {
  put(".", "cpu.max", "200000 100000\n");
  cr_assert_eq(syscpu_cgroup_quota(root, "0::/\n"), 2);
}

Test(syscpu_cgroup, no_limit_or_no_files_is_zero) {
  cr_assert_eq(syscpu_cgroup_quota(root, "0::/a/b\n"), 0);
  put("a", "cpu.max", "max 100000\n");
  cr_assert_eq(syscpu_cgroup_quota(root, "0::/a/b\n"), 0);
  cr_assert_eq(syscpu_cgroup_quota(root, ""), 0);
  cr_assert_eq(syscpu_cgroup_quota(root, "garbage\n::\n"), 0);
}

Test(syscpu_cgroup, v1_cpu_controller_in_either_order) {
  put("cpu,cpuacct/user.slice", "cpu.cfs_quota_us", "200000\n");
  put("cpu,cpuacct/user.slice", "cpu.cfs_period_us", "100000\n");
  /* No /cpu link here: the folder the list names, in the kernel's order. */
  cr_assert_eq(syscpu_cgroup_quota(root, "4:cpu,cpuacct:/user.slice\n"), 2);
  put("cpu/user.slice", "cpu.cfs_quota_us", "100000\n");
  put("cpu/user.slice", "cpu.cfs_period_us", "100000\n");
  /* RHEL 7 lists "cpuacct,cpu"; /sys/fs/cgroup/cpu is found first. */
  cr_assert_eq(syscpu_cgroup_quota(root, "4:cpuacct,cpu:/user.slice\n"), 1);
  /* cpuacct alone is not the cpu controller. */
  cr_assert_eq(syscpu_cgroup_quota(root, "3:cpuacct:/user.slice\n"), 0);
}

Test(syscpu_cgroup, v1_unlimited_quota_and_hybrid_v2_line) {
  put("cpu/a", "cpu.cfs_quota_us", "-1\n");
  put("cpu/a", "cpu.cfs_period_us", "100000\n");
  /* Hybrid: "0::" names the unified tree, which holds no cpu.max here. */
  cr_assert_eq(syscpu_cgroup_quota(root, "5:cpu:/a\n0::/a\n"), 0);
}

Test(syscpu, cpu_max_lines) {
  cr_assert_eq(syscpu_from_cpu_max("max 100000\n"), 0);
  cr_assert_eq(syscpu_from_cpu_max("100000 100000\n"), 1);
  cr_assert_eq(syscpu_from_cpu_max("150000 100000"), 1); /* rounded down */
  cr_assert_eq(syscpu_from_cpu_max("250000 100000"), 2);
  cr_assert_eq(syscpu_from_cpu_max("400000 100000\n"), 4);
  cr_assert_eq(syscpu_from_cpu_max("1000 100000\n"), 1); /* never 0 */
  cr_assert_eq(syscpu_from_cpu_max(""), -1);
  cr_assert_eq(syscpu_from_cpu_max("max"), -1);
  cr_assert_eq(syscpu_from_cpu_max("12x 100000"), -1);
  cr_assert_eq(syscpu_from_cpu_max("-5 100000"), -1);
  cr_assert_eq(syscpu_from_cpu_max("99999999999999999999 100000"), -1);
  cr_assert_eq(syscpu_from_cpu_max("100000 0"), -1);
}

Test(syscpu, cfs_quota_and_period) {
  cr_assert_eq(syscpu_from_cfs(-1, 100000), 0);
  cr_assert_eq(syscpu_from_cfs(200000, 100000), 2);
  cr_assert_eq(syscpu_from_cfs(250000, 100000), 2);
  cr_assert_eq(syscpu_from_cfs(199999, 100000), 1);
  cr_assert_eq(syscpu_from_cfs(100000, 0), -1);
}

Test(syscpu, usable_follows_the_affinity_mask) {
  cpu_set_t mine, one;
  cr_assert_eq(sched_getaffinity(0, sizeof(mine), &mine), 0);
  int n = syscpu_usable();
  cr_assert(n >= 1 && n <= CPU_COUNT(&mine), "usable %d of %d", n,
            CPU_COUNT(&mine));
  CPU_ZERO(&one);
  for (int i = 0; i < CPU_SETSIZE; i++)
    if (CPU_ISSET(i, &mine)) {
      CPU_SET(i, &one);
      break;
    }
  cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
  cr_assert_eq(syscpu_usable(), 1);
}
