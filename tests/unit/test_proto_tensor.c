/* test_proto_tensor.c — tensor descriptors: dtypes, dims, tensor counts,
 * sizes that overflow, alignment, and bounds against the region. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "request.h"
#include "tensor.h"

#define MAX53 9007199254740991ULL

static char buf[1 << 16];

static const char *J(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  cr_assert(n > 0 && (size_t)n < sizeof(buf));
  return buf;
}

/* A forward request whose only input is the descriptor `desc`. */
static const char *fwd(const char *desc) {
  static char b[4096];
  snprintf(b, sizeof(b), "{\"id\":1,\"op\":\"forward\",\"inputs\":[%s]}", desc);
  return b;
}

static void parse_ok(const char *json, proto_request *req) {
  proto_error e = {0};
  int r = proto_request_parse(json, strlen(json), req, &e);
  cr_assert_eq(r, 0, "%s\n  -> %s: %s", json, sly_code_name(r), e.message);
}

static void parse_fail(const char *json, int code, const char *msg) {
  proto_request req;
  proto_error e = {0};
  int r = proto_request_parse(json, strlen(json), &req, &e);
  cr_assert_eq(r, code, "%s\n  -> %s (%s), want %s", json, sly_code_name(r),
               r ? e.message : "", sly_code_name(code));
  cr_assert(strstr(e.message, msg) != NULL, "message \"%s\" lacks \"%s\"",
            e.message, msg);
  cr_assert(req.has_id, "tensor errors keep the id");
  proto_request_free(&req);
}

/* ---- dtypes ---- */

Test(dtype, the_ten_dtypes_of_design_md_with_their_sizes) {
  const struct {
    const char *name;
    unsigned size;
    bool floating;
  } want[] = {{"float32", 4, true}, {"float64", 8, true}, {"float16", 2, true},
              {"bfloat16", 2, true}, {"int64", 8, false}, {"int32", 4, false},
              {"int16", 2, false},  {"int8", 1, false},   {"uint8", 1, false},
              {"bool", 1, false}};
  cr_assert_eq(PROTO_DTYPE_COUNT, 10);
  for (unsigned i = 0; i < 10; i++) {
    proto_dtype d;
    cr_assert_eq(proto_dtype_from_name(want[i].name, &d), 0, "%s",
                 want[i].name);
    cr_assert_str_eq(proto_dtype_name(d), want[i].name);
    cr_assert_eq(proto_dtype_size(d), want[i].size, "%s", want[i].name);
    cr_assert_eq(proto_dtype_is_floating(d), want[i].floating, "%s",
                 want[i].name);
  }
}

Test(dtype, unknown_names_are_refused) {
  proto_dtype d = PROTO_DTYPE_INT8;
  cr_assert_eq(proto_dtype_from_name("float", &d), -1);
  cr_assert_eq(proto_dtype_from_name("Float32", &d), -1);
  cr_assert_eq(proto_dtype_from_name("", &d), -1);
  cr_assert_eq(proto_dtype_from_name(NULL, &d), -1);
  cr_assert_eq(d, PROTO_DTYPE_INT8, "the output is untouched on failure");
  cr_assert_eq(proto_dtype_size(PROTO_DTYPE_COUNT), 0);
  cr_assert_str_eq(proto_dtype_name(PROTO_DTYPE_COUNT), "unknown");
}

/* ---- proto_tensor_nbytes ---- */

Test(nbytes, a_scalar_is_one_element) {
  uint64_t n = 0;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_FLOAT64, 0, NULL, &n, NULL), 0);
  cr_assert_eq(n, 8);
}

Test(nbytes, the_product_of_the_dims_times_the_element_size) {
  const uint64_t shape[] = {2, 8, 256};
  uint64_t n = 0;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_BFLOAT16, 3, shape, &n, NULL),
               0);
  cr_assert_eq(n, 2 * 8 * 256 * 2);
}

Test(nbytes, eight_dims_are_allowed_and_nine_are_not) {
  const uint64_t shape[9] = {1, 2, 1, 2, 1, 2, 1, 2, 1};
  uint64_t n = 0;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_INT8, 8, shape, &n, NULL), 0);
  cr_assert_eq(n, 16);
  proto_error e;
  n = 77;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_INT8, 9, shape, &n, &e),
               SLY_E_BAD_TENSOR);
  cr_assert_eq(n, 77);
}

