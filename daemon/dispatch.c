/* dispatch.c — request checks and the handler of each op. */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "log.h"
#include "outpool.h"
#include "reply.h"
#include "slyced.h"
#include "sysmem.h"

/* What a handler needs beyond the request. A handler that queues a job
 * returns DEFERRED: its reply comes when the job is done. */
typedef struct {
  int *fds;
  size_t n_fds;
  uint64_t start_us;
  uint64_t retired[PROTO_MAX_IDS]; /* server regions freed by "release" */
  size_t n_retired;
} dispatch_ctx;

#define DEFERRED 1

typedef int (*handler_fn)(conn *c, const proto_request *req,
                          dispatch_ctx *ctx, cJSON *reply, proto_error *err);

void dispatch_add_retired(cJSON *reply, const uint64_t *ids, size_t n) {
  cJSON *a = cJSON_AddArrayToObject(reply, "retired_regions");
  for (size_t i = 0; a != NULL && i < n; i++)
    cJSON_AddItemToArray(a, cJSON_CreateNumber((double)ids[i]));
}

static const config_pipeline *find_pipeline(const config *cfg,
                                            const char *name) {
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    if (strcmp(cfg->pipelines[i].name, name) == 0)
      return &cfg->pipelines[i];
  return NULL;
}

static int need_slice(conn *c, const char *name, slice **out,
                      proto_error *err) {
  slice *s = slices_find(&c->sd->slices, name);
  if (s == NULL)
    return proto_fail(err, SLY_E_NOT_FOUND, "no slice named '%s'", name);
  *out = s;
  return 0;
}


static int on_hello(conn *c, const proto_request *req, dispatch_ctx *ctx,
                    cJSON *reply, proto_error *err) {
  (void)ctx;
  slyced *sd = c->sd;
  if (req->client[0] != '\0')
    log_debug("conn %llu: hello from '%s' (uid %u pid %d)",
              (unsigned long long)c->id, req->client, (unsigned)c->peer.uid,
              (int)c->peer.pid);
  cJSON_AddStringToObject(reply, "server", "slyced " SLY_VERSION);
  cJSON_AddNumberToObject(reply, "protocol", SLY_PROTOCOL_VERSION);
  cJSON_AddStringToObject(reply, "device", sd->cfg->device);
  cJSON_AddBoolToObject(reply, "admin",
                        peer_is_admin(&c->peer, sd->uid, sd->cfg->has_admin_gid,
                                      sd->cfg->admin_gid));
  if (proto_reply_add_limits(reply, &sd->cfg->limits) < 0)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  return 0;
}

static int on_map_region(conn *c, const proto_request *req, dispatch_ctx *ctx,
                         cJSON *reply, proto_error *err) {
  (void)req;
  if (ctx->n_fds != 1)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "map_region needs exactly one fd (SCM_RIGHTS) with the "
                      "frame");
  region *r;
  int rc = region_map_client(
      ctx->fds[0], c->sd->cfg->limits.max_region_mb * 1024 * 1024, &r, err);
  close(ctx->fds[0]);
  ctx->fds[0] = -1;
  if (rc < 0)
    return rc;
  rc = conn_region_add(c, r, err);
  if (rc < 0) {
    region_unref(r);
    return rc;
  }
  log_debug("conn %llu: region %llu mapped, %llu bytes%s",
            (unsigned long long)c->id, (unsigned long long)r->id,
            (unsigned long long)r->bytes, r->writable ? "" : " (read-only)");
  cJSON_AddNumberToObject(reply, "region", (double)r->id);
  cJSON_AddNumberToObject(reply, "bytes", (double)r->bytes);
  return 0;
}

static int on_unmap_region(conn *c, const proto_request *req,
                           dispatch_ctx *ctx, cJSON *reply, proto_error *err) {
  (void)ctx, (void)reply;
  return conn_region_remove(c, req->region, err);
}

