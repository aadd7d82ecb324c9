/* arena.c — shared-memory arenas registered with slyced (client/).
 *
 * Owns: sly_arena, one sealed memfd mapped here and handed to the server with
 * map_region, and bump allocation inside it. The fd is closed once the server
 * holds it: the mapping keeps the memory alive on both sides, and a client
 * that kept the fd could only do harm with it (the seals already forbid
 * shrinking or growing).
 */
#include "conn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "reply.h"

/* A memfd of `bytes`, sealed so that neither side can change its size (the
 * server requires F_SEAL_SHRINK; F_SEAL_SEAL keeps the seals as they are). */
static int sealed_memfd(size_t bytes, int *out, sly_error *err) {
  int fd = memfd_create("slyce-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return sly__fail_errno(err, SLY_E_IO, errno, "memfd_create");
  if (ftruncate(fd, (off_t)bytes) < 0) {
    int e = errno;
    close(fd);
    return sly__fail_errno(err, e == ENOMEM || e == EFBIG || e == ENOSPC
                                    ? SLY_E_NO_MEMORY
                                    : SLY_E_IO,
                           e, "ftruncate arena to %zu bytes", bytes);
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    int e = errno;
    close(fd);
    return sly__fail_errno(err, SLY_E_IO, e, "seal arena memfd");
  }
  *out = fd;
  return 0;
}

/* Registers the mapped memfd with the server; returns the region id. */
static int map_region(sly_conn *c, int fd, size_t bytes, uint64_t *region,
                      sly_error *err) {
  cJSON *req = sly__request("map_region");
  if (req == NULL)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  sly__reply rep;
  int rc = sly__call(c, req, fd, &rep, err);
  cJSON_Delete(req);
  if (rc < 0) {
    sly__reply_free(&rep);
    return rc;
  }
  uint64_t id, size;
  if (rep.n_fds > 0 || proto_json_u64(rep.json, "region", &id) < 0 ||
      proto_json_u64(rep.json, "bytes", &size) < 0 || size != bytes) {
    sly__reply_free(&rep);
    sly__conn_kill(c);
    return sly__fail(err, SLY_E_PROTOCOL,
                     "map_region reply lacks the region id or size %zu",
                     bytes);
  }
  sly__reply_free(&rep);
  *region = id;
  return 0;
}

/* The arena belongs to `c`: destroy it with sly_arena_destroy() before
 * sly_close(), or let sly_close() free it. */
int sly_arena_create(sly_conn *c, size_t bytes, sly_arena **out,
                     sly_error *err) {
  if (out == NULL)
    return sly__fail(err, SLY_E_INVALID_ARG, "no place for the arena");
  if (bytes == 0)
    return sly__fail(err, SLY_E_INVALID_ARG, "arena size is 0");
  if ((uint64_t)bytes > (uint64_t)INT64_MAX)
    return sly__fail(err, SLY_E_INVALID_ARG, "arena size %zu is too large",
                     bytes);
  int rc = sly__conn_check(c, err);
  if (rc < 0)
    return rc;
  sly_arena *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return sly__fail(err, SLY_E_NO_MEMORY, "out of memory");
  a->base = MAP_FAILED;
  int fd = -1;
  if ((rc = sealed_memfd(bytes, &fd, err)) < 0)
    goto fail;
  a->base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (a->base == MAP_FAILED) {
    int e = errno;
    rc = sly__fail_errno(err, e == ENOMEM ? SLY_E_NO_MEMORY : SLY_E_IO, e,
                         "mmap arena of %zu bytes", bytes);
    goto fail;
  }
  if ((rc = map_region(c, fd, bytes, &a->region, err)) < 0)
    goto fail;
  close(fd);
  a->conn = c;
  a->size = bytes;
  a->next = c->arenas;
  if (c->arenas != NULL)
    c->arenas->prev = a;
  c->arenas = a;
  *out = a;
  return 0;

fail:
  if (a->base != MAP_FAILED)
    munmap(a->base, bytes);
  if (fd >= 0)
    close(fd);
  free(a);
  return rc;
}

/* Asks the server to drop the region; failures are ignored because the
 * region dies with the connection anyway. */
static void unmap_region(sly_conn *c, uint64_t region) {
  if (c->dead)
    return;
  cJSON *req = sly__request("unmap_region");
  if (req == NULL || !cJSON_AddNumberToObject(req, "region", (double)region)) {
    cJSON_Delete(req);
    return;
  }
  sly__reply rep;
  sly__call(c, req, -1, &rep, NULL);
  sly__reply_free(&rep);
  cJSON_Delete(req);
}

void sly_arena_destroy(sly_arena *a) {
  if (a == NULL)
    return;
  sly_conn *c = a->conn;
  unmap_region(c, a->region);
  if (a->prev != NULL)
    a->prev->next = a->next;
  else
    c->arenas = a->next;
  if (a->next != NULL)
    a->next->prev = a->prev;
  munmap(a->base, a->size);
  free(a);
}

void *sly_arena_base(const sly_arena *a) { return a != NULL ? a->base : NULL; }

size_t sly_arena_size(const sly_arena *a) { return a != NULL ? a->size : 0; }

uint64_t sly_arena_region(const sly_arena *a) {
  return a != NULL ? a->region : 0;
}

/* Offsets, not addresses, are aligned: the base is page-aligned, so an
 * aligned offset is an aligned address and also what a tensor descriptor's
 * "offset" must be a multiple of. A zero-byte allocation (an empty tensor)
 * gets a valid position without using space. */
void *sly_arena_alloc(sly_arena *a, size_t bytes, size_t align) {
  if (a == NULL || align == 0 || (align & (align - 1)) != 0 || align > 4096)
    return NULL;
  size_t off = a->used;
  if (off > SIZE_MAX - (align - 1))
    return NULL;
  off = (off + align - 1) & ~(align - 1);
  if (off > a->size || bytes > a->size - off)
    return NULL;
  a->used = off + bytes;
  return (char *)a->base + off;
}

void sly_arena_reset(sly_arena *a) {
  if (a != NULL)
    a->used = 0;
}
