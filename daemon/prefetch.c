/* prefetch.c — bringing slices in before they are asked for (daemon/).
 *
 * Owns: the mover thread and its queue, the pipeline hints (which slices a
 * running pipeline needs within prefetch_depth, and when it needs each one
 * next, for the eviction policy) and the learned successors of one-slice
 * forwards. The mover moves one queued slice at a time with the tiers' own
 * functions, so a prefetch obeys every budget; it gives up quietly when
 * there is no room (a prefetch is a hint, never a reason to fail). It also
 * makes moves a forward hands it (tiers_hand_to_mover) so that the
 * executor can run other forwards while that one waits; one that fails is
 * made again by the forward. The queue and each successor hold references
 * to their slices.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "tiers_internal.h"

/* A successor is trusted once it followed this many times (net of the times
 * another slice did); the count saturates so that a change of habit is
 * learned within a few calls. */
#define PREFETCH_TRUST 2
#define PREFETCH_SEEN_MAX 4

static bool at_compute_tier(const tiers *t, const slice *s) {
  const tier_place *p = &s->place;
  return (tiers__compute_tier(t) == TIER_GPU ? p->dev : p->host) != NULL;
}

/* The index of `s` in the mover's queue, where it is put at the back (with
 * a reference, and as `far`) when it is not there yet; -1 when it has
 * nothing to gain (it is in the compute tier, or removed, or busy: being
 * moved already, by the mover mostly) or the queue is full. Mutex held. */
static int queue_index(tiers *t, slice *s) {
  if (t->stopping || at_compute_tier(t, s) || s->place.busy ||
      atomic_load(&s->removed))
    return -1;
  for (size_t i = 0; i < t->queued; i++)
    if (t->queue[i].s == s)
      return (int)i;
  if (t->queued == TIERS_PREFETCH_QUEUE)
    return -1;
  slice_ref(s);
  t->queue[t->queued].s = s;
  t->queue[t->queued].far = true; /* the callers narrow it */
  t->queue[t->queued].demand = false;
  atomic_fetch_add(&t->prefetch_pending, 1);
  return (int)t->queued++;
}

/* Queues `s` for the mover unless it is there already or has nothing to
 * gain; `far`: needed more than prefetch_depth steps from now, so that it
 * may only use free room (see plan below). Mutex held. */
static void enqueue(tiers *t, slice *s, bool far) {
  int i = t->conf.prefetch_depth > 0 ? queue_index(t, s) : -1;
  if (i < 0)
    return;
  t->queue[i].far = t->queue[i].far && far;
  pthread_cond_signal(&t->work);
}

void tiers_hand_to_mover(tiers *t, slice *s) {
  pthread_mutex_lock(&t->mu);
  int i = queue_index(t, s);
  if (i >= 0) {
    /* To the front: the forward waits for it now. */
    memmove(&t->queue[1], &t->queue[0], (size_t)i * sizeof(t->queue[0]));
    t->queue[0].s = s;
    t->queue[0].far = false;
    t->queue[0].demand = true;
    pthread_cond_signal(&t->work);
  }
  pthread_mutex_unlock(&t->mu);
}

bool tiers_mover_idle(tiers *t) {
  return atomic_load(&t->prefetch_pending) == 0;
}

/* Host memory to the device, for `s` and for the mover's slice: where each
 * comes from is read under the mutex, which the mover holds when it sets
 * p->host at the end of a disk read. */
bool tiers_mover_copies_only(tiers *t, slice *s) {
  if (tiers__compute_tier(t) != TIER_GPU)
    return false; /* the host is the compute tier: moves read the disk */
  pthread_mutex_lock(&t->mu);
  bool yes = s->place.host != NULL &&
             (t->moving == NULL || t->moving->place.host != NULL);
  pthread_mutex_unlock(&t->mu);
  return yes;
}

/* Forgets what was queued for an earlier step: the queue holds only what
 * the current step wants, so that a lagging mover never brings in a slice
 * that has been used already (active_only would then hold one too many).
 * Mutex held. */
