/* forward.c — forward and load jobs on the executor. */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "dispatch.h"
#include "executor.h"
#include "faults.h"
#include "log.h"
#include "outpool.h"
#include "reply.h"
#include "slyced.h"

typedef struct {
  job base;
  conn *c;
  conn_out *slot;
  outpool *pool;
  uint64_t req_id, start_us, cap;
  int op;
  slice **slices;
  size_t n_slices;
  shim_input inputs[PROTO_MAX_TENSORS];
  size_t n_inputs;
  region *out_region; /* NULL: outputs go to the pool */
  proto_range out;
  bool load_only, remove_on_failure;
  bool tier_op; /* load, evict, pin, unpin */
  bool device_lost; /* it failed because the device is lost */
  int tier;
  slice *stage; /* to stage first (one of slices); NULL past the loader */
  slice *held;  /* stage, once staged, until acquired (or job_free) */
  uint64_t retired[PROTO_MAX_IDS];
  size_t n_retired;
  /* Results. */
  int code;
  proto_error err;
  proto_tensor outputs[PROTO_MAX_TENSORS];
  size_t n_outputs;
  outpool_lease *lease;
  uint64_t load_us, compute_us;
  uint64_t accepted_us; /* when submit queued it, on whichever worker */
  uint64_t stage_us;    /* of load_us, the loader's part */
} fwd_job;

static void release_region(void *ctx) { region_unref(ctx); }

static uint64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Where an output of element size `a` goes after `pos` bytes of `out`:
 * aligned in the region (clients check that), not merely within `out`. */
static uint64_t out_next(const fwd_job *j, uint64_t pos, uint64_t a) {
  uint64_t base = j->out_region != NULL ? j->out.offset : 0;
  return align_up(base + pos, a) - base;
}

/* Records why `s` could not be brought in (rc, e) as the job's error. A
 * slice that cannot be built is unavailable to forwards; memory stays
 * NO_MEMORY so that a client can tell "retry later" from "broken". */
static int load_failed(fwd_job *j, const slice *s, int rc,
                       const proto_error *e) {
  if (rc == SLY_E_NO_MEMORY || rc == SLY_E_BUSY || j->remove_on_failure ||
      j->tier_op) {
    j->err = *e;
    return rc;
  }
  return proto_fail(&j->err, SLY_E_UNAVAILABLE,
                    "slice '%s' cannot be loaded: %s", s->name, e->message);
}

/* Whether this forward waits for no one any more (conn.h): then what has
 * not run is skipped, with an error no one reads. Only forwards: a reply is
 * all they make, while a load or a tier op changes what the daemon holds
 * (add_slice, set_active_slice without wait, pin) and is carried out
 * whoever is left to hear of it. */
static bool abandoned(fwd_job *j) {
  if (j->load_only || j->tier_op || !atomic_load(&j->c->abandoned))
    return false;
  j->code = proto_fail(&j->err, SLY_E_SHUTTING_DOWN,
                       "dropped: its connection closed, or slyced stopped "
                       "waiting for it");
  return true;
}

/* Brings slice i of the job to its compute tier and holds it there until
 * tiers_release; what comes next is prefetched meanwhile. With `seen`,
 * returns TIERS_ROOM_HELD rather than wait for room that a move in flight
 * holds (tiers_try_acquire). */
