/* tiers_build.c — building a slice's module, its cache key and cache file.
 *
 * Called with the tiers' mutex held and the slice claimed; the mutex is
 * dropped while libtorch builds the module or the file is written, since
 * both can take seconds and nothing they touch is shared.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "tiers_internal.h"
#include "torch_shim.h"

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

/* The blob layout of a freshly built module, as the cache file records it. */
static diskcache_entry *layout_of(shim_module *m, size_t *n_out) {
  size_t n = shim_module_blob_tensors(m);
  diskcache_entry *e = calloc(n > 0 ? n : 1, sizeof(*e));
  if (e == NULL)
    return NULL;
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
  *n_out = n;
  return e;
}

static void cache_key(const tiers *t, slice *s, bool use_cache) {
  tier_place *p = &s->place;
  cJSON *canon = cJSON_Duplicate(s->config, 1);
  sort_json(canon);
  char *canon_s = canon ? cJSON_PrintUnformatted(canon) : NULL;
  uint64_t size;
  int64_t mtime;
  source_stat(s, &size, &mtime);
  diskcache_layout l = {
      .entries = p->entries, .n_entries = p->n_entries, .blob_bytes = p->bytes};
  diskcache_key(s->constructor, canon_s ? canon_s : "", size, mtime, &l,
                shim_torch_version(), p->key);
  free(canon_s);
  cJSON_Delete(canon);
  p->on_disk = use_cache && t->conf.disk_cache_path != NULL &&
               diskcache_exists(t->conf.disk_cache_path, p->key);
}

int tiers__build(tiers *t, slice *s, bool use_cache, proto_error *err) {
  char msg[SHIM_ERROR_MAX];
  atomic_store(&s->state, SLICE_LOADING);
  pthread_mutex_unlock(&t->mu);
  uint64_t t0 = tiers__now_ns();
  shim_module *m;
  /* Declared only: the weights are read or drawn from the seed only when no
   * cache file holds them. */
  int rc = shim_module_create_deferred(s->constructor, s->config,
                                       s->config_dir, "cpu", &m, msg);
  size_t n = 0;
  diskcache_entry *e = rc < 0 ? NULL : layout_of(m, &n);
  if (rc == 0 && e == NULL) {
    shim_module_free(m);
    rc = SLY_E_NO_MEMORY;
    snprintf(msg, sizeof(msg), "out of memory");
  }
  tier_place *p = &s->place;
  proto_error refusal;
  bool over_budget = false;
  if (rc == 0) {
    s->module = m;
    p->entries = e;
    p->n_entries = n;
    p->bytes = shim_module_blob_bytes(m);
    cache_key(t, s, use_cache);
    /* Its values are made in host memory: a slice that cannot fit there is
     * refused before a built-in's are read or drawn, which takes seconds
     * for a big one (ensure_host would refuse it all the same, afterwards;
     * a TorchScript file has been loaded whole by now). */
    over_budget = !p->on_disk && tiers__over_budget(t, TIER_CPU, s, p->bytes,
                                                    &refusal) < 0;
    if (over_budget) {
      rc = SLY_E_NO_MEMORY;
      snprintf(msg, sizeof(msg), "%s", refusal.message);
    } else if (!p->on_disk) {
      rc = shim_module_fill(m, msg);
    } else {
      /* The cache file's bytes are what it will be bound to: a TorchScript
       * file's values, loaded whole, go now rather than after the host
       * block is reserved beside them. */
      shim_module_drop_values(m);
    }
    if (rc < 0) {
      shim_module_free(m);
      s->module = NULL;
      free(p->entries);
      p->entries = NULL;
      p->n_entries = 0;
    }
  }
  uint64_t ns = tiers__now_ns() - t0;
  pthread_mutex_lock(&t->mu);
  if (rc < 0) {
    atomic_store(&s->state, rc == SLY_E_NO_MEMORY ? SLICE_UNLOADED
                                                  : SLICE_FAILED);
    log_error("slice %s: build failed: %s", s->name, msg);
    if (over_budget && err != NULL)
      *err = refusal;
    else
      proto_fail(err, rc, "%s", msg);
    return rc;
  }
  atomic_store(&s->bytes, p->bytes);
  tiers__path_add(&t->build, p->bytes, ns);
  const char *how =
      p->on_disk ? (shim_module_filled(s->module)
                        ? "; a cache file exists"
                        : "; a cache file exists, its weights come from there")
      : cJSON_IsString(cJSON_GetObjectItemCaseSensitive(s->config, "weights"))
          ? "; weights read from its weights file"
          : "";
  log_info("slice %s: built (%s, %llu bytes in %zu tensors, %.1f ms)%s",
           s->name, s->constructor, (unsigned long long)p->bytes, n,
           (double)ns / 1e6, how);
  return 0;
}

void tiers__write_cache(tiers *t, slice *s, const void *blob,
                        const char *from) {
  tier_place *p = &s->place;
  if (t->conf.disk_cache_path == NULL || p->on_disk || blob == NULL)
    return;
  char msg[DISKCACHE_ERROR_MAX];
  diskcache_layout l = {
      .entries = p->entries, .n_entries = p->n_entries, .blob_bytes = p->bytes};
  memcpy(l.key, p->key, sizeof(l.key));
  pthread_mutex_unlock(&t->mu);
  uint64_t t0 = tiers__now_ns();
  int rc = diskcache_write(t->conf.disk_cache_path, &l, blob, msg);
  uint64_t ns = tiers__now_ns() - t0;
  pthread_mutex_lock(&t->mu);
  if (rc < 0) {
    /* The slice still serves from memory; it is rebuilt if evicted. */
    log_warn("slice %s: cannot write its cache file: %s", s->name, msg);
    return;
  }
  p->on_disk = true;
  atomic_fetch_add(&t->disk_used, p->bytes);
  tiers__log_move(s, from, "disk", p->bytes, ns);
}
