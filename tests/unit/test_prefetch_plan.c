/* test_prefetch_plan.c — the tiers and the mover driven directly, step by
 * step, on the sim device: what one pipeline step makes the mover bring in,
 * device blocks handed from an evicted copy to the next copy of the same
 * size, and a slice read from disk copied on to the device chunk by chunk.
 * No daemon, no socket: each figure here is exact, not a timing. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "config.h"
#include "device.h"
#include "faults.h"
#include "slices.h"
#include "tiers.h"

#define N_SLICES 6

typedef struct {
  config *cfg;
  slice_registry reg;
  tiers t;
  slice *v[N_SLICES];
} rig;

/* Six linear slices of 512 x 512 float32 (1 MiB and a little each) on the
 * sim device, with the strategy, GPU budget and prefetch depth given, and
 * `extra` config keys (each followed by a comma). */
static void rig_open_with(rig *r, const char *strategy, int gpu_mb, int depth,
                          const char *extra) {
  memset(r, 0, sizeof(*r));
  char text[4096];
  int k = snprintf(text, sizeof(text),
                   "{\"device\": \"sim\", \"gpu_strategy\": \"%s\", "
                   "\"max_gpu_mem_mb\": %d, \"gpu_reserve_mb\": 0, %s"
                   "\"prefetch_depth\": %d, \"slices\": [",
                   strategy, gpu_mb, extra, depth);
  for (int i = 0; i < N_SLICES; i++)
    k += snprintf(text + k, sizeof(text) - (size_t)k,
                  "%s{\"name\": \"s%d\", \"constructor\": \"linear\", "
                  "\"config\": {\"in_features\": 512, \"out_features\": 512, "
                  "\"seed\": %d}}",
                  i ? ", " : "", i, i + 1);
  snprintf(text + k, sizeof(text) - (size_t)k, "]}");
  char err[CONFIG_ERROR_MAX];
  cr_assert_eq(config_parse("/tmp/plan.json", text, strlen(text), &r->cfg, err),
               0, "config: %s", err);
  cr_assert_eq(slices_sync_config(&r->reg, r->cfg), 0);
  char terr[256];
  cr_assert_eq(tiers_init(&r->t, r->cfg, terr), 0, "tiers: %s", terr);
  for (int i = 0; i < N_SLICES; i++) {
    char name[8];
    snprintf(name, sizeof(name), "s%d", i);
    r->v[i] = slices_find(&r->reg, name);
    cr_assert_not_null(r->v[i]);
  }
}

static void rig_open(rig *r, const char *strategy, int gpu_mb, int depth) {
  rig_open_with(r, strategy, gpu_mb, depth, "");
}

static void rig_close(rig *r) {
  tiers_close(&r->t);
  slices_clear(&r->reg);
  config_free(r->cfg);
}

/* Waits until the mover has nothing queued or in hand. */
static void settle(rig *r) {
  for (int i = 0; i < 10000; i++) {
    if (atomic_load(&r->t.prefetch_pending) == 0)
      return;
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  }
  cr_assert_fail("the mover did not settle within 10 s");
}

static bool on_gpu(const slice *s) {
  return atomic_load(&s->place.tier) == TIER_GPU;
}

/* Runs slice i of the pipeline as forward.c does, without computing, but
 * plans the step after the release: in forward.c the mover may start while
 * slice i is still in use (and may then not evict it) or after, as the
 * threads happen to run; here it always finds it released. */
static void step(rig *r, size_t i) {
  proto_error e;
  cr_assert_eq(tiers_acquire(&r->t, r->v[i], &e), 0, "acquire s%zu: %s", i,
               e.message);
  tiers_release(&r->t, r->v[i]);
  tiers_pipeline_step(&r->t, r->v, N_SLICES, i);
}

TestSuite(prefetch_plan, .timeout = 60);

/* limit_gpu with room for all: one step at s0 brings in the next
 * prefetch_depth slices, and no more, until the forward gets further. */