static int acquire(fwd_job *j, size_t i, uint64_t *seen) {
  tiers *t = &j->c->sd->tiers;
  slice *s = j->slices[i];
  uint64_t t0 = conn_now_us();
  proto_error e;
  int rc = seen != NULL ? tiers_try_acquire(t, s, seen, &e)
                        : tiers_acquire(t, s, &e);
  j->load_us += conn_now_us() - t0;
  if (rc == TIERS_ROOM_HELD)
    return rc; /* held by nothing; a staged copy stays held for it */
  if (s == j->held) {
    /* In use from here on (or failed): the stage's hold has done its job,
     * and would keep the copy from leaving once the pipeline moves on. */
    tiers_stage_release(s);
    j->held = NULL;
  }
  if (rc == 0) {
    /* A job run inside another's wait leaves the prefetch hints to the one
     * that waits: they would drop the very move it waits for from the
     * mover's queue. */
    if (executor_nested(&j->c->sd->exec))
      return 0;
    if (j->n_slices > 1)
      tiers_pipeline_step(t, j->slices, j->n_slices, i);
    else if (!j->load_only)
      tiers_single_step(t, s);
    return 0;
  }
  return load_failed(j, s, rc, &e);
}

/* Copies every output into its place; called with the final values. */
static int place_outputs(fwd_job *j, shim_values *v) {
  char msg[SHIM_ERROR_MAX];
  size_t n = shim_values_count(v);
  if (n > PROTO_MAX_TENSORS)
    return proto_fail(&j->err, SLY_E_BAD_TENSOR,
                      "the module returned %zu outputs; at most %d can be "
                      "sent",
                      n, PROTO_MAX_TENSORS);
  uint64_t nbytes[PROTO_MAX_TENSORS], end = 0;
  for (size_t i = 0; i < n; i++) {
    proto_tensor *t = &j->outputs[i];
    int rc = shim_values_describe(v, i, &t->dtype, &t->ndim, t->shape,
                                  &nbytes[i], msg);
    if (rc < 0)
      return proto_fail(&j->err, rc, "output %zu: %s", i, msg);
    t->nbytes = nbytes[i];
    end = out_next(j, end, proto_dtype_size(t->dtype)) + nbytes[i];
  }
  if (j->out_region != NULL && end > j->out.bytes) {
    proto_fail(&j->err, SLY_E_BAD_TENSOR,
               "out holds %llu bytes; the outputs need %llu",
               (unsigned long long)j->out.bytes, (unsigned long long)end);
    j->err.has_needed = true;
    j->err.needed = end;
    return SLY_E_BAD_TENSOR;
  }
  uint64_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    proto_tensor *t = &j->outputs[i];
    void *dst;
    if (j->out_region != NULL) {
      pos = out_next(j, pos, proto_dtype_size(t->dtype));
      t->region = j->out.region;
      t->offset = j->out.offset + pos;
      dst = (uint8_t *)j->out_region->base + t->offset;
      pos += nbytes[i];
    } else {
      int rc = outpool_alloc(j->pool, j->lease, nbytes[i], 64, j->cap,
                             &t->region, &t->offset, &dst, &j->err);
      if (rc < 0)
        return rc;
    }
    int rc = shim_values_copy_out(v, i, dst, msg);
    if (rc < 0)
      return proto_fail(&j->err, rc, "output %zu: %s", i, msg);
  }
  j->n_outputs = n;
  return 0;
}

/* load, evict, pin and unpin. */
static void tier_run(fwd_job *j) {
  tiers *t = &j->c->sd->tiers;
  slice *s = j->slices[0];
  switch (j->op) {
  case PROTO_OP_LOAD:
    j->code = tiers_load(t, s, j->tier, &j->err);
    break;
  case PROTO_OP_EVICT:
    j->code = tiers_evict(t, s, j->tier, &j->err);
    break;
  case PROTO_OP_PIN:
    j->code = tiers_pin(t, s, j->tier, &j->err);
    break;
  default:
    tiers_unpin(t, s);
    j->code = 0;
  }
}

/* Runs `s` on `cur`. A forward that finds no device memory for its
 * activations (libtorch has emptied its cache and retried by then) gets
 * room as DESIGN.md says, evict and retry: one GPU copy no one is using goes
 * per retry. The forward is pure, so running it again is safe. */
