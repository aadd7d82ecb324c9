/* executor.h — worker threads with one queue: the one that runs a device's
 * work, and the loaders that stage slices before it (daemon/).
 *
 * Owns: its worker threads, their bounded queue (queue_depth) and the
 * hand-back to the loop thread. A job's run() executes on a worker, after
 * every earlier job it conflicts with (job.conflicts: with one worker, after
 * every earlier job); its done() then executes on the loop thread, in the
 * order the runs finished. A run that would sit waiting (a forward whose
 * slice another thread is moving) runs queued jobs that are ready and do
 * not conflict with it in the meantime (executor_wait_while), so those can
 * finish first.
 * The loop thread never waits on a job; when it hands a lone job that
 * should be short, it polls its other sockets without sleeping for a while
 * instead (see executor.c), and takes the job back without a wake-up.
 */
#ifndef DAEMON_EXECUTOR_H
#define DAEMON_EXECUTOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct job job;
struct job {
  job *next;
  void (*run)(job *j);  /* worker thread */
  void (*done)(job *j); /* loop thread; frees the job */
  /* Worker thread, optional: whether run() would finish without waiting
   * for another thread now, so that it may run while another job waits
   * (executor_wait_while). NULL: never. */
  bool (*ready)(job *j);
  /* Optional: whether `later` must wait for `earlier` (queued ahead of it,
   * or running, or waiting in executor_wait_while). NULL: it always must.
   * What lets a second worker, or a wait, take a job out of order. Called
   * with the executor's mutex held. */
  bool (*conflicts)(const job *earlier, const job *later);
  uint64_t submitted_us, started_us, finished_us;
  bool cancelled; /* the executor stopped before run(): done() must say so */
};

#define EXECUTOR_MAX_WORKERS 4

typedef struct executor executor;
typedef struct {
  executor *ex;
  int index;
} executor_worker;

struct executor {
  pthread_t threads[EXECUTOR_MAX_WORKERS];
  executor_worker workers[EXECUTOR_MAX_WORKERS];
  job *running[EXECUTOR_MAX_WORKERS]; /* each worker's job, or NULL */
  int n_workers; /* started */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *head, *tail; /* waiting to run */
  size_t queued;    /* waiting + running, checked against depth */
  job *done_head, *done_tail;
  bool stop;
  int sleeping;          /* in pthread_cond_wait: submit must signal */
  atomic_bool has_work;  /* what a spinning worker watches */
  atomic_int handback;   /* EXECUTOR_HANDBACK_*: see executor.c */
  atomic_uint_fast64_t last_run_us; /* how long the last job ran */
  uint64_t watch_until_us; /* loop thread: when it stops polling for one */
  uv_async_t async;
  uv_idle_t watch; /* keeps the loop polling while a short job runs */
  bool async_open, watch_open;
  bool spin; /* spin-waits pay here: set by executor_start */
  bool nested; /* worker: running a job inside another's wait */
  atomic_bool waiting; /* a run is in executor_wait_while */
  uint64_t pokes;      /* executor_poke calls while waiting (mutex) */
  atomic_uint_fast64_t interleaved; /* jobs run inside another's wait */
};

/* Starts `workers` worker threads (1 .. EXECUTOR_MAX_WORKERS). With `spin`
 * (one worker only), the worker and the loop thread spin-wait for a short
 * while around short jobs instead of sleeping (executor.c): only where
 * another CPU can run the thread that is waited for. Returns 0 or a
 * negative errno / libuv error. */
int executor_start(executor *ex, uv_loop_t *loop, int workers, bool spin);
/* Queues a job unless `depth` jobs are already queued or running: then
 * returns SLY_E_BUSY and the job stays the caller's. */
int executor_submit(executor *ex, job *j, uint64_t depth);
/* Worker thread of a one-worker executor (the device's), inside a run():
 * whether a queued job could run in the meantime (see executor_wait_while):
 * one that is ready (job.ready) and that neither the running job nor one
 * queued ahead of it holds back (job.conflicts). */
bool executor_other_ready(executor *ex);
/* Worker thread of a one-worker executor, inside a run(): returns true once
 * still(arg) is false, running the jobs executor_other_ready finds to their
 * end meanwhile, one at a time, and sleeping between them until a job is
 * queued or executor_poke is called. Returns false at once inside
 * another's wait, or while stopping: the caller then waits its own way. */
bool executor_wait_while(executor *ex, bool (*still)(void *arg), void *arg);
/* Any thread: what still() said may have changed (a move ended). Cheap
 * unless a run waits in executor_wait_while. */
void executor_poke(executor *ex);
/* Whether the worker is running a job inside another's wait. Worker thread
 * only. */
static inline bool executor_nested(const executor *ex) { return ex->nested; }
/* Takes the jobs that have not started off the queue and calls their
 * done() now, as cancelled (drain timeout). Loop thread. */
void executor_cancel_queued(executor *ex);
/* Jobs queued or running right now. */
size_t executor_pending(executor *ex);
/* Lets the workers finish the jobs they are running; jobs still queued are
 * not run (cancelled). Joins the workers, calls every pending done() and
 * closes the async handle. */
void executor_stop(executor *ex);

#endif