Test(nbytes, exactly_two_to_the_53_minus_one_bytes_is_the_largest_tensor) {
  const uint64_t shape[] = {MAX53};
  uint64_t n = 0;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_UINT8, 1, shape, &n, NULL), 0);
  cr_assert_eq(n, MAX53);
  proto_error e;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_INT16, 1, shape, &n, &e),
               SLY_E_BAD_TENSOR, "2^54-2 bytes");
  cr_assert(strstr(e.message, "overflows") != NULL, "%s", e.message);
}

Test(nbytes, products_past_two_to_the_64_are_caught_not_wrapped) {
  /* 2^31 * 2^31 * 4 = 2^64, which wraps to 0 in 64-bit arithmetic. */
  const uint64_t wrap[] = {1ULL << 31, 1ULL << 31};
  uint64_t n = 77;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_FLOAT32, 2, wrap, &n, NULL),
               SLY_E_BAD_TENSOR);
  const uint64_t big[] = {1ULL << 40, 1ULL << 40, 1ULL << 40};
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_UINT8, 3, big, &n, NULL),
               SLY_E_BAD_TENSOR);
  cr_assert_eq(n, 77);
}

Test(nbytes, a_zero_dim_makes_an_empty_tensor) {
  const uint64_t shape[] = {4, 0, 3};
  uint64_t n = 77;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_FLOAT32, 3, shape, &n, NULL), 0);
  cr_assert_eq(n, 0);
}

Test(nbytes, a_zero_dim_does_not_excuse_the_other_dims) {
  /* Contiguous strides come from the other dims; they must not overflow. */
  const uint64_t last[] = {MAX53, MAX53, 0};
  uint64_t n = 77;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_UINT8, 3, last, &n, NULL),
               SLY_E_BAD_TENSOR);
  const uint64_t first[] = {0, MAX53, MAX53};
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_UINT8, 3, first, &n, NULL),
               SLY_E_BAD_TENSOR, "the order of the dims does not matter");
  cr_assert_eq(n, 77);
}

Test(nbytes, a_dim_above_two_to_the_53_minus_one_is_bad_tensor) {
  const uint64_t shape[] = {1, MAX53 + 1};
  uint64_t n;
  proto_error e;
  cr_assert_eq(proto_tensor_nbytes(PROTO_DTYPE_UINT8, 2, shape, &n, &e),
               SLY_E_BAD_TENSOR);
  cr_assert(strstr(e.message, "shape[1]") != NULL, "%s", e.message);
}

/* ---- descriptors in a request ---- */

Test(descriptor, a_full_descriptor_is_read) {
  proto_request r;
  parse_ok(fwd("{\"dtype\":\"float16\",\"shape\":[2,8,256],\"region\":3,"
               "\"offset\":4096}"),
           &r);
  cr_assert_eq(r.n_inputs, 1);
  const proto_tensor *t = &r.inputs[0];
  cr_assert_eq(t->dtype, PROTO_DTYPE_FLOAT16);
  cr_assert_eq(t->ndim, 3);
  cr_assert_eq(t->shape[0], 2);
  cr_assert_eq(t->shape[1], 8);
  cr_assert_eq(t->shape[2], 256);
  cr_assert_eq(t->region, 3);
  cr_assert_eq(t->offset, 4096);
  cr_assert_eq(t->nbytes, 2 * 8 * 256 * 2);
}

Test(descriptor, a_scalar_has_an_empty_shape) {
  proto_request r;
  parse_ok(fwd("{\"dtype\":\"bool\",\"shape\":[],\"region\":1,\"offset\":7}"),
           &r);
  cr_assert_eq(r.inputs[0].ndim, 0);
  cr_assert_eq(r.inputs[0].nbytes, 1);
}

static const char *tensors(int n) {
  char *p = buf;
  p += sprintf(p, "{\"id\":1,\"op\":\"forward\",\"inputs\":[");
  for (int i = 0; i < n; i++)
    p += sprintf(p, "%s{\"dtype\":\"int32\",\"shape\":[%d],\"region\":1,"
                    "\"offset\":%d}",
                 i ? "," : "", i + 1, i * 64);
  sprintf(p, "]}");
  return buf;
}