#define FORWARD_OOM_RETRIES 8
static int compute(fwd_job *j, slice *s, shim_values *cur, shim_values **next,
                   char msg[SHIM_ERROR_MAX]) {
  tiers *t = &j->c->sd->tiers;
  for (int i = 0;; i++) {
    int rc;
    if (faults_take(FAULT_FORWARD_OOM)) {
      snprintf(msg, SHIM_ERROR_MAX,
               "out of device memory for activations (injected failure)");
      rc = SLY_E_NO_MEMORY;
    } else {
      rc = shim_forward(s->module, cur, next, msg);
    }
    if (rc != SLY_E_NO_MEMORY || i == FORWARD_OOM_RETRIES ||
        tiers_evict_for_compute(t, s) < 0)
      return rc;
    log_info("slice %s: %s; retrying after an eviction", s->name, msg);
  }
}

typedef struct {
  tiers *t;
  slice *s;
} motion;

/* executor_wait_while's test: another thread is bringing the slice in. */
static bool in_motion(void *arg) {
  motion *m = arg;
  return tiers_in_motion(m->t, m->s);
}

typedef struct {
  tiers *t;
  uint64_t seen;
} room_wait;

/* executor_wait_while's test: the room a move in flight holds is held. */
static bool room_held(void *arg) {
  room_wait *w = arg;
  return tiers_room_held(w->t, w->seen);
}

/* Brings slice i of the job to its compute tier and holds it there, as
 * acquire does, letting other clients' forwards run while another thread
 * brings it in (a pipeline's next one, most often): they need no move, and
 * would otherwise wait behind this job for the whole of it. A move this job
 * would make itself goes to the mover, so that they can run meanwhile too:
 * when one of them waits, when the mover is idle (one may come in during
 * the move; the hand-off costs two thread wake-ups, small beside a copy of
 * weights), or when the mover is busy but both moves are copies from host
 * memory (they take turns on the copy stream either way). Not behind a disk
 * read of the mover's, or for a read of its own, unless someone waits: the
 * executor makes it beside the mover's instead. A move of its own short of
 * room that a move in flight holds waits for that move as for the slice:
 * other forwards run meanwhile (inside another's wait, or while stopping,
 * it waits in tiers_acquire). */
static int bring_in(fwd_job *j, size_t i) {
  tiers *t = &j->c->sd->tiers;
  executor *ex = &j->c->sd->exec;
  slice *s = j->slices[i];
  uint64_t w0 = conn_now_us();
  if (!tiers_at_compute(t, s) &&
      (tiers_mover_idle(t) || tiers_mover_copies_only(t, s) ||
       executor_other_ready(ex)))
    tiers_hand_to_mover(t, s);
  motion m = {t, s};
  executor_wait_while(ex, in_motion, &m);
  j->load_us += conn_now_us() - w0; /* waiting for the slice to come in */
  room_wait w = {t, 0};
  int rc = acquire(j, i, &w.seen);
  while (rc == TIERS_ROOM_HELD) {
    w0 = conn_now_us();
    bool over = executor_wait_while(ex, room_held, &w);
    j->load_us += conn_now_us() - w0;
    rc = acquire(j, i, over ? &w.seen : NULL);
  }
  return rc;
}

