/* test_npy.c — NumPy .npy files as slyctl reads and writes them.
 *
 * client/npy.c is internal to slyctl and the tests; unit tests link the
 * daemon's and proto's libraries only, so the module is compiled in here.
 * Headers below are byte for byte what NumPy 2.4 writes (np.save and
 * np.lib.format.write_array with version=(2, 0) and (3, 0)).
 */
#include "../../client/npy.c"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <math.h>
#include <stdlib.h>

/* A scratch folder per test (each test runs in its own process). */
static char dir[64];

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/slynpy-XXXXXX");
  cr_assert(mkdtemp(dir) != NULL);
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  cr_assert(system(cmd) == 0);
}

TestSuite(npy, .init = setup, .fini = teardown);

static const char *path_of(const char *name) {
  static char p[128];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  return p;
}

/* Writes a file the way NumPy lays it out: preamble of `version`, the dict,
 * spaces up to a multiple of 64, a newline, then `data`. */
static const char *numpy_file(const char *name, int version, const char *dict,
                              const void *data, size_t len) {
  size_t pre = version == 1 ? 10 : 12;
  size_t total = (pre + strlen(dict) + 1 + 63) / 64 * 64;
  size_t hlen = total - pre;
  unsigned char *buf = calloc(1, total + len);
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)version;
  buf[8] = (unsigned char)(hlen & 0xff);
  buf[9] = (unsigned char)(hlen >> 8);
  memcpy(buf + pre, dict, strlen(dict));
  memset(buf + pre + strlen(dict), ' ', hlen - strlen(dict) - 1);
  buf[total - 1] = '\n';
  if (len > 0)
    memcpy(buf + total, data, len);
  const char *p = path_of(name);
  FILE *f = fopen(p, "wb");
  cr_assert(f != NULL);
  cr_assert(eq(sz, fwrite(buf, 1, total + len, f), total + len));
  fclose(f);
  free(buf);
  return p;
}

/* Opens and reads a whole file; asserts success. The caller frees *data. */
static npy_header read_ok(const char *p, void **data) {
  npy_file f;
  sly_error err = {0};
  cr_assert(eq(int, npy_open(p, &f, &err), 0), "%s", err.message);
  *data = malloc(f.h.nbytes + 1);
  cr_assert(eq(int, npy_read_into(&f, *data, &err), 0), "%s", err.message);
  npy_header h = f.h;
  npy_close(&f);
  return h;
}

/* Asserts that opening `p` fails with INVALID_ARG and a message holding
 * `needle`. */
static void open_fails(const char *p, const char *needle) {
  npy_file f;
  sly_error err = {0};
  cr_assert(eq(int, npy_open(p, &f, &err), SLY_E_INVALID_ARG), "%s", needle);
  cr_assert(strstr(err.message, needle) != NULL, "want \"%s\" in \"%s\"",
            needle, err.message);
  cr_assert(strncmp(err.message, p, strlen(p)) == 0,
            "message does not start with the path: %s", err.message);
  cr_assert(eq(int, f.fd, -1));
}

/* ---- what NumPy writes ---- */

Test(npy, reads_a_float32_matrix_as_numpy_saves_it) {
  float v[6] = {0, 1, 2, 3, 4, 5};
  const char *p = numpy_file(
      "a.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
      v, sizeof(v));
  void *d;
  npy_header h = read_ok(p, &d);
  cr_assert(eq(int, h.dtype, SLY_FLOAT32));
  cr_assert(eq(u32, h.ndim, 2));
  cr_assert(eq(u64, h.shape[0], 2));
  cr_assert(eq(u64, h.shape[1], 3));
  cr_assert(eq(u64, h.nbytes, 24));
  cr_assert(eq(u64, h.data_offset, 128));
  cr_assert(memcmp(d, v, sizeof(v)) == 0);
  free(d);
}

Test(npy, reads_versions_2_and_3) {
  int64_t v[2] = {7, -1};
  void *d;
  npy_header h = read_ok(
      numpy_file("v2.npy", 2,
                 "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", v,
                 sizeof(v)),
      &d);
  cr_assert(eq(int, h.dtype, SLY_INT64));
  cr_assert(eq(u64, h.data_offset, 128));
  cr_assert(memcmp(d, v, sizeof(v)) == 0);
  free(d);
  uint8_t u[3] = {1, 2, 255};
  h = read_ok(
      numpy_file("v3.npy", 3,
                 "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 1), }",
                 u, sizeof(u)),
      &d);
  cr_assert(eq(int, h.dtype, SLY_UINT8));
  cr_assert(eq(u32, h.ndim, 2));
  cr_assert(memcmp(d, u, sizeof(u)) == 0);
  free(d);
}

