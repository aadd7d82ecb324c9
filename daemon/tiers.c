/* tiers.c — placing weight blobs across GPU, CPU and disk under budgets. */
#include "tiers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hostmem.h"
#include "log.h"
#include "slices.h"
#include "tiers_internal.h"
#include "torch_shim.h"

/* Device allocation failures are met by evicting one more and retrying. */
#define TIERS_ALLOC_RETRIES 8

static const char *const why_names[] = {"policy", "explicit", "removed",
                                        "failed"};

const char *tiers__why_name(int why) {
  return why >= 0 && why < 4 ? why_names[why] : "unknown";
}

const char *tier_name(int t) {
  static const char *const names[] = {"gpu", "cpu", "disk", "none"};
  return t >= 0 && t <= TIER_NONE ? names[t] : "none";
}

uint64_t tiers__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void tiers__path_add(tier_path_stats *p, uint64_t bytes, uint64_t ns) {
  atomic_fetch_add(&p->bytes, bytes);
  atomic_fetch_add(&p->ns, ns);
}

static double gbps(uint64_t bytes, uint64_t ns) {
  return ns == 0 ? 0.0 : (double)bytes / (double)ns;
}

static uint64_t mib(uint64_t v) { return v * 1024 * 1024; }

uint64_t tiers__gpu_budget(const tiers *t) {
  const tiers_conf *c = &t->conf;
  if (c->strategy == GPU_STRATEGY_LIMIT_GPU)
    return mib(c->max_gpu_mem_mb - c->gpu_reserve_mb);
  return mib(c->max_gpu_mem_mb); /* active_only: also limited by count */
}

uint64_t tiers__cpu_budget(const tiers *t) {
  return t->conf.max_cpu_mem_mb > 0 ? mib(t->conf.max_cpu_mem_mb) : UINT64_MAX;
}

int tiers__compute_tier(const tiers *t) {
  return t->dev ? TIER_GPU : TIER_CPU;
}

static int highest_tier(const tier_place *p) {
  return p->dev ? TIER_GPU : p->host ? TIER_CPU : p->on_disk ? TIER_DISK
                                                             : TIER_NONE;
}

static void update_tier(slice *s) {
  atomic_store(&s->place.tier, highest_tier(&s->place));
}

int tiers_init(tiers *t, const config *cfg, char err[256]) {
  memset(t, 0, sizeof(*t));
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->idle, NULL);
  pthread_cond_init(&t->work, NULL);
  tiers_conf *c = &t->conf;
  c->strategy = cfg->gpu_strategy;
  c->max_gpu_mem_mb = cfg->max_gpu_mem_mb;
  c->gpu_reserve_mb = cfg->gpu_reserve_mb;
  c->max_cpu_mem_mb = cfg->max_cpu_mem_mb;
  c->prefetch_depth = cfg->prefetch_depth;
  c->sim_copy_gbps = cfg->sim_copy_gbps;
  c->device = strdup(cfg->device);
  c->disk_cache_path =
      cfg->disk_cache_path ? strdup(cfg->disk_cache_path) : NULL;
  if (c->device == NULL || (cfg->disk_cache_path && !c->disk_cache_path)) {
    snprintf(err, 256, "out of memory");
    return -1;
  }
  bool gpu = c->strategy != GPU_STRATEGY_NONE && strcmp(c->device, "cpu") != 0;
  if (!gpu && strcmp(c->device, "cpu") != 0)
    log_warn("device %s with gpu_strategy none: slices stay in host memory "
             "and run on the CPU (set gpu_strategy to use the device)",
             c->device);
  if (gpu) {
    char derr[DEVICE_ERROR_MAX];
    if (device_open(c->device, tiers__gpu_budget(t), c->sim_copy_gbps, &t->dev,
                    derr) < 0) {
      snprintf(err, 256, "device %.32s: %.200s", c->device, derr);
      return -1;
    }
  }
  /* After the device: pinning creates a CUDA context on the current one.
   * Every thread that pins (executor, mover, loader) pins for this device
   * (written, not verified on a multi-GPU machine). */
  bool cuda = t->dev != NULL && !device_is_sim(t->dev);
  hostmem_set_device(cuda ? device_cuda_index(t->dev) : -1);
  hostmem_init(cuda, HOSTMEM_REGISTER);
  hostmem_set_region_limit(cfg->limits.max_registered_mb << 20);
  if (c->disk_cache_path != NULL) {
    if (mkdir(c->disk_cache_path, 0750) < 0 && errno != EEXIST) {
      snprintf(err, 256, "disk_cache_path %s: %s", c->disk_cache_path,
               strerror(errno));
      return -1;
    }
    /* Found here rather than by every cache write failing: an eviction to
     * the disk would then unload slices instead. */
    struct stat st;
    const char *why = NULL;
    if (stat(c->disk_cache_path, &st) != 0)
      why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
      why = "not a folder";
    else if (access(c->disk_cache_path, W_OK | X_OK) != 0)
      why = "slyced cannot write there";
    if (why != NULL) {
      snprintf(err, 256, "disk_cache_path %s: %s", c->disk_cache_path, why);
      return -1;
    }
    int n = diskcache_sweep(c->disk_cache_path);
    if (n > 0)
      log_info("disk cache %s: removed %d temp files left by a crash",
               c->disk_cache_path, n);
  }
  int r = tiers__mover_start(t);
  if (r != 0) {
    snprintf(err, 256, "mover thread: %s", strerror(r));
    return -1;
  }
  return 0;
}

