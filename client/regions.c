/* regions.c — the server regions a connection has mapped (client/).
 *
 * Owns: the table of server regions of a sly_conn (id → mapping), mapping
 * the fds that ride on a reply as the new regions its "outputs" name,
 * unmapping the regions a reply retires, and finding which region (server or
 * arena) holds an address. Server regions are mapped read-only: the outputs
 * in them are the server's until their lease is released.
 */
#include "conn_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reply.h"

const sly__region *sly__region_find(const sly_conn *c, uint64_t id) {
  for (size_t i = 0; i < c->n_regions; i++)
    if (c->regions[i].id == id)
      return &c->regions[i];
  return NULL;
}

sly_arena *sly__arena_by_region(const sly_conn *c, uint64_t id) {
  for (sly_arena *a = c->arenas; a != NULL; a = a->next)
    if (a->region == id)
      return a;
  return NULL;
}

sly_arena *sly__arena_holding(const sly_conn *c, const void *p, size_t bytes) {
  uintptr_t at = (uintptr_t)p;
  for (sly_arena *a = c->arenas; a != NULL; a = a->next) {
    uintptr_t base = (uintptr_t)a->base;
    /* Differences only, so that no sum can wrap. */
    if (at >= base && at - base <= a->size && bytes <= a->size - (at - base))
      return a;
  }
  return NULL;
}

static bool region_known(const sly_conn *c, uint64_t id) {
  return sly__region_find(c, id) != NULL || sly__arena_by_region(c, id) != NULL;
}

/* Whether a live result still has outputs in region `id`. */
static bool region_in_use(const sly_conn *c, uint64_t id, uint64_t *lease) {
  for (const sly_result *r = c->results; r != NULL; r = r->next)
    for (size_t i = 0; i < r->count; i++)
      if (r->regions[i] == id) {
        *lease = r->lease;
        return true;
      }
  return false;
}

/* Unmaps every region in "retired_regions". A retired id that is not a
 * server region of ours, or one whose outputs a live result still shows, is
 * the server breaking the protocol: the mapping is kept so that no view
 * dangles, and the connection dies. */
static int retire(sly_conn *c, const cJSON *list, sly_error *err) {
  if (list == NULL)
    return 0;
  if (!cJSON_IsArray(list))
    return sly__fail(err, SLY_E_PROTOCOL,
                     "reply: \"retired_regions\" is not an array");
  const cJSON *it;
  cJSON_ArrayForEach(it, list) {
    uint64_t id, lease;
    if (!sly__json_u53(it, &id))
      return sly__fail(err, SLY_E_PROTOCOL,
                       "reply: \"retired_regions\" holds a non-integer");
    const sly__region *r = sly__region_find(c, id);
    if (r == NULL)
      return sly__fail(err, SLY_E_PROTOCOL,
                       "reply retires region %llu, which is not a server "
                       "region of this connection",
                       (unsigned long long)id);
    if (region_in_use(c, id, &lease))
      return sly__fail(err, SLY_E_PROTOCOL,
                       "reply retires region %llu, which holds outputs of "
                       "lease %llu, not released",
                       (unsigned long long)id, (unsigned long long)lease);
    munmap(r->base, r->size);
    size_t k = (size_t)(r - c->regions);
    c->regions[k] = c->regions[--c->n_regions];
  }
  return 0;
}

/* The region ids "outputs" names that this connection does not know, in the
 * order they first appear. Malformed descriptors are skipped here: the
 * forward's own parser refuses them. */
static size_t new_region_ids(const sly_conn *c, const cJSON *outputs,
                             uint64_t *ids, size_t max) {
  size_t n = 0;
  if (!cJSON_IsArray(outputs))
    return 0;
  const cJSON *o;
  cJSON_ArrayForEach(o, outputs) {
    uint64_t id;
    if (!cJSON_IsObject(o) || proto_json_u64(o, "region", &id) < 0 ||
        region_known(c, id))
      continue;
    bool seen = false;
    for (size_t i = 0; i < n && !seen; i++)
      seen = ids[i] == id;
    if (seen)
      continue;
    /* More new regions than fds a reply can carry: count them anyway, so
     * that the mismatch is reported. */
    if (n < max)
      ids[n] = id;
    n++;
  }
  return n;
}

static int table_grow(sly_conn *c, size_t more, sly_error *err) {
  if (c->n_regions + more <= c->cap_regions)
    return 0;
  size_t cap = c->cap_regions > 0 ? c->cap_regions : 8;
  while (cap < c->n_regions + more)
    cap *= 2;
  sly__region *t = realloc(c->regions, cap * sizeof(*t));
  if (t == NULL)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  c->regions = t;
  c->cap_regions = cap;
  return 0;
}

/* Maps one server region's fd read-only. The fd is closed by the caller
 * (the reply owns it). */
static int map_one(int fd, uint64_t id, sly__region *out, sly_error *err) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return sly__fail_errno(err, SLY_E_IO, errno, "fstat server region %llu",
                           (unsigned long long)id);
  if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
      (uint64_t)st.st_size > (uint64_t)SIZE_MAX)
    return sly__fail(err, SLY_E_PROTOCOL,
                     "server region %llu is not a non-empty regular file",
                     (unsigned long long)id);
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    int e = errno;
    return sly__fail_errno(err, e == ENOMEM ? SLY_E_NO_MEMORY : SLY_E_IO, e,
                           "mmap server region %llu of %lld bytes",
                           (unsigned long long)id, (long long)st.st_size);
  }
  *out = (sly__region){.id = id, .base = m, .size = (size_t)st.st_size};
  return 0;
}

static void close_fds(sly__reply *rep) {
  for (size_t i = 0; i < rep->n_fds; i++)
    if (rep->fds[i] >= 0)
      close(rep->fds[i]);
  rep->n_fds = 0;
}

/* Retired first: the server releases leases before it runs the request, so
 * an id it retires is never one of the regions the reply brings. */
int sly__regions_update(sly_conn *c, sly__reply *rep, sly_error *err) {
  int rc = retire(
      c, cJSON_GetObjectItemCaseSensitive(rep->json, "retired_regions"), err);
  if (rc < 0) {
    close_fds(rep);
    return rc;
  }
  uint64_t ids[SLY__MAX_REPLY_FDS];
  size_t n =
      new_region_ids(c, cJSON_GetObjectItemCaseSensitive(rep->json, "outputs"),
                     ids, SLY__MAX_REPLY_FDS);
  if (n != rep->n_fds) {
    size_t got = rep->n_fds;
    close_fds(rep);
    return sly__fail(err, SLY_E_PROTOCOL,
                     "reply names %zu new server regions but carries %zu "
                     "file descriptors",
                     n, got);
  }
  if (n > 0 && (rc = table_grow(c, n, err)) < 0) {
    close_fds(rep);
    return rc;
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    rc = map_one(rep->fds[i], ids[i], &c->regions[c->n_regions], err);
    if (rc == 0)
      c->n_regions++;
  }
  close_fds(rep);
  return rc;
}

void sly__regions_drop(sly_conn *c) {
  for (size_t i = 0; i < c->n_regions; i++)
    munmap(c->regions[i].base, c->regions[i].size);
  free(c->regions);
  c->regions = NULL;
  c->n_regions = c->cap_regions = 0;
}
