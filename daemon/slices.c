/* slices.c — the slice registry and lazy module loading. */
#include "slices.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"
#include "slyce.h"

slice *slice_new(const char *name, const char *constructor,
                 const cJSON *config, const char *config_dir,
                 const char *device, bool runtime) {
  slice *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->name = strdup(name);
  s->constructor = strdup(constructor);
  s->config_dir = strdup(config_dir);
  s->device = strdup(device);
  s->config = config != NULL ? cJSON_Duplicate(config, 1) : cJSON_CreateObject();
  if (s->name == NULL || s->constructor == NULL || s->config_dir == NULL ||
      s->device == NULL || s->config == NULL) {
    free(s->name), free(s->constructor), free(s->config_dir), free(s->device);
    cJSON_Delete(s->config);
    free(s);
    return NULL;
  }
  s->runtime = runtime;
  atomic_init(&s->refs, 1);
  atomic_init(&s->state, SLICE_UNLOADED);
  atomic_init(&s->removed, false);
  atomic_init(&s->place.tier, TIER_NONE);
  atomic_init(&s->place.pinned_tier, -1);
  return s;
}

void slice_ref(slice *s) { atomic_fetch_add(&s->refs, 1); }

void slice_unref(slice *s) {
  if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  shim_module_free(s->module);
  free(s->place.entries);
  slice_unref(s->place.successor);
  free(s->name), free(s->constructor), free(s->config_dir), free(s->device);
  cJSON_Delete(s->config);
  free(s);
}

const char *slice_state_name(slice_state st) {
  switch (st) {
  case SLICE_UNLOADED:
    return "unloaded";
  case SLICE_LOADING:
    return "loading";
  case SLICE_RESIDENT:
    return "resident";
  case SLICE_FAILED:
    return "failed";
  }
  return "unknown";
}

const char *slice_tier_name(const slice *s) {
  return tier_name(atomic_load(&s->place.tier));
}

slice *slices_find(const slice_registry *r, const char *name) {
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->v[i]->name, name) == 0)
      return r->v[i];
  return NULL;
}

int slices_add(slice_registry *r, slice *s) {
  if (slices_find(r, s->name) != NULL)
    return SLY_E_EXISTS;
  slice **v = realloc(r->v, (r->n + 1) * sizeof(*v));
  if (v == NULL)
    return SLY_E_NO_MEMORY;
  r->v = v;
  r->v[r->n++] = s;
  return 0;
}

int slices_remove(slice_registry *r, const char *name) {
  for (size_t i = 0; i < r->n; i++) {
    if (strcmp(r->v[i]->name, name) != 0)
      continue;
    slice *s = r->v[i];
    memmove(&r->v[i], &r->v[i + 1], (r->n - i - 1) * sizeof(*r->v));
    r->n--;
    atomic_store(&s->removed, true);
    slice_unref(s);
    return 0;
  }
  return SLY_E_NOT_FOUND;
}

static const config_slice *cfg_find(const config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_slices; i++)
    if (strcmp(cfg->slices[i].name, name) == 0)
      return &cfg->slices[i];
  return NULL;
}

int slices_sync_config(slice_registry *r, const config *cfg) {
  /* Drop config slices that vanished or changed; a config slice wins over a
   * runtime slice of the same name. */
  for (size_t i = 0; i < r->n;) {
    slice *s = r->v[i];
    const config_slice *c = cfg_find(cfg, s->name);
    bool keep = c == NULL ? s->runtime
                          : !s->runtime &&
                                strcmp(c->constructor, s->constructor) == 0 &&
                                cJSON_Compare(c->config, s->config, 1) &&
                                strcmp(cfg->config_dir, s->config_dir) == 0 &&
                                strcmp(cfg->device, s->device) == 0;
    if (keep) {
      i++;
      continue;
    }
    if (c != NULL && s->runtime)
      log_warn("slice %s: added at run time, replaced by the config's slice "
               "of the same name", s->name);
    else
      log_info("slice %s: %s by the config", s->name,
               c == NULL ? "removed" : "replaced");
    slices_remove(r, s->name);
  }
  for (size_t i = 0; i < cfg->n_slices; i++) {
    const config_slice *c = &cfg->slices[i];
    if (slices_find(r, c->name) != NULL)
      continue;
    slice *s = slice_new(c->name, c->constructor, c->config, cfg->config_dir,
                         cfg->device, false);
    if (s == NULL)
      return SLY_E_NO_MEMORY;
    int rc = slices_add(r, s);
    if (rc < 0) {
      slice_unref(s);
      return rc;
    }
  }
  return 0;
}

void slices_clear(slice_registry *r) {
  for (size_t i = 0; i < r->n; i++) {
    atomic_store(&r->v[i]->removed, true);
    slice_unref(r->v[i]);
  }
  free(r->v);
  r->v = NULL;
  r->n = 0;
}
