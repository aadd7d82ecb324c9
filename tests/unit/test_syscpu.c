/* test_syscpu.c — the CPUs slyced may use: the cgroup quota lines and the
 * affinity mask (syscpu.h). Criterion runs each test in its own process, so
 * a test may narrow its own mask. */
#include <criterion/criterion.h>
#include <sched.h>

#include "syscpu.h"

Test(syscpu, cpu_max_lines) {
  cr_assert_eq(syscpu_from_cpu_max("max 100000\n"), 0);
  cr_assert_eq(syscpu_from_cpu_max("100000 100000\n"), 1);
  cr_assert_eq(syscpu_from_cpu_max("150000 100000"), 2); /* rounded up */
  cr_assert_eq(syscpu_from_cpu_max("400000 100000\n"), 4);
  cr_assert_eq(syscpu_from_cpu_max("1000 100000\n"), 1); /* never 0 */
  cr_assert_eq(syscpu_from_cpu_max(""), -1);
  cr_assert_eq(syscpu_from_cpu_max("max"), -1);
  cr_assert_eq(syscpu_from_cpu_max("12x 100000"), -1);
  cr_assert_eq(syscpu_from_cpu_max("-5 100000"), -1);
  cr_assert_eq(syscpu_from_cpu_max("100000 0"), -1);
}

Test(syscpu, cfs_quota_and_period) {
  cr_assert_eq(syscpu_from_cfs(-1, 100000), 0);
  cr_assert_eq(syscpu_from_cfs(200000, 100000), 2);
  cr_assert_eq(syscpu_from_cfs(250000, 100000), 3);
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