static void clear_queue(tiers *t) {
  for (size_t i = 0; i < t->queued; i++)
    slice_unref(t->queue[i].s);
  atomic_fetch_sub(&t->prefetch_pending, t->queued);
  t->queued = 0;
}

/* Moves queued `s` to the compute tier: ahead of use as `far` allows, or
 * for a forward that waits for it (`demand`). Mutex held (dropped
 * inside). */
static void prefetch_one(tiers *t, slice *s, bool far, bool demand) {
  tier_place *p = &s->place;
  if (atomic_load(&s->removed) || p->busy || p->in_use > 0 ||
      at_compute_tier(t, s) || atomic_load(&s->state) == SLICE_FAILED)
    return;
  tiers__track(t, s);
  tiers__claim(t, s);
  uint64_t t0 = tiers__now_ns();
  proto_error e;
  int room = demand ? TIERS_ROOM_DEMAND
             : far  ? TIERS_ROOM_FREE
                    : TIERS_ROOM_AHEAD;
  int rc = tiers__ensure(t, s, tiers__compute_tier(t), room, &e);
  if (rc == 0 && demand) {
    p->staged = true; /* brought in for a forward: a miss when it acquires */
    /* Not "move": tiers__ensure logged the move itself. */
    log_debug("demand slice=%s to=%s bytes=%llu ms=%.2f", s->name,
              tier_name(tiers__compute_tier(t)), (unsigned long long)p->bytes,
              (double)(tiers__now_ns() - t0) / 1e6);
  } else if (rc == 0) {
    p->prefetched = true;
    atomic_fetch_add(&t->prefetches, 1);
    log_debug("prefetch slice=%s to=%s bytes=%llu ms=%.2f", s->name,
              tier_name(tiers__compute_tier(t)), (unsigned long long)p->bytes,
              (double)(tiers__now_ns() - t0) / 1e6);
  } else {
    log_debug("%s slice=%s skipped: %s", demand ? "demand" : "prefetch",
              s->name, e.message);
  }
  tiers__unclaim(t, s);
}

static void *mover_main(void *arg) {
  tiers *t = arg;
  pthread_mutex_lock(&t->mu);
  while (!t->stopping) {
    if (t->queued == 0) {
      pthread_cond_wait(&t->work, &t->mu);
      continue;
    }
    slice *s = t->queue[0].s;
    bool far = t->queue[0].far, demand = t->queue[0].demand;
    t->queued--;
    memmove(&t->queue[0], &t->queue[1], t->queued * sizeof(t->queue[0]));
    t->moving = s;
    prefetch_one(t, s, far, demand);
    t->moving = NULL;
    slice_unref(s);
    atomic_fetch_sub(&t->prefetch_pending, 1);
    if (t->moved != NULL)
      t->moved(t->moved_ctx); /* also when it was skipped */
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

int tiers__mover_start(tiers *t) {
  int r = pthread_create(&t->mover, NULL, mover_main, t);
  if (r == 0)
    t->mover_started = true;
  return r;
}

void tiers_stop_prefetch(tiers *t) {
  pthread_mutex_lock(&t->mu);
  t->stopping = true;
  clear_queue(t);
  pthread_cond_signal(&t->work);
  pthread_mutex_unlock(&t->mu);
}

void tiers__mover_stop(tiers *t) {
  tiers_stop_prefetch(t); /* nothing is queued from here on */
  if (t->mover_started)
    pthread_join(t->mover, NULL);
  t->mover_started = false;
  slice_unref(t->last_single);
  t->last_single = NULL;
}


static void set_successor(slice *s, slice *next) {
  tier_place *p = &s->place;
  if (p->successor == next) {
    if (p->successor_seen < PREFETCH_SEEN_MAX)
      p->successor_seen++;
    return;
  }
  if (p->successor != NULL && p->successor_seen > 1) {
    p->successor_seen--; /* one exception does not change a habit */
    return;
  }
  slice_unref(p->successor);
  slice_ref(next);
  p->successor = next;
  p->successor_seen = 1;
}

void tiers__forget_hints(tiers *t, slice *s) {
  tier_place *p = &s->place;
  slice_unref(p->successor);
  p->successor = NULL;
  p->successor_seen = 0;
  for (size_t i = 0; i < t->n_all; i++) {
    tier_place *o = &t->all[i]->place;
    if (o->successor != NULL && (o->successor == s ||
                                 atomic_load(&o->successor->removed))) {
      slice_unref(o->successor);
      o->successor = NULL;
      o->successor_seen = 0;
    }
  }
  if (t->last_single == s) {
    slice_unref(s);
    t->last_single = NULL;
  }
}

/* Tells pipelines apart (a hash of their slices), to see one repeat. */
static uint64_t pipeline_sig(slice *const *v, size_t n) {
  uint64_t h = 1469598103934665603ull ^ n;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint64_t)(uintptr_t)v[i]) * 1099511628211ull;
  return h;
}

