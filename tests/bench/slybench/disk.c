/* disk.c — bench 3: a pipeline four times larger than max_cpu_mem_mb,
 * streamed from the disk cache, against `dd iflag=direct` over the same
 * cache files; then the same on to the `sim` device.
 *
 * Eight `linear` slices of 4096 x 4096 float32 (64 MiB each, no bias) on the
 * CPU, with room for two in host memory: every pass of the pipeline reads
 * most slices back from their cache files (O_DIRECT, 16 MiB chunks, checksum
 * checked). The first pass builds the slices and writes the files; it is
 * not timed. Before each timed pass, and before each dd pass, the files are
 * dropped from the page cache (posix_fadvise DONTNEED), so that neither side
 * reads memory. The measured bandwidth is the bytes the daemon read from
 * disk during the pass (stats: transfers.disk_to_cpu) over the pass's wall
 * time, compute and bookkeeping included; dd reads the same files with the
 * same block size and reports its own time. Passes and dd runs alternate,
 * each going first every other time, and the ratio is the median of the
 * ratios of each pass to the dd run beside it. After each pair, a bare
 * O_DIRECT loop in this process reads the same files with dd's block size
 * into one slice-sized buffer (disk_direct), for a second ratio, steadier
 * than dd's on this VM.
 *
 * The second run puts the slices on `device: sim` (active_only) with a copy
 * bandwidth of DISK_SIM_GBPS, near the disk's: each slice read from disk is
 * copied on to the device as its chunks land. Its floor is the slower of
 * the two paths (dd's bandwidth or the copy's); reading first and copying
 * after would take their sum, up to twice the floor.
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DISK_SLICES 8
#define DISK_FEATURES 4096
#define DISK_CPU_MB 128 /* the pipeline is 512 MiB: four times this */
#define DISK_MIN_FREE (2ull << 30)
#define DISK_MAX_FILES 64
#define DISK_SIM_GBPS 1.5
#define DISK_SLICE_BYTES ((size_t)DISK_FEATURES * DISK_FEATURES * 4)

typedef struct {
  char path[DISK_MAX_FILES][BK_PATH_MAX + 80];
  size_t n;
} disk_files;

static void disk_list(const char *dir, disk_files *f) {
  DIR *d = opendir(dir);
  if (d == NULL)
    bk_die("%s: %s", dir, strerror(errno));
  f->n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
      continue;
    if (f->n == DISK_MAX_FILES)
      bk_die("more than %d cache files", DISK_MAX_FILES);
    snprintf(f->path[f->n++], sizeof(f->path[0]), "%s/%s", dir, e->d_name);
  }
  closedir(d);
}

/* Takes the files out of the page cache: written pages are flushed first,
 * or DONTNEED would leave them. */
