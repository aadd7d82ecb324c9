/* fixtures.h — the PyTorch fixtures of tests/fixtures, for tests that run
 * them through a real slyced.
 *
 * Owns: the config entries that name every fixture slice by absolute path,
 * reading a fixture's .npy (inputs and PyTorch's reference outputs), placing
 * an input in an arena, and comparing an output with its reference. Functions
 * named fx_try_* never assert, so they are safe on threads other than the
 * test's own; the others abort the Criterion test on failure.
 */
#ifndef SLY_TEST_FIXTURES_H
#define SLY_TEST_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slyce.h"

#ifndef SLY_TEST_SOURCE_DIR
#error "SLY_TEST_SOURCE_DIR must be defined by the Makefile"
#endif

#define FX_DIR SLY_TEST_SOURCE_DIR "/tests/fixtures"

/* DESIGN.md: outputs agree with PyTorch's within these relative errors. */
#define FX_TOL_F32 1e-5
#define FX_TOL_BF16 2e-2

/* Every fixture as a slice named after it (ts_one, ts_multi, ts_tuple,
 * ts_embed, lin, tel, tel_bf16), plus lin8 (a seeded linear 8 -> 8 that
 * chains after lin), the pipeline "p" = [lin, lin8], and then the entries of
 * `more_slices` (NULL: none; "{...}, {...}") and the top-level fields of
 * `more_keys` (NULL: none; "\"k\": v"). Returns the extra JSON for
 * td_start(); the caller frees it. */
char *fx_config(const char *more_slices, const char *more_keys);

/* A whole .npy file in host memory. */
typedef struct {
  sly_dtype dtype;
  uint32_t ndim;
  uint64_t shape[SLY_MAX_DIMS];
  uint64_t nbytes;
  void *data; /* malloc'd */
} fx_array;

/* Reads FX_DIR/<name> ("ts_one.in0.npy"); aborts the test on failure. The
 * caller frees it with fx_array_free(). */
void fx_read(const char *name, fx_array *out);
/* Reads any .npy path. */
void fx_read_path(const char *path, fx_array *out);
void fx_array_free(fx_array *a);

/* Copies `a` into a fresh 64-byte aligned allocation of `arena` and
 * describes it in *t; with `bf16`, a float32 array is narrowed to bfloat16
 * (round to nearest even) on the way. Returns false when the arena is full. */
bool fx_try_put(sly_arena *arena, const fx_array *a, bool bf16, sly_tensor *t);
/* Same, aborting the test when the arena is full. */
sly_tensor fx_put(sly_arena *arena, const fx_array *a);
sly_tensor fx_put_bf16(sly_arena *arena, const fx_array *a);

/* Largest |out - ref| over the largest |ref| (both read as float: float32,
 * float64 or bfloat16 outputs against a float32 or float64 reference).
 * Writes why into `why` and returns false when dtype class or shape differ
 * or the error is over `tol`. */
bool fx_try_match(const sly_tensor *out, const fx_array *ref, double tol,
                  char *why, size_t why_len);
/* Asserts fx_try_match(); `what` names the output in the message. */
void fx_assert_match(const sly_tensor *out, const fx_array *ref, double tol,
                     const char *what);
/* Asserts `out` holds exactly the bytes, dtype and shape of `ref`. */
void fx_assert_same(const sly_tensor *out, const sly_tensor *ref,
                    const char *what);

/* A float32 tensor of `shape` in `arena` filled with a smooth pattern
 * (sin of the index), for inputs whose values do not matter. */
sly_tensor fx_put_pattern(sly_arena *arena, uint32_t ndim,
                          const uint64_t *shape);

#endif