static void window_of(int depth) {
  rig r;
  rig_open(&r, "limit_gpu", 64, depth);
  step(&r, 0);
  settle(&r);
  for (int i = 1; i < N_SLICES; i++)
    cr_expect_eq(on_gpu(r.v[i]), i <= depth, "depth %d: s%d on the gpu: %d",
                 depth, i, on_gpu(r.v[i]));
  cr_expect_eq(atomic_load(&r.t.prefetches), (uint64_t)depth);
  /* The next step finds s1 in and asks for one slice past the window. */
  step(&r, 1);
  settle(&r);
  cr_expect(on_gpu(r.v[depth + 1]), "depth %d: s%d not brought in", depth,
            depth + 1);
  cr_expect_eq(atomic_load(&r.t.prefetch_hits), 1);
  tiers_pipeline_end(&r.t, r.v, N_SLICES);
  rig_close(&r);
}

Test(prefetch_plan, a_step_brings_in_the_next_depth_slices) {
  window_of(1);
  window_of(3);
}

/* A move handed to the mover for a forward that will wait for it
 * (tiers_hand_to_mover) is made even with prefetch off, and counts as that
 * forward's miss, not as a prefetch; a slice already there is not queued
 * again. tiers_mover_idle says when the mover has nothing in hand. */
Test(prefetch_plan, a_move_handed_to_the_mover_is_a_miss_not_a_prefetch) {
  rig r;
  rig_open(&r, "limit_gpu", 64, 0);
  cr_assert(tiers_mover_idle(&r.t));
  tiers_hand_to_mover(&r.t, r.v[2]);
  settle(&r);
  cr_assert(on_gpu(r.v[2]), "s2 was not brought in");
  cr_assert(tiers_mover_idle(&r.t));
  cr_expect_eq(atomic_load(&r.t.prefetches), 0);
  proto_error e;
  cr_assert_eq(tiers_acquire(&r.t, r.v[2], &e), 0, "acquire: %s", e.message);
  tiers_release(&r.t, r.v[2]);
  cr_expect_eq(atomic_load(&r.t.misses), 1);
  cr_expect_eq(atomic_load(&r.t.hits), 0);
  /* In place now: handing it over again queues nothing, and the next
   * acquire is a hit. */
  tiers_hand_to_mover(&r.t, r.v[2]);
  cr_expect(tiers_mover_idle(&r.t), "a slice in place was queued");
  cr_assert_eq(tiers_acquire(&r.t, r.v[2], &e), 0, "acquire: %s", e.message);
  tiers_release(&r.t, r.v[2]);
  cr_expect_eq(atomic_load(&r.t.hits), 1);
  rig_close(&r);
}

/* active_only keeps its bound as the window moves: one step at s0 with
 * depth 2 brings in s1 and s2, nothing more. */
Test(prefetch_plan, active_only_window_stays_at_depth) {
  rig r;
  rig_open(&r, "active_only", 64, 2);
  step(&r, 0);
  settle(&r);
  for (int i = 1; i < N_SLICES; i++)
    cr_expect_eq(on_gpu(r.v[i]), i <= 2, "s%d: on the gpu %d", i,
                 on_gpu(r.v[i]));
  tiers_pipeline_end(&r.t, r.v, N_SLICES);
  rig_close(&r);
}

/* Room for two slices of one size, no prefetch: every move after the first
 * two evicts one slice and reuses its block, so the device allocates two
 * blocks in all, never more than the budget. */
Test(prefetch_plan, an_evicted_block_is_reused_for_the_next_copy) {
  rig r;
  rig_open(&r, "limit_gpu", 3, 0);
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < N_SLICES; i++)
      step(&r, i);
  tiers_pipeline_end(&r.t, r.v, N_SLICES);
  uint64_t slice_bytes = r.v[0]->place.bytes;
  uint64_t moves = atomic_load(&r.t.cpu_to_gpu.bytes) / slice_bytes;
  /* The next-use hints keep a slice over from one pass to the next, so the
   * second pass moves fewer than six; every move past the first two came
   * after an eviction. */
  cr_assert_geq(moves, N_SLICES + 2, "%llu moves", (unsigned long long)moves);
  cr_expect_eq(atomic_load(&r.t.blocks_reused), moves - 2);
  device_stats ds;
  device_get_stats(r.t.dev, &ds);
  cr_expect_leq(ds.high_water, 2 * slice_bytes);
  cr_expect_leq(ds.high_water, ds.budget);
  rig_close(&r);
}

