/* test_daemon_regions.c — map_region and unmap_region against a real slyced:
 * which fds make a region, the per-connection limits, ids that are never
 * reused, mappings that go with their connection; and forward's NOT_FOUND
 * and BAD_REGION before any slice runs. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "rawconn.h"

TestSuite(daemon_regions, .timeout = 60, .fini = td_cleanup);

#define MAP_REQ "{\"id\": %llu, \"op\": \"map_region\"}"

/* Sends map_region with `fd` attached and returns the reply. */
static cJSON *reg_map(int conn, int fd, uint64_t id) {
  char req[96];
  snprintf(req, sizeof req, MAP_REQ, (unsigned long long)id);
  cr_assert_eq(rc_send_body(conn, req, strlen(req), &fd, 1), 0);
  return rc_read_reply(conn);
}

/* Maps a memfd of `size` bytes with `seals` and returns the region id. */
static uint64_t reg_map_sealed(int conn, size_t size, uint64_t id,
                               const char *name, unsigned seals) {
  int fd = rc_memfd(name, size, seals);
  cJSON *r = reg_map(conn, fd, id);
  close(fd);
  rc_assert_ok(r, id);
  cr_assert_eq(rc_u64(r, "bytes"), size, "bytes is not the memfd's size");
  uint64_t region = rc_u64(r, "region");
  cJSON_Delete(r);
  return region;
}

static uint64_t reg_map_ok(int conn, size_t size, uint64_t id,
                           const char *name) {
  return reg_map_sealed(conn, size, id, name, F_SEAL_SHRINK);
}

static void reg_map_refused(int conn, int fd, uint64_t id, const char *what) {
  cr_log_info("map_region: %s", what);
  cJSON *r = reg_map(conn, fd, id);
  rc_assert_error(r, id, "BAD_REGION");
  cJSON_Delete(r);
  rc_assert_hello(conn, id + 1000);
}

static void reg_unmap(int conn, uint64_t region, uint64_t id, bool ok) {
  char req[96];
  snprintf(req, sizeof req,
           "{\"id\": %llu, \"op\": \"unmap_region\", \"region\": %llu}",
           (unsigned long long)id, (unsigned long long)region);
  cJSON *r = rc_call(conn, req);
  if (ok)
    rc_assert_ok(r, id);
  else
    rc_assert_error(r, (long long)id, "BAD_REGION");
  cJSON_Delete(r);
}

Test(daemon_regions, sealed_memfd_becomes_regions_1_then_2) {
  td *d = td_start(NULL);
  int c = rc_connect(d->sock);
  cr_assert_eq(reg_map_ok(c, 4096, 1, "integ-r1"), 1);
  cr_assert_eq(reg_map_ok(c, 3 * 4096 + 100, 2, "integ-r2"), 2);
  /* Another connection numbers its own regions from 1. */
  int c2 = rc_connect(d->sock);
  cr_assert_eq(reg_map_ok(c2, 4096, 1, "integ-r3"), 1);
  /* A memfd sealed against writes too is still a region. */
  cr_assert_eq(reg_map_sealed(c2, 4096, 2, "integ-r4",
                              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE),
               2);
  close(c);
  close(c2);
  td_assert_serving(d);
  td_stop(d);
}

Test(daemon_regions, fd_that_is_no_sealed_memfd_gets_bad_region) {
  td *d = td_start(NULL);
  int c = rc_connect(d->sock);
  rc_assert_hello(c, 100); /* accepted: the count below includes c */
  int base = td_fd_count(d);

  int p[2];
  rc_pipe(p);
  reg_map_refused(c, p[1], 1, "a pipe");
  close(p[1]);
  cr_assert(rc_eof_within(p[0], 5000), "the daemon kept the refused pipe");
  close(p[0]);

  int fd = rc_memfd("integ-unsealed", 4096, 0);
  reg_map_refused(c, fd, 2, "a memfd without seals");
  close(fd);
  fd = rc_memfd("integ-grow", 4096, F_SEAL_GROW);
  reg_map_refused(c, fd, 3, "a memfd sealed against growing only");
  close(fd);
  fd = rc_memfd("integ-empty", 0, F_SEAL_SHRINK);
  reg_map_refused(c, fd, 4, "an empty memfd");
  close(fd);
  fd = open(d->config, O_RDONLY | O_CLOEXEC);
  cr_assert_geq(fd, 0);
  reg_map_refused(c, fd, 5, "a regular file");
  close(fd);
  int s = rc_connect(d->sock);
  reg_map_refused(c, s, 6, "a socket");
  close(s);

  cr_assert(td_fd_count_wait(d, base, 2000),
            "the daemon holds %d fds, %d before the refused ones",
            td_fd_count(d), base);
  /* The connection is still good for a real region. */
  cr_assert_gt(reg_map_ok(c, 4096, 7, "integ-after"), 0);
  close(c);
  td_stop(d);
}

Test(daemon_regions, more_than_max_regions_per_conn_gets_bad_region) {
  td *d = td_start("\"max_regions_per_conn\": 2");
  int c = rc_connect(d->sock);
  uint64_t r1 = reg_map_ok(c, 4096, 1, "integ-a");
  uint64_t r2 = reg_map_ok(c, 4096, 2, "integ-b");
  int fd = rc_memfd("integ-c", 4096, F_SEAL_SHRINK);
  reg_map_refused(c, fd, 3, "a third region");
  /* The limit is per connection. */
  int c2 = rc_connect(d->sock);
  reg_map_ok(c2, 4096, 1, "integ-d");
  reg_map_ok(c2, 4096, 2, "integ-d");
  /* Unmapping one makes room; the new region gets a fresh id. */
  reg_unmap(c, r1, 4, true);
  cJSON *r = reg_map(c, fd, 5);
  rc_assert_ok(r, 5);
  uint64_t r3 = rc_u64(r, "region");
  cJSON_Delete(r);
  cr_assert(r3 != r1 && r3 != r2, "region id %llu was reused",
            (unsigned long long)r3);
  close(fd);
  close(c);
  close(c2);
  td_stop(d);
}