/* Resolves what a forward runs: a pipeline, a slice, or the active slice. */
static int forward_slices(conn *c, const proto_request *req, slice ***out,
                          size_t *n, proto_error *err) {
  const char *name = req->slice[0] != '\0' ? req->slice : c->active_slice;
  if (req->pipeline[0] != '\0') {
    const config_pipeline *p = find_pipeline(c->sd->cfg, req->pipeline);
    if (p == NULL)
      return proto_fail(err, SLY_E_NOT_FOUND, "no pipeline named '%s'",
                        req->pipeline);
    slice **v = calloc(p->n_slices, sizeof(*v));
    if (v == NULL)
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < p->n_slices; i++) {
      v[i] = slices_find(&c->sd->slices, p->slices[i]);
      if (v[i] == NULL) {
        free(v);
        return proto_fail(err, SLY_E_NOT_FOUND,
                          "pipeline '%s': no slice named '%s'", p->name,
                          p->slices[i]);
      }
    }
    *out = v;
    *n = p->n_slices;
    return 0;
  }
  if (name == NULL)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "forward names no slice or pipeline and the connection "
                      "has no active slice (set_active_slice)");
  slice **v = calloc(1, sizeof(*v));
  if (v == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  int rc = need_slice(c, name, &v[0], err);
  if (rc < 0) {
    free(v);
    return rc;
  }
  *out = v;
  *n = 1;
  return 0;
}

static int on_forward(conn *c, const proto_request *req, dispatch_ctx *ctx,
                      cJSON *reply, proto_error *err) {
  (void)reply;
  if (outpool_live_bytes(c->pool) >= c->sd->cfg->limits.max_output_mb << 20)
    return proto_fail(err, SLY_E_BUSY,
                      "unreleased outputs reached max_output_mb (%llu MiB); "
                      "release leases",
                      (unsigned long long)c->sd->cfg->limits.max_output_mb);
  slice **v = NULL;
  size_t n = 0;
  int rc = forward_slices(c, req, &v, &n, err);
  if (rc < 0)
    return rc;
  rc = forward_submit(c, req, v, n, ctx->retired, ctx->n_retired,
                      ctx->start_us, err);
  free(v);
  return rc < 0 ? rc : DEFERRED;
}

static int on_release(conn *c, const proto_request *req, dispatch_ctx *ctx,
                      cJSON *reply, proto_error *err) {
  /* Every lease was checked in precheck; release them all or none. */
  for (uint32_t i = 0; i < req->n_leases; i++)
    if (!outpool_has_lease(c->pool, req->leases[i]))
      return proto_fail(err, SLY_E_NOT_FOUND, "no lease %llu on this "
                        "connection", (unsigned long long)req->leases[i]);
  for (uint32_t i = 0; i < req->n_leases; i++)
    outpool_release(c->pool, req->leases[i], ctx->retired, &ctx->n_retired,
                    PROTO_MAX_IDS, err);
  if (ctx->n_retired == 0)
    cJSON_AddArrayToObject(reply, "retired_regions");
  return 0;
}

