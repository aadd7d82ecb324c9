/* executor.c — a worker thread with a bounded queue and an async hand-back. */
#include "executor.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "log.h"
#include "slyce.h"

/* After a job the worker watches for the next one this long before it
 * sleeps: a client that sends its next request as soon as it has its reply
 * then finds the worker awake, and skips a thread wake-up (tens of
 * microseconds on a virtual machine) on every request. */
#define EXECUTOR_SPIN_US 100

/* The way back. A finished job normally wakes the loop thread with
 * uv_async_send: an eventfd write, an epoll wake-up, an eventfd read. When
 * the loop hands over a lone job and the last job ran for less than
 * EXECUTOR_WATCH_US, it keeps polling its sockets without sleeping for that
 * long instead (an active uv_idle_t makes libuv poll with a zero timeout)
 * and takes the job off the done list itself. `handback` says who tells:
 *   NONE      the worker sends the async;
 *   WATCHING  the loop is polling: the worker swaps in HANDED, sends nothing;
 *   HANDED    a finished job waits for the polling loop.
 * The swaps are compare-and-exchange, so exactly one side acts when the
 * watch runs out as the job finishes. Both threads spin only while one
 * client waits on one short job: a 4 KiB forward then costs two thread
 * wake-ups, like a bare socket round trip, instead of four. Neither spins
 * where the executor was started without `spin` (one usable CPU: the
 * spinning thread would hold up the one it waits for). */
#define EXECUTOR_WATCH_US 50
enum {
  EXECUTOR_HANDBACK_NONE,
  EXECUTOR_HANDBACK_WATCHING,
  EXECUTOR_HANDBACK_HANDED
};

/* Tells the core a spin-wait is going on (cheaper for its sibling thread
 * and for power), without leaving user space. */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Spins until work is flagged or EXECUTOR_SPIN_US pass; mutex not held.
 * In user space: a sched_yield per turn was a system call each time, and
 * the forward that came next ran slower after them (the bench 1 median
 * 46-57 us with it, 41-46 us without, side by side on this VM). */
static void spin_for_work(executor *ex) {
  uint64_t end = conn_now_us() + EXECUTOR_SPIN_US;
  while (!atomic_load_explicit(&ex->has_work, memory_order_acquire) &&
         conn_now_us() < end)
    for (int i = 0; i < 64 && !atomic_load_explicit(&ex->has_work,
                                                    memory_order_relaxed);
         i++)
      cpu_relax();
}

/* Puts a job that has run (or was cancelled) on the done list and tells
 * the loop thread (see the top). Mutex held. */
static void hand_back(executor *ex, job *j) {
  j->finished_us = conn_now_us();
  atomic_store(&ex->last_run_us, j->finished_us - j->started_us);
  j->next = NULL;
  if (ex->done_tail != NULL)
    ex->done_tail->next = j;
  else
    ex->done_head = j;
  ex->done_tail = j;
  int watching = EXECUTOR_HANDBACK_WATCHING;
  if (!atomic_compare_exchange_strong(&ex->handback, &watching,
                                      EXECUTOR_HANDBACK_HANDED))
    uv_async_send(&ex->async);
}

/* How far down the queue a worker, or run_other, looks for a job
 * it may run. */
#define EXECUTOR_SCAN 64

/* Whether queued `j` must wait: for a job queued ahead of it or running
 * that it conflicts with (job.conflicts). Mutex held. */
static bool held_back(const executor *ex, const job *j) {
  for (const job *k = ex->head; k != j; k = k->next)
    if (j->conflicts == NULL || j->conflicts(k, j))
      return true;
  for (int w = 0; w < ex->n_workers; w++) {
    const job *k = ex->running[w];
    if (k != NULL && (j->conflicts == NULL || j->conflicts(k, j)))
      return true;
  }
  return false;
}

/* Unlinks queued `j`, which follows `prev` (NULL: j is the head). */
static void unlink_job(executor *ex, job *j, job *prev) {
  if (prev != NULL)
    prev->next = j->next;
  else
    ex->head = j->next;
  if (ex->tail == j)
    ex->tail = prev;
}

/* Takes the next job a worker may run off the queue: the first one not
 * held back (with one worker, the head), or the head while stopping, to be
 * cancelled; NULL for none. Mutex held. */
static job *take_next(executor *ex) {
  job *prev = NULL;
  int n = 0;
  for (job *j = ex->head; j != NULL && n < EXECUTOR_SCAN;
       prev = j, j = j->next, n++)
    if (ex->stop || !held_back(ex, j)) {
      unlink_job(ex, j, prev);
      return j;
    }
  return NULL;
}