Test(npy, a_scalar_has_no_dims_and_one_element) {
  double v = 3.25;
  void *d;
  npy_header h = read_ok(
      numpy_file("s.npy", 1,
                 "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &v,
                 sizeof(v)),
      &d);
  cr_assert(eq(u32, h.ndim, 0));
  cr_assert(eq(u64, h.nbytes, 8));
  cr_assert(eq(dbl, *(double *)d, 3.25));
  free(d);
}

Test(npy, big_endian_data_is_swapped_on_read) {
  const unsigned char be[8] = {0x3f, 0xc0, 0, 0, 0xc0, 0, 0, 0}; /* 1.5, -2 */
  void *d;
  npy_header h = read_ok(
      numpy_file("be.npy", 1,
                 "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                 be, sizeof(be)),
      &d);
  cr_assert(eq(int, h.dtype, SLY_FLOAT32));
  cr_assert(eq(flt, ((float *)d)[0], 1.5f));
  cr_assert(eq(flt, ((float *)d)[1], -2.0f));
  free(d);
}

Test(npy, keys_in_any_order_double_quotes_and_python2_longs_are_read) {
  int16_t v[4] = {1, 2, 3, 4};
  void *d;
  npy_header h =
      read_ok(numpy_file("o.npy", 1,
                         "{\"shape\": (2L, 2L), \"fortran_order\": False, "
                         "\"descr\": \"<i2\"}",
                         v, sizeof(v)),
              &d);
  cr_assert(eq(int, h.dtype, SLY_INT16));
  cr_assert(eq(u64, h.shape[1], 2));
  free(d);
}

/* ---- round trips through npy_write ---- */

Test(npy, every_dtype_numpy_has_round_trips) {
  static const sly_dtype all[] = {SLY_FLOAT32, SLY_FLOAT64, SLY_FLOAT16,
                                  SLY_INT64,   SLY_INT32,   SLY_INT16,
                                  SLY_INT8,    SLY_UINT8,   SLY_BOOL};
  for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
    uint64_t shape[3] = {2, 1, 3};
    size_t n = 6 * proto_dtype_size((proto_dtype)all[k]);
    unsigned char data[48];
    for (size_t i = 0; i < n; i++)
      data[i] = all[k] == SLY_BOOL ? (unsigned char)(i & 1)
                                   : (unsigned char)(i * 37 + k);
    sly_error err = {0};
    const char *p = path_of("rt.npy");
    cr_assert(eq(int, npy_write(p, all[k], 3, shape, data, &err), 0), "%s",
              err.message);
    void *d;
    npy_header h = read_ok(p, &d);
    cr_assert(eq(int, h.dtype, all[k]));
    cr_assert(eq(u32, h.ndim, 3));
    cr_assert(eq(u64, h.shape[2], 3));
    cr_assert(eq(u64, h.nbytes, n));
    cr_assert(eq(u64, h.data_offset % 64, 0));
    cr_assert(memcmp(d, data, n) == 0, "dtype %d", (int)all[k]);
    free(d);
  }
}

/* The preamble holds NUL bytes: search the whole buffer. */
static bool has(const char *buf, size_t len, const char *needle) {
  return memmem(buf, len, needle, strlen(needle)) != NULL;
}

Test(npy, the_header_written_is_the_one_numpy_writes) {
  char buf[512];
  size_t len = 0;
  sly_error err = {0};
  uint64_t shape[2] = {2, 3};
  cr_assert(
      eq(int,
         npy_header_build(SLY_FLOAT32, 2, shape, buf, sizeof(buf), &len, &err),
         0));
  const char want[] =
      "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
      "'shape': (2, 3), }";
  cr_assert(eq(sz, len, 128));
  cr_assert(memcmp(buf, want, sizeof(want) - 1) == 0);
  for (size_t i = sizeof(want) - 1; i < 127; i++)
    cr_assert(eq(chr, buf[i], ' '));
  cr_assert(eq(chr, buf[127], '\n'));

  /* One dim keeps its tuple comma; none is "()"; one-byte types say '|'. */
  uint64_t three = 3;
  cr_assert(eq(
      int, npy_header_build(SLY_BOOL, 1, &three, buf, sizeof(buf), &len, &err),
      0));
  cr_assert(has(buf, len, "'descr': '|b1'"));
  cr_assert(has(buf, len, "'shape': (3,), }"));
  cr_assert(eq(
      int, npy_header_build(SLY_FLOAT64, 0, NULL, buf, sizeof(buf), &len, &err),
      0));
  cr_assert(has(buf, len, "'shape': (), }"));
}

