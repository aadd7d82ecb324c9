/* tiers.c — placing weight blobs across GPU, CPU and disk under budgets. */
#include "tiers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "hostmem.h"
#include "log.h"
#include "slices.h"
#include "torch_shim.h"

/* Logical clock for recency: one tick per residency request. Half-life in
 * ticks of the decayed use score. */
#define TIERS_HALF_LIFE 64.0
/* Device allocation failures are met by evicting one more and retrying. */
#define TIERS_ALLOC_RETRIES 8

enum { WHY_POLICY, WHY_EXPLICIT, WHY_REPLACED, WHY_FAILED };
static const char *const why_names[] = {"policy", "explicit", "removed",
                                        "failed"};

const char *tier_name(int t) {
  static const char *const names[] = {"gpu", "cpu", "disk", "none"};
  return t >= 0 && t <= TIER_NONE ? names[t] : "none";
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void path_add(tier_path_stats *p, uint64_t bytes, uint64_t ns) {
  atomic_fetch_add(&p->bytes, bytes);
  atomic_fetch_add(&p->ns, ns);
}

static double gbps(uint64_t bytes, uint64_t ns) {
  return ns == 0 ? 0.0 : (double)bytes / (double)ns;
}

static uint64_t mib(uint64_t v) { return v * 1024 * 1024; }

static uint64_t gpu_budget(const tiers *t) {
  const tiers_conf *c = &t->conf;
  if (c->strategy == GPU_STRATEGY_LIMIT_GPU)
    return mib(c->max_gpu_mem_mb - c->gpu_reserve_mb);
  return mib(c->max_gpu_mem_mb); /* active_only: also limited by count */
}

static uint64_t cpu_budget(const tiers *t) {
  return t->conf.max_cpu_mem_mb > 0 ? mib(t->conf.max_cpu_mem_mb) : UINT64_MAX;
}

static int compute_tier(const tiers *t) { return t->dev ? TIER_GPU : TIER_CPU; }

static int highest_tier(const tier_place *p) {
  return p->dev ? TIER_GPU : p->host ? TIER_CPU : p->on_disk ? TIER_DISK
                                                             : TIER_NONE;
}

static void update_tier(slice *s) {
  atomic_store(&s->place.tier, highest_tier(&s->place));
}

int tiers_init(tiers *t, const config *cfg, char err[256]) {
  memset(t, 0, sizeof(*t));
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
  if (gpu) {
    char derr[DEVICE_ERROR_MAX];
    if (device_open(c->device, gpu_budget(t), c->sim_copy_gbps, &t->dev,
                    derr) < 0) {
      snprintf(err, 256, "device %.32s: %.200s", c->device, derr);
      return -1;
    }
  }
  /* After the device: pinning creates a CUDA context on the current one.
   * (On cuda:N with N > 0 the executor thread's first pin may still land on
   * device 0: written, not verified on a multi-GPU machine.) */
  hostmem_init(t->dev != NULL && !device_is_sim(t->dev), HOSTMEM_REGISTER);
  if (c->disk_cache_path != NULL) {
    if (mkdir(c->disk_cache_path, 0750) < 0 && errno != EEXIST) {
      snprintf(err, 256, "disk_cache_path %s: %s", c->disk_cache_path,
               strerror(errno));
      return -1;
    }
    int n = diskcache_sweep(c->disk_cache_path);
    if (n > 0)
      log_info("disk cache %s: removed %d temp files left by a crash",
               c->disk_cache_path, n);
  }
  return 0;
}

static void track(tiers *t, slice *s) {
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

/* Frees one copy of the slice. A slice left with no copy anywhere loses its
 * module too and is rebuilt when next needed. */
static void drop_copy(tiers *t, slice *s, int tier, int why) {
  tier_place *p = &s->place;
  if (tier == TIER_GPU && p->dev != NULL) {
    if (p->bound == p->dev)
      p->bound = NULL;
    device_free(t->dev, p->dev, p->bytes);
    p->dev = NULL;
    atomic_fetch_sub(&t->gpu_used, p->bytes);
  } else if (tier == TIER_CPU && p->host != NULL) {
    if (p->bound == p->host)
      p->bound = NULL;
    hostmem_free(p->host, p->bytes, p->host_pinned);
    p->host = NULL;
    atomic_fetch_sub(&t->cpu_used, p->bytes);
    if (p->host_pinned)
      atomic_fetch_sub(&t->cpu_pinned, p->bytes);
  } else {
    return;
  }
  atomic_fetch_add(&t->evictions[why], 1);
  log_info("evict slice=%s from=%s bytes=%llu why=%s", s->name,
           tier_name(tier), (unsigned long long)p->bytes, why_names[why]);
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

/* The measured bandwidth of a path, or a guess until it has been used: the
 * policy only compares these, so the guesses need only be in order. */
static double path_gbps(const tier_path_stats *p, double guess) {
  uint64_t b = atomic_load(&p->bytes), ns = atomic_load(&p->ns);
  return b >= (16u << 20) && ns > 0 ? (double)b / (double)ns : guess;
}

/* How fast a copy evicted from `tier` would come back: from the host for the
 * GPU when a host copy stays, else from disk, else by building it again. */
static double reload_gbps(tiers *t, const slice *s, int tier) {
  const tier_place *p = &s->place;
  if (tier == TIER_GPU && p->host != NULL)
    return path_gbps(&t->cpu_to_gpu, 20.0);
  if (p->on_disk)
    return path_gbps(&t->disk_to_cpu, 1.0);
  return path_gbps(&t->build, 0.2);
}

/* Frees `need` bytes in `tier` (over what is free under its budget) by
 * evicting other slices; `keep` is never chosen. */
static int make_room(tiers *t, int tier, uint64_t need, slice *keep,
                     proto_error *err) {
  uint64_t budget = tier == TIER_GPU ? gpu_budget(t) : cpu_budget(t);
  uint64_t used = atomic_load(tier == TIER_GPU ? &t->gpu_used : &t->cpu_used);
  if (need > budget) {
    proto_fail(err, SLY_E_NO_MEMORY,
               "slice '%s' needs %llu bytes; the %s budget is %llu",
               keep->name, (unsigned long long)need, tier_name(tier),
               (unsigned long long)budget);
    err->has_needed = true;
    err->needed = need;
    return SLY_E_NO_MEMORY;
  }
  bool active_only =
      tier == TIER_GPU && t->conf.strategy == GPU_STRATEGY_ACTIVE_ONLY;
  if (used + need <= budget && !active_only)
    return 0;

  evict_candidate *c = calloc(t->n_all + 1, sizeof(*c));
  size_t *idx = calloc(t->n_all + 1, sizeof(*idx));
  size_t *order = calloc(t->n_all + 1, sizeof(*order));
  evict_reason *why = calloc(t->n_all + 1, sizeof(*why));
  if (c == NULL || idx == NULL || order == NULL || why == NULL) {
    free(c), free(idx), free(order), free(why);
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  size_t n = 0;
  for (size_t i = 0; i < t->n_all; i++) {
    slice *o = t->all[i];
    tier_place *p = &o->place;
    if (o == keep || (tier == TIER_GPU ? p->dev : p->host) == NULL)
      continue;
    c[n] = tier == TIER_GPU ? p->ev_gpu : p->ev_cpu;
    c[n].bytes = p->bytes;
    c[n].reload_gbps = reload_gbps(t, o, tier);
    int pin = atomic_load(&p->pinned_tier);
    c[n].pinned = pin == tier; /* pinned at T keeps its copy at T */
    c[n].in_use = p->in_use > 0;
    c[n].needed_next = p->needed_next;
    idx[n++] = i;
  }
  uint64_t want = used + need > budget ? used + need - budget : 0;
  if (active_only) {
    /* active_only keeps nothing on the GPU but the running slice and what
     * is being brought in for it: every other copy that may go, goes. */
    uint64_t eligible = 0;
    for (size_t i = 0; i < n; i++)
      if (!c[i].pinned && !c[i].in_use && !c[i].needed_next)
        eligible += c[i].bytes;
    if (eligible > want)
      want = eligible;
  }
  int k = evict_choose(c, n, want, t->tick, TIERS_HALF_LIFE, order, why);
  if (k < 0 && active_only && used + need <= budget) {
    k = 0; /* nothing else may go, and it fits anyway */
  } else if (k < 0) {
    /* Only the slice a pipeline needs next could make room: better to
     * reload it later than to refuse a request that fits. */
    want = used + need > budget ? used + need - budget : 0;
    for (size_t i = 0; i < n; i++)
      c[i].needed_next = false;
    k = evict_choose(c, n, want, t->tick, TIERS_HALF_LIFE, order, why);
  }
  int rc = 0;
  if (k < 0) {
    uint64_t stuck = 0;
    for (size_t i = 0; i < n; i++)
      if (c[i].pinned || c[i].in_use)
        stuck += c[i].bytes;
    used = stuck;
    rc = proto_fail(err, SLY_E_NO_MEMORY,
                    "no room for slice '%s' (%llu bytes) in the %s tier: "
                    "%llu of %llu bytes used by pinned or busy slices",
                    keep->name, (unsigned long long)need, tier_name(tier),
                    (unsigned long long)used, (unsigned long long)budget);
    err->has_needed = true;
    err->needed = need;
  } else {
    /* Take the victims out first: the array they live in may move. */
    slice **victims = calloc((size_t)k + 1, sizeof(*victims));
    for (int j = 0; victims != NULL && j < k; j++) {
      victims[j] = t->all[idx[order[j]]];
      slice_ref(victims[j]);
    }
    for (int j = 0; victims != NULL && j < k; j++) {
      drop_copy(t, victims[j], tier, WHY_POLICY);
      slice_unref(victims[j]);
    }
    free(victims);
  }
  free(c), free(idx), free(order), free(why);
  return rc;
}

static void source_stat(const slice *s, uint64_t *size, int64_t *mtime_ns) {
  *size = 0;
  *mtime_ns = 0;
  const cJSON *path = cJSON_GetObjectItemCaseSensitive(s->config, "path");
  if (!cJSON_IsString(path))
    path = cJSON_GetObjectItemCaseSensitive(s->config, "weights");
  if (!cJSON_IsString(path))
    return;
  char full[4096];
  if (path->valuestring[0] == '/')
    snprintf(full, sizeof(full), "%s", path->valuestring);
  else
    snprintf(full, sizeof(full), "%s/%s", s->config_dir, path->valuestring);
  struct stat st;
  if (stat(full, &st) == 0) {
    *size = (uint64_t)st.st_size;
    *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  }
}

/* cJSON objects in key order, so that equal configs print equal. */
static void sort_json(cJSON *j) {
  if (j == NULL)
    return;
  for (cJSON *c = j->child; c != NULL; c = c->next)
    sort_json(c);
  if (!cJSON_IsObject(j))
    return;
  /* Insertion sort of the child list by key. */
  cJSON *sorted = NULL;
  cJSON *c = j->child;
  while (c != NULL) {
    cJSON *next = c->next;
    cJSON **pp = &sorted;
    while (*pp != NULL && strcmp((*pp)->string, c->string) < 0)
      pp = &(*pp)->next;
    c->next = *pp;
    *pp = c;
    c = next;
  }
  cJSON *prev = NULL;
  for (c = sorted; c != NULL; c = c->next) {
    c->prev = prev;
    prev = c;
  }
  if (sorted != NULL)
    sorted->prev = prev; /* cJSON keeps the tail in the head's prev */
  j->child = sorted;
}

/* Builds the module, keeps its layout and computes its cache key. */
static int build(tiers *t, slice *s, proto_error *err) {
  char msg[SHIM_ERROR_MAX];
  uint64_t t0 = now_ns();
  atomic_store(&s->state, SLICE_LOADING);
  shim_module *m;
  int rc = shim_module_create(s->constructor, s->config, s->config_dir, "cpu",
                              &m, msg);
  if (rc < 0) {
    atomic_store(&s->state, SLICE_FAILED);
    log_error("slice %s: build failed: %s", s->name, msg);
    return proto_fail(err, rc, "%s", msg);
  }
  tier_place *p = &s->place;
  size_t n = shim_module_blob_tensors(m);
  diskcache_entry *e = calloc(n > 0 ? n : 1, sizeof(*e));
  if (e == NULL) {
    shim_module_free(m);
    atomic_store(&s->state, SLICE_UNLOADED);
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    shim_blob_entry be;
    shim_module_blob_entry(m, i, &be);
    e[i] = (diskcache_entry){.name = be.name,
                             .dtype = be.dtype,
                             .ndim = be.ndim,
                             .offset = be.offset,
                             .nbytes = be.nbytes};
    memcpy(e[i].shape, be.shape, sizeof(e[i].shape));
  }
  s->module = m;
  p->entries = e;
  p->n_entries = n;
  p->bytes = shim_module_blob_bytes(m);
  atomic_store(&s->bytes, p->bytes);
  atomic_fetch_add(&s->loads, 1);

  cJSON *canon = cJSON_Duplicate(s->config, 1);
  sort_json(canon);
  char *canon_s = canon ? cJSON_PrintUnformatted(canon) : NULL;
  uint64_t size;
  int64_t mtime;
  source_stat(s, &size, &mtime);
  diskcache_layout l = {.entries = e, .n_entries = n, .blob_bytes = p->bytes};
  diskcache_key(s->constructor, canon_s ? canon_s : "", size, mtime, &l,
                shim_torch_version(), p->key);
  free(canon_s);
  cJSON_Delete(canon);
  p->on_disk = t->conf.disk_cache_path != NULL &&
               diskcache_exists(t->conf.disk_cache_path, p->key);
  uint64_t ns = now_ns() - t0;
  path_add(&t->build, p->bytes, ns);
  log_info("slice %s: built (%s, %llu bytes in %zu tensors, %.1f ms)%s",
           s->name, s->constructor, (unsigned long long)p->bytes, n,
           (double)ns / 1e6, p->on_disk ? "; a cache file exists" : "");
  return 0;
}

static void log_move(const slice *s, const char *from, const char *to,
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

static void write_cache(tiers *t, slice *s) {
  tier_place *p = &s->place;
  if (t->conf.disk_cache_path == NULL || p->on_disk)
    return;
  char msg[DISKCACHE_ERROR_MAX];
  diskcache_layout l = {.entries = p->entries,
                        .n_entries = p->n_entries,
                        .blob_bytes = p->bytes};
  memcpy(l.key, p->key, sizeof(l.key));
  uint64_t t0 = now_ns();
  int rc = diskcache_write(t->conf.disk_cache_path, &l, p->host, msg);
  if (rc < 0) {
    /* The slice still serves from memory; it is rebuilt if evicted. */
    log_warn("slice %s: cannot write its cache file: %s", s->name, msg);
    return;
  }
  p->on_disk = true;
  atomic_fetch_add(&t->disk_used, p->bytes);
  log_move(s, "cpu", "disk", p->bytes, now_ns() - t0);
}

static int ensure_host(tiers *t, slice *s, proto_error *err) {
  tier_place *p = &s->place;
  if (p->host != NULL)
    return 0;
  /* Weights are never copied back from the GPU: without a host copy or a
   * cache file the slice is built again. */
  if (s->module != NULL && shim_module_blob_data(s->module) == NULL &&
      !p->on_disk)
    discard_module(s);
  if (s->module == NULL) {
    int rc = build(t, s, err);
    if (rc < 0)
      return rc;
  }
  const void *fresh = shim_module_blob_data(s->module);
  int rc = make_room(t, TIER_CPU, p->bytes, s, err);
  bool pinned = false;
  void *h = rc < 0 ? NULL : hostmem_alloc(p->bytes, &pinned);
  if (rc == 0 && h == NULL) {
    proto_fail(err, SLY_E_NO_MEMORY, "slice '%s': no host memory for %llu "
               "bytes", s->name, (unsigned long long)p->bytes);
    err->has_needed = true;
    err->needed = p->bytes;
    rc = SLY_E_NO_MEMORY;
  }
  if (rc < 0) {
    /* A module just built must not stay outside every budget. */
    if (fresh != NULL) {
      discard_module(s);
      atomic_store(&s->state, SLICE_UNLOADED);
    }
    return rc;
  }
  uint64_t t0 = now_ns();
  bool have = false;
  if (p->on_disk) {
    /* A valid cache file is what the slice is served from, also right after
     * a restart; a bad one is dropped (and the fresh build used). */
    char msg[DISKCACHE_ERROR_MAX];
    diskcache_layout l = {.entries = p->entries,
                          .n_entries = p->n_entries,
                          .blob_bytes = p->bytes};
    memcpy(l.key, p->key, sizeof(l.key));
    rc = diskcache_read(t->conf.disk_cache_path, &l, h, 0, msg);
    if (rc == 0) {
      uint64_t ns = now_ns() - t0;
      path_add(&t->disk_to_cpu, p->bytes, ns);
      log_move(s, "disk", "cpu", p->bytes, ns);
      have = true;
    } else {
      log_warn("slice %s: cache file %s: %s; building it again", s->name,
               p->key, msg);
      if (rc != -EBADMSG && rc != -ENOENT) {
        hostmem_free(h, p->bytes, pinned);
        return proto_fail(err, SLY_E_UNAVAILABLE,
                          "slice '%s': reading its cache file: %s", s->name,
                          msg);
      }
      p->on_disk = false;
      if (fresh == NULL) {
        hostmem_free(h, p->bytes, pinned);
        discard_module(s);
        return ensure_host(t, s, err);
      }
    }
  }
  if (!have)
    memcpy(h, fresh, p->bytes);
  p->host = h;
  p->host_pinned = pinned;
  atomic_fetch_add(&t->cpu_used, p->bytes);
  if (pinned)
    atomic_fetch_add(&t->cpu_pinned, p->bytes);
  if (fresh != NULL) {
    /* Binding frees the shim's own copy: from here on the tiers own it. */
    rc = bind_to(s, h, "cpu", err);
    if (rc < 0)
      return rc;
    write_cache(t, s);
  }
  update_tier(s);
  return 0;
}

/* Evicts the lowest-value other copy on the GPU; for allocation failures
 * that the budget did not foresee (fragmentation, another process). */
static int evict_one_gpu(tiers *t, slice *keep) {
  slice *victim = NULL;
  double best = 0;
  for (size_t i = 0; i < t->n_all; i++) {
    slice *o = t->all[i];
    tier_place *p = &o->place;
    int pin = atomic_load(&p->pinned_tier);
    if (o == keep || p->dev == NULL || p->in_use > 0 || p->needed_next ||
        pin == TIER_GPU)
      continue;
    double v = evict_value(&p->ev_gpu, t->tick, TIERS_HALF_LIFE);
    if (victim == NULL || v < best) {
      victim = o;
      best = v;
    }
  }
  if (victim == NULL)
    return -1;
  drop_copy(t, victim, TIER_GPU, WHY_FAILED);
  return 0;
}

static int ensure_dev(tiers *t, slice *s, proto_error *err) {
  tier_place *p = &s->place;
  if (p->dev != NULL)
    return 0;
  int rc = ensure_host(t, s, err);
  if (rc == 0)
    rc = make_room(t, TIER_GPU, p->bytes, s, err);
  if (rc < 0)
    return rc;
  char msg[DEVICE_ERROR_MAX];
  void *d = NULL;
  for (int i = 0;; i++) {
    rc = device_alloc(t->dev, p->bytes, &d, msg);
    if (rc == 0)
      break;
    if (rc != SLY_E_NO_MEMORY || i == TIERS_ALLOC_RETRIES ||
        evict_one_gpu(t, s) < 0) {
      proto_fail(err, rc, "slice '%s': %s", s->name, msg);
      if (rc == SLY_E_NO_MEMORY) {
        err->has_needed = true;
        err->needed = p->bytes;
      }
      return rc;
    }
  }
  uint64_t t0 = now_ns();
  rc = device_copy_in(t->dev, d, p->host, p->bytes, msg);
  if (rc < 0) {
    device_free(t->dev, d, p->bytes);
    return proto_fail(err, rc, "slice '%s': copy to %s: %s", s->name,
                      t->conf.device, msg);
  }
  uint64_t ns = now_ns() - t0;
  path_add(&t->cpu_to_gpu, p->bytes, ns);
  log_move(s, "cpu", "gpu", p->bytes, ns);
  p->dev = d;
  atomic_fetch_add(&t->gpu_used, p->bytes);
  update_tier(s);
  return 0;
}

/* Frees every copy of a slice that is going away and stops tracking it. */
static void forget(tiers *t, slice *s) {
  drop_copy(t, s, TIER_GPU, WHY_REPLACED);
  drop_copy(t, s, TIER_CPU, WHY_REPLACED);
  untrack(t, s);
}

/* Slices taken out of the registry give their memory back here, on the
 * executor thread, the next time the tiers are asked for anything. */
static void reap(tiers *t) {
  for (size_t i = 0; i < t->n_all;) {
    if (atomic_load(&t->all[i]->removed))
      forget(t, t->all[i]); /* untrack swaps the last one into i */
    else
      i++;
  }
}

int tiers_make_resident(tiers *t, slice *s, proto_error *err) {
  reap(t);
  t->tick++;
  track(t, s);
  tier_place *p = &s->place;
  int ct = compute_tier(t);
  bool hit = ct == TIER_GPU ? p->dev != NULL : p->host != NULL;
  atomic_fetch_add(hit ? &t->hits : &t->misses, 1);
  p->in_use++;
  int rc = ct == TIER_GPU ? ensure_dev(t, s, err) : ensure_host(t, s, err);
  if (rc == 0)
    rc = ct == TIER_GPU ? bind_to(s, p->dev, device_bind_name(t->dev), err)
                        : bind_to(s, p->host, "cpu", err);
  p->in_use--;
  if (rc < 0) {
    if (atomic_load(&s->state) == SLICE_LOADING)
      atomic_store(&s->state, s->module ? SLICE_RESIDENT : SLICE_UNLOADED);
    return rc;
  }
  evict_touch(&p->ev_cpu, t->tick, TIERS_HALF_LIFE);
  if (ct == TIER_GPU)
    evict_touch(&p->ev_gpu, t->tick, TIERS_HALF_LIFE);
  atomic_store(&s->state, SLICE_RESIDENT);
  update_tier(s);
  return 0;
}

void tiers_set_needed_next(slice *s, bool needed) {
  s->place.needed_next = needed;
}

int tiers_load(tiers *t, slice *s, int tier, proto_error *err) {
  reap(t);
  t->tick++;
  track(t, s);
  int rc;
  if (tier == TIER_GPU) {
    if (t->dev == NULL)
      return proto_fail(err, SLY_E_BAD_REQUEST,
                        "there is no gpu tier (device %s, gpu_strategy "
                        "%s)",
                        t->conf.device, gpu_strategy_name(t->conf.strategy));
    rc = ensure_dev(t, s, err);
  } else if (tier == TIER_CPU) {
    rc = ensure_host(t, s, err);
  } else {
    if (t->conf.disk_cache_path == NULL)
      return proto_fail(err, SLY_E_BAD_REQUEST,
                        "there is no disk tier (no disk_cache_path)");
    rc = s->place.on_disk ? 0 : ensure_host(t, s, err);
  }
  if (rc == 0 && atomic_load(&s->state) != SLICE_FAILED)
    atomic_store(&s->state, SLICE_RESIDENT);
  update_tier(s);
  return rc;
}

int tiers_evict(tiers *t, slice *s, int tier, proto_error *err) {
  reap(t);
  tier_place *p = &s->place;
  int pin = atomic_load(&p->pinned_tier);
  if (pin >= 0 && pin < tier)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "slice '%s' is pinned at %s; unpin it first", s->name,
                      tier_name(pin));
  if (p->in_use > 0)
    return proto_fail(err, SLY_E_BUSY, "slice '%s' is in use", s->name);
  if (tier >= TIER_CPU)
    drop_copy(t, s, TIER_GPU, WHY_EXPLICIT);
  if (tier >= TIER_DISK) {
    /* Without a cache file the slice falls to "none" and is rebuilt. */
    if (p->host != NULL && !p->on_disk)
      write_cache(t, s);
    drop_copy(t, s, TIER_CPU, WHY_EXPLICIT);
  }
  update_tier(s);
  return 0;
}

int tiers_pin(tiers *t, slice *s, int tier, proto_error *err) {
  int rc = tiers_load(t, s, tier, err);
  if (rc == 0) {
    atomic_store(&s->place.pinned_tier, tier);
    log_info("slice %s: pinned at %s", s->name, tier_name(tier));
  }
  return rc;
}

void tiers_unpin(tiers *t, slice *s) {
  (void)t;
  atomic_store(&s->place.pinned_tier, -1);
  log_info("slice %s: unpinned", s->name);
}

void tiers_close(tiers *t) {
  while (t->n_all > 0) {
    slice *s = t->all[t->n_all - 1];
    tier_place *p = &s->place;
    if (p->dev != NULL)
      device_free(t->dev, p->dev, p->bytes);
    if (p->host != NULL)
      hostmem_free(p->host, p->bytes, p->host_pinned);
    p->dev = p->host = p->bound = NULL;
    untrack(t, s);
  }
  free(t->all);
  t->all = NULL;
  device_close(t->dev);
  t->dev = NULL;
  free(t->conf.device);
  free(t->conf.disk_cache_path);
  memset(&t->conf, 0, sizeof(t->conf));
}

static void add_path(cJSON *o, const char *name, tier_path_stats *p) {
  cJSON *j = cJSON_AddObjectToObject(o, name);
  uint64_t b = atomic_load(&p->bytes), ns = atomic_load(&p->ns);
  cJSON_AddNumberToObject(j, "bytes", (double)b);
  cJSON_AddNumberToObject(j, "seconds", (double)ns / 1e9);
  cJSON_AddNumberToObject(j, "gbps", gbps(b, ns));
}

void tiers_stats_json(tiers *t, cJSON *reply) {
  cJSON *mem = cJSON_AddObjectToObject(reply, "memory");
  cJSON *gpu = cJSON_AddObjectToObject(mem, "gpu");
  if (t->dev != NULL) {
    device_stats ds;
    device_get_stats(t->dev, &ds);
    cJSON_AddNumberToObject(gpu, "used", (double)atomic_load(&t->gpu_used));
    cJSON_AddNumberToObject(gpu, "budget", (double)gpu_budget(t));
    cJSON_AddNumberToObject(gpu, "high_water", (double)ds.high_water);
    cJSON_AddNumberToObject(gpu, "device_free", (double)ds.free_bytes);
    cJSON_AddNumberToObject(gpu, "device_total", (double)ds.total_bytes);
  } else {
    cJSON_AddNumberToObject(gpu, "used", 0);
    cJSON_AddNumberToObject(gpu, "budget", 0);
  }
  cJSON *cpu = cJSON_AddObjectToObject(mem, "cpu");
  cJSON_AddNumberToObject(cpu, "used", (double)atomic_load(&t->cpu_used));
  cJSON_AddNumberToObject(
      cpu, "budget", t->conf.max_cpu_mem_mb ? (double)cpu_budget(t) : 0.0);
  cJSON_AddNumberToObject(cpu, "pinned", (double)atomic_load(&t->cpu_pinned));
  cJSON *disk = cJSON_AddObjectToObject(mem, "disk");
  cJSON_AddNumberToObject(disk, "written", (double)atomic_load(&t->disk_used));
  cJSON *tr = cJSON_AddObjectToObject(reply, "transfers");
  add_path(tr, "disk_to_cpu", &t->disk_to_cpu);
  add_path(tr, "cpu_to_gpu", &t->cpu_to_gpu);
  add_path(tr, "build", &t->build);
  cJSON_AddNumberToObject(reply, "hits", (double)atomic_load(&t->hits));
  cJSON_AddNumberToObject(reply, "misses", (double)atomic_load(&t->misses));
  cJSON *ev = cJSON_AddObjectToObject(reply, "evictions");
  for (int i = 0; i < 4; i++)
    cJSON_AddNumberToObject(ev, why_names[i],
                            (double)atomic_load(&t->evictions[i]));
}
