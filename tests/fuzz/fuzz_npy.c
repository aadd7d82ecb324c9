/* fuzz_npy.c — libFuzzer target: the .npy reader slyctl uses for its inputs.
 *
 * Input: a whole .npy file. It is parsed twice: by npy_header_parse() from
 * an exact-size copy, and through the file API (npy_open, npy_read_into) from
 * a memfd holding the same bytes, which must agree with it. Data that is
 * read must be the file's bytes after the header, byte-swapped for a
 * big-endian descr, and bool data must hold only 0 and 1.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "npy.h"
#include "tensor.h"

#include "fuzz.h"

static int memfd = -1;
static char memfd_path[64];

/* One memfd for the whole run, rewritten for every input. */
static void memfd_fill(const uint8_t *data, size_t size) {
  if (memfd < 0) {
    memfd = memfd_create("fuzz_npy", MFD_CLOEXEC);
    FUZZ_CHECK(memfd >= 0, "memfd_create");
    snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
  }
  FUZZ_CHECK(ftruncate(memfd, 0) == 0, "ftruncate");
  size_t done = 0;
  while (done < size) {
    ssize_t n = pwrite(memfd, data + done, size - done, (off_t)done);
    FUZZ_CHECK(n > 0, "pwrite");
    done += (size_t)n;
  }
}

static void check_header(const npy_header *h, size_t size) {
  FUZZ_CHECK(h->ndim <= SLY_MAX_DIMS, "ndim %u", h->ndim);
  unsigned esize = proto_dtype_size((proto_dtype)h->dtype);
  FUZZ_CHECK(esize != 0 && h->dtype != SLY_BFLOAT16, "dtype %d",
             (int)h->dtype);
  unsigned __int128 n = esize;
  for (uint32_t i = 0; i < h->ndim; i++)
    n *= h->shape[i];
  FUZZ_CHECK(n == h->nbytes && h->nbytes <= PROTO_MAX_INT, "nbytes %llu",
             (unsigned long long)h->nbytes);
  FUZZ_CHECK(h->data_offset <= size && size - h->data_offset == h->nbytes,
             "data at %llu, %llu bytes, file of %zu",
             (unsigned long long)h->data_offset,
             (unsigned long long)h->nbytes, size);
  FUZZ_CHECK(!h->swap || esize > 1, "swap of one-byte elements");
}

/* The data npy_read_into returned against the file's bytes. */
static void check_data(const npy_header *h, const uint8_t *file,
                       const uint8_t *got) {
  const uint8_t *src = file + h->data_offset;
  size_t esize = proto_dtype_size((proto_dtype)h->dtype);
  for (uint64_t i = 0; i < h->nbytes; i++) {
    uint64_t at = h->swap ? i - i % esize + (esize - 1 - i % esize) : i;
    FUZZ_CHECK(got[i] == src[at], "data byte %llu", (unsigned long long)i);
    if (h->dtype == SLY_BOOL)
      FUZZ_CHECK(got[i] <= 1, "bool byte %u", got[i]);
  }
}

static void check_error(const sly_error *e, int r) {
  FUZZ_CHECK(e->code == r && e->message[0] != '\0' &&
                 memchr(e->message, '\0', sizeof(e->message)),
             "error %d", r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *copy = fuzz_dup(data, size);
  npy_header h;
  sly_error err;
  int r = npy_header_parse(copy, size, size, &h, &err);
  free(copy);
  if (r == 0)
    check_header(&h, size);
  else
    check_error(&err, r);

  memfd_fill(data, size);
  npy_file f;
  sly_error ferr;
  int fr = npy_open(memfd_path, &f, &ferr);
  /* npy_open reads at most NPY_PREAMBLE_MAX + NPY_HEADER_MAX bytes, which
   * holds every header npy_header_parse accepts. */
  FUZZ_CHECK(fr == r, "npy_open %d, npy_header_parse %d: %s", fr, r,
             fr ? ferr.message : "");
  if (fr < 0) {
    check_error(&ferr, fr);
    FUZZ_CHECK(f.fd == -1, "fd left open");
    return 0;
  }
  FUZZ_CHECK(f.h.dtype == h.dtype && f.h.ndim == h.ndim &&
                 memcmp(f.h.shape, h.shape, h.ndim * sizeof(h.shape[0])) == 0 &&
                 f.h.nbytes == h.nbytes && f.h.data_offset == h.data_offset &&
                 f.h.swap == h.swap,
             "npy_open read another header");
  uint8_t *buf = malloc(h.nbytes ? h.nbytes : 1);
  FUZZ_CHECK(buf != NULL, "malloc");
  int rr = npy_read_into(&f, buf, &ferr);
  bool has_bad_bool = false;
  if (h.dtype == SLY_BOOL)
    for (uint64_t i = 0; i < h.nbytes; i++)
      has_bad_bool |= data[h.data_offset + i] > 1;
  if (rr == 0)
    check_data(&h, data, buf);
  else
    check_error(&ferr, rr);
  FUZZ_CHECK((rr == 0) == !has_bad_bool, "npy_read_into %d, bad bool %d", rr,
             (int)has_bad_bool);
  free(buf);
  npy_close(&f);
  FUZZ_CHECK(f.fd == -1, "npy_close");
  return 0;
}