void tiers__claim(tiers *t, slice *s) {
  while (s->place.busy)
    pthread_cond_wait(&t->idle, &t->mu);
  s->place.busy = true;
  t->n_busy++;
}

void tiers__unclaim(tiers *t, slice *s) {
  s->place.busy = false;
  t->n_busy--;
  t->ops_ended++;
  pthread_cond_broadcast(&t->idle);
  if (t->moved != NULL)
    t->moved(t->moved_ctx);
}

void tiers__track(tiers *t, slice *s) {
  for (size_t i = 0; i < t->n_all; i++)
    if (t->all[i] == s)
      return;
  slice **v = realloc(t->all, (t->n_all + 1) * sizeof(*v));
  if (v == NULL)
    return; /* not evictable then, but still correct */
  t->all = v;
  slice_ref(s);
  t->all[t->n_all++] = s;
}

static void untrack(tiers *t, slice *s) {
  for (size_t i = 0; i < t->n_all; i++)
    if (t->all[i] == s) {
      t->all[i] = t->all[--t->n_all];
      slice_unref(s);
      return;
    }
}

/* Gives a block back to the allocator of its tier. Accepts a NULL block.
 * A device block may still be read by the kernels of the forward that used
 * it last (a pipeline releases a slice once its kernels are queued); the
 * wait costs nothing where cudaFree waits for the device anyway, and a lost
 * device is recorded where it is found. */
static void free_spare(tiers *t, int tier, const tiers_spare *sp) {
  if (tier == TIER_GPU) {
    char msg[DEVICE_ERROR_MAX];
    (void)device_fence_sync(t->dev, sp->fence, msg);
    device_free(t->dev, sp->p, sp->bytes);
  } else
    hostmem_free(sp->p, sp->bytes, sp->pinned);
}

static void keep_or_free(tiers *t, int tier, tiers_spares *keep,
                         tiers_spare sp) {
  if (keep != NULL && keep->n < TIERS_SPARES)
    keep->v[keep->n++] = sp;
  else
    free_spare(t, tier, &sp);
}

/* The block of `bytes` among the spares make_room has just collected in
 * `tier`, if there is one (.p NULL if not); the others are freed. A stream
 * of same-sized layers then reuses its blocks. On the GPU, cudaFree waits
 * for the whole device (the compute the move should overlap) and cudaMalloc
 * is slow; on the host, a fresh buffer is zeroed page by page by the kernel,
 * and on a GPU machine pinned and later unpinned, which cost more than the
 * read of a layer from a fast disk. The budget is unchanged: the spares were
 * subtracted from its count when their copies were dropped, and are freed
 * before anything else is allocated. Nothing still reads a host spare:
 * copies to the device are waited for, and a slice in use is never evicted. */
static tiers_spare take_spare(tiers *t, tiers_spares *sp, int tier,
                              uint64_t bytes) {
  tiers_spare hit = {.p = NULL};
  for (size_t i = 0; i < sp->n; i++) {
    char msg[DEVICE_ERROR_MAX];
    /* A copy into a device block must wait for the kernels that read it
     * last; where that cannot be ordered, the block is freed, which waits
     * for them (free_spare). */
    if (hit.p == NULL && sp->v[i].bytes == bytes &&
        (tier != TIER_GPU ||
         device_fence_wait(t->dev, sp->v[i].fence, msg) == 0)) {
      hit = sp->v[i];
      atomic_fetch_add(tier == TIER_GPU ? &t->blocks_reused
                                        : &t->host_blocks_reused,
                       1);
    } else {
      free_spare(t, tier, &sp->v[i]);
    }
  }
  sp->n = 0;
  return hit;
}