static void run_job(fwd_job *j) {
  char msg[SHIM_ERROR_MAX];
  if (j->tier_op) {
    tier_run(j);
    return;
  }
  tiers *t = &j->c->sd->tiers;
  if (j->load_only) {
    /* set_active_slice and add_slice: forwards run while it comes in. */
    j->code = bring_in(j, 0);
    if (j->code == 0)
      tiers_release(t, j->slices[0]);
    return;
  }
  for (size_t i = 0; i < j->n_inputs; i++)
    region_pin(j->inputs[i].ctx); /* forward_submit: a region each */
  if (j->out_region != NULL)
    region_pin(j->out_region);
  shim_values *cur;
  j->code = shim_values_from_inputs(j->inputs, j->n_inputs, &cur, msg);
  j->n_inputs = 0; /* the shim releases them from here on */
  if (j->code < 0) {
    proto_fail(&j->err, j->code, "%s", msg);
    return;
  }
  /* On CUDA, each slice's compute is timed on the device (its kernels run
   * after shim_forward returns), read once the outputs are out; elsewhere,
   * and for a slice that cannot be timed there, on the host. */
  device *dev = t->dev;
  device_span **spans = dev != NULL && !device_is_sim(dev)
                            ? calloc(j->n_slices, sizeof(*spans))
                            : NULL;
  /* One slice at a time: a pipeline larger than memory streams through. */
  for (size_t i = 0; i < j->n_slices && j->code == 0; i++) {
    slice *s = j->slices[i];
    if (i > 0 && abandoned(j))
      break;
    j->code = bring_in(j, i);
    if (j->code < 0)
      break;
    device_span *span = spans != NULL ? device_span_begin(dev) : NULL;
    uint64_t t0 = conn_now_us();
    shim_values *next;
    j->code = compute(j, s, cur, &next, msg);
    if (span != NULL) {
      device_span_end(dev, span);
      spans[i] = span;
    } else {
      j->compute_us += conn_now_us() - t0;
    }
    tiers_release(t, s);
    shim_values_free(cur);
    cur = NULL;
    if (j->code < 0) {
      proto_fail(&j->err, j->code, "slice '%s': %s", s->name, msg);
      break;
    }
    atomic_fetch_add(&s->hits, 1);
    atomic_store(&s->last_used_ms, wall_ms());
    cur = next;
  }
  if (j->n_slices > 1 && !executor_nested(&j->c->sd->exec))
    tiers_pipeline_end(t, j->slices, j->n_slices);
  if (j->code == 0) {
    /* With `out` the lease holds no server memory, but every forward reply
     * carries one. */
    j->lease = outpool_lease_open(j->pool);
    if (j->lease == NULL)
      j->code = proto_fail(&j->err, SLY_E_NO_MEMORY, "out of memory");
    else
      j->code = place_outputs(j, cur);
  }
  shim_values_free(cur);
  for (size_t i = 0; spans != NULL && i < j->n_slices; i++)
    j->compute_us += device_span_take_us(dev, spans[i]);
  free(spans);
}

/* Whether `s` is one of job `j`'s slices. */
static bool uses(const fwd_job *j, const slice *s) {
  for (size_t i = 0; s != NULL && i < j->n_slices; i++)
    if (j->slices[i] == s)
      return true;
  return false;
}

/* Whether job `later` waits for `earlier` (job.conflicts): the jobs of one
 * connection take effect in the order they were sent. On the loaders, a job
 * that uses a slice another stages also waits for that staging, as does one
 * that stages a slice another (queued ahead) uses; others stage side by
 * side. On the device's executor nothing is staged (stage_done clears
 * stage), so a forward there can run while another connection's waits. */
static bool fwd_conflicts(const job *earlier, const job *later) {
  const fwd_job *a = (const fwd_job *)earlier, *b = (const fwd_job *)later;
  return a->c == b->c || uses(b, a->stage) || uses(a, b->stage);
}

/* Whether the job would run without waiting for any move (job.ready): a
 * forward whose slices are all in the compute tier. Atomics only: the
 * executor asks with its mutex held. */
static bool fwd_ready(job *base) {
  fwd_job *j = (fwd_job *)base;
  if (j->tier_op || j->load_only)
    return false;
  for (size_t i = 0; i < j->n_slices; i++)
    if (!tiers_at_compute(&j->c->sd->tiers, j->slices[i]))
      return false;
  return true;
}

/* A lost device (a sticky error) fails this job and every later one with
 * UNAVAILABLE; the loop then makes the daemon exit (slyced_device_lost). */