/* Only a move keeps evicted blocks for itself: a copy evicted by anything
 * else (here an explicit evict, after a move that did evict) goes back to
 * the device at once. */
Test(prefetch_plan, an_evict_outside_a_move_frees_the_block) {
  rig r;
  rig_open(&r, "limit_gpu", 3, 0);
  for (size_t i = 0; i < 3; i++)
    step(&r, i); /* the third move evicts */
  proto_error e;
  cr_assert_eq(tiers_evict(&r.t, r.v[2], TIER_CPU, &e), 0, "%s", e.message);
  device_stats ds;
  device_get_stats(r.t.dev, &ds);
  cr_expect_eq(ds.used, atomic_load(&r.t.gpu_used),
               "the device holds %llu bytes, the tiers count %llu",
               (unsigned long long)ds.used,
               (unsigned long long)atomic_load(&r.t.gpu_used));
  tiers_pipeline_end(&r.t, r.v, N_SLICES);
  rig_close(&r);
}

/* Room for four, s1, s2 and s5 on the GPU: a step at s0 reaches s3, three
 * steps away, past prefetch_depth 1. It may evict for it only while
 * forwards wait for copies, here when the acquire of s0 had to bring s0 in
 * itself; when s0 was in already, s3 waits for free room or for the
 * forward to come nearer. */
static void far_slice(bool s0_in) {
  rig r;
  rig_open(&r, "limit_gpu", 5, 1);
  proto_error e;
  size_t in[] = {1, 2, 5, 0};
  for (size_t k = 0; k < (s0_in ? 4u : 3u); k++)
    cr_assert_eq(tiers_load(&r.t, r.v[in[k]], TIER_GPU, &e), 0, "load: %s",
                 e.message);
  step(&r, 0);
  settle(&r);
  const char *when = s0_in ? "s0 was in" : "s0 had to be brought in";
  cr_expect_eq(on_gpu(r.v[3]), !s0_in, "%s: s3 on the gpu %d", when,
               on_gpu(r.v[3]));
  /* The victim is s0, which has just run: its next use is the furthest. */
  cr_expect_eq(on_gpu(r.v[0]), s0_in, "%s: s0 on the gpu %d", when,
               on_gpu(r.v[0]));
  cr_expect(on_gpu(r.v[1]) && on_gpu(r.v[2]) && on_gpu(r.v[5]),
            "%s: s1, s2 or s5 evicted", when);
  tiers_pipeline_end(&r.t, r.v, N_SLICES);
  rig_close(&r);
}

Test(prefetch_plan, a_far_slice_evicts_only_while_forwards_wait_for_copies) {
  far_slice(false);
  far_slice(true);
}

/* A cyclic pipeline of six with room for four, the mover settling after
 * every step (so nothing here depends on timing). A prefetch from beyond
 * prefetch_depth that evicted would push out the slice that has just run,
 * which comes round again before the slices that run after it: every pass
 * would reload nearly everything (0.83 to 1.00 of a pass, measured so).
 * Evicting just in time keeps part of the pipeline resident. */