void tiers__drop_copy(tiers *t, slice *s, int tier, int why,
                      const char *detail, tiers_spares *keep) {
  tier_place *p = &s->place;
  if (tier == tiers__compute_tier(t) && p->prefetched &&
      (tier == TIER_GPU ? p->dev : p->host) != NULL) {
    atomic_fetch_add(&t->prefetch_wasted_bytes, p->bytes);
    p->prefetched = false;
  }
  if (tier == TIER_GPU && p->dev != NULL) {
    if (p->bound == p->dev)
      p->bound = NULL;
    tiers_spare sp = {.p = p->dev, .bytes = p->bytes, .fence = p->fence};
    keep_or_free(t, TIER_GPU, keep, sp);
    p->dev = NULL;
    atomic_fetch_sub(&t->gpu_used, p->bytes);
  } else if (tier == TIER_CPU && p->host != NULL) {
    if (p->bound == p->host)
      p->bound = NULL;
    tiers_spare sp = {
        .p = p->host, .bytes = p->bytes, .pinned = p->host_pinned};
    keep_or_free(t, TIER_CPU, keep, sp);
    p->host = NULL;
    atomic_fetch_sub(&t->cpu_used, p->bytes);
    if (p->host_pinned)
      atomic_fetch_sub(&t->cpu_pinned, p->bytes);
  } else {
    return;
  }
  atomic_fetch_add(&t->evictions[why], 1);
  log_info("evict slice=%s from=%s bytes=%llu why=%s%s%s", s->name,
           tier_name(tier), (unsigned long long)p->bytes, why_names[why],
           detail ? ":" : "", detail ? detail : "");
  if (p->dev == NULL && p->host == NULL && !p->on_disk) {
    shim_module_free(s->module);
    s->module = NULL;
    free(p->entries);
    p->entries = NULL;
    p->n_entries = 0;
    atomic_store(&s->state, SLICE_UNLOADED);
  }
  update_tier(s);
}

void tiers__log_move(const slice *s, const char *from, const char *to,
                     uint64_t bytes, uint64_t ns) {
  log_info("move slice=%s from=%s to=%s bytes=%llu ms=%.2f gbps=%.2f", s->name,
           from, to, (unsigned long long)bytes, (double)ns / 1e6,
           gbps(bytes, ns));
}

/* Forgets the module of a slice whose bytes are nowhere else: it is built
 * again. Used when a cache file turns out bad and no copy is left. */
static void discard_module(slice *s) {
  tier_place *p = &s->place;
  shim_module_free(s->module);
  s->module = NULL;
  free(p->entries);
  p->entries = NULL;
  p->n_entries = 0;
  p->bound = NULL;
}

/* A module just built that finds no room must not stay outside every
 * budget, so it goes; its cache file, written first where there is a disk
 * cache, keeps the build, and the next try reads the file instead of
 * building the slice again (seconds, for a big one). */
static void shelve_fresh(tiers *t, slice *s) {
  tiers__write_cache(t, s, shim_module_blob_data(s->module), "build");
  discard_module(s);
}

static int bind_to(slice *s, void *target, const char *dev, proto_error *err) {
  tier_place *p = &s->place;
  if (p->bound == target)
    return 0;
  char msg[SHIM_ERROR_MAX];
  int rc = shim_module_bind(s->module, target, dev, msg);
  if (rc < 0)
    return proto_fail(err, rc, "slice '%s': %s", s->name, msg);
  p->bound = target;
  return 0;
}

/* A device block that a disk read fills as it goes: each chunk, once read,
 * is copied on while the next one is read, so that a slice on disk reaches
 * the GPU in about the time of the slower of the two paths, not their sum.
 * The copies are provisional until the read has checked the whole blob. */
typedef struct {
  tiers *t;
  void *dst;       /* the device block (reserve_dev) */
  const char *src; /* the host copy the read fills */
  device_copy_batch batch;
  int rc;          /* the first copy's error; no copy is started after it */
  char msg[DEVICE_ERROR_MAX];
  bool done;       /* every byte copied, and the read checked them all */
} dev_stream;

static int stream_chunk(void *arg, uint64_t offset, size_t len) {
  dev_stream *ds = arg;
  if (ds->rc == 0)
    ds->rc = device_copy_start(ds->t->dev, &ds->batch, (char *)ds->dst + offset,
                               ds->src + offset, len, ds->msg);
  return 0; /* the host copy is worth finishing even when the device fails */
}