static void fwd_run(job *base) {
  fwd_job *j = (fwd_job *)base;
  tiers *t = &j->c->sd->tiers;
  if (tiers_device_lost(t, false)) {
    j->device_lost = true;
    j->code = proto_fail(&j->err, SLY_E_UNAVAILABLE,
                         "the device is lost; slyced restarts");
    return;
  }
  if (abandoned(j))
    return;
  run_job(j);
  if (j->code < 0 && tiers_device_lost(t, true)) {
    char was[PROTO_MESSAGE_MAX];
    snprintf(was, sizeof(was), "%s", j->code < 0 ? j->err.message : "");
    j->device_lost = true;
    j->code = proto_fail(&j->err, SLY_E_UNAVAILABLE,
                         "the device is lost%s%.200s%s; slyced restarts",
                         was[0] ? " (" : "", was, was[0] ? ")" : "");
  }
}

static cJSON *fwd_reply(fwd_job *j, int *fds, size_t *n_fds) {
  cJSON *reply = proto_reply_ok(j->req_id);
  cJSON *outs = reply ? cJSON_AddArrayToObject(reply, "outputs") : NULL;
  cJSON *timing = reply ? cJSON_AddObjectToObject(reply, "timing") : NULL;
  if (outs == NULL || timing == NULL) {
    cJSON_Delete(reply);
    return NULL;
  }
  uint64_t ids[PROTO_MAX_TENSORS];
  for (size_t i = 0; i < j->n_outputs; i++) {
    const proto_tensor *t = &j->outputs[i];
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToArray(outs, d);
    cJSON_AddStringToObject(d, "dtype", proto_dtype_name(t->dtype));
    cJSON *shape = cJSON_AddArrayToObject(d, "shape");
    for (uint32_t k = 0; k < t->ndim; k++)
      cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[k]));
    cJSON_AddNumberToObject(d, "region", (double)t->region);
    cJSON_AddNumberToObject(d, "offset", (double)t->offset);
    ids[i] = t->region;
  }
  uint64_t lease = outpool_lease_commit(j->pool, j->lease);
  cJSON_AddNumberToObject(reply, "lease", (double)lease);
  uint64_t total = conn_now_us() - j->start_us;
  /* Waiting, on the loader and the device's queue, but not the staging. */
  uint64_t waited = j->base.started_us - j->accepted_us;
  cJSON_AddNumberToObject(timing, "queue_us",
                          (double)(waited > j->stage_us ? waited - j->stage_us
                                                        : 0));
  cJSON_AddNumberToObject(timing, "load_us", (double)j->load_us);
  cJSON_AddNumberToObject(timing, "compute_us", (double)j->compute_us);
  cJSON_AddNumberToObject(timing, "total_us", (double)total);
  *n_fds = outpool_take_new_fds(j->pool, ids, j->n_outputs, fds,
                                PROTO_MAX_TENSORS);
  j->lease = NULL;
  return reply;
}

static cJSON *load_reply(fwd_job *j) {
  cJSON *reply = proto_reply_ok(j->req_id);
  if (reply != NULL && j->op != PROTO_OP_ADD_SLICE &&
      j->op != PROTO_OP_PIN && j->op != PROTO_OP_UNPIN) {
    cJSON_AddStringToObject(reply, "slice", j->slices[0]->name);
    cJSON_AddStringToObject(reply, "tier", slice_tier_name(j->slices[0]));
  }
  return reply;
}

/* Drops everything the job holds: what it leased, the inputs the shim did
 * not take, and its references. Also undoes job_new for a job never queued. */
static void job_free(fwd_job *j) {
  if (j->held != NULL)
    tiers_stage_release(j->held);
  if (j->lease != NULL)
    outpool_lease_abort(j->pool, j->lease);
  for (size_t i = 0; i < j->n_inputs; i++)
    j->inputs[i].release(j->inputs[i].ctx);
  region_unref(j->out_region);
  for (size_t i = 0; i < j->n_slices; i++)
    slice_unref(j->slices[i]);
  free(j->slices);
  outpool_unref(j->pool);
  conn_unref(j->c);
  free(j);
}

