/* slybench.c — the CPU benchmarks of slyced: each measures the daemon
 * against a floor measured side by side in the same run, and prints the
 * figures and the ratio; a table of every row comes last. See
 * tests/bench/README.md for what each one measures and how.
 *
 *   slybench [--slyced PATH] [--source DIR] [--only 1,2,3,4] [--quick]
 *
 * A missed target is reported, not an error: the exit status is 0 unless a
 * benchmark could not run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "slybench/bench.h"

#ifndef SLYBENCH_BUILD_DIR
#error "SLYBENCH_BUILD_DIR must be defined by the Makefile"
#endif
#ifndef SLYBENCH_SOURCE_DIR
#error "SLYBENCH_SOURCE_DIR must be defined by the Makefile"
#endif

static int usage(void) {
  fprintf(stderr, "usage: slybench [--slyced PATH] [--source DIR] "
                  "[--only 1,2,3,4] [--quick]\n");
  return 2;
}

/* The 1-minute load average: benchmarks on a shared machine say how busy
 * it was. */
static double load_average(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f != NULL) {
    if (fscanf(f, "%lf", &l) != 1)
      l = -1;
    fclose(f);
  }
  return l;
}

static void print_machine(void) {
  struct utsname u;
  char date[32] = "?";
  time_t now = time(NULL);
  strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
  if (uname(&u) != 0)
    snprintf(u.release, sizeof(u.release), "?");
  printf("slybench: %s, %ld cores online, Linux %s, load average %.2f, "
         "slyced %s\n",
         date, sysconf(_SC_NPROCESSORS_ONLN), u.release, load_average(),
         bk_env_now.slyced);
}

int main(int argc, char **argv) {
  bk_env_now.slyced = SLYBENCH_BUILD_DIR "/slyced";
  bk_env_now.source_dir = SLYBENCH_SOURCE_DIR;
  const char *only = "1,2,3,4";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--slyced") && i + 1 < argc)
      bk_env_now.slyced = argv[++i];
    else if (!strcmp(argv[i], "--source") && i + 1 < argc)
      bk_env_now.source_dir = argv[++i];
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!strcmp(argv[i], "--quick"))
      bk_env_now.quick = true;
    else
      return usage();
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  print_machine();
  static void (*const benches[])(void) = {bench_rpc, bench_shm, bench_disk,
                                          bench_sim};
  for (int b = 0; b < 4; b++) {
    char id[2] = {(char)('1' + b), '\0'};
    if (strstr(only, id) != NULL)
      benches[b]();
  }
  bk_table_print();
  printf("load average at the end: %.2f\n", load_average());
  return 0;
}