/* Reads the cache file of claimed `s` into `h` (mutex dropped), and on into
 * ds->dst as it lands when `ds` is given. 0, or the diskcache error (in
 * msg): -EBADMSG/-ENOENT mean the file is bad or gone. */
static int read_cache(tiers *t, slice *s, void *h, dev_stream *ds,
                      char msg[DISKCACHE_ERROR_MAX]) {
  tier_place *p = &s->place;
  diskcache_layout l = {
      .entries = p->entries, .n_entries = p->n_entries, .blob_bytes = p->bytes};
  memcpy(l.key, p->key, sizeof(l.key));
  pthread_mutex_unlock(&t->mu);
  uint64_t t0 = tiers__now_ns();
  if (ds != NULL)
    ds->src = h;
  int rc = diskcache_read_chunks(t->conf.disk_cache_path, &l, h, t->read_chunk,
                                 ds ? stream_chunk : NULL, ds, msg);
  uint64_t ns = tiers__now_ns() - t0;
  if (ds != NULL) {
    /* Whatever happened, nothing may touch h or ds->dst before this. */
    char ignored[DEVICE_ERROR_MAX];
    int frc = device_copy_finish(t->dev, &ds->batch,
                                 ds->rc < 0 ? ignored : ds->msg);
    if (ds->rc == 0)
      ds->rc = frc;
    ds->done = rc == 0 && ds->rc == 0;
  }
  uint64_t ns_dev = tiers__now_ns() - t0;
  pthread_mutex_lock(&t->mu);
  if (rc == 0) {
    tiers__path_add(&t->disk_to_cpu, p->bytes, ns);
    tiers__log_move(s, "disk", "cpu", p->bytes, ns);
  }
  if (ds != NULL && ds->done) {
    tiers__path_add(&t->disk_to_gpu, p->bytes, ns_dev);
    tiers__log_move(s, "disk", "gpu", p->bytes, ns_dev);
  }
  return rc;
}

static void unreserve_host(tiers *t, uint64_t bytes) {
  atomic_fetch_sub(&t->cpu_used, bytes);
}

/* Brings claimed `s` to the host tier; with `ds`, a read from disk also
 * fills ds->dst (ds->done says whether it did). */
static int ensure_host(tiers *t, slice *s, int room, dev_stream *ds,
                       proto_error *err) {
  tier_place *p = &s->place;
  if (p->host != NULL)
    return 0;
  /* Weights are never copied back from the GPU: without a host copy or a
   * cache file the slice is built again. */
  if (s->module != NULL && shim_module_blob_data(s->module) == NULL &&
      !p->on_disk)
    discard_module(s);
  if (s->module == NULL) {
    int rc = tiers__build(t, s, true, err);
    if (rc < 0)
      return rc;
  }
  const void *fresh = shim_module_blob_data(s->module);
  tiers_spares spares = {.n = 0};
  int rc = tiers__make_room(t, TIER_CPU, p->bytes, s, room, &spares, err);
  tiers_spare reuse = take_spare(t, &spares, TIER_CPU, p->bytes);
  void *h = reuse.p;
  bool pinned = reuse.pinned;
  if (rc < 0) {
    free_spare(t, TIER_CPU, &reuse); /* none: nothing was evicted */
    if (fresh != NULL)
      shelve_fresh(t, s);
    return rc;
  }
  /* Counted before the mutex drops, so that no one else spends it. */
  uint64_t bytes = p->bytes;
  atomic_fetch_add(&t->cpu_used, bytes);
  pthread_mutex_unlock(&t->mu);
  if (h == NULL)
    h = hostmem_alloc(bytes, &pinned);
  if (h != NULL && (fresh != NULL && !p->on_disk))
    memcpy(h, fresh, bytes);
  pthread_mutex_lock(&t->mu);
  if (h == NULL) {
    unreserve_host(t, bytes);
    if (fresh != NULL)
      shelve_fresh(t, s);
    proto_fail(err, SLY_E_NO_MEMORY,
               "slice '%s': no host memory for %llu bytes", s->name,
               (unsigned long long)bytes);
    err->has_needed = true;
    err->needed = bytes;
    return SLY_E_NO_MEMORY;
  }
  if (p->on_disk) {
    /* A valid cache file is what the slice is served from, also right after
     * a restart; a bad one is dropped and the slice built again. */
    char msg[DISKCACHE_ERROR_MAX];
    rc = read_cache(t, s, h, ds, msg);
    if (rc != 0 && rc != -EBADMSG && rc != -ENOENT) {
      log_error("slice %s: cache file %s: %s", s->name, p->key, msg);
      hostmem_free(h, bytes, pinned);
      unreserve_host(t, bytes);
      return proto_fail(err, SLY_E_UNAVAILABLE,
                        "slice '%s': reading its cache file: %s", s->name,
                        msg);
    }
    if (rc != 0) {
      log_warn("slice %s: cache file %s: %s; building it again", s->name,
               p->key, msg);
      p->on_disk = false;
      hostmem_free(h, bytes, pinned);
      unreserve_host(t, bytes);
      discard_module(s);
      /* Not looking for the file again: one that could not be deleted
       * would be read again, and again. */
      rc = tiers__build(t, s, false, err);
      return rc < 0 ? rc : ensure_host(t, s, room, ds, err);
    }
  }
  p->host = h;
  p->host_pinned = pinned;
  if (tiers__compute_tier(t) == TIER_CPU)
    atomic_fetch_add(&s->loads, 1);
  if (pinned)
    atomic_fetch_add(&t->cpu_pinned, bytes);
  if (fresh != NULL) {
    /* Binding frees the shim's own copy: from here on the tiers own it. */
    rc = bind_to(s, h, "cpu", err);
    if (rc < 0)
      return rc;
    tiers__write_cache(t, s, h, "cpu");
  }
  update_tier(s);
  return 0;
}