Test(descriptor, sixteen_tensors_are_allowed_and_seventeen_are_bad_tensor) {
  proto_request r;
  parse_ok(tensors(16), &r);
  cr_assert_eq(r.n_inputs, 16);
  cr_assert_eq(r.inputs[15].shape[0], 16);
  cr_assert_eq(r.inputs[15].offset, 15 * 64);
  parse_fail(tensors(17), SLY_E_BAD_TENSOR,
             "inputs: 17 tensors exceed the limit of 16");
}

static const char *dims(int n) {
  static char shape[256];
  char *p = shape;
  for (int i = 0; i < n; i++)
    p += sprintf(p, "%s%d", i ? "," : "", i % 3 + 1);
  *p = '\0';
  return J("{\"id\":1,\"op\":\"forward\",\"inputs\":[{\"dtype\":\"int8\","
           "\"shape\":[%s],\"region\":1,\"offset\":0}]}",
           shape);
}

Test(descriptor, eight_dims_are_allowed_and_nine_are_bad_tensor) {
  proto_request r;
  parse_ok(dims(8), &r);
  cr_assert_eq(r.inputs[0].ndim, 8);
  cr_assert_eq(r.inputs[0].nbytes, 1 * 2 * 3 * 1 * 2 * 3 * 1 * 2);
  parse_fail(dims(9), SLY_E_BAD_TENSOR,
             "inputs[0].shape: 9 dims exceed the limit of 8");
}

Test(descriptor, a_bad_shape_entry_is_bad_tensor_naming_it) {
  const char *bad[] = {"-1", "1.5", "\"4\"", "null", "9007199254740992",
                       "1e20"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char desc[256];
    snprintf(desc, sizeof(desc),
             "{\"dtype\":\"int8\",\"shape\":[1,%s],\"region\":1,\"offset\":0}",
             bad[i]);
    char req[512];
    snprintf(req, sizeof(req),
             "{\"id\":1,\"op\":\"forward\",\"inputs\":[%s,%s,%s]}",
             "{\"dtype\":\"int8\",\"shape\":[1],\"region\":1,\"offset\":0}",
             "{\"dtype\":\"int8\",\"shape\":[1],\"region\":1,\"offset\":0}",
             desc);
    parse_fail(req, SLY_E_BAD_TENSOR,
               "inputs[2].shape[1]: expected an integer in 0..2^53-1");
  }
}

Test(descriptor, a_dim_of_two_to_the_53_minus_one_is_allowed) {
  proto_request r;
  parse_ok(fwd("{\"dtype\":\"uint8\",\"shape\":[9007199254740991],"
               "\"region\":1,\"offset\":0}"),
           &r);
  cr_assert_eq(r.inputs[0].nbytes, MAX53);
}

Test(descriptor, a_shape_whose_size_overflows_is_bad_tensor) {
  parse_fail(fwd("{\"dtype\":\"float32\",\"shape\":[4294967296,4294967296],"
                 "\"region\":1,\"offset\":0}"),
             SLY_E_BAD_TENSOR, "inputs[0].shape: tensor size overflows");
  parse_fail(fwd("{\"dtype\":\"int64\",\"shape\":[1125899906842624],"
                 "\"region\":1,\"offset\":0}"),
             SLY_E_BAD_TENSOR, "overflows 2^53-1 bytes");
}

Test(descriptor, a_shape_that_is_not_an_array_is_bad_tensor) {
  parse_fail(fwd("{\"dtype\":\"int8\",\"shape\":4,\"region\":1,\"offset\":0}"),
             SLY_E_BAD_TENSOR, "inputs[0].shape: expected an array");
}

Test(descriptor, an_unknown_dtype_is_bad_tensor) {
  parse_fail(fwd("{\"dtype\":\"complex64\",\"shape\":[1],\"region\":1,"
                 "\"offset\":0}"),
             SLY_E_BAD_TENSOR, "inputs[0].dtype: unknown dtype \"complex64\"");
  parse_fail(fwd("{\"dtype\":4,\"shape\":[1],\"region\":1,\"offset\":0}"),
             SLY_E_BAD_TENSOR, "inputs[0].dtype: expected a string");
}

