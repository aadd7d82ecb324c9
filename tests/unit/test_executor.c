/* test_executor.c — the executor driven with plain jobs, no daemon: which
 * queued jobs a run that waits (executor_wait_while) lets through, and
 * which a second worker may take out of order. A job's owner stands for a
 * connection: its conflicts() says that jobs of one owner run in order. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "executor.h"

typedef struct tjob tjob;
struct tjob {
  job base;
  int owner;
  char name;
  atomic_bool ready;     /* what job.ready says */
  atomic_bool *hold;     /* run() waits while *hold (NULL: it does not) */
  bool wait_on_executor; /* ... through executor_wait_while, else spinning */
  bool until_stop;       /* run() waits until the executor is stopping */
  atomic_int ran_at;     /* 1 + its place in the order of runs; 0: not yet */
  atomic_bool running;
  bool nested_ran;       /* executor_nested() inside run() */
  int wait_said;         /* 1: executor_wait_while returned true, 2: false */
};

static executor ex;
static uv_loop_t loop;
static atomic_int runs;
static char done_order[16];
static int n_done;

static void sleep_ms(int ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

static bool held(void *arg) { return atomic_load((atomic_bool *)arg); }

static void tjob_run(job *base) {
  tjob *j = (tjob *)base;
  atomic_store(&j->running, true);
  j->nested_ran = executor_nested(&ex);
  if (j->hold != NULL) {
    if (j->wait_on_executor)
      j->wait_said = executor_wait_while(&ex, held, j->hold) ? 1 : 2;
    while (atomic_load(j->hold)) /* what the caller of a wait does next */
      sleep_ms(1);
  }
  for (bool stopping = !j->until_stop; !stopping; sleep_ms(1)) {
    pthread_mutex_lock(&ex.mu);
    stopping = ex.stop;
    pthread_mutex_unlock(&ex.mu);
  }
  atomic_store(&j->ran_at, atomic_fetch_add(&runs, 1) + 1);
}

static void tjob_done(job *base) {
  tjob *j = (tjob *)base;
  cr_assert(!j->base.cancelled, "job %c was cancelled", j->name);
  done_order[n_done++] = j->name;
}

static bool tjob_ready(job *base) {
  return atomic_load(&((tjob *)base)->ready);
}

static bool tjob_conflicts(const job *earlier, const job *later) {
  return ((const tjob *)earlier)->owner == ((const tjob *)later)->owner;
}

static void tjob_init(tjob *j, char name, int owner, bool ready) {
  memset(j, 0, sizeof(*j));
  j->base.run = tjob_run;
  j->base.done = tjob_done;
  j->base.ready = tjob_ready;
  j->base.conflicts = tjob_conflicts;
  j->name = name;
  j->owner = owner;
  atomic_store(&j->ready, ready);
}

static void start(int workers) {
  cr_assert_eq(uv_loop_init(&loop), 0);
  cr_assert_eq(executor_start(&ex, &loop, workers, false), 0);
  atomic_store(&runs, 0);
  memset(done_order, 0, sizeof(done_order));
  n_done = 0;
}

static void submit(tjob *j) {
  cr_assert_eq(executor_submit(&ex, &j->base, 16), 0);
}

/* Runs the loop (which calls done()) until `n` jobs are done, 5 s at most. */
static void pump_until_done(int n) {
  for (int i = 0; i < 5000 && n_done < n; i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (n_done < n)
      sleep_ms(1);
  }
  cr_assert_eq(n_done, n, "%d of %d jobs done: \"%s\"", n_done, n,
               done_order);
}

static void wait_running(tjob *j) {
  for (int i = 0; i < 5000 && !atomic_load(&j->running); i++)
    sleep_ms(1);
  cr_assert(atomic_load(&j->running), "job %c never ran", j->name);
}

static void stop(void) {
  executor_stop(&ex);
  uv_run(&loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
  cr_assert_eq(uv_loop_close(&loop), 0);
}

TestSuite(executor, .timeout = 30);

/* A waits for a move. Of what is queued behind it, B (another owner,
 * ready) runs meanwhile; C (A's owner) and D (not ready) wait for A, and
 * so does E, queued behind D of its owner although it is ready itself. */
Test(executor, a_wait_runs_ready_jobs_that_nothing_holds_back) {
  start(1);
  static atomic_bool moving;
  atomic_store(&moving, true);
  static tjob a, b, c, d, e;
  tjob_init(&a, 'A', 1, false);
  a.hold = &moving;
  a.wait_on_executor = true;
  tjob_init(&c, 'C', 1, true);
  tjob_init(&d, 'D', 2, false);
  tjob_init(&e, 'E', 2, true);
  tjob_init(&b, 'B', 3, true);
  submit(&a);
  wait_running(&a);
  submit(&c);
  submit(&d);
  submit(&e);
  submit(&b);
  pump_until_done(1);
  cr_assert_eq(done_order[0], 'B', "done first: %c", done_order[0]);
  cr_assert(b.nested_ran, "B ran outside A's wait");
  sleep_ms(100); /* two of the wait's timed sleeps: nothing else runs */
  cr_assert_eq(atomic_load(&runs), 1, "%d jobs ran while A waited",
               atomic_load(&runs));
  cr_assert_eq(executor_pending(&ex), 4);

  atomic_store(&moving, false);
  executor_poke(&ex);
  pump_until_done(5);
  cr_assert_str_eq(done_order, "BACDE");
  cr_assert(!c.nested_ran && !d.nested_ran && !e.nested_ran);
  cr_assert_eq(atomic_load(&ex.interleaved), 1);
  stop();
}

/* A job that turns ready while the run waits is taken then: the wait looks
 * again whenever it is poked, not only when a job is queued. */
Test(executor, a_job_that_turns_ready_runs_within_the_wait) {
  start(1);
  static atomic_bool moving;
  atomic_store(&moving, true);
  static tjob a, b;
  tjob_init(&a, 'A', 1, false);
  a.hold = &moving;
  a.wait_on_executor = true;
  tjob_init(&b, 'B', 2, false);
  submit(&a);
  wait_running(&a);
  submit(&b);
  sleep_ms(20);
  cr_assert_eq(atomic_load(&runs), 0);
  atomic_store(&b.ready, true);
  executor_poke(&ex);
  pump_until_done(1);
  cr_assert_eq(done_order[0], 'B');
  atomic_store(&moving, false);
  executor_poke(&ex);
  pump_until_done(2);
  cr_assert_str_eq(done_order, "BA");
  stop();
}

/* A job run inside a wait that would wait itself does not nest a second
 * wait: it waits its own way, and the outer wait goes on after it. */
Test(executor, a_nested_job_does_not_wait_on_the_executor) {
  start(1);
  static atomic_bool moving, inner;
  atomic_store(&moving, true);
  atomic_store(&inner, true);
  static tjob a, b, c;
  tjob_init(&a, 'A', 1, false);
  a.hold = &moving;
  a.wait_on_executor = true;
  tjob_init(&b, 'B', 2, true);
  b.hold = &inner;
  b.wait_on_executor = true;
  tjob_init(&c, 'C', 3, true);
  submit(&a);
  wait_running(&a);
  submit(&b);
  wait_running(&b);
  submit(&c);
  sleep_ms(100);
  cr_assert_eq(atomic_load(&runs), 0, "C ran inside B, inside A's wait");
  atomic_store(&inner, false);
  pump_until_done(2);
  cr_assert_str_eq(done_order, "BC");
  atomic_store(&moving, false);
  executor_poke(&ex);
  pump_until_done(3);
  cr_assert_str_eq(done_order, "BCA");
  /* Only the outer wait saw its test turn false; the inner one returned at
   * once, saying so. */
  cr_assert_eq(a.wait_said, 1, "A's wait returned %s",
               a.wait_said == 2 ? "false" : "nothing");
  cr_assert_eq(b.wait_said, 2, "B's wait, nested, returned %s",
               b.wait_said == 1 ? "true" : "nothing");
  stop();
}

/* With two workers, a job may pass one it does not conflict with: B
 * (another owner) runs while A holds the first worker; C (A's owner) waits
 * for A although a worker is free. */
Test(executor, a_second_worker_takes_only_jobs_nothing_holds_back) {
  start(2);
  static atomic_bool busy;
  atomic_store(&busy, true);
  static tjob a, b, c;
  tjob_init(&a, 'A', 1, false);
  a.hold = &busy;
  tjob_init(&c, 'C', 1, false);
  tjob_init(&b, 'B', 2, false);
  submit(&a);
  wait_running(&a);
  submit(&c);
  submit(&b);
  pump_until_done(1);
  cr_assert_eq(done_order[0], 'B');
  sleep_ms(50);
  cr_assert(!atomic_load(&c.running), "C ran beside A, of its owner");
  atomic_store(&busy, false);
  pump_until_done(3);
  cr_assert_str_eq(done_order, "BAC");
  stop();
}

/* Stopping lets the running job end and cancels what is queued: each
 * queued job's done() still runs, told so. */
static void count_cancelled(job *base) {
  tjob *j = (tjob *)base;
  done_order[n_done++] = j->base.cancelled ? 'x' : j->name;
}

Test(executor, stop_ends_the_running_job_and_cancels_the_queued) {
  start(1);
  static tjob a, b;
  tjob_init(&a, 'A', 1, false);
  a.until_stop = true;
  tjob_init(&b, 'B', 1, true);
  a.base.done = b.base.done = count_cancelled;
  submit(&a);
  wait_running(&a);
  submit(&b);
  executor_stop(&ex);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0);
  cr_assert_str_eq(done_order, "Ax");
}
