/* dispatch.c — request checks and the handler of each op. */
#include "dispatch.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reply.h"
#include "slyced.h"
#include "sysmem.h"

typedef int (*handler_fn)(conn *c, const proto_request *req, int *fds,
                          size_t n_fds, cJSON *reply, proto_error *err);

static const config_slice *find_slice(const config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_slices; i++)
    if (strcmp(cfg->slices[i].name, name) == 0)
      return &cfg->slices[i];
  return NULL;
}

static const config_pipeline *find_pipeline(const config *cfg,
                                            const char *name) {
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    if (strcmp(cfg->pipelines[i].name, name) == 0)
      return &cfg->pipelines[i];
  return NULL;
}

static int need_slice(conn *c, const char *name, proto_error *err) {
  if (find_slice(c->sd->cfg, name) == NULL)
    return proto_fail(err, SLY_E_NOT_FOUND, "no slice named '%s'", name);
  return 0;
}

/* Slices are listed but not yet run by this build: the slices issue brings
 * the torch shim and the executor. Saying so beats pretending. */
static int not_served(proto_error *err, const char *what) {
  return proto_fail(err, SLY_E_UNAVAILABLE,
                    "%s: running slices is not available in this build yet",
                    what);
}

static int on_hello(conn *c, const proto_request *req, int *fds, size_t n_fds,
                    cJSON *reply, proto_error *err) {
  (void)fds, (void)n_fds;
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

static int on_map_region(conn *c, const proto_request *req, int *fds,
                         size_t n_fds, cJSON *reply, proto_error *err) {
  (void)req;
  if (n_fds != 1)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "map_region needs exactly one fd (SCM_RIGHTS) with the "
                      "frame");
  region *r;
  int rc = region_map_client(
      fds[0], c->sd->cfg->limits.max_region_mb * 1024 * 1024, &r, err);
  close(fds[0]);
  fds[0] = -1;
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

static int on_unmap_region(conn *c, const proto_request *req, int *fds,
                           size_t n_fds, cJSON *reply, proto_error *err) {
  (void)fds, (void)n_fds, (void)reply;
  return conn_region_remove(c, req->region, err);
}

/* Checks every tensor and the out range against the connection's regions. */
static int check_tensors(conn *c, const proto_request *req, proto_error *err) {
  for (uint32_t i = 0; i < req->n_inputs; i++) {
    const proto_tensor *t = &req->inputs[i];
    region *r = conn_region_find(c, t->region);
    if (r == NULL)
      return proto_fail(err, SLY_E_BAD_REGION,
                        "inputs[%u]: no region %llu on this connection", i,
                        (unsigned long long)t->region);
    int rc = proto_tensor_check(t, r->bytes, err);
    if (rc < 0)
      return rc;
  }
  if (req->has_out) {
    region *r = conn_region_find(c, req->out.region);
    if (r == NULL)
      return proto_fail(err, SLY_E_BAD_REGION,
                        "out: no region %llu on this connection",
                        (unsigned long long)req->out.region);
    if (!r->writable)
      return proto_fail(err, SLY_E_BAD_REGION,
                        "out: region %llu is sealed against writes",
                        (unsigned long long)r->id);
    int rc = proto_range_check(&req->out, r->bytes, err);
    if (rc < 0)
      return rc;
  }
  return 0;
}

static int on_forward(conn *c, const proto_request *req, int *fds,
                      size_t n_fds, cJSON *reply, proto_error *err) {
  (void)fds, (void)n_fds, (void)reply;
  if (req->pipeline[0] != '\0') {
    if (find_pipeline(c->sd->cfg, req->pipeline) == NULL)
      return proto_fail(err, SLY_E_NOT_FOUND, "no pipeline named '%s'",
                        req->pipeline);
  } else if (req->slice[0] != '\0') {
    int rc = need_slice(c, req->slice, err);
    if (rc < 0)
      return rc;
  } else {
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "forward names no slice or pipeline and the connection "
                      "has no active slice (set_active_slice)");
  }
  int rc = check_tensors(c, req, err);
  if (rc < 0)
    return rc;
  return not_served(err, "forward");
}

static int on_release(conn *c, const proto_request *req, int *fds,
                      size_t n_fds, cJSON *reply, proto_error *err) {
  (void)c, (void)fds, (void)n_fds, (void)reply;
  /* No forward has run, so no lease exists yet. */
  return proto_fail(err, SLY_E_NOT_FOUND, "no lease %llu on this connection",
                    (unsigned long long)req->leases[0]);
}

static int on_slice_op(conn *c, const proto_request *req, int *fds,
                       size_t n_fds, cJSON *reply, proto_error *err) {
  (void)fds, (void)n_fds, (void)reply;
  int rc = need_slice(c, req->slice, err);
  if (rc < 0)
    return rc;
  return not_served(err, proto_op_name(req->op));
}