Test(descriptor, missing_dtype_or_shape_is_bad_tensor) {
  parse_fail(fwd("{\"shape\":[1],\"region\":1,\"offset\":0}"),
             SLY_E_BAD_TENSOR, "inputs[0].dtype: missing");
  parse_fail(fwd("{\"dtype\":\"int8\",\"region\":1,\"offset\":0}"),
             SLY_E_BAD_TENSOR, "inputs[0].shape: missing");
}

Test(descriptor, missing_or_bad_region_and_offset_are_bad_request) {
  parse_fail(fwd("{\"dtype\":\"int8\",\"shape\":[1],\"offset\":0}"),
             SLY_E_BAD_REQUEST, "inputs[0].region: missing");
  parse_fail(fwd("{\"dtype\":\"int8\",\"shape\":[1],\"region\":1}"),
             SLY_E_BAD_REQUEST, "inputs[0].offset: missing");
  parse_fail(fwd("{\"dtype\":\"int8\",\"shape\":[1],\"region\":-1,"
                 "\"offset\":0}"),
             SLY_E_BAD_REQUEST,
             "inputs[0].region: expected an integer in 0..2^53-1");
  parse_fail(fwd("{\"dtype\":\"int8\",\"shape\":[1],\"region\":1,"
                 "\"offset\":9007199254740992}"),
             SLY_E_BAD_REQUEST,
             "inputs[0].offset: expected an integer in 0..2^53-1");
}

Test(descriptor, an_unknown_field_in_a_descriptor_is_bad_request) {
  parse_fail(fwd("{\"dtype\":\"int8\",\"shape\":[1],\"region\":1,"
                 "\"offset\":0,\"stride\":[1]}"),
             SLY_E_BAD_REQUEST, "inputs[0].stride: unknown field");
}

Test(descriptor, a_descriptor_that_is_not_an_object_is_bad_tensor) {
  parse_fail(fwd("[\"int8\",[1],1,0]"), SLY_E_BAD_TENSOR,
             "inputs[0]: expected a tensor descriptor object");
}

Test(descriptor, inputs_that_are_not_an_array_are_bad_request) {
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":{}}", SLY_E_BAD_REQUEST,
             "inputs: expected an array");
}

Test(descriptor, an_offset_not_a_multiple_of_the_element_size_is_bad_tensor) {
  parse_fail(fwd("{\"dtype\":\"float32\",\"shape\":[1],\"region\":1,"
                 "\"offset\":6}"),
             SLY_E_BAD_TENSOR,
             "inputs[0].offset: 6 is not a multiple of 4, the size of float32");
  parse_fail(fwd("{\"dtype\":\"int64\",\"shape\":[1],\"region\":1,"
                 "\"offset\":4}"),
             SLY_E_BAD_TENSOR, "not a multiple of 8");
  proto_request r;
  parse_ok(fwd("{\"dtype\":\"int64\",\"shape\":[1],\"region\":1,"
               "\"offset\":8}"),
           &r);
  parse_ok(fwd("{\"dtype\":\"uint8\",\"shape\":[1],\"region\":1,"
               "\"offset\":7}"),
           &r);
}

/* ---- proto_tensor_check: alignment and bounds against the region ---- */

static proto_tensor tensor(proto_dtype d, uint64_t offset, uint64_t nbytes) {
  proto_tensor t = {.dtype = d, .ndim = 1, .region = 5, .offset = offset,
                    .nbytes = nbytes};
  t.shape[0] = nbytes / proto_dtype_size(d);
  return t;
}

Test(tensor_check, a_tensor_ending_exactly_at_the_region_end_fits) {
  proto_tensor t = tensor(PROTO_DTYPE_FLOAT32, 4096, 4096);
  cr_assert_eq(proto_tensor_check(&t, 8192, NULL), 0);
  t = tensor(PROTO_DTYPE_FLOAT32, 0, 8192);
  cr_assert_eq(proto_tensor_check(&t, 8192, NULL), 0);
}

Test(tensor_check, one_byte_past_the_region_end_is_bad_region) {
  proto_tensor t = tensor(PROTO_DTYPE_UINT8, 4097, 4096);
  proto_error e;
  cr_assert_eq(proto_tensor_check(&t, 8192, &e), SLY_E_BAD_REGION);
  cr_assert(strstr(e.message, "region 5") != NULL, "%s", e.message);
  t = tensor(PROTO_DTYPE_UINT8, 0, 8193);
  cr_assert_eq(proto_tensor_check(&t, 8192, NULL), SLY_E_BAD_REGION);
}