static void fwd_done(job *base) {
  fwd_job *j = (fwd_job *)base;
  conn *c = j->c;
  if (j->base.cancelled && c->sd->device_lost)
    j->code = proto_fail(&j->err, SLY_E_UNAVAILABLE,
                         "the device is lost; slyced restarts");
  else if (j->base.cancelled)
    j->code = proto_fail(&j->err, SLY_E_SHUTTING_DOWN,
                         "slyced stopped before this request ran");
  if (j->code < 0 && j->load_only && j->remove_on_failure) {
    slice_registry *reg = &c->sd->slices;
    if (slices_find(reg, j->slices[0]->name) == j->slices[0])
      slices_remove(reg, j->slices[0]->name);
  }
  if (j->slot != NULL) {
    int fds[PROTO_MAX_TENSORS];
    size_t n_fds = 0;
    cJSON *reply = NULL;
    if (j->code == 0) {
      reply = j->load_only || j->tier_op ? load_reply(j)
                                         : fwd_reply(j, fds, &n_fds);
      if (reply == NULL)
        proto_fail(&j->err, SLY_E_NO_MEMORY, "out of memory");
    }
    if (reply == NULL)
      reply = proto_reply_error(true, j->req_id, &j->err);
    if (reply != NULL && j->n_retired > 0)
      dispatch_add_retired(reply, j->retired, j->n_retired);
    if (reply == NULL) {
      log_error("conn %llu: out of memory replying, closing",
                (unsigned long long)c->id);
      conn_close(c);
    }
    conn_fill(c, j->slot, j->op, reply, fds, n_fds, j->start_us);
    cJSON_Delete(reply);
  }
  if (j->device_lost)
    slyced_device_lost(c->sd, j->err.message);
  job_free(j);
}

/* A job for request `req_id` (`op`) on `c`, holding references to the
 * slices, the connection and its output pool. */
static fwd_job *job_new(conn *c, int op, uint64_t req_id, uint64_t start_us,
                        slice *const *slices, size_t n,
                        const uint64_t *retired, size_t n_retired) {
  fwd_job *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return NULL;
  j->op = op;
  j->req_id = req_id;
  j->start_us = start_us;
  if (n_retired > 0) /* retired may be NULL then */
    memcpy(j->retired, retired, n_retired * sizeof(*retired));
  j->n_retired = n_retired;
  j->slices = calloc(n > 0 ? n : 1, sizeof(*j->slices));
  if (j->slices == NULL) {
    free(j);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    slice_ref(slices[i]);
    j->slices[i] = slices[i];
  }
  j->n_slices = n;
  j->base.run = fwd_run;
  j->base.done = fwd_done;
  j->base.ready = fwd_ready;
  j->base.conflicts = fwd_conflicts;
  j->c = c;
  conn_ref(c);
  j->pool = c->pool;
  outpool_ref(c->pool);
  j->cap = c->sd->cfg->limits.max_output_mb * 1024 * 1024;
  return j;
}


/* ---- staging on the loader thread ------------------------------------
 * A job whose slice has no copy in memory goes to the loader first, which
 * builds it or reads it into host memory (tiers_stage), and only then to
 * the device's executor: a slice that takes seconds to come in no longer
 * holds up forwards of slices already in memory. Jobs that would wait for
 * it on the executor follow it through the loader instead (which only
 * passes them on): the connection's later jobs, so that its requests take
 * effect in the order they were sent, and jobs for the slice being staged.
 * Only the first slice of a pipeline that needs a build is staged; the
 * executor and the mover bring the rest in as before. The staged copy is
 * held (tiers_stage_release) until the job acquires it, or ends. Still
 * shared: the loader is one queue, and a forward short of memory on the
 * executor waits for a move in flight, the loader's included (bring_in;
 * ready forwards run meanwhile). */