static int on_set_active_slice(conn *c, const proto_request *req,
                               dispatch_ctx *ctx, cJSON *reply,
                               proto_error *err) {
  slice *s = NULL;
  int rc = need_slice(c, req->slice, &s, err);
  if (rc < 0)
    return rc;
  char *name = strdup(req->slice);
  if (name == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  free(c->active_slice);
  c->active_slice = name;
  log_info("conn %llu (uid %u pid %d): active slice %s (%s)",
           (unsigned long long)c->id, (unsigned)c->peer.uid, (int)c->peer.pid,
           s->name, slice_state_name((slice_state)atomic_load(&s->state)));
  /* Resident means in the tier forwards run from: a slice built but now
   * only in its cache file is brought in too. With requests of this
   * connection still in flight (an evict of this slice, say) the answer
   * is not known here: the load job gives it after them. */
  bool resident = c->pending == 0 && tiers_at_compute(&c->sd->tiers, s);
  if (resident || !req->wait) {
    cJSON_AddStringToObject(reply, "slice", s->name);
    cJSON_AddStringToObject(reply, "tier", slice_tier_name(s));
    if (!resident) /* a background load; its failure shows in list */
      forward_submit_load(c, s, false, PROTO_OP_SET_ACTIVE_SLICE, req->id,
                          false, NULL, 0, ctx->start_us, err);
    return 0;
  }
  rc = forward_submit_load(c, s, true, PROTO_OP_SET_ACTIVE_SLICE, req->id,
                           false, ctx->retired, ctx->n_retired, ctx->start_us,
                           err);
  return rc < 0 ? rc : DEFERRED;
}

static int on_tier_op(conn *c, const proto_request *req, dispatch_ctx *ctx,
                      cJSON *reply, proto_error *err) {
  (void)reply;
  slice *s = NULL;
  int rc = need_slice(c, req->slice, &s, err);
  if (rc < 0)
    return rc;
  /* proto_tier and the tiers' numbering agree: gpu 0, cpu 1, disk 2. */
  int tier = req->has_tier ? (int)req->tier : TIER_DISK;
  rc = forward_submit_tier_op(c, s, (int)req->op, tier, req->id, ctx->retired,
                              ctx->n_retired, ctx->start_us, err);
  return rc < 0 ? rc : DEFERRED;
}

static int on_add_slice(conn *c, const proto_request *req, dispatch_ctx *ctx,
                        cJSON *reply, proto_error *err) {
  (void)reply;
  slyced *sd = c->sd;
  if (slices_find(&sd->slices, req->slice) != NULL ||
      find_pipeline(sd->cfg, req->slice) != NULL)
    return proto_fail(err, SLY_E_EXISTS,
                      "a slice or pipeline named '%s' exists", req->slice);
  bool known = false;
  for (const char *const *k = shim_constructors(); *k != NULL; k++)
    known = known || strcmp(*k, req->constructor) == 0;
  if (!known)
    return proto_fail(err, SLY_E_BAD_REQUEST, "constructor: unknown '%s'",
                      req->constructor);
  slice *s = slice_new(req->slice, req->constructor, req->config,
                       sd->cfg->config_dir, sd->cfg->device, true);
  if (s == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  if (slices_add(&sd->slices, s) < 0) {
    slice_unref(s);
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  log_info("slice %s: added by uid %u pid %d (%s)", s->name,
           (unsigned)c->peer.uid, (int)c->peer.pid, s->constructor);
  /* Built now, so that a bad config is answered here and not at the first
   * forward; the reply comes once the slice is loaded. */
  int rc = forward_submit_load(c, s, true, PROTO_OP_ADD_SLICE, req->id, true,
                               ctx->retired, ctx->n_retired, ctx->start_us,
                               err);
  if (rc < 0) {
    slices_remove(&sd->slices, s->name);
    return rc;
  }
  return DEFERRED;
}

static int on_remove_slice(conn *c, const proto_request *req,
                           dispatch_ctx *ctx, cJSON *reply, proto_error *err) {
  (void)ctx, (void)reply;
  if (slices_remove(&c->sd->slices, req->slice) < 0)
    return proto_fail(err, SLY_E_NOT_FOUND, "no slice named '%s'", req->slice);
  log_info("slice %s: removed by uid %u pid %d", req->slice,
           (unsigned)c->peer.uid, (int)c->peer.pid);
  return 0;
}

static int on_list(conn *c, const proto_request *req, dispatch_ctx *ctx,
                   cJSON *reply, proto_error *err) {
  (void)req, (void)ctx;
  const slice_registry *reg = &c->sd->slices;
  const config *cfg = c->sd->cfg;
  cJSON *slices = cJSON_AddArrayToObject(reply, "slices");
  cJSON *pipes = cJSON_AddArrayToObject(reply, "pipelines");
  if (slices == NULL || pipes == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  for (size_t i = 0; i < reg->n; i++) {
    const slice *sl = reg->v[i];
    cJSON *s = cJSON_CreateObject();
    if (s == NULL || !cJSON_AddItemToArray(slices, s))
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
    cJSON_AddStringToObject(s, "name", sl->name);
    cJSON_AddStringToObject(s, "constructor", sl->constructor);
    cJSON_AddNumberToObject(s, "bytes", (double)atomic_load(&sl->bytes));
    cJSON_AddStringToObject(s, "tier", slice_tier_name(sl));
    cJSON_AddStringToObject(
        s, "state", slice_state_name((slice_state)atomic_load(&sl->state)));
    int pin = atomic_load(&sl->place.pinned_tier);
    if (pin >= 0)
      cJSON_AddStringToObject(s, "pinned", tier_name(pin));
    else
      cJSON_AddBoolToObject(s, "pinned", 0);
    cJSON_AddNumberToObject(s, "hits", (double)atomic_load(&sl->hits));
    cJSON_AddNumberToObject(s, "loads", (double)atomic_load(&sl->loads));
    cJSON_AddNumberToObject(s, "last_used",
                            (double)atomic_load(&sl->last_used_ms) / 1000.0);
  }
  for (size_t i = 0; i < cfg->n_pipelines; i++) {
    cJSON *p = cJSON_CreateObject();
    if (p == NULL || !cJSON_AddItemToArray(pipes, p))
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
    cJSON_AddStringToObject(p, "name", cfg->pipelines[i].name);
    cJSON *names = cJSON_CreateStringArray(
        (const char *const *)cfg->pipelines[i].slices,
        (int)cfg->pipelines[i].n_slices);
    if (names == NULL || !cJSON_AddItemToObject(p, "slices", names))
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  }
  return 0;
}

static int on_stats(conn *c, const proto_request *req, dispatch_ctx *ctx,
                    cJSON *reply, proto_error *err) {
  (void)req, (void)ctx;
  slyced *sd = c->sd;
  cJSON_AddNumberToObject(reply, "uptime_s",
                          (double)(slyced_now_ms() - sd->start_ms) / 1000.0);
  cJSON *proc = cJSON_AddObjectToObject(reply, "process");
  cJSON *conns = cJSON_AddObjectToObject(reply, "connections");
  if (proc == NULL || conns == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  uint64_t rss = 0, total = 0, avail = 0;
  if (sysmem_rss(&rss) < 0 || sysmem_system(&total, &avail) < 0)
    log_warn("stats: cannot read memory figures from /proc");
  cJSON_AddNumberToObject(proc, "rss_bytes", (double)rss);
  cJSON_AddNumberToObject(proc, "mem_available_bytes", (double)avail);
  cJSON_AddNumberToObject(proc, "mem_total_bytes", (double)total);
  cJSON_AddNumberToObject(proc, "cpus", (double)sd->cpus);
  cJSON_AddBoolToObject(proc, "spin_waits", sd->exec.spin);
  cJSON_AddNumberToObject(conns, "open", (double)sd->srv.n_conns);
  cJSON_AddNumberToObject(conns, "accepted", (double)sd->stats.conns_accepted);
  cJSON_AddNumberToObject(conns, "rejected", (double)sd->stats.conns_rejected);
  size_t staging = executor_pending(&sd->loader);
  cJSON_AddNumberToObject(reply, "queued",
                          (double)(executor_pending(&sd->exec) + staging));
  cJSON_AddNumberToObject(reply, "staging", (double)staging);
  cJSON_AddNumberToObject(reply, "loaders", (double)sd->loader.n_workers);
  cJSON_AddNumberToObject(reply, "interleaved",
                          (double)atomic_load(&sd->exec.interleaved));
  tiers_stats_json(&sd->tiers, reply);
  if (stats_add_json(&sd->stats, reply) < 0)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  return 0;
}

static int on_reload(conn *c, const proto_request *req, dispatch_ctx *ctx,
                     cJSON *reply, proto_error *err) {
  (void)req, (void)ctx;
  char msg[CONFIG_ERROR_MAX];
  log_info("reload requested by uid %u pid %d", (unsigned)c->peer.uid,
           (int)c->peer.pid);
  cJSON *later = cJSON_AddArrayToObject(reply, "restart_needed");
  if (later == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  if (slyced_reload(c->sd, later, msg) < 0)
    return proto_fail(err, SLY_E_BAD_REQUEST, "%s", msg);
  return 0;
}

static int on_shutdown(conn *c, const proto_request *req, dispatch_ctx *ctx,
                       cJSON *reply, proto_error *err) {
  (void)req, (void)ctx, (void)reply, (void)err;
  char why[96];
  snprintf(why, sizeof(why), "shutdown requested by uid %u pid %d",
           (unsigned)c->peer.uid, (int)c->peer.pid);
  /* The reply is queued before the drain begins, so the client sees it. */
  slyced_begin_shutdown(c->sd, why);
  return 0;
}

static const handler_fn handlers[PROTO_OP_COUNT] = {
    [PROTO_OP_HELLO] = on_hello,
    [PROTO_OP_MAP_REGION] = on_map_region,
    [PROTO_OP_UNMAP_REGION] = on_unmap_region,
    [PROTO_OP_FORWARD] = on_forward,
    [PROTO_OP_RELEASE] = on_release,
    [PROTO_OP_SET_ACTIVE_SLICE] = on_set_active_slice,
    [PROTO_OP_LIST] = on_list,
    [PROTO_OP_STATS] = on_stats,
    [PROTO_OP_LOAD] = on_tier_op,
    [PROTO_OP_EVICT] = on_tier_op,
    [PROTO_OP_PIN] = on_tier_op,
    [PROTO_OP_UNPIN] = on_tier_op,
    [PROTO_OP_ADD_SLICE] = on_add_slice,
    [PROTO_OP_REMOVE_SLICE] = on_remove_slice,
    [PROTO_OP_RELOAD] = on_reload,
    [PROTO_OP_SHUTDOWN] = on_shutdown,
};

/* The leases named in "release" are released, then the checks that come
 * before any handler run, in the order a client would want to hear them. */
static int precheck(conn *c, const proto_request *req, dispatch_ctx *ctx,
                    proto_error *err) {
  slyced *sd = c->sd;
  /* Releases come first and all-or-nothing, so that whatever happens to the
   * request itself, the client knows its leases are gone. */
  for (uint32_t i = 0; i < req->n_release; i++)
    if (!outpool_has_lease(c->pool, req->release[i]))
      return proto_fail(err, SLY_E_NOT_FOUND,
                        "release: no lease %llu on this connection; nothing "
                        "was released",
                        (unsigned long long)req->release[i]);
  for (uint32_t i = 0; i < req->n_release; i++)
    outpool_release(c->pool, req->release[i], ctx->retired, &ctx->n_retired,
                    PROTO_MAX_IDS, err);
  if (ctx->n_fds > 0 && req->op != PROTO_OP_MAP_REGION)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "only map_region takes an fd; %s came with %zu",
                      proto_op_name(req->op), ctx->n_fds);
  if (sd->draining)
    return proto_fail(err, SLY_E_SHUTTING_DOWN, "slyced is shutting down");
  if (proto_op_is_admin(req->op) &&
      !peer_is_admin(&c->peer, sd->uid, sd->cfg->has_admin_gid,
                     sd->cfg->admin_gid)) {
    log_info("conn %llu: %s refused to uid %u pid %d (not an admin)",
             (unsigned long long)c->id, proto_op_name(req->op),
             (unsigned)c->peer.uid, (int)c->peer.pid);
    return proto_fail(err, SLY_E_PERMISSION_DENIED,
                      "%s needs root, slyced's user or the admin group",
                      proto_op_name(req->op));
  }
  return 0;
}

void dispatch_request(conn *c, const proto_request *req, int *fds,
                      size_t n_fds, uint64_t start_us) {
  dispatch_ctx ctx = {.fds = fds, .n_fds = n_fds, .start_us = start_us};
  proto_error err;
  int rc = precheck(c, req, &ctx, &err);
  cJSON *reply = NULL;
  if (rc == 0) {
    reply = proto_reply_ok(req->id);
    if (reply == NULL)
      rc = proto_fail(&err, SLY_E_NO_MEMORY, "out of memory");
  }
  if (rc == 0)
    rc = handlers[req->op](c, req, &ctx, reply, &err);
  for (size_t i = 0; i < n_fds; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  if (rc != DEFERRED) {
    if (rc < 0) {
      cJSON_Delete(reply);
      reply = proto_reply_error(true, req->id, &err);
    }
    if (reply != NULL && ctx.n_retired > 0)
      dispatch_add_retired(reply, ctx.retired, ctx.n_retired);
    if (reply == NULL) {
      conn_close(c);
    } else {
      conn_reply(c, (int)req->op, reply, start_us);
    }
  }
  cJSON_Delete(reply);
}
