/* fuzz_safetensors.c — libFuzzer target: the safetensors header reader, the
 * way daemon/shim_weights.cpp and daemon/diskcache.c use it.
 *
 * Input: a whole .safetensors file. The 8-byte prefix goes through
 * st_header_len() with the input's size as the file's size, the JSON header
 * (an exact-size copy) through st_header_parse(). A header that passes is
 * checked against the promise of safetensors.h — names unique, ranges in
 * data order tiling the data section exactly, sizes matching dtype and
 * shape — and a rejection must leave the output untouched and say why in
 * one line.
 */
#include <stdint.h>
#include <string.h>

#include "safetensors.h"

#include "fuzz.h"

static void check_tensor(const st_header *h, size_t i, uint64_t *expect) {
  const st_tensor *t = &h->tensors[i];
  size_t len = strlen(t->name);
  FUZZ_CHECK(len >= 1 && len <= ST_MAX_NAME, "tensors[%zu]: name of %zu", i,
             len);
  FUZZ_CHECK(st_dtype_name(t->dtype) != NULL, "tensors[%zu]: dtype", i);
  FUZZ_CHECK(t->ndim <= ST_MAX_DIMS, "tensors[%zu]: ndim %u", i, t->ndim);
  unsigned __int128 n = proto_dtype_size(t->dtype);
  for (uint32_t d = 0; d < t->ndim; d++)
    n *= t->shape[d];
  FUZZ_CHECK(t->begin <= t->end && n == t->end - t->begin,
             "tensors[%zu]: [%llu, %llu) for its dtype and shape", i,
             (unsigned long long)t->begin, (unsigned long long)t->end);
  FUZZ_CHECK(t->begin == *expect, "tensors[%zu]: begins at %llu, not %llu", i,
             (unsigned long long)t->begin, (unsigned long long)*expect);
  *expect = t->end;
  FUZZ_CHECK(st_header_find(h, t->name) == t, "tensors[%zu]: name twice", i);
}

static void check_header(const st_header *h, uint64_t header_len,
                         size_t size) {
  FUZZ_CHECK(h->header_len == header_len && h->data_offset == 8 + header_len &&
                 h->data_bytes == size - h->data_offset,
             "sizes");
  FUZZ_CHECK(h->n_tensors <= ST_MAX_TENSORS, "n_tensors %zu", h->n_tensors);
  uint64_t expect = 0;
  for (size_t i = 0; i < h->n_tensors; i++)
    check_tensor(h, i, &expect);
  FUZZ_CHECK(expect == h->data_bytes, "tensors end at %llu of %llu",
             (unsigned long long)expect, (unsigned long long)h->data_bytes);
  for (size_t i = 0; i < h->n_meta; i++) {
    FUZZ_CHECK(h->meta[i].key && h->meta[i].value, "meta[%zu]", i);
    FUZZ_CHECK(i == 0 || strcmp(h->meta[i - 1].key, h->meta[i].key) < 0,
               "meta not sorted or not unique at %zu", i);
    FUZZ_CHECK(st_header_meta(h, h->meta[i].key) == h->meta[i].value,
               "meta[%zu] lookup", i);
  }
}

static void check_error(const char *err) {
  FUZZ_CHECK(err[0] != '\0', "a rejection must say why");
  FUZZ_CHECK(fuzz_one_line(err, ST_ERROR_MAX), "not one line: %.*s",
             ST_ERROR_MAX, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[ST_ERROR_MAX] = "";
  uint8_t prefix[8] = {0};
  memcpy(prefix, data, size < 8 ? size : 8);
  uint64_t header_len = 0;
  if (st_header_len(prefix, size, &header_len, err) != 0) {
    check_error(err);
    return 0;
  }
  FUZZ_CHECK(header_len >= 1 && header_len <= size - 8, "header_len %llu",
             (unsigned long long)header_len);
  char *json = fuzz_dup(data + 8, header_len);
  st_header h, before;
  memset(&h, 0xAB, sizeof(h));
  memcpy(&before, &h, sizeof(h));
  memset(err, 0, sizeof(err));
  int r = st_header_parse(json, header_len, size, &h, err);
  free(json);
  if (r == 0) {
    check_header(&h, header_len, size);
    st_header_free(&h);
  } else {
    FUZZ_CHECK(r == -1, "r %d", r);
    FUZZ_CHECK(memcmp(&h, &before, sizeof(h)) == 0, "output touched");
    check_error(err);
  }
  return 0;
}