Test(daemon_regions, region_over_max_region_mb_gets_bad_region) {
  td *d = td_start("\"max_region_mb\": 1");
  int c = rc_connect(d->sock);
  cr_assert_eq(reg_map_ok(c, 1 << 20, 1, "integ-1mib"), 1);
  int fd = rc_memfd("integ-2mib", 2 << 20, F_SEAL_SHRINK);
  reg_map_refused(c, fd, 2, "2 MiB over a 1 MiB limit");
  close(fd);
  fd = rc_memfd("integ-1mib+1", (1 << 20) + 1, F_SEAL_SHRINK);
  reg_map_refused(c, fd, 3, "1 MiB + 1 byte over a 1 MiB limit");
  close(fd);
  close(c);
  td_stop(d);
}

Test(daemon_regions, unmap_of_an_unknown_or_unmapped_id_gets_bad_region) {
  td *d = td_start(NULL);
  int c = rc_connect(d->sock);
  reg_unmap(c, 1, 1, false);
  reg_unmap(c, 99, 2, false);
  uint64_t r = reg_map_ok(c, 4096, 3, "integ-u");
  reg_unmap(c, r, 4, true);
  reg_unmap(c, r, 5, false);
  /* A region of another connection is unknown here. */
  int c2 = rc_connect(d->sock);
  uint64_t other = reg_map_ok(c2, 4096, 1, "integ-v");
  reg_unmap(c, other, 6, false);
  reg_unmap(c2, other, 2, true);
  rc_call_error(c, "{\"id\": 7, \"op\": \"unmap_region\"}", 7, "BAD_REQUEST");
  rc_call_error(c, "{\"id\": 8, \"op\": \"unmap_region\", \"region\": -1}", 8,
                "BAD_REQUEST");
  rc_assert_hello(c, 9);
  close(c);
  close(c2);
  td_stop(d);
}

Test(daemon_regions, mapping_goes_away_with_unmap_and_with_the_connection) {
  td *d = td_start(NULL);
  char name[64];
  snprintf(name, sizeof name, "integ-maps-%ld", (long)getpid());
  int c = rc_connect(d->sock);
  uint64_t r1 = reg_map_ok(c, 8192, 1, name);
  cr_assert(td_maps_contains(d, name), "the region is not mapped");
  reg_unmap(c, r1, 2, true);
  cr_assert(!td_maps_contains(d, name), "unmap_region left the mapping");

  reg_map_ok(c, 8192, 3, name);
  reg_map_ok(c, 8192, 4, name);
  cr_assert(td_maps_contains(d, name), "the regions are not mapped");
  close(c);
  long long end = td_now_ms() + 2000;
  while (td_maps_contains(d, name) && td_now_ms() < end)
    td_sleep_ms(10);
  cr_assert(!td_maps_contains(d, name),
            "regions stayed mapped after their connection closed");
  td_stop(d);
}

static const char reg_slice_a[] =
    "\"slices\": [{\"name\": \"a\", \"constructor\": \"linear\", "
    "\"config\": {\"in_features\": 4, \"out_features\": 4, \"seed\": 1}}]";

Test(daemon_regions, forward_to_unknown_slice_or_pipeline_gets_not_found) {
  td *d = td_start(reg_slice_a);
  int c = rc_connect(d->sock);
  rc_call_error(c,
                "{\"id\": 1, \"op\": \"forward\", \"slice\": \"nope\", "
                "\"inputs\": []}",
                1, "NOT_FOUND");
  rc_call_error(c,
                "{\"id\": 2, \"op\": \"forward\", \"pipeline\": \"nope\", "
                "\"inputs\": []}",
                2, "NOT_FOUND");
  rc_call_error(c, "{\"id\": 3, \"op\": \"set_active_slice\", "
                   "\"slice\": \"nope\"}",
                3, "NOT_FOUND");
  rc_call_error(c, "{\"id\": 4, \"op\": \"load\", \"slice\": \"nope\", "
                   "\"tier\": \"cpu\"}",
                4, "NOT_FOUND");
  rc_call_error(c, "{\"id\": 5, \"op\": \"evict\", \"slice\": \"nope\", "
                   "\"tier\": \"disk\"}",
                5, "NOT_FOUND");
  rc_assert_hello(c, 6);
  close(c);
  td_stop(d);
}

Test(daemon_regions, forward_naming_an_unmapped_region_gets_bad_region) {
  td *d = td_start(reg_slice_a);
  int c = rc_connect(d->sock);
  uint64_t r = reg_map_ok(c, 4096, 1, "integ-f");
  reg_unmap(c, r, 2, true);
  char req[256];
  snprintf(req, sizeof req,
           "{\"id\": 3, \"op\": \"forward\", \"slice\": \"a\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [1, 4], \"region\": %llu, "
           "\"offset\": 0}]}",
           (unsigned long long)r);
  rc_call_error(c, req, 3, "BAD_REGION");
  /* A mapped region too small for the tensor is BAD_REGION as well. */
  uint64_t small = reg_map_ok(c, 4096, 4, "integ-g");
  snprintf(req, sizeof req,
           "{\"id\": 5, \"op\": \"forward\", \"slice\": \"a\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [1024, 4], \"region\": %llu, "
           "\"offset\": 0}]}",
           (unsigned long long)small);
  rc_call_error(c, req, 5, "BAD_REGION");
  rc_assert_hello(c, 6);
  close(c);
  td_stop(d);
}