Test(npy, bfloat16_has_no_npy_form) {
  char buf[512];
  size_t len;
  sly_error err = {0};
  uint64_t one = 1;
  cr_assert(
      eq(int,
         npy_header_build(SLY_BFLOAT16, 1, &one, buf, sizeof(buf), &len, &err),
         SLY_E_INVALID_ARG));
  uint16_t v = 0;
  cr_assert(eq(int,
               npy_write(path_of("b.npy"), SLY_BFLOAT16, 1, &one, &v, &err),
               SLY_E_INVALID_ARG));
  cr_assert(access(path_of("b.npy"), F_OK) != 0, "a file was left");
}

Test(npy, a_write_that_cannot_open_its_file_is_an_io_error) {
  sly_error err = {0};
  uint64_t one = 1;
  float v = 1;
  cr_assert(
      eq(int,
         npy_write("/nonexistent-slyce/x.npy", SLY_FLOAT32, 1, &one, &v, &err),
         SLY_E_IO));
  cr_assert(eq(str, err.message,
               "/nonexistent-slyce/x.npy: No such file or directory"));
}

/* ---- headers refused ---- */

static const char F4_3[] =
    "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";

Test(npy, a_file_without_the_magic_is_refused) {
  const char *p = path_of("x.npy");
  FILE *f = fopen(p, "wb");
  fputs("PK\x03\x04 this is a zip, not an array", f);
  fclose(f);
  open_fails(p, "no magic");
  f = fopen(p, "wb");
  fputs("\x93NUM", f);
  fclose(f);
  open_fails(p, "truncated");
}

Test(npy, versions_other_than_1_2_3_are_refused) {
  float v[3] = {0};
  const char *p = numpy_file("v.npy", 4, F4_3, v, sizeof(v));
  open_fails(p, "version 4.0");
}

Test(npy, a_header_longer_than_64_KiB_is_refused) {
  const char *p = path_of("h.npy");
  unsigned char pre[12] = {0x93, 'N', 'U',  'M',  'P',  'Y',
                           2,    0,   0x01, 0x00, 0x01, 0x00}; /* 65537 bytes */
  FILE *f = fopen(p, "wb");
  fwrite(pre, 1, sizeof(pre), f);
  for (int i = 0; i < 70000; i++)
    fputc(' ', f);
  fclose(f);
  open_fails(p, "exceeds 65536");
}

Test(npy, fortran_order_is_refused) {
  float v[3] = {0};
  open_fails(numpy_file("f.npy", 1,
                        "{'descr': '<f4', 'fortran_order': True, 'shape': "
                        "(3,), }",
                        v, sizeof(v)),
             "fortran_order");
}

Test(npy, more_than_eight_dims_are_refused) {
  float v = 0;
  open_fails(numpy_file("d.npy", 1,
                        "{'descr': '<f4', 'fortran_order': False, 'shape': "
                        "(1, 1, 1, 1, 1, 1, 1, 1, 1), }",
                        &v, sizeof(v)),
             "more than 8 dims");
}

Test(npy, a_size_that_overflows_is_refused_not_wrapped) {
  float v = 0;
  /* 2^32 * 2^32 elements wrap to 0 in 64 bits. */
  open_fails(numpy_file("o.npy", 1,
                        "{'descr': '<f4', 'fortran_order': False, 'shape': "
                        "(4294967296, 4294967296), }",
                        NULL, 0),
             "overflows");
  open_fails(numpy_file("o2.npy", 1,
                        "{'descr': '<f4', 'fortran_order': False, 'shape': "
                        "(99999999999999999999,), }",
                        &v, sizeof(v)),
             "exceeds 2^53-1");
}

Test(npy, data_must_fill_the_file_exactly) {
  float v[4] = {0};
  open_fails(numpy_file("s.npy", 1, F4_3, v, 11), "holds 11 bytes");
  open_fails(numpy_file("l.npy", 1, F4_3, v, 16), "holds 16 bytes");
  void *d;
  npy_header h = read_ok(numpy_file("ok.npy", 1, F4_3, v, 12), &d);
  cr_assert(eq(u64, h.nbytes, 12));
  free(d);
}

Test(npy, dtypes_outside_the_protocol_are_refused_by_name) {
  float v[3] = {0};
  static const char *bad[] = {"<u2", "<u4", "<u8",    "<c8", "<f16",
                              "<U3", "|O",  "<M8[s]", "|f4", "f"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char dict[128];
    snprintf(dict, sizeof(dict),
             "{'descr': '%s', 'fortran_order': False, 'shape': (3,), }",
             bad[i]);
    open_fails(numpy_file("t.npy", 1, dict, v, sizeof(v)), bad[i]);
  }
  open_fails(numpy_file("st.npy", 1,
                        "{'descr': [('a', '<f4')], 'fortran_order': False, "
                        "'shape': (3,), }",
                        v, sizeof(v)),
             "structured");
}