/* A device block of p->bytes for claimed `s`, counted in gpu_used, room
 * made as `room` allows. 0, or the error (in err). */
static int reserve_dev(tiers *t, slice *s, int room, void **out,
                       proto_error *err) {
  tier_place *p = &s->place;
  tiers_spares spares = {.n = 0};
  int rc = tiers__make_room(t, TIER_GPU, p->bytes, s, room, &spares, err);
  tiers_spare reuse = take_spare(t, &spares, TIER_GPU, p->bytes);
  void *d = reuse.p;
  if (rc < 0) {
    free_spare(t, TIER_GPU, &reuse); /* none: nothing was evicted */
    return rc;
  }
  char msg[DEVICE_ERROR_MAX];
  for (int i = 0; d == NULL; i++) {
    rc = device_alloc(t->dev, p->bytes, &d, msg);
    if (rc == 0)
      break;
    /* The device may be full of libtorch's cached activation blocks, which
     * slyced's budget does not see: those go back first, once. */
    if (rc == SLY_E_NO_MEMORY && i == 0 && !device_is_sim(t->dev)) {
      shim_cuda_release_cached();
      continue;
    }
    if (rc != SLY_E_NO_MEMORY || i == TIERS_ALLOC_RETRIES ||
        tiers__evict_one_gpu(t, s) < 0) {
      proto_fail(err, rc, "slice '%s': %s", s->name, msg);
      if (rc == SLY_E_NO_MEMORY) {
        err->has_needed = true;
        err->needed = p->bytes;
      }
      return rc;
    }
  }
  atomic_fetch_add(&t->gpu_used, p->bytes);
  *out = d;
  return 0;
}

static void unreserve_dev(tiers *t, void *d, uint64_t bytes) {
  device_free(t->dev, d, bytes);
  atomic_fetch_sub(&t->gpu_used, bytes);
}

static int ensure_dev(tiers *t, slice *s, int room, proto_error *err) {
  tier_place *p = &s->place;
  if (p->dev != NULL)
    return 0;
  dev_stream ds = {.t = t};
  int rc;
  bool built = false;
  if (p->host == NULL && s->module == NULL) {
    /* Built here rather than in ensure_host, so that whether a cache file
     * holds the slice, and its size, are known before its device block is
     * reserved: the first use after a restart streams too. */
    rc = tiers__build(t, s, true, err);
    if (rc < 0)
      return rc;
    built = true;
  }
  uint64_t bytes = p->bytes;
  if (p->host == NULL && p->on_disk && s->module != NULL && bytes > 0) {
    /* The block comes first so that the copy can follow the read. */
    rc = reserve_dev(t, s, room, &ds.dst, err);
    if (rc < 0) {
      if (built && shim_module_blob_data(s->module) != NULL)
        shelve_fresh(t, s);
      return rc;
    }
    rc = ensure_host(t, s, room, &ds, err);
    if (rc == 0 && ds.rc < 0)
      rc = proto_fail(err, ds.rc, "slice '%s': copy to %s: %s", s->name,
                      t->conf.device, ds.msg);
    if (rc < 0 || (!ds.done && p->bytes != bytes)) {
      unreserve_dev(t, ds.dst, bytes); /* a rebuild changed its size */
      ds.dst = NULL;
    }
  } else {
    rc = ensure_host(t, s, room, NULL, err);
  }
  if (rc < 0)
    return rc;
  if (ds.dst == NULL) {
    rc = reserve_dev(t, s, room, &ds.dst, err);
    if (rc < 0)
      return rc;
  }
  if (!ds.done) {
    char msg[DEVICE_ERROR_MAX];
    pthread_mutex_unlock(&t->mu);
    uint64_t t0 = tiers__now_ns();
    rc = device_copy_in(t->dev, ds.dst, p->host, p->bytes, msg);
    uint64_t ns = tiers__now_ns() - t0;
    pthread_mutex_lock(&t->mu);
    if (rc < 0) {
      unreserve_dev(t, ds.dst, p->bytes);
      return proto_fail(err, rc, "slice '%s': copy to %s: %s", s->name,
                        t->conf.device, msg);
    }
    tiers__path_add(&t->cpu_to_gpu, p->bytes, ns);
    tiers__log_move(s, "cpu", "gpu", p->bytes, ns);
  }
  p->dev = ds.dst;
  atomic_fetch_add(&s->loads, 1);
  update_tier(s);
  return 0;
}

