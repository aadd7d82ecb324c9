/* outpool.c — server regions (memfds) and the leases on them. */
#include "outpool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hostmem.h"

typedef struct {
  uint64_t id;
  int fd; /* -1 once sent to the client */
  uint8_t *base;
  uint64_t bytes;
  uint64_t used;  /* bump pointer */
  uint64_t allocs; /* live allocations */
  bool registered; /* with CUDA, for copies from the GPU at pinned speed */
} out_region;

typedef struct {
  uint64_t region;
  uint64_t bytes;
} out_alloc;

struct outpool_lease {
  outpool_lease *next;
  uint64_t id; /* 0 while open */
  out_alloc *allocs;
  size_t n_allocs;
  uint64_t bytes;
};

struct outpool {
  atomic_int refs;
  atomic_uint_fast64_t next_region_id;
  pthread_mutex_t mu;
  out_region regions[OUTPOOL_MAX_REGIONS];
  size_t n_regions;
  outpool_lease *leases; /* open and committed */
  uint64_t next_lease_id;
  uint64_t live_bytes;
};

outpool *outpool_new(void) {
  outpool *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return NULL;
  atomic_init(&p->refs, 1);
  atomic_init(&p->next_region_id, 1);
  pthread_mutex_init(&p->mu, NULL);
  p->next_lease_id = 1;
  return p;
}

void outpool_ref(outpool *p) { atomic_fetch_add(&p->refs, 1); }

static void region_drop(out_region *r) {
  hostmem_unregister_region(r->base, r->bytes, r->registered);
  munmap(r->base, r->bytes);
  if (r->fd >= 0)
    close(r->fd);
}