static int on_add_slice(conn *c, const proto_request *req, int *fds,
                        size_t n_fds, cJSON *reply, proto_error *err) {
  (void)fds, (void)n_fds, (void)reply;
  if (find_slice(c->sd->cfg, req->slice) != NULL ||
      find_pipeline(c->sd->cfg, req->slice) != NULL)
    return proto_fail(err, SLY_E_EXISTS, "a slice or pipeline named '%s' "
                      "exists", req->slice);
  return not_served(err, "add_slice");
}

static int on_list(conn *c, const proto_request *req, int *fds, size_t n_fds,
                   cJSON *reply, proto_error *err) {
  (void)req, (void)fds, (void)n_fds;
  const config *cfg = c->sd->cfg;
  cJSON *slices = cJSON_AddArrayToObject(reply, "slices");
  cJSON *pipes = cJSON_AddArrayToObject(reply, "pipelines");
  if (slices == NULL || pipes == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  for (size_t i = 0; i < cfg->n_slices; i++) {
    cJSON *s = cJSON_CreateObject();
    if (s == NULL || !cJSON_AddItemToArray(slices, s))
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
    cJSON_AddStringToObject(s, "name", cfg->slices[i].name);
    cJSON_AddStringToObject(s, "constructor", cfg->slices[i].constructor);
    cJSON_AddNumberToObject(s, "bytes", 0);
    cJSON_AddStringToObject(s, "tier", "none");
    cJSON_AddStringToObject(s, "state", "unloaded");
    cJSON_AddBoolToObject(s, "pinned", 0);
    cJSON_AddNumberToObject(s, "hits", 0);
    cJSON_AddNumberToObject(s, "loads", 0);
    cJSON_AddNumberToObject(s, "last_used", 0);
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

static int on_stats(conn *c, const proto_request *req, int *fds, size_t n_fds,
                    cJSON *reply, proto_error *err) {
  (void)req, (void)fds, (void)n_fds;
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
  cJSON_AddNumberToObject(conns, "open", (double)sd->srv.n_conns);
  cJSON_AddNumberToObject(conns, "accepted", (double)sd->stats.conns_accepted);
  cJSON_AddNumberToObject(conns, "rejected", (double)sd->stats.conns_rejected);
  if (stats_add_json(&sd->stats, reply) < 0)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  return 0;
}

static int on_reload(conn *c, const proto_request *req, int *fds, size_t n_fds,
                     cJSON *reply, proto_error *err) {
  (void)req, (void)fds, (void)n_fds, (void)reply;
  char msg[CONFIG_ERROR_MAX];
  log_info("reload requested by uid %u pid %d", (unsigned)c->peer.uid,
           (int)c->peer.pid);
  if (slyced_reload(c->sd, msg) < 0)
    return proto_fail(err, SLY_E_BAD_REQUEST, "%s", msg);
  return 0;
}

static int on_shutdown(conn *c, const proto_request *req, int *fds,
                       size_t n_fds, cJSON *reply, proto_error *err) {
  (void)req, (void)fds, (void)n_fds, (void)reply, (void)err;
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
    [PROTO_OP_SET_ACTIVE_SLICE] = on_slice_op,
    [PROTO_OP_LIST] = on_list,
    [PROTO_OP_STATS] = on_stats,
    [PROTO_OP_LOAD] = on_slice_op,
    [PROTO_OP_EVICT] = on_slice_op,
    [PROTO_OP_PIN] = on_slice_op,
    [PROTO_OP_UNPIN] = on_slice_op,
    [PROTO_OP_ADD_SLICE] = on_add_slice,
    [PROTO_OP_REMOVE_SLICE] = on_slice_op,
    [PROTO_OP_RELOAD] = on_reload,
    [PROTO_OP_SHUTDOWN] = on_shutdown,
};

static void close_fds(int *fds, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

/* The checks that come before any handler, in the order a client would want
 * to hear about them. */
static int precheck(conn *c, const proto_request *req, size_t n_fds,
                    proto_error *err) {
  slyced *sd = c->sd;
  if (n_fds > 0 && req->op != PROTO_OP_MAP_REGION)
    return proto_fail(err, SLY_E_BAD_REQUEST,
                      "only map_region takes an fd; %s came with %zu",
                      proto_op_name(req->op), n_fds);
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
  if (req->n_release > 0)
    return proto_fail(err, SLY_E_NOT_FOUND, "release: no lease %llu on this "
                      "connection", (unsigned long long)req->release[0]);
  return 0;
}

void dispatch_request(conn *c, const proto_request *req, int *fds,
                      size_t n_fds, uint64_t start_us) {
  proto_error err;
  int rc = precheck(c, req, n_fds, &err);
  cJSON *reply = NULL;
  if (rc == 0) {
    reply = proto_reply_ok(req->id);
    if (reply == NULL)
      rc = proto_fail(&err, SLY_E_NO_MEMORY, "out of memory");
  }
  if (rc == 0)
    rc = handlers[req->op](c, req, fds, n_fds, reply, &err);
  close_fds(fds, n_fds);
  if (rc < 0)
    conn_reply_error(c, (int)req->op, true, req->id, &err, start_us);
  else
    conn_reply(c, (int)req->op, reply, start_us);
  cJSON_Delete(reply);
}