/* A slice whose move failed is resident if it kept a module, else unloaded;
 * a failed build has said "failed" already. */
static void settle_state(slice *s, int rc) {
  int st = atomic_load(&s->state);
  if (rc == 0 && st != SLICE_FAILED)
    atomic_store(&s->state, SLICE_RESIDENT);
  else if (rc < 0 && st == SLICE_LOADING)
    atomic_store(&s->state, s->module ? SLICE_RESIDENT : SLICE_UNLOADED);
  update_tier(s);
}

int tiers__ensure(tiers *t, slice *s, int tier, int room, proto_error *err) {
  int rc = tier == TIER_GPU ? ensure_dev(t, s, room, err)
                            : ensure_host(t, s, room, NULL, err);
  settle_state(s, rc);
  return rc;
}

/* Frees every copy of a slice that is going away and stops tracking it. */
static void forget(tiers *t, slice *s) {
  tiers__drop_copy(t, s, TIER_GPU, WHY_REPLACED, NULL, NULL);
  tiers__drop_copy(t, s, TIER_CPU, WHY_REPLACED, NULL, NULL);
  if (t->dev != NULL)
    device_fence_free(t->dev, s->place.fence);
  s->place.fence = NULL;
  tiers__forget_hints(t, s);
  untrack(t, s);
}

/* Slices taken out of the registry give their memory back here, the next
 * time the tiers are asked for anything (not while one is moved or used). */
static void reap(tiers *t) {
  for (size_t i = 0; i < t->n_all;) {
    slice *s = t->all[i];
    if (atomic_load(&s->removed) && !s->place.busy && s->place.in_use == 0)
      forget(t, s); /* untrack swaps the last one into i */
    else
      i++;
  }
}

/* Brings claimed `s` to the compute tier; short of room that moves in
 * flight hold (they free it as soon as they end, being evictable then),
 * waits for them, or with !may_wait returns TIERS_ROOM_HELD. */
static int make_resident(tiers *t, slice *s, bool may_wait,
                         proto_error *err) {
  int ct = tiers__compute_tier(t);
  for (;;) {
    int rc = ct == TIER_GPU ? ensure_dev(t, s, TIERS_ROOM_DEMAND, err)
                            : ensure_host(t, s, TIERS_ROOM_DEMAND, NULL, err);
    if (rc != SLY_E_NO_MEMORY || t->n_busy <= 1)
      return rc;
    if (!may_wait)
      return TIERS_ROOM_HELD;
    pthread_cond_wait(&t->idle, &t->mu);
  }
}

/* What every op that uses `s` does first and last: the mutex, a tick of the
 * logical clock, removed slices reaped, `s` tracked and claimed. Returns
 * whether it had to wait for another thread's move of `s`. */
static bool op_begin(tiers *t, slice *s) {
  pthread_mutex_lock(&t->mu);
  reap(t);
  t->tick++;
  tiers__track(t, s);
  bool waited = s->place.busy;
  tiers__claim(t, s);
  return waited;
}

static void op_end(tiers *t, slice *s) {
  tiers__unclaim(t, s);
  pthread_mutex_unlock(&t->mu);
}

