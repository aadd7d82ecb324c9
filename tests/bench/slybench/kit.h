/* kit.h — what every slybench benchmark shares (tests/bench/slybench/).
 *
 * Owns: a real slyced per benchmark, started on a socket in a temporary
 * folder (/tmp/slybench-XXXXXX, holding its config, socket, log and whatever
 * else the benchmark puts there) and stopped with SIGTERM; the clock and the
 * small statistics the benchmarks print; reading figures out of a `stats`
 * reply; and the result table every benchmark adds its rows to and main
 * prints at the end. A benchmark that cannot run (the daemon does not start,
 * a request fails) stops the program with bk_die(): a missed target is a
 * row, never an exit status.
 */
#ifndef SLYBENCH_KIT_H
#define SLYBENCH_KIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "slyce.h"

#define BK_PATH_MAX 200
#define BK_MIB (1024.0 * 1024.0)

/* Where slyced and the fixtures are; main sets them from its arguments. */
typedef struct {
  const char *slyced;     /* the daemon binary */
  const char *source_dir; /* the repository root (tests/fixtures/...) */
  bool quick;             /* fewer repetitions, for a smoke run */
} bk_env;

extern bk_env bk_env_now; /* main's, read by every benchmark */

typedef struct {
  char dir[BK_PATH_MAX];
  char sock[BK_PATH_MAX];
  char config[BK_PATH_MAX];
  char log[BK_PATH_MAX];
  pid_t pid;
} bk_daemon;

/* Makes the temporary folder; the benchmark may put files in it (cache
 * folders, TorchScript files) before bk_launch. */
void bk_prepare(bk_daemon *d);
/* Writes the config ({socket, log} plus `extra_json`, fields without the
 * braces), starts slyced and waits until a hello succeeds. */
void bk_launch(bk_daemon *d, const char *extra_json);
/* SIGTERM, waits for the exit, removes the folder. */
void bk_stop(bk_daemon *d);

/* Connects and says hello; dies on failure. The caller sly_close()s it. */
sly_conn *bk_connect(const bk_daemon *d);
/* The number at `path` ("transfers.cpu_to_gpu.bytes") of a stats reply;
 * dies when there is none. */
double bk_stat(sly_conn *c, const char *path);
/* The same; false (and *out untouched) when the reply has no such number,
 * for figures only some versions of the daemon report. */
bool bk_stat_opt(sly_conn *c, const char *path, double *out);
/* Prints the daemon's prefetch figures (done, hits, wasted bytes) when it
 * reports them. */
void bk_print_prefetch(sly_conn *c);
/* Waits until the daemon has no prefetch pending (when it reports
 * prefetch.pending) and the figure at `path` stays put for 50 ms: moves it
 * started on its own have finished. Gives up after 10 s. */
void bk_settle(sly_conn *c, const char *path);

/* Prints "slybench: <message>" and exits 1 (daemons are stopped). */
_Noreturn void bk_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Seconds on the monotonic clock. */
double bk_now(void);
/* The median of v (sorts it). */
double bk_median(double *v, size_t n);
/* Allocates `bytes` 4096-aligned and touches every page; dies when out of
 * memory. The caller frees it with free(). */
void *bk_alloc_touched(size_t bytes);
/* Free bytes of the file system holding `path`, or 0 when unknown. */
uint64_t bk_free_bytes(const char *path);

/* A row of the final table: `measured` against `floor` (both already
 * formatted with their units), and their ratio, judged against `target`. */
typedef enum {
  BK_AT_MOST,  /* ratio <= target is met */
  BK_AT_LEAST, /* ratio >= target is met */
  BK_NONE,     /* no target: a figure to read */
} bk_goal;

void bk_row(const char *id, const char *what, const char *measured,
            const char *floor, double ratio, bk_goal goal, double target);
/* Prints every row recorded so far as one table. */
void bk_table_print(void);

/* "12.3 us", "4.56 ms", "1.23 s" for a time in seconds. */
void bk_fmt_time(char *out, size_t n, double seconds);

#endif
