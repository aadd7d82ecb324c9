/* slices.h — the slices the daemon serves (daemon/).
 *
 * Owns: the registry (name -> slice), on the loop thread, and each slice's
 * module, loaded on the executor thread. A slice is reference counted
 * (atomically): the registry holds one reference and every job that uses it
 * another, so removing a slice never frees a module under a running forward.
 * Slices come from the config (re-synced on reload) or from add_slice (kept
 * across reloads).
 */
#ifndef DAEMON_SLICES_H
#define DAEMON_SLICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "config.h"
#include "tiers.h"
#include "torch_shim.h"

typedef enum {
  SLICE_UNLOADED,
  SLICE_LOADING,
  SLICE_RESIDENT,
  SLICE_FAILED,
} slice_state;

typedef struct slice {
  atomic_int refs;
  char *name, *constructor, *config_dir, *device;
  cJSON *config; /* owned */
  bool runtime;  /* added with add_slice */
  int staging;   /* loop thread: jobs on the loader staging it (forward.c) */
  atomic_int state;
  atomic_bool removed; /* out of the registry: the tiers reclaim its memory */
  /* Executor thread only. */
  shim_module *module;
  tier_place place;
  /* Figures for list; written by either thread, read by the loop. */
  atomic_uint_fast64_t bytes, hits, loads;
  atomic_uint_fast64_t last_used_ms; /* wall clock, 0 = never */
} slice;

typedef struct {
  slice **v;
  size_t n;
} slice_registry;

slice *slice_new(const char *name, const char *constructor,
                 const cJSON *config, const char *config_dir,
                 const char *device, bool runtime);
void slice_ref(slice *s);
void slice_unref(slice *s); /* the last reference frees the module */

const char *slice_state_name(slice_state s);
/* "gpu", "cpu", "disk" or "none": the best tier holding the weights now. */
const char *slice_tier_name(const slice *s);

slice *slices_find(const slice_registry *r, const char *name);
/* Adds (taking the caller's reference). Returns 0 or SLY_E_EXISTS. */
int slices_add(slice_registry *r, slice *s);
/* Removes and drops the registry's reference. Returns 0 or NOT_FOUND. */
int slices_remove(slice_registry *r, const char *name);
/* Makes the config's slices match `cfg`: new ones added, vanished ones
 * removed, changed ones replaced; runtime slices stay unless a config slice
 * now has their name. Returns 0 or SLY_E_NO_MEMORY. */
int slices_sync_config(slice_registry *r, const config *cfg);
void slices_clear(slice_registry *r);

#endif