static int acquire(tiers *t, slice *s, bool may_wait, uint64_t *seen,
                   proto_error *err) {
  bool waited = op_begin(t, s);
  tier_place *p = &s->place;
  int ct = tiers__compute_tier(t);
  /* A slice the loader brought in for this very request was not found in
   * memory: a miss, for the figures and for prefetch's window. */
  bool hit = (ct == TIER_GPU ? p->dev != NULL : p->host != NULL) && !p->staged;
  p->in_use++;
  int rc = make_resident(t, s, may_wait, err);
  if (rc == TIERS_ROOM_HELD) {
    p->in_use--;
    p->waited_for = true; /* its acquire, when it comes, waited */
    tiers__unclaim(t, s);
    *seen = t->ops_ended;
    pthread_mutex_unlock(&t->mu);
    return rc;
  }
  waited = waited || p->waited_for;
  p->waited_for = false;
  p->staged = false;
  /* Whether the forwards wait for copies: see prefetch.c's window. */
  t->stalls = t->stalls << 1 | (waited || !hit);
  atomic_fetch_add(hit ? &t->hits : &t->misses, 1);
  if (hit && p->prefetched)
    atomic_fetch_add(&t->prefetch_hits, 1);
  p->prefetched = false;
  if (rc == 0)
    rc = ct == TIER_GPU ? bind_to(s, p->dev, device_bind_name(t->dev), err)
                        : bind_to(s, p->host, "cpu", err);
  if (rc < 0) {
    p->in_use--;
  } else {
    evict_touch(&p->ev_cpu, t->tick, TIERS_HALF_LIFE);
    if (ct == TIER_GPU)
      evict_touch(&p->ev_gpu, t->tick, TIERS_HALF_LIFE);
  }
  settle_state(s, rc);
  op_end(t, s);
  return rc;
}

int tiers_acquire(tiers *t, slice *s, proto_error *err) {
  return acquire(t, s, true, NULL, err);
}

int tiers_try_acquire(tiers *t, slice *s, uint64_t *seen, proto_error *err) {
  return acquire(t, s, false, seen, err);
}

bool tiers_room_held(tiers *t, uint64_t seen) {
  pthread_mutex_lock(&t->mu);
  bool held = t->n_busy > 0 && t->ops_ended == seen;
  pthread_mutex_unlock(&t->mu);
  return held;
}

void tiers_release(tiers *t, slice *s) {
  pthread_mutex_lock(&t->mu);
  tier_place *p = &s->place;
  /* Its kernels may still be running: whoever reuses its device block
   * waits for this point first (take_spare). A failed mark leaves the
   * fence as it was; the daemon learns of a lost device elsewhere. */
  char msg[DEVICE_ERROR_MAX];
  if (p->dev != NULL && p->bound == p->dev &&
      device_fence_mark(t->dev, &p->fence, msg) < 0)
    log_warn("slice '%s': cannot order the reuse of its device memory: %s",
             s->name, msg);
  p->in_use--;
  pthread_mutex_unlock(&t->mu);
}

static int load_locked(tiers *t, slice *s, int tier, proto_error *err) {
  if (tier == TIER_GPU && t->dev == NULL)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "there is no gpu tier (device %s, gpu_strategy %s)",
                      t->conf.device, gpu_strategy_name(t->conf.strategy));
  if (tier == TIER_DISK && t->conf.disk_cache_path == NULL)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "there is no disk tier (no disk_cache_path)");
  int rc = tier == TIER_DISK && s->place.on_disk ? 0
           : tier == TIER_GPU ? ensure_dev(t, s, TIERS_ROOM_DEMAND, err)
                              : ensure_host(t, s, TIERS_ROOM_DEMAND, NULL, err);
  settle_state(s, rc);
  return rc;
}

int tiers_load(tiers *t, slice *s, int tier, proto_error *err) {
  op_begin(t, s);
  int rc = load_locked(t, s, tier, err);
  op_end(t, s);
  return rc;
}

bool tiers_at_compute(const tiers *t, const slice *s) {
  return atomic_load(&s->place.tier) == tiers__compute_tier(t);
}

void tiers_on_moved(tiers *t, void (*fn)(void *ctx), void *ctx) {
  pthread_mutex_lock(&t->mu);
  t->moved = fn;
  t->moved_ctx = ctx;
  pthread_mutex_unlock(&t->mu);
}

bool tiers_in_motion(tiers *t, slice *s) {
  pthread_mutex_lock(&t->mu);
  tier_place *p = &s->place;
  bool moving = p->busy;
  for (size_t i = 0; !moving && i < t->queued; i++)
    moving = t->queue[i].s == s;
  p->waited_for = p->waited_for || moving;
  pthread_mutex_unlock(&t->mu);
  return moving;
}

