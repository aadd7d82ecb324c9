/* test_faults.c — SLYCED_FAULTS parsing and counting (daemon/faults.c). */
#include <errno.h>

#include <criterion/criterion.h>

#include "faults.h"

static void arm(const char *spec) {
  char err[256] = "";
  cr_assert_eq(faults_init(spec, err), 0, "%s: %s", spec, err);
}

static void refused(const char *spec, const char *needle) {
  char err[256] = "";
  cr_assert_eq(faults_init(spec, err), -1, "%s was accepted", spec);
  cr_assert(strstr(err, needle) != NULL, "%s: '%s' lacks '%s'", spec, err,
            needle);
}

Test(faults, nothing_armed_never_fires) {
  arm(NULL);
  cr_assert_not(faults_armed());
  for (int p = 0; p < FAULT_N; p++)
    cr_assert_eq(faults_take((fault_point)p), 0);
}

Test(faults, disk_errors_fire_as_many_times_as_asked) {
  arm("disk_write=ENOSPC:2,disk_read=EIO");
  cr_assert(faults_armed());
  cr_assert_eq(faults_take(FAULT_DISK_WRITE), ENOSPC);
  cr_assert_eq(faults_take(FAULT_DISK_WRITE), ENOSPC);
  cr_assert_eq(faults_take(FAULT_DISK_WRITE), 0);
  cr_assert_eq(faults_take(FAULT_DISK_READ), EIO);
  cr_assert_eq(faults_take(FAULT_DISK_READ), 0);
  cr_assert_eq(faults_take(FAULT_DEVICE_ALLOC), 0);
}

Test(faults, star_fires_every_time_and_at_skips_first) {
  arm("disk_read=EROFS:*@2,device_alloc=1@1,forward_oom=2@1");
  cr_assert_eq(faults_take(FAULT_FORWARD_OOM), 0);
  cr_assert_eq(faults_take(FAULT_FORWARD_OOM), 1);
  cr_assert_eq(faults_take(FAULT_FORWARD_OOM), 1);
  cr_assert_eq(faults_take(FAULT_FORWARD_OOM), 0);
  cr_assert_eq(faults_take(FAULT_DISK_READ), 0);
  cr_assert_eq(faults_take(FAULT_DISK_READ), 0);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(faults_take(FAULT_DISK_READ), EROFS);
  cr_assert_eq(faults_take(FAULT_DEVICE_ALLOC), 0);
  cr_assert_eq(faults_take(FAULT_DEVICE_ALLOC), 1);
  cr_assert_eq(faults_take(FAULT_DEVICE_ALLOC), 0);
}

Test(faults, device_lost_strikes_at_the_nth_copy_and_stays) {
  arm("device_lost=3");
  cr_assert_eq(faults_take(FAULT_DEVICE_LOST), 0);
  cr_assert_eq(faults_take(FAULT_DEVICE_LOST), 0);
  cr_assert_eq(faults_take(FAULT_DEVICE_LOST), 1);
  cr_assert_eq(faults_take(FAULT_DEVICE_LOST), 1);
}

Test(faults, bad_specs_are_refused_naming_the_item) {
  refused("disk_write", "no '='");
  refused("gpu_melt=1", "unknown point 'gpu_melt'");
  refused("disk_write=EPERM", "ENOSPC");
  refused("disk_read=EIO:0", "disk_read");
  refused("disk_read=EIO:x", "disk_read");
  refused("device_alloc=-1", "count");
  refused("device_alloc=1@x", "'@x'");
  refused("device_lost=2@1", "no '@'");
  refused("device_lost=0", "count");
}

Test(faults, a_refused_spec_arms_nothing) {
  arm(NULL);
  char err[256];
  cr_assert_eq(faults_init("disk_write=ENOSPC,bogus=1", err), -1);
  cr_assert_eq(faults_take(FAULT_DISK_WRITE), 0,
               "a half-parsed spec armed its first item");
}