Test(prefetch_plan, a_cyclic_pipeline_keeps_part_of_itself_resident) {
  rig r;
  rig_open(&r, "limit_gpu", 5, 1);
  uint64_t b0 = 0;
  const int warm = 2, passes = 8;
  for (int pass = 0; pass < warm + passes; pass++) {
    if (pass == warm)
      b0 = atomic_load(&r.t.cpu_to_gpu.bytes);
    for (size_t i = 0; i < N_SLICES; i++) {
      step(&r, i);
      settle(&r);
    }
    tiers_pipeline_end(&r.t, r.v, N_SLICES);
  }
  uint64_t slice_bytes = r.v[0]->place.bytes; /* known once built */
  cr_assert_eq((5ull << 20) / slice_bytes, 4, "the budget must hold 4");
  double per_pass = (double)(atomic_load(&r.t.cpu_to_gpu.bytes) - b0) /
                    passes / (double)(N_SLICES * slice_bytes);
  cr_log_info("cyclic pipeline of 6 with room for 4: %.2f of a pass moved",
              per_pass);
  cr_expect_lt(per_pass, 0.5, "%.2f of a pass moved per pass", per_pass);
  rig_close(&r);
}

/* ---- from disk to the device ------------------------------------------ */

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      unlinkat(dirfd(d), e->d_name, 0);
  closedir(d);
  rmdir(dir);
}

/* The only cache file in `dir`, opened with `flags`. */
static int open_cache_file(const char *dir, int flags) {
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  struct dirent *e;
  int fd = -1;
  while (fd < 0 && (e = readdir(d)) != NULL)
    if (strstr(e->d_name, ".safetensors") != NULL)
      fd = openat(dirfd(d), e->d_name, flags);
  closedir(d);
  cr_assert_geq(fd, 0, "no cache file in %s", dir);
  return fd;
}

/* Flips one byte in the middle of the only cache file in `dir`. */
static void corrupt_cache_file(const char *dir) {
  int fd = open_cache_file(dir, O_RDWR);
  off_t mid = lseek(fd, 0, SEEK_END) / 2;
  unsigned char b;
  cr_assert_eq(pread(fd, &b, 1, mid), 1);
  b ^= 0x5a;
  cr_assert_eq(pwrite(fd, &b, 1, mid), 1);
  close(fd);
}

/* s0 built, written to its cache file and then evicted down to it; its
 * bytes as built are kept in *orig (the caller frees them). */