bool tiers_wants_stage(const tiers *t, const slice *s) {
  int tier = atomic_load(&s->place.tier);
  if (tier == TIER_GPU || tier == TIER_CPU || atomic_load(&s->removed))
    return false;
  /* A built slice in its cache file streams from disk to the GPU on the
   * executor, the read overlapped with the copy; staged, it would be read
   * whole first. */
  return !(tier == TIER_DISK && tiers__compute_tier(t) == TIER_GPU &&
           atomic_load(&s->state) == SLICE_RESIDENT);
}

int tiers_stage(tiers *t, slice *s, proto_error *err) {
  op_begin(t, s);
  tier_place *p = &s->place;
  int rc = 0;
  if (p->host == NULL && p->dev == NULL && !atomic_load(&s->removed)) {
    if (s->module == NULL)
      rc = tiers__build(t, s, true, err);
    /* On a GPU, a slice its cache file holds is left there, as above. */
    if (rc == 0 && !(p->on_disk && tiers__compute_tier(t) == TIER_GPU))
      rc = ensure_host(t, s, TIERS_ROOM_DEMAND, NULL, err);
    p->staged = rc == 0;
    settle_state(s, rc);
  }
  if (rc == 0)
    atomic_fetch_add(&p->awaited, 1); /* before any other mover sees it */
  op_end(t, s);
  return rc;
}

void tiers_stage_release(slice *s) {
  atomic_fetch_sub(&s->place.awaited, 1);
}

int tiers_evict_for_compute(tiers *t, slice *keep) {
  if (tiers__compute_tier(t) != TIER_GPU)
    return -1;
  pthread_mutex_lock(&t->mu);
  int rc = tiers__evict_one_gpu(t, keep);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int tiers_evict(tiers *t, slice *s, int tier, proto_error *err) {
  pthread_mutex_lock(&t->mu);
  reap(t);
  tiers__claim(t, s);
  tier_place *p = &s->place;
  int rc = 0;
  int pin = atomic_load(&p->pinned_tier);
  if (pin >= 0 && pin < tier) {
    rc = proto_fail(err, SLY_E_BAD_REQUEST,
                    "slice '%s' is pinned at %s; unpin it first", s->name,
                    tier_name(pin));
  } else if (p->in_use > 0) {
    rc = proto_fail(err, SLY_E_BUSY, "slice '%s' is in use", s->name);
  } else {
    if (tier >= TIER_CPU)
      tiers__drop_copy(t, s, TIER_GPU, WHY_EXPLICIT, NULL, NULL);
    if (tier >= TIER_DISK) {
      /* Without a cache file the slice falls to "none" and is rebuilt. */
      tiers__write_cache(t, s, s->place.host, "cpu");
      tiers__drop_copy(t, s, TIER_CPU, WHY_EXPLICIT, NULL, NULL);
    }
    update_tier(s);
  }
  tiers__unclaim(t, s);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int tiers_pin(tiers *t, slice *s, int tier, proto_error *err) {
  op_begin(t, s);
  int rc = load_locked(t, s, tier, err);
  if (rc == 0) {
    atomic_store(&s->place.pinned_tier, tier);
    log_info("slice %s: pinned at %s", s->name, tier_name(tier));
  }
  op_end(t, s);
  return rc;
}

bool tiers_device_lost(tiers *t, bool probe) {
  return device_lost(t->dev, probe);
}

void tiers_unpin(tiers *t, slice *s) {
  (void)t;
  atomic_store(&s->place.pinned_tier, -1);
  log_info("slice %s: unpinned", s->name);
}

void tiers_close(tiers *t) {
  tiers__mover_stop(t);
  pthread_mutex_lock(&t->mu);
  while (t->n_all > 0) {
    slice *s = t->all[t->n_all - 1];
    tier_place *p = &s->place;
    if (p->dev != NULL)
      device_free(t->dev, p->dev, p->bytes);
    if (p->fence != NULL)
      device_fence_free(t->dev, p->fence);
    if (p->host != NULL)
      hostmem_free(p->host, p->bytes, p->host_pinned);
    p->dev = p->host = p->bound = p->fence = NULL;
    tiers__forget_hints(t, s);
    untrack(t, s);
  }
  free(t->all);
  t->all = NULL;
  pthread_mutex_unlock(&t->mu);
  device_close(t->dev);
  t->dev = NULL;
  free(t->conf.device);
  free(t->conf.disk_cache_path);
  memset(&t->conf, 0, sizeof(t->conf));
}