void tiers_pipeline_step(tiers *t, slice *const *v, size_t n, size_t cur) {
  pthread_mutex_lock(&t->mu);
  clear_queue(t);
  /* Each slice's next use, the pipeline taken to repeat: walking from the
   * farthest step to the nearest leaves each slice its nearest one, in one
   * pass (pipelines may be 1024 long; this runs at every step). */
  for (size_t d = n; d >= 1; d--) {
    slice *s = v[(cur + d) % n];
    s->place.needed_next = false;
    s->place.next_use_at = t->tick + d;
  }
  /* The window is the next prefetch_depth slices that need a move, and
   * every resident one before them: the copies keep going while resident
   * slices compute (limit_gpu), and nothing the pipeline reaches first is
   * pushed out. A pipeline that ran last time too is taken to run again:
   * its window wraps into the next pass, so the next forward finds its
   * first slices in.
   * A slice more than prefetch_depth steps away may evict only while the
   * forwards wait for copies (one of the last eight acquires did): then a
   * copy engine that stands still costs time, and every copy started
   * early is time won. Otherwise it comes in only where there is free
   * room: the window would fill the tier with the slices ahead and push
   * out the ones that stay from pass to pass (a cyclic pipeline of six
   * with room for four then reloads all of it every pass; evicting just
   * in time keeps part of it resident). */
  size_t horizon = pipeline_sig(v, n) == t->last_pipeline ? n - 1 : n - 1 - cur;
  /* Under active_only every slice of the window counts, resident or not:
   * the GPU holds the running slice plus prefetch_depth, no more. */
  bool count_all = t->conf.strategy == GPU_STRATEGY_ACTIVE_ONLY;
  bool copy_bound = (t->stalls & 0xffu) != 0;
  uint64_t moves = 0;
  for (size_t d = 1; d <= horizon && moves < t->conf.prefetch_depth; d++) {
    slice *s = v[(cur + d) % n];
    if (s == v[cur])
      continue;
    s->place.needed_next = true;
    bool in = at_compute_tier(t, s);
    if (!in)
      enqueue(t, s, d > t->conf.prefetch_depth && !copy_bound);
    if (!in || count_all)
      moves++;
  }
  pthread_mutex_unlock(&t->mu);
}

void tiers_pipeline_end(tiers *t, slice *const *v, size_t n) {
  pthread_mutex_lock(&t->mu);
  t->last_pipeline = pipeline_sig(v, n);
  for (size_t i = 0; i < n; i++)
    v[i]->place.needed_next = false;
  pthread_mutex_unlock(&t->mu);
}

void tiers_single_step(tiers *t, slice *s) {
  pthread_mutex_lock(&t->mu);
  clear_queue(t);
  slice *prev = t->last_single;
  if (prev != NULL && prev != s && !atomic_load(&prev->removed))
    set_successor(prev, s);
  if (prev != s) {
    slice_ref(s);
    slice_unref(prev);
    t->last_single = s;
  }
  /* Follow the trusted chain up to prefetch_depth slices ahead. */
  slice *x = s;
  for (uint64_t k = 0; k < t->conf.prefetch_depth; k++) {
    tier_place *p = &x->place;
    if (p->successor == NULL || p->successor_seen < PREFETCH_TRUST ||
        p->successor == s)
      break;
    x = p->successor;
    x->place.next_use_at = t->tick + k + 1;
    enqueue(t, x, false);
  }
  pthread_mutex_unlock(&t->mu);
}