void outpool_unref(outpool *p) {
  if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
    return;
  for (size_t i = 0; i < p->n_regions; i++)
    region_drop(&p->regions[i]);
  while (p->leases != NULL) {
    outpool_lease *l = p->leases;
    p->leases = l->next;
    free(l->allocs);
    free(l);
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}

uint64_t outpool_next_region_id(outpool *p) {
  return atomic_fetch_add(&p->next_region_id, 1);
}

outpool_lease *outpool_lease_open(outpool *p) {
  outpool_lease *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return NULL;
  pthread_mutex_lock(&p->mu);
  l->next = p->leases;
  p->leases = l;
  pthread_mutex_unlock(&p->mu);
  return l;
}

static int region_create(outpool *p, uint64_t bytes, out_region *out,
                         proto_error *err) {
  int fd = memfd_create("slyced-out", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return proto_fail(err, SLY_E_NO_MEMORY, "memfd_create: %s",
                      strerror(errno));
  if (ftruncate(fd, (off_t)bytes) < 0) {
    int e = errno;
    close(fd);
    return proto_fail(err, SLY_E_NO_MEMORY, "ftruncate %llu: %s",
                      (unsigned long long)bytes, strerror(e));
  }
  /* The client maps it too: sealed, neither side can shrink it under the
   * other's mapping. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    int e = errno;
    close(fd);
    return proto_fail(err, SLY_E_INTERNAL, "F_ADD_SEALS: %s", strerror(e));
  }
  void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    int e = errno;
    close(fd);
    return proto_fail(err, SLY_E_NO_MEMORY, "mmap %llu: %s",
                      (unsigned long long)bytes, strerror(e));
  }
  *out = (out_region){.id = outpool_next_region_id(p),
                      .fd = fd,
                      .base = base,
                      .bytes = bytes,
                      .registered = hostmem_register_region(base, bytes, false)};
  return 0;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

int outpool_alloc(outpool *p, outpool_lease *l, uint64_t bytes,
                  uint64_t align, uint64_t cap, uint64_t *region,
                  uint64_t *offset, void **ptr, proto_error *err) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  if (bytes > cap || p->live_bytes > cap - bytes) {
    rc = proto_fail(err, SLY_E_BUSY,
                    "unreleased outputs would pass max_output_mb (%llu live "
                    "bytes + %llu); release leases",
                    (unsigned long long)p->live_bytes,
                    (unsigned long long)bytes);
    goto out;
  }
  out_alloc *v = realloc(l->allocs, (l->n_allocs + 1) * sizeof(*v));
  if (v == NULL) {
    rc = proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
    goto out;
  }
  l->allocs = v;

  out_region *r = p->n_regions > 0 ? &p->regions[p->n_regions - 1] : NULL;
  if (r != NULL && r->allocs == 0)
    r->used = 0;
  if (r == NULL || align_up(r->used, align) + bytes > r->bytes) {
    if (p->n_regions == OUTPOOL_MAX_REGIONS) {
      rc = proto_fail(err, SLY_E_BUSY,
                      "the connection holds %d server regions; release "
                      "leases",
                      OUTPOOL_MAX_REGIONS);
      goto out;
    }
    uint64_t size = align_up(bytes > 0 ? bytes : 1, 1u << 20);
    if (size < OUTPOOL_MIN_REGION)
      size = OUTPOOL_MIN_REGION;
    rc = region_create(p, size, &p->regions[p->n_regions], err);
    if (rc < 0)
      goto out;
    r = &p->regions[p->n_regions++];
  }
  uint64_t off = align_up(r->used, align);
  r->used = off + bytes;
  r->allocs++;
  l->allocs[l->n_allocs++] = (out_alloc){.region = r->id, .bytes = bytes};
  l->bytes += bytes;
  p->live_bytes += bytes;
  *region = r->id;
  *offset = off;
  *ptr = r->base + off;
out:
  pthread_mutex_unlock(&p->mu);
  return rc;
}

static out_region *find_region(outpool *p, uint64_t id) {
  for (size_t i = 0; i < p->n_regions; i++)
    if (p->regions[i].id == id)
      return &p->regions[i];
  return NULL;
}

/* Frees the lease's allocations; call with the mutex held. */
static void lease_drop(outpool *p, outpool_lease *l, uint64_t *retired,
                       size_t *n_retired, size_t max) {
  for (outpool_lease **pp = &p->leases; *pp != NULL; pp = &(*pp)->next)
    if (*pp == l) {
      *pp = l->next;
      break;
    }
  for (size_t i = 0; i < l->n_allocs; i++) {
    out_region *r = find_region(p, l->allocs[i].region);
    if (r != NULL && r->allocs > 0)
      r->allocs--;
  }
  p->live_bytes -= l->bytes;
  free(l->allocs);
  free(l);
  /* Retire empty regions other than the newest, keeping order. */
  size_t keep = 0;
  for (size_t i = 0; i < p->n_regions; i++) {
    out_region *r = &p->regions[i];
    bool newest = i + 1 == p->n_regions;
    /* A region whose fd was never sent is unknown to the client: retiring it
     * quietly is fine, and so is keeping it for reuse. */
    if (!newest && r->allocs == 0 && retired != NULL && *n_retired < max) {
      if (r->fd < 0)
        retired[(*n_retired)++] = r->id;
      region_drop(r);
      continue;
    }
    p->regions[keep++] = *r;
  }
  p->n_regions = keep;
}

void outpool_lease_abort(outpool *p, outpool_lease *l) {
  if (l == NULL)
    return;
  pthread_mutex_lock(&p->mu);
  lease_drop(p, l, NULL, NULL, 0);
  pthread_mutex_unlock(&p->mu);
}

uint64_t outpool_lease_commit(outpool *p, outpool_lease *l) {
  pthread_mutex_lock(&p->mu);
  l->id = p->next_lease_id++;
  pthread_mutex_unlock(&p->mu);
  return l->id;
}

size_t outpool_take_new_fds(outpool *p, const uint64_t *ids, size_t n_ids,
                            int *fds, size_t max) {
  size_t n = 0;
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < n_ids && n < max; i++) {
    out_region *r = find_region(p, ids[i]);
    if (r == NULL || r->fd < 0)
      continue;
    fds[n++] = r->fd; /* handed over: the reply closes it once sent */
    r->fd = -1;
  }
  pthread_mutex_unlock(&p->mu);
  return n;
}

int outpool_release(outpool *p, uint64_t lease, uint64_t *retired,
                    size_t *n_retired, size_t max, proto_error *err) {
  pthread_mutex_lock(&p->mu);
  outpool_lease *l = p->leases;
  while (l != NULL && l->id != lease)
    l = l->next;
  if (l == NULL || lease == 0) {
    pthread_mutex_unlock(&p->mu);
    return proto_fail(err, SLY_E_NOT_FOUND, "no lease %llu on this connection",
                      (unsigned long long)lease);
  }
  lease_drop(p, l, retired, n_retired, max);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

bool outpool_has_lease(outpool *p, uint64_t lease) {
  pthread_mutex_lock(&p->mu);
  outpool_lease *l = p->leases;
  while (l != NULL && l->id != lease)
    l = l->next;
  pthread_mutex_unlock(&p->mu);
  return l != NULL && lease != 0;
}

bool outpool_has_region(outpool *p, uint64_t id) {
  pthread_mutex_lock(&p->mu);
  bool has = find_region(p, id) != NULL;
  pthread_mutex_unlock(&p->mu);
  return has;
}

uint64_t outpool_live_bytes(outpool *p) {
  pthread_mutex_lock(&p->mu);
  uint64_t n = p->live_bytes;
  pthread_mutex_unlock(&p->mu);
  return n;
}
