/* region.c — validating and mapping client memfds. */
#include "region.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "hostmem.h"

int region_map_client(int fd, uint64_t max_bytes, region **out,
                      proto_error *err) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return proto_fail(err, SLY_E_BAD_REGION, "fstat: %s", strerror(errno));
  if (!S_ISREG(st.st_mode))
    return proto_fail(err, SLY_E_BAD_REGION,
                      "the fd is not a memfd (not a regular file)");

  /* F_GET_SEALS fails with EINVAL on anything but shmem and hugetlbfs files. */
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0)
    return proto_fail(err, SLY_E_BAD_REGION,
                      "the fd is not a memfd (F_GET_SEALS: %s)",
                      strerror(errno));
  struct statfs sfs;
  if (fstatfs(fd, &sfs) < 0)
    return proto_fail(err, SLY_E_BAD_REGION, "fstatfs: %s", strerror(errno));
  if (sfs.f_type == HUGETLBFS_MAGIC)
    return proto_fail(err, SLY_E_BAD_REGION,
                      "hugetlbfs memfds are not accepted (faults on them "
                      "cannot be ruled out)");
  /* Without this seal the client could truncate the file under our mapping
   * and make the daemon take SIGBUS. */
  if (!(seals & F_SEAL_SHRINK))
    return proto_fail(err, SLY_E_BAD_REGION,
                      "the memfd must be sealed with F_SEAL_SHRINK");
  if (st.st_size <= 0)
    return proto_fail(err, SLY_E_BAD_REGION, "the memfd is empty");
  if ((uint64_t)st.st_size > max_bytes)
    return proto_fail(err, SLY_E_BAD_REGION,
                      "the memfd holds %lld bytes, over max_region_mb (%llu "
                      "bytes)",
                      (long long)st.st_size, (unsigned long long)max_bytes);

  bool writable = !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *base = mmap(NULL, (size_t)st.st_size, prot, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    return proto_fail(err, SLY_E_BAD_REGION, "mmap of %lld bytes: %s",
                      (long long)st.st_size, strerror(errno));

  region *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    munmap(base, (size_t)st.st_size);
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  r->base = base;
  r->bytes = (uint64_t)st.st_size;
  r->writable = writable;
  atomic_init(&r->pin, REGION_PIN_NOT_TRIED);
  atomic_init(&r->refs, 1);
  *out = r;
  return 0;
}

void region_pin(region *r) {
  int was = REGION_PIN_NOT_TRIED;
  if (atomic_load_explicit(&r->pin, memory_order_relaxed) != was ||
      !atomic_compare_exchange_strong(&r->pin, &was, REGION_PIN_TRYING))
    return;
  bool yes = hostmem_register_region(r->base, r->bytes, !r->writable);
  atomic_store(&r->pin, yes ? REGION_PIN_YES : REGION_PIN_NO);
}

void region_ref(region *r) { atomic_fetch_add(&r->refs, 1); }

void region_unref(region *r) {
  if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
    return;
  /* The last reference: no forward holds it, so no registration runs. */
  hostmem_unregister_region(r->base, r->bytes,
                            atomic_load(&r->pin) == REGION_PIN_YES);
  munmap(r->base, (size_t)r->bytes);
  free(r);
}
