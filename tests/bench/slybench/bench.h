/* bench.h — the benchmarks slybench runs, in the order it runs them
 * (tests/bench/slybench/). Each starts its own slyced, prints what it
 * measures as it goes and adds its rows to the table (kit.h). */
#ifndef SLYBENCH_BENCH_H
#define SLYBENCH_BENCH_H

#include "kit.h"

void bench_rpc(void);  /* 1: RPC overhead and requests per second */
void bench_shm(void);  /* 2: 64 MiB in and out through shared memory */
void bench_disk(void); /* 3: a pipeline streamed from the disk cache */
void bench_sim(void);  /* 4: sim device streaming, bytes moved vs LRU */

#endif