static void open_with_s0_on_disk(rig *r, char dir[64], void **orig) {
  strcpy(dir, "/tmp/sly-plan-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  char extra[256];
  snprintf(extra, sizeof(extra),
           "\"disk_cache_path\": \"%s\", \"max_cpu_mem_mb\": 64, ", dir);
  rig_open_with(r, "limit_gpu", 64, 0, extra);
  step(r, 0);
  tier_place *p = &r->v[0]->place;
  cr_assert(p->on_disk, "s0 has no cache file");
  *orig = malloc(p->bytes);
  memcpy(*orig, p->host, p->bytes);
  proto_error e;
  cr_assert_eq(tiers_evict(&r->t, r->v[0], TIER_DISK, &e), 0, "%s", e.message);
  cr_assert(p->host == NULL && p->dev == NULL, "s0 still in memory");
  /* Chunks of 64 KiB: the 1 MiB blob arrives in 17. */
  r->t.read_chunk = 64 << 10;
}

/* A slice on disk that a forward needs on the GPU is copied there as its
 * read lands (transfers.disk_to_gpu), not copied again once read
 * (cpu_to_gpu stays): the device holds exactly its bytes. */
Test(prefetch_plan, a_slice_on_disk_streams_to_the_device_as_it_is_read) {
  rig r;
  char dir[64];
  void *orig;
  open_with_s0_on_disk(&r, dir, &orig);
  tier_place *p = &r.v[0]->place;
  uint64_t c2g = atomic_load(&r.t.cpu_to_gpu.bytes);
  step(&r, 0);
  cr_expect_eq(atomic_load(&r.t.disk_to_gpu.bytes), p->bytes);
  cr_expect_eq(atomic_load(&r.t.cpu_to_gpu.bytes), c2g,
               "the blob was copied again after the read");
  cr_assert_not_null(p->dev);
  cr_expect_eq(memcmp(p->dev, orig, p->bytes), 0,
               "the device copy differs from the slice as built");
  cr_expect_eq(memcmp(p->host, orig, p->bytes), 0);
  free(orig);
  rig_close(&r);
  remove_dir(dir);
}

/* A cache file that turns out corrupt once read: the chunks already copied
 * are not trusted; the slice is built again and copied whole. */
Test(prefetch_plan, a_corrupt_file_does_not_leave_its_bytes_on_the_device) {
  rig r;
  char dir[64];
  void *orig;
  open_with_s0_on_disk(&r, dir, &orig);
  corrupt_cache_file(dir);
  tier_place *p = &r.v[0]->place;
  uint64_t c2g = atomic_load(&r.t.cpu_to_gpu.bytes);
  step(&r, 0);
  cr_expect_eq(atomic_load(&r.t.disk_to_gpu.bytes), 0);
  cr_expect_eq(atomic_load(&r.t.cpu_to_gpu.bytes), c2g + p->bytes);
  cr_assert_not_null(p->dev);
  cr_expect_eq(memcmp(p->dev, orig, p->bytes), 0,
               "the device holds the corrupt file's bytes");
  free(orig);
  rig_close(&r);
  remove_dir(dir);
}

/* Makes the only cache file in `dir` immutable (or not): even root cannot
 * delete or replace it. False where the file system has no such flag. */
static bool set_immutable(const char *dir, bool on) {
  int fd = open_cache_file(dir, O_RDONLY);
  int flags = 0;
  bool ok = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
  ok = ok && ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  close(fd);
  return ok;
}

/* A corrupt file that cannot be deleted is read once, not over and over:
 * the slice is built again without looking for its file, and served. */
Test(prefetch_plan, a_bad_file_that_cannot_be_deleted_is_read_once) {
  rig r;
  char dir[64];
  void *orig;
  open_with_s0_on_disk(&r, dir, &orig);
  corrupt_cache_file(dir);
  if (!set_immutable(dir, true)) {
    free(orig);
    rig_close(&r);
    remove_dir(dir);
    cr_skip_test("no immutable files here (needs root and ext4 or alike)");
  }
  tier_place *p = &r.v[0]->place;
  step(&r, 0);
  cr_assert_not_null(p->dev);
  cr_expect_eq(memcmp(p->dev, orig, p->bytes), 0);
  cr_assert(set_immutable(dir, false));
  free(orig);
  rig_close(&r);
  remove_dir(dir);
}

/* The device and the tiers' count hold exactly the slices on the GPU: no
 * block left behind. */
static void expect_no_stray_block(rig *r) {
  uint64_t held = 0;
  for (int i = 0; i < N_SLICES; i++)
    if (r->v[i]->place.dev != NULL)
      held += r->v[i]->place.bytes;
  device_stats ds;
  device_get_stats(r->t.dev, &ds);
  cr_expect_eq(ds.used, held, "the device holds %llu bytes for %llu on it",
               (unsigned long long)ds.used, (unsigned long long)held);
  cr_expect_eq(atomic_load(&r->t.gpu_used), held,
               "the tiers count %llu bytes for %llu on it",
               (unsigned long long)atomic_load(&r->t.gpu_used),
               (unsigned long long)held);
}

/* open_with_s0_on_disk with the faults `spec` armed (faults.h). */
static void open_faulty(rig *r, char dir[64], void **orig, const char *spec) {
  char ferr[256];
  cr_assert_eq(faults_init(spec, ferr), 0, "%s: %s", spec, ferr);
  open_with_s0_on_disk(r, dir, orig);
}

/* A read that fails gives the device block it was filling back, fails the
 * one acquire, and the next acquire streams from the same file. */
Test(prefetch_plan, a_failed_read_gives_its_device_block_back) {
  rig r;
  char dir[64];
  void *orig;
  open_faulty(&r, dir, &orig, "disk_read=EIO");
  proto_error e;
  cr_expect_eq(tiers_acquire(&r.t, r.v[0], &e), SLY_E_UNAVAILABLE,
               "an EIO read: %s", e.message);
  cr_expect_null(r.v[0]->place.dev);
  expect_no_stray_block(&r);
  step(&r, 0);
  cr_expect_eq(atomic_load(&r.t.disk_to_gpu.bytes), r.v[0]->place.bytes);
  cr_expect_eq(memcmp(r.v[0]->place.dev, orig, r.v[0]->place.bytes), 0);
  expect_no_stray_block(&r);
  free(orig);
  rig_close(&r);
  remove_dir(dir);
}

/* The device lost at the first chunk's copy: the acquire fails with
 * UNAVAILABLE (the daemon then exits), the read still lands on the host,
 * and the block goes back. */
Test(prefetch_plan, a_device_lost_while_streaming_fails_the_acquire) {
  rig r;
  char dir[64];
  void *orig;
  /* Copy 1 brings s0 in when it is built; copy 2 is the first chunk. */
  open_faulty(&r, dir, &orig, "device_lost=2");
  proto_error e;
  cr_expect_eq(tiers_acquire(&r.t, r.v[0], &e), SLY_E_UNAVAILABLE, "%s",
               e.message);
  cr_expect(strstr(e.message, "lost") != NULL, "%s", e.message);
  cr_expect(tiers_device_lost(&r.t, false));
  cr_expect_null(r.v[0]->place.dev);
  tier_place *p = &r.v[0]->place;
  cr_assert_not_null(p->host, "the read did not land on the host");
  cr_expect_eq(memcmp(p->host, orig, p->bytes), 0);
  cr_expect_eq(atomic_load(&r.t.disk_to_gpu.bytes), 0);
  expect_no_stray_block(&r);
  free(orig);
  rig_close(&r);
  remove_dir(dir);
}

/* The first use after a restart: the slice is known only by its cache
 * file, and streams from it like any other. */
Test(prefetch_plan, a_cold_start_streams_from_the_cache_file) {
  rig r;
  char dir[64];
  void *orig;
  open_with_s0_on_disk(&r, dir, &orig);
  rig_close(&r);
  char extra[256];
  snprintf(extra, sizeof(extra),
           "\"disk_cache_path\": \"%s\", \"max_cpu_mem_mb\": 64, ", dir);
  rig_open_with(&r, "limit_gpu", 64, 0, extra);
  r.t.read_chunk = 64 << 10;
  step(&r, 0);
  tier_place *p = &r.v[0]->place;
  cr_expect_eq(atomic_load(&r.t.disk_to_gpu.bytes), p->bytes);
  cr_expect_eq(atomic_load(&r.t.cpu_to_gpu.bytes), 0);
  cr_assert_not_null(p->dev);
  cr_expect_eq(memcmp(p->dev, orig, p->bytes), 0);
  expect_no_stray_block(&r);
  free(orig);
  rig_close(&r);
  remove_dir(dir);
}

/* Room for two host copies of one size: every slice brought in after the
 * first two takes the host buffer of a copy it evicted (no fresh buffer to
 * fault in, or to pin on a GPU machine), and the host never holds more than
 * its budget. */
Test(prefetch_plan, an_evicted_host_buffer_is_reused_for_the_next_slice) {
  rig r;
  rig_open_with(&r, "limit_gpu", 64, 0, "\"max_cpu_mem_mb\": 3, ");
  for (size_t i = 0; i < N_SLICES; i++)
    step(&r, i);
  tiers_pipeline_end(&r.t, r.v, N_SLICES);
  cr_expect_eq(atomic_load(&r.t.host_blocks_reused), N_SLICES - 2);
  size_t on_host = 0;
  for (int i = 0; i < N_SLICES; i++)
    on_host += r.v[i]->place.host != NULL;
  cr_expect_eq(on_host, 2);
  cr_expect_eq(atomic_load(&r.t.cpu_used), 2 * r.v[0]->place.bytes);
  for (int i = 0; i < N_SLICES; i++)
    cr_expect(on_gpu(r.v[i]), "s%d left the gpu", i);
  rig_close(&r);
}