static void *executor_main(void *arg) {
  executor_worker *w = arg;
  executor *ex = w->ex;
  bool spin = false;
  pthread_mutex_lock(&ex->mu);
  for (;;) {
    job *j = take_next(ex);
    if (j == NULL) {
      if (ex->stop && ex->head == NULL)
        break; /* stopping, and nothing left */
      if (spin) {
        spin = false;
        pthread_mutex_unlock(&ex->mu);
        spin_for_work(ex);
        pthread_mutex_lock(&ex->mu);
        continue;
      }
      ex->sleeping++;
      pthread_cond_wait(&ex->cv, &ex->mu);
      ex->sleeping--;
      continue;
    }
    atomic_store(&ex->has_work, false);
    spin = ex->spin;
    ex->running[w->index] = j;
    bool stopping = ex->stop;
    pthread_mutex_unlock(&ex->mu);

    j->started_us = conn_now_us();
    if (stopping)
      j->cancelled = true;
    else
      j->run(j);
    pthread_mutex_lock(&ex->mu);
    ex->running[w->index] = NULL;
    hand_back(ex, j);
    /* A job this one held back may run now, on another worker. */
    if (ex->n_workers > 1 && ex->sleeping > 0)
      pthread_cond_broadcast(&ex->cv);
  }
  pthread_mutex_unlock(&ex->mu);
  return NULL;
}

/* The job run_other would run, and the one before it in the queue (*prev;
 * NULL at the head); NULL for none: the first queued job that is ready
 * (job.ready) and that nothing queued ahead or running holds back
 * (held_back). The waiting job counts as running, so whatever conflicts with
 * it stays behind it. Mutex held. */
static job *find_other(executor *ex, job **prev) {
  *prev = NULL;
  if (ex->stop || ex->nested)
    return NULL; /* one wait at a time: a nested job runs to its end */
  int n = 0;
  for (job *j = ex->head; j != NULL && n < EXECUTOR_SCAN;
       *prev = j, j = j->next, n++)
    if (j->ready != NULL && j->ready(j) && !held_back(ex, j))
      return j;
  return NULL;
}

bool executor_other_ready(executor *ex) {
  pthread_mutex_lock(&ex->mu);
  job *prev;
  bool ready = find_other(ex, &prev) != NULL;
  pthread_mutex_unlock(&ex->mu);
  return ready;
}

/* Runs the job executor_other_ready finds, to its end, and hands it back.
 * Returns whether there was one. */
static bool run_other(executor *ex) {
  pthread_mutex_lock(&ex->mu);
  job *prev;
  job *j = find_other(ex, &prev);
  if (j == NULL) {
    pthread_mutex_unlock(&ex->mu);
    return false;
  }
  unlink_job(ex, j, prev);
  pthread_mutex_unlock(&ex->mu);

  ex->nested = true;
  j->started_us = conn_now_us();
  j->run(j);
  ex->nested = false;
  atomic_fetch_add(&ex->interleaved, 1);
  pthread_mutex_lock(&ex->mu);
  hand_back(ex, j);
  pthread_mutex_unlock(&ex->mu);
  return true;
}

/* How long executor_wait_while sleeps at most before it asks still()
 * again, should a poke go astray. */
#define EXECUTOR_WAIT_MAX_MS 50

bool executor_wait_while(executor *ex, bool (*still)(void *arg),
                         void *arg) {
  if (ex->nested)
    return false;
  if (!still(arg))
    return true; /* the common case: nothing to wait for */
  /* Set before still() is asked again: a move that ends after that sees it
   * and pokes (see executor_poke). */
  atomic_store(&ex->waiting, true);
  bool over;
  for (;;) {
    pthread_mutex_lock(&ex->mu);
    uint64_t seen = ex->pokes;
    bool stopping = ex->stop;
    pthread_mutex_unlock(&ex->mu);
    if (stopping || !still(arg)) {
      over = !stopping;
      break;
    }
    if (run_other(ex))
      continue;
    pthread_mutex_lock(&ex->mu);
    job *prev;
    if (ex->pokes == seen && !ex->stop &&
        find_other(ex, &prev) == NULL) {
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_nsec += EXECUTOR_WAIT_MAX_MS * 1000000L;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      ex->sleeping++; /* so that executor_submit signals */
      pthread_cond_timedwait(&ex->cv, &ex->mu, &until);
      ex->sleeping--;
    }
    pthread_mutex_unlock(&ex->mu);
  }
  atomic_store(&ex->waiting, false);
  return over;
}

void executor_poke(executor *ex) {
  if (!atomic_load(&ex->waiting))
    return;
  pthread_mutex_lock(&ex->mu);
  ex->pokes++;
  pthread_cond_broadcast(&ex->cv);
  pthread_mutex_unlock(&ex->mu);
}

static void executor_on_async(uv_async_t *h) {
  executor *ex = h->data;
  pthread_mutex_lock(&ex->mu);
  job *j = ex->done_head;
  ex->done_head = ex->done_tail = NULL;
  pthread_mutex_unlock(&ex->mu);
  while (j != NULL) {
    job *next = j->next;
    pthread_mutex_lock(&ex->mu);
    ex->queued--;
    pthread_mutex_unlock(&ex->mu);
    j->done(j);
    j = next;
  }
}