Test(npy, malformed_dicts_are_refused) {
  float v[3] = {0};
  static const struct {
    const char *dict, *why;
  } bad[] = {
      {"{'descr': '<f4', 'shape': (3,), }", "'fortran_order' missing"},
      {"{'descr': '<f4', 'fortran_order': False}", "'shape' missing"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': "
       "(3,)}",
       "twice"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}",
       "unknown key 'x'"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}",
       "not True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [3]}", "not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, -1)}",
       "other than an integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} junk",
       "bytes after the dict"},
      {"{'descr': '<f4', 'fortran_order': False 'shape': (3,)}", "missing"},
      {"{'descr': '<f4\\x00', 'fortran_order': False, 'shape': (3,)}",
       "not a string this reader knows"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (3,)}", "descr"},
      {"['descr', '<f4']", "not a dict"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    open_fails(numpy_file("m.npy", 1, bad[i].dict, v, sizeof(v)), bad[i].why);
}

Test(npy, bool_bytes_other_than_0_and_1_are_refused) {
  unsigned char v[3] = {1, 0, 2};
  const char *p = numpy_file(
      "b.npy", 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }",
      v, sizeof(v));
  npy_file f;
  sly_error err = {0};
  cr_assert(eq(int, npy_open(p, &f, &err), 0), "%s", err.message);
  unsigned char d[3];
  cr_assert(eq(int, npy_read_into(&f, d, &err), SLY_E_INVALID_ARG));
  cr_assert(strstr(err.message, "element 2") != NULL, "%s", err.message);
  npy_close(&f);
}

Test(npy, a_missing_file_is_an_io_error_naming_it) {
  npy_file f;
  sly_error err = {0};
  cr_assert(eq(int, npy_open("/nonexistent-slyce/a.npy", &f, &err), SLY_E_IO));
  cr_assert(eq(str, err.message,
               "/nonexistent-slyce/a.npy: No such file or directory"));
  npy_close(&f); /* accepts a file that failed to open */
  cr_assert(eq(int, npy_open(dir, &f, &err), SLY_E_INVALID_ARG));
  cr_assert(strstr(err.message, "not a regular file") != NULL);
}

/* ---- bfloat16 ---- */

static float f32_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

Test(npy, bfloat16_widens_exactly_and_narrows_to_nearest_even) {
  cr_assert(eq(flt, npy_f32_from_bf16(0x3f80), 1.0f));
  cr_assert(eq(flt, npy_f32_from_bf16(0xc040), -3.0f));
  cr_assert(eq(u16, npy_bf16_from_f32(1.0f), 0x3f80));
  cr_assert(eq(u16, npy_bf16_from_f32(-3.0f), 0xc040));
  /* Below half way, half way (ties to even, both ways), above half way. */
  cr_assert(eq(u16, npy_bf16_from_f32(f32_of(0x3f807fff)), 0x3f80));
  cr_assert(eq(u16, npy_bf16_from_f32(f32_of(0x3f808000)), 0x3f80));
  cr_assert(eq(u16, npy_bf16_from_f32(f32_of(0x3f818000)), 0x3f82));
  cr_assert(eq(u16, npy_bf16_from_f32(f32_of(0x3f808001)), 0x3f81));
  /* The largest float rounds to infinity; infinity, -0 and NaN keep. */
  cr_assert(eq(u16, npy_bf16_from_f32(f32_of(0x7f7fffff)), 0x7f80));
  cr_assert(eq(u16, npy_bf16_from_f32(INFINITY), 0x7f80));
  cr_assert(eq(u16, npy_bf16_from_f32(-0.0f), 0x8000));
  cr_assert(isnan(npy_f32_from_bf16(npy_bf16_from_f32(NAN))));
  /* A NaN whose payload sits in the low half must not become infinity. */
  cr_assert(isnan(npy_f32_from_bf16(npy_bf16_from_f32(f32_of(0x7f800001)))));
  /* Every bfloat16 survives the trip through float32. */
  for (uint32_t b = 0; b < 0x10000; b++) {
    float f = npy_f32_from_bf16((uint16_t)b);
    if (!isnan(f))
      cr_assert(eq(u16, npy_bf16_from_f32(f), (uint16_t)b), "%#x", b);
  }
}