Test(tensor_check, an_empty_tensor_may_sit_at_the_end_but_not_past_it) {
  proto_tensor t = tensor(PROTO_DTYPE_UINT8, 8192, 0);
  cr_assert_eq(proto_tensor_check(&t, 8192, NULL), 0);
  t.offset = 8193;
  cr_assert_eq(proto_tensor_check(&t, 8192, NULL), SLY_E_BAD_REGION);
}

Test(tensor_check, offset_plus_nbytes_that_wraps_past_two_to_the_64_is_caught) {
  /* offset + nbytes = 2^64 + 4, which wraps to 4 < region size. */
  proto_tensor t = tensor(PROTO_DTYPE_UINT8, UINT64_MAX - 3, 8);
  cr_assert_eq(proto_tensor_check(&t, 4096, NULL), SLY_E_BAD_REGION);
  cr_assert_eq(proto_tensor_check(&t, UINT64_MAX, NULL), SLY_E_BAD_REGION);
  t = tensor(PROTO_DTYPE_UINT8, 8, UINT64_MAX - 3);
  cr_assert_eq(proto_tensor_check(&t, 4096, NULL), SLY_E_BAD_REGION);
  t = tensor(PROTO_DTYPE_UINT8, UINT64_MAX - 8, 8);
  cr_assert_eq(proto_tensor_check(&t, UINT64_MAX, NULL), 0,
               "the very last 8 bytes of the largest region fit");
}

Test(tensor_check, misalignment_is_bad_tensor_even_inside_the_region) {
  for (unsigned d = 0; d < PROTO_DTYPE_COUNT; d++) {
    unsigned size = proto_dtype_size((proto_dtype)d);
    for (uint64_t off = 0; off < 16; off++) {
      proto_tensor t = tensor((proto_dtype)d, off, size);
      int want = off % size == 0 ? 0 : SLY_E_BAD_TENSOR;
      cr_assert_eq(proto_tensor_check(&t, 4096, NULL), want, "%s at %llu",
                   proto_dtype_name((proto_dtype)d), (unsigned long long)off);
    }
  }
}

Test(tensor_check, a_parsed_descriptor_is_checked_against_its_region) {
  proto_request r;
  parse_ok(fwd("{\"dtype\":\"float32\",\"shape\":[2,8],\"region\":1,"
               "\"offset\":64}"),
           &r);
  cr_assert_eq(proto_tensor_check(&r.inputs[0], 64 + 64, NULL), 0);
  cr_assert_eq(proto_tensor_check(&r.inputs[0], 64 + 63, NULL),
               SLY_E_BAD_REGION);
}

/* ---- proto_range_check: "out" ---- */

Test(range_check, a_range_ending_at_the_region_end_fits_one_byte_more_does_not) {
  proto_range r = {.region = 2, .offset = 100, .bytes = 924};
  cr_assert_eq(proto_range_check(&r, 1024, NULL), 0);
  r.bytes = 925;
  proto_error e;
  cr_assert_eq(proto_range_check(&r, 1024, &e), SLY_E_BAD_REGION);
  cr_assert(strstr(e.message, "out") != NULL, "%s", e.message);
}

Test(range_check, an_empty_range_at_the_end_fits_and_past_it_does_not) {
  proto_range r = {.region = 2, .offset = 1024, .bytes = 0};
  cr_assert_eq(proto_range_check(&r, 1024, NULL), 0);
  r.offset = 1025;
  cr_assert_eq(proto_range_check(&r, 1024, NULL), SLY_E_BAD_REGION);
}

Test(range_check, sums_that_wrap_are_caught) {
  proto_range r = {.region = 2, .offset = UINT64_MAX, .bytes = 2};
  cr_assert_eq(proto_range_check(&r, 1024, NULL), SLY_E_BAD_REGION);
  r = (proto_range){.region = 2, .offset = 2, .bytes = UINT64_MAX};
  cr_assert_eq(proto_range_check(&r, UINT64_MAX, NULL), SLY_E_BAD_REGION);
  r = (proto_range){.region = 2, .offset = 1, .bytes = UINT64_MAX - 1};
  cr_assert_eq(proto_range_check(&r, UINT64_MAX, NULL), 0);
}