/* Loop thread, while it watches for a lone job (see the top). */
static void executor_on_watch(uv_idle_t *h) {
  executor *ex = h->data;
  if (atomic_load(&ex->handback) != EXECUTOR_HANDBACK_HANDED) {
    if (conn_now_us() < ex->watch_until_us)
      return;
    int watching = EXECUTOR_HANDBACK_WATCHING;
    if (atomic_compare_exchange_strong(&ex->handback, &watching,
                                       EXECUTOR_HANDBACK_NONE)) {
      uv_idle_stop(h); /* the worker will send the async */
      return;
    }
    /* The worker handed the job over just now. */
  }
  atomic_store(&ex->handback, EXECUTOR_HANDBACK_NONE);
  uv_idle_stop(h);
  executor_on_async(&ex->async);
}

int executor_start(executor *ex, uv_loop_t *loop, int workers, bool spin) {
  memset(ex, 0, sizeof(*ex));
  if (workers < 1 || workers > EXECUTOR_MAX_WORKERS)
    return -EINVAL;
  ex->spin = spin && workers == 1;
  pthread_mutex_init(&ex->mu, NULL);
  pthread_cond_init(&ex->cv, NULL);
  int r = uv_async_init(loop, &ex->async, executor_on_async);
  if (r < 0)
    return r;
  ex->async.data = ex;
  ex->async_open = true;
  if ((r = uv_idle_init(loop, &ex->watch)) < 0)
    return r;
  ex->watch.data = ex;
  ex->watch_open = true;
  for (int i = 0; i < workers; i++) {
    ex->workers[i] = (executor_worker){.ex = ex, .index = i};
    /* Counted first: a worker reads n_workers as soon as it runs. */
    pthread_mutex_lock(&ex->mu);
    ex->n_workers++;
    pthread_mutex_unlock(&ex->mu);
    r = pthread_create(&ex->threads[i], NULL, executor_main, &ex->workers[i]);
    if (r != 0) {
      pthread_mutex_lock(&ex->mu);
      ex->n_workers--;
      pthread_mutex_unlock(&ex->mu);
      return -r; /* executor_stop joins those started */
    }
  }
  return 0;
}

int executor_submit(executor *ex, job *j, uint64_t depth) {
  pthread_mutex_lock(&ex->mu);
  if (ex->queued >= depth || ex->stop) {
    pthread_mutex_unlock(&ex->mu);
    return SLY_E_BUSY;
  }
  j->next = NULL;
  j->submitted_us = conn_now_us();
  if (ex->spin && ex->queued == 0 && ex->watch_open &&
      atomic_load(&ex->last_run_us) < EXECUTOR_WATCH_US &&
      atomic_load(&ex->handback) == EXECUTOR_HANDBACK_NONE) {
    /* Set before the worker can see the job, so that it never finishes
     * first and wakes the loop for nothing. */
    atomic_store(&ex->handback, EXECUTOR_HANDBACK_WATCHING);
    ex->watch_until_us = j->submitted_us + EXECUTOR_WATCH_US;
    uv_idle_start(&ex->watch, executor_on_watch);
  }
  if (ex->tail != NULL)
    ex->tail->next = j;
  else
    ex->head = j;
  ex->tail = j;
  ex->queued++;
  atomic_store_explicit(&ex->has_work, true, memory_order_release);
  if (ex->sleeping > 0)
    pthread_cond_signal(&ex->cv);
  pthread_mutex_unlock(&ex->mu);
  return 0;
}

void executor_cancel_queued(executor *ex) {
  pthread_mutex_lock(&ex->mu);
  job *j = ex->head;
  ex->head = ex->tail = NULL;
  for (job *k = j; k != NULL; k = k->next)
    ex->queued--;
  pthread_mutex_unlock(&ex->mu);
  while (j != NULL) {
    job *next = j->next;
    j->cancelled = true;
    j->started_us = j->finished_us = conn_now_us();
    j->done(j);
    j = next;
  }
}

size_t executor_pending(executor *ex) {
  pthread_mutex_lock(&ex->mu);
  size_t n = ex->queued;
  pthread_mutex_unlock(&ex->mu);
  return n;
}

void executor_stop(executor *ex) {
  if (ex->n_workers > 0) {
    pthread_mutex_lock(&ex->mu);
    ex->stop = true;
    pthread_cond_broadcast(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
    for (int i = 0; i < ex->n_workers; i++)
      pthread_join(ex->threads[i], NULL);
    ex->n_workers = 0;
    executor_on_async(&ex->async); /* done() of what finished last */
  }
  if (ex->watch_open) {
    atomic_store(&ex->handback, EXECUTOR_HANDBACK_NONE);
    uv_close((uv_handle_t *)&ex->watch, NULL);
    ex->watch_open = false;
  }
  if (ex->async_open) {
    uv_close((uv_handle_t *)&ex->async, NULL);
    ex->async_open = false;
  }
}