/* The slice `j` should stage, or NULL. Loop thread. */
static slice *stage_target(const slyced *sd, const fwd_job *j) {
  /* Of the tier ops only a load brings weights in; one to disk is left
   * whole to the executor, so that it takes no host memory on the way, and
   * one to a tier this daemon lacks is refused there, having moved nothing. */
  if (j->tier_op &&
      (j->op != PROTO_OP_LOAD || j->tier == TIER_DISK ||
       (j->tier == TIER_GPU && sd->tiers.dev == NULL)))
    return NULL;
  for (size_t i = 0; i < j->n_slices; i++) {
    slice *s = j->slices[i];
    /* In a pipeline only a build is staged: the disk reads of one larger
     * than memory are the executor's and the mover's, in the order the
     * eviction policy plans them. */
    if (j->n_slices > 1 && atomic_load(&s->state) == SLICE_RESIDENT)
      continue;
    if (tiers_wants_stage(&sd->tiers, s))
      return s;
  }
  return NULL;
}

static void stage_run(job *base) {
  fwd_job *j = (fwd_job *)base;
  if (j->stage == NULL || abandoned(j))
    return; /* passing through behind a staged job, or dropped */
  /* A lost device is for fwd_run to report, as it does for every job. */
  if (tiers_device_lost(&j->c->sd->tiers, false))
    return;
  uint64_t t0 = conn_now_us();
  proto_error e;
  int rc = tiers_stage(&j->c->sd->tiers, j->stage, &e);
  if (rc == 0)
    j->held = j->stage;
  j->stage_us = conn_now_us() - t0;
  j->load_us += j->stage_us;
  /* Lack of room now is for the executor to settle, as it would have. */
  if (rc < 0 && rc != SLY_E_NO_MEMORY)
    j->code = load_failed(j, j->stage, rc, &e);
}

/* Hands a staged job to the device's executor, or answers it: it failed,
 * or was cancelled. The executor takes it whatever its queue holds: the
 * job was checked against queue_depth when it came in (submit). */
static void stage_done(job *base) {
  fwd_job *j = (fwd_job *)base;
  slyced *sd = j->c->sd;
  j->c->staged--;
  if (j->stage != NULL)
    j->stage->staging--;
  j->stage = NULL; /* staged: see fwd_conflicts */
  j->base.run = fwd_run;
  j->base.done = fwd_done;
  if (j->base.cancelled || j->code < 0 ||
      executor_submit(&sd->exec, &j->base, UINT64_MAX) < 0) {
    /* A refusal means the executor has stopped: slyced is leaving. */
    j->base.cancelled = j->base.cancelled || j->code == 0;
    fwd_done(&j->base);
  }
}

/* Queues the job and, with want_reply, reserves its reply slot. done() runs
 * on this (the loop) thread, so it cannot see the slot before it is set. */
static int submit(conn *c, fwd_job *j, bool want_reply, proto_error *err) {
  slyced *sd = c->sd;
  if (c->pending >= sd->cfg->limits.max_inflight_per_conn) {
    job_free(j);
    return proto_fail(err, SLY_E_BUSY,
                      "%zu requests in flight on this connection "
                      "(max_inflight_per_conn)",
                      c->pending);
  }
  j->stage = stage_target(sd, j);
  bool staged = j->stage != NULL || c->staged > 0;
  /* A job for a slice the loader is bringing in follows it there too: on
   * the executor it would wait for the loader's claim, and everyone with
   * it (an evict or a pin of that slice, say). */
  for (size_t i = 0; i < j->n_slices && !staged; i++)
    staged = j->slices[i]->staging > 0;
  if (staged) {
    j->base.run = stage_run;
    j->base.done = stage_done;
  }
  /* A staged job is refused as any other when the device's queue is full,
   * and passes on to it later whatever it holds then. */
  uint64_t depth = sd->cfg->limits.queue_depth;
  bool device_full = staged && executor_pending(&sd->exec) >= depth;
  j->accepted_us = conn_now_us();
  if (device_full ||
      executor_submit(staged ? &sd->loader : &sd->exec, &j->base, depth) < 0) {
    job_free(j);
    return proto_fail(err, SLY_E_BUSY, "the %s queue is full (queue_depth %llu)",
                      staged && !device_full ? "loader" : "device",
                      (unsigned long long)depth);
  }
  if (staged)
    c->staged++;
  if (j->stage != NULL)
    j->stage->staging++;
  if (want_reply) {
    j->slot = conn_reserve(c);
    if (j->slot == NULL) {
      log_error("conn %llu: out of memory reserving a reply, closing",
                (unsigned long long)c->id);
      conn_close(c);
    } else {
      j->slot->has_id = true;
      j->slot->id = j->req_id;
      j->slot->op = j->op;
      j->slot->owner = &j->slot;
    }
  }
  return 0;
}