static void disk_drop(const disk_files *f) {
  for (size_t i = 0; i < f->n; i++) {
    int fd = open(f->path[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      bk_die("%s: %s", f->path[i], strerror(errno));
    fdatasync(fd);
    int r = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (r != 0)
      bk_die("posix_fadvise %s: %s", f->path[i], strerror(r));
  }
}

/* dd over every file; returns the bytes and dd's own seconds, summed. */
static void disk_dd(const disk_files *f, double *bytes, double *seconds) {
  *bytes = *seconds = 0;
  for (size_t i = 0; i < f->n; i++) {
    char cmd[BK_PATH_MAX + 200];
    snprintf(cmd, sizeof(cmd),
             "LC_ALL=C dd if='%s' of=/dev/null bs=16M iflag=direct 2>&1",
             f->path[i]);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
      bk_die("popen dd: %s", strerror(errno));
    char line[256];
    double b = -1, s = -1;
    while (fgets(line, sizeof(line), p) != NULL) {
      const char *copied = strstr(line, " copied, ");
      if (copied != NULL) {
        b = strtod(line, NULL);
        s = strtod(copied + 9, NULL);
      }
    }
    int status = pclose(p);
    if (status != 0 || b <= 0 || s <= 0)
      bk_die("dd iflag=direct on %s failed (status %d)", f->path[i], status);
    *bytes += b;
    *seconds += s;
  }
}

/* On the CPU, or on the sim device (`sim`) with room for two slices. */
/* dd's loop without its costs per file, landing data as the daemon does:
 * one process, one buffer the size of a slice on 2 MiB huge pages (as the
 * daemon's host buffers are, reused as they are) faulted in once, 16 MiB
 * O_DIRECT reads of every file in turn, each file filling the buffer from
 * its start. dd reads into a buffer of 4 KiB pages, and on this VM its
 * figure moves between 1 and 4 GB/s from run to run (so did this loop's
 * with such a buffer). Returns the bytes and seconds. */
static void disk_direct(const disk_files *f, double *bytes, double *seconds) {
  const size_t chunk = 16u << 20, span = DISK_SLICE_BYTES;
  char *buf = NULL;
  if (posix_memalign((void **)&buf, 2u << 20, span) != 0)
    bk_die("out of memory");
  (void)madvise(buf, span, MADV_HUGEPAGE);
  memset(buf, 0, span);
  double t0 = bk_now(), got = 0;
  for (size_t i = 0; i < f->n; i++) {
    int fd = open(f->path[i], O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
      bk_die("%s: %s", f->path[i], strerror(errno));
    ssize_t n;
    off_t off = 0;
    while ((n = pread(fd, buf + (size_t)off % span, chunk, off)) > 0) {
      off += n;
      got += (double)n;
    }
    if (n < 0)
      bk_die("read %s: %s", f->path[i], strerror(errno));
    close(fd);
  }
  *seconds = bk_now() - t0;
  *bytes = got;
  free(buf);
}

static void disk_config(char *out, size_t n, const char *cache, bool sim) {
  int k = snprintf(out, n,
                   "\"device\": \"%s\", \"max_cpu_mem_mb\": %d, "
                   "\"disk_cache_path\": \"%s\", \"slices\": [",
                   sim ? "sim" : "cpu", DISK_CPU_MB, cache);
  for (int i = 0; i < DISK_SLICES; i++)
    k += snprintf(out + k, n - (size_t)k,
                  "%s{\"name\": \"d%d\", \"constructor\": \"linear\", "
                  "\"config\": {\"in_features\": %d, \"out_features\": %d, "
                  "\"bias\": false, \"seed\": %d}}",
                  i ? ", " : "", i, DISK_FEATURES, DISK_FEATURES, i + 1);
  k += snprintf(out + k, n - (size_t)k, "], \"pipelines\": {\"disk\": [");
  for (int i = 0; i < DISK_SLICES; i++)
    k += snprintf(out + k, n - (size_t)k, "%s\"d%d\"", i ? ", " : "", i);
  k += snprintf(out + k, n - (size_t)k, "]}");
  if (sim)
    snprintf(out + k, n - (size_t)k,
             ", \"gpu_strategy\": \"active_only\", \"max_gpu_mem_mb\": %d, "
             "\"gpu_reserve_mb\": 0, \"sim_copy_gbps\": %.2f",
             DISK_CPU_MB + 8, DISK_SIM_GBPS);
}

static double disk_pass(sly_conn *c, const sly_tensor *x) {
  sly_result *r;
  sly_error err;
  double t0 = bk_now();
  int rc = sly_forward_pipeline(c, "disk", x, 1, &r, &err);
  double t = bk_now() - t0;
  if (rc < 0)
    bk_die("forward on pipeline disk: %s: %s", sly_code_name(rc),
           err.message);
  sly_result_free(r);
  return t;
}

static void disk_skip(const char *why) {
  printf("   not run: %s\n", why);
  bk_row("3", "disk streaming (not run)", "-", "-", 0, BK_NONE, 0);
}

/* One daemon, a first pass to build and write, then `reps` passes each
 * beside a dd run; prints the row. `sim`: the slices compute on the sim
 * device, each read copied on to it. */
static void disk_run(bool sim, int reps) {
  bk_daemon d;
  bk_prepare(&d);
  uint64_t free_b = bk_free_bytes(d.dir);
  if (free_b < DISK_MIN_FREE) {
    char why[96];
    snprintf(why, sizeof(why), "%.1f GiB free in /tmp, 2 GiB needed",
             (double)free_b / (1u << 30));
    disk_skip(why);
    bk_stop(&d);
    return;
  }
  char cache[BK_PATH_MAX + 8];
  snprintf(cache, sizeof(cache), "%s/cache", d.dir);
  char extra[4096];
  disk_config(extra, sizeof(extra), cache, sim);
  bk_launch(&d, extra);
  sly_conn *c = bk_connect(&d);
  sly_arena *a;
  sly_error err;
  int rc = sly_arena_create(c, 1 << 20, &a, &err);
  if (rc < 0)
    bk_die("arena: %s: %s", sly_code_name(rc), err.message);
  float *xs = sly_arena_alloc(a, DISK_FEATURES * sizeof(float), 64);
  for (int i = 0; i < DISK_FEATURES; i++)
    xs[i] = (float)((i % 7) - 3) * 0.01f;
  sly_tensor x = {.dtype = SLY_FLOAT32, .ndim = 2,
                  .shape = {1, DISK_FEATURES}, .data = xs};

  double first = disk_pass(c, &x);
  bk_settle(c, "transfers.disk_to_cpu.bytes");
  disk_files files;
  disk_list(cache, &files);
  printf("   first pass (build %d slices of %.0f MiB, write the cache): "
         "%.2f s; %zu cache files\n",
         DISK_SLICES, DISK_FEATURES * DISK_FEATURES * 4 / BK_MIB, first,
         files.n);

  double pipe_bw[8], dd_bw[8], ratio[8], direct_ratio[8], read_mib = 0,
      streamed = 0;
  for (int i = 0; i < reps; i++) {
    /* Each pass beside a dd run, taking turns at going first, and (on the
     * CPU) the bare loop over the same files after both. */
    double dd_b = 0, dd_s = 0, b = 0, s = 0, t = 0, r_b = 0, r_s = 0;
    for (int k = 0; k < 2; k++) {
      disk_drop(&files);
      if ((k == 0) == (i % 2 == 0)) {
        disk_dd(&files, &dd_b, &dd_s);
        continue;
      }
      double b0 = bk_stat(c, "transfers.disk_to_cpu.bytes");
      double s0 = bk_stat(c, "transfers.disk_to_cpu.seconds");
      double g0 = bk_stat(c, "transfers.disk_to_gpu.bytes");
      t = disk_pass(c, &x);
      b = bk_stat(c, "transfers.disk_to_cpu.bytes") - b0;
      s = bk_stat(c, "transfers.disk_to_cpu.seconds") - s0;
      streamed = bk_stat(c, "transfers.disk_to_gpu.bytes") - g0;
      /* Reads the daemon starts on its own after the pass (prefetch) must
       * not overlap dd's. */
      bk_settle(c, "transfers.disk_to_cpu.bytes");
    }
    pipe_bw[i] = b / t / 1e9;
    dd_bw[i] = dd_b / dd_s / 1e9;
    if (!sim) {
      disk_drop(&files);
      disk_direct(&files, &r_b, &r_s);
      direct_ratio[i] = pipe_bw[i] / (r_b / r_s / 1e9);
    }
    /* The floor: the slower of the disk (as dd reads it) and the copy. */
    double floor_bw = sim && DISK_SIM_GBPS < dd_bw[i] ? DISK_SIM_GBPS
                                                       : dd_bw[i];
    ratio[i] = pipe_bw[i] / floor_bw;
    read_mib = b / BK_MIB;
    printf("   pass %d: read %.0f MiB from disk in a %.3f s forward "
           "(%.2f GB/s; the daemon's reads alone %.2f GB/s); dd %.0f MiB in "
           "%.3f s (%.2f GB/s); ratio %.2f\n",
           i + 1, b / BK_MIB, t, pipe_bw[i], s > 0 ? b / s / 1e9 : 0.0,
           dd_b / BK_MIB, dd_s, dd_bw[i], ratio[i]);
    if (!sim)
      printf("           a bare O_DIRECT loop, one slice-sized buffer: %.0f MiB "
             "in %.3f s (%.2f GB/s); ratio %.2f (the daemon's reads alone "
             "%.2f)\n",
             r_b / BK_MIB, r_s, r_b / r_s / 1e9, direct_ratio[i],
             s > 0 ? (b / s) / (r_b / r_s) : 0.0);
    if (sim)
      printf("           %.0f MiB of it copied on to the device as read; "
             "copy floor %.3f s at %.2f GB/s, read-then-copy would take "
             "about %.3f s\n",
             streamed / BK_MIB, b / (DISK_SIM_GBPS * 1e9), DISK_SIM_GBPS,
             b / (dd_bw[i] * 1e9) + b / (DISK_SIM_GBPS * 1e9));
  }
  bk_print_prefetch(c);
  /* The disk's speed drifts between passes: the ratio is the median of
   * each pass's ratio to the dd run beside it. */
  double r = bk_median(ratio, (size_t)reps);
  char m[40], f[40], what[64];
  snprintf(m, sizeof(m), "%.2f GB/s", bk_median(pipe_bw, (size_t)reps));
  if (sim) {
    snprintf(f, sizeof(f), "min(dd, %.1f copy)", DISK_SIM_GBPS);
    snprintf(what, sizeof(what), "disk -> sim device, %.0f MiB/pass",
             read_mib);
    bk_row("3", what, m, f, r, BK_NONE, 0);
  } else {
    snprintf(f, sizeof(f), "%.2f GB/s dd", bk_median(dd_bw, (size_t)reps));
    snprintf(what, sizeof(what), "disk stream, %.0f MiB/pass (bandwidth)",
             read_mib);
    bk_row("3", what, m, f, r, BK_AT_LEAST, 0.8);
    bk_row("3", "disk stream vs a bare O_DIRECT loop", m,
           "(printed above)", bk_median(direct_ratio, (size_t)reps), BK_NONE,
           0);
  }
  sly_arena_destroy(a);
  sly_close(c);
  bk_stop(&d);
}

void bench_disk(void) {
  const int reps = bk_env_now.quick ? 1 : 5;
  printf("== 3. Disk streaming: a pipeline 4x max_cpu_mem_mb from the disk "
         "cache vs dd iflag=direct\n");
  disk_run(false, reps);
  printf("   the same pipeline on device sim (active_only, copies at %.1f "
         "GB/s), each read copied on as it lands:\n",
         DISK_SIM_GBPS);
  disk_run(true, reps);
}