int forward_submit(conn *c, const proto_request *req, slice *const *slices,
                   size_t n, const uint64_t *retired, size_t n_retired,
                   uint64_t start_us, proto_error *err) {
  fwd_job *j = job_new(c, PROTO_OP_FORWARD, req->id, start_us, slices, n,
                       retired, n_retired);
  if (j == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  for (uint32_t i = 0; i < req->n_inputs; i++) {
    const proto_tensor *t = &req->inputs[i];
    region *r = conn_region_find(c, t->region);
    if (r == NULL) {
      job_free(j);
      char field[32];
      snprintf(field, sizeof(field), "inputs[%u]: ", i);
      return conn_no_region(c, field, t->region, err);
    }
    proto_error e;
    if (proto_tensor_check(t, r->bytes, &e) < 0) {
      job_free(j);
      return proto_fail(err, e.code, "inputs[%u]: %s", i, e.message);
    }
    shim_input *in = &j->inputs[j->n_inputs++];
    in->dtype = t->dtype;
    in->ndim = t->ndim;
    memcpy(in->shape, t->shape, sizeof(in->shape));
    in->data = (uint8_t *)r->base + t->offset;
    in->release = release_region;
    in->ctx = r;
    region_ref(r); /* dropped by the shim once libtorch lets go of the data */
  }
  if (req->has_out) {
    region *r = conn_region_find(c, req->out.region);
    proto_error e;
    int rc = r == NULL ? conn_no_region(c, "", req->out.region, &e)
             : !r->writable
                 ? proto_fail(&e, SLY_E_BAD_REGION,
                              "region %llu is sealed against writes",
                              (unsigned long long)r->id)
                 : proto_range_check(&req->out, r->bytes, &e);
    if (rc < 0) {
      job_free(j);
      return proto_fail(err, e.code, "out: %s", e.message);
    }
    region_ref(r);
    j->out_region = r;
    j->out = req->out;
  }
  return submit(c, j, true, err);
}

int forward_submit_load(conn *c, slice *s, bool want_reply, int op,
                        uint64_t req_id, bool remove_on_failure,
                        const uint64_t *retired, size_t n_retired,
                        uint64_t start_us, proto_error *err) {
  fwd_job *j = job_new(c, op, req_id, start_us, &s, 1, retired, n_retired);
  if (j == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  j->load_only = true;
  j->remove_on_failure = remove_on_failure;
  return submit(c, j, want_reply, err);
}

int forward_submit_tier_op(conn *c, slice *s, int op, int tier,
                           uint64_t req_id, const uint64_t *retired,
                           size_t n_retired, uint64_t start_us,
                           proto_error *err) {
  fwd_job *j = job_new(c, op, req_id, start_us, &s, 1, retired, n_retired);
  if (j == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory");
  j->tier_op = true;
  j->tier = tier;
  return submit(c, j, true, err);
}
