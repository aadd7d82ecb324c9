/* main.c — slyced's entry point: arguments, config, log, loop. */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "faults.h"
#include "log.h"
#include "slyced.h"
#include "torch_shim.h"

static void usage(FILE *f) {
  fprintf(f, "usage: slyced -c CONFIG [--foreground]\n"
             "       slyced --version | --help\n"
             "Serves PyTorch model slices over a Unix socket; see "
             "config/README.md.\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"foreground", no_argument, NULL, 'f'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *config_path = NULL;
  int opt;
  while ((opt = getopt_long(argc, argv, "c:fVh", opts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      config_path = optarg;
      break;
    case 'f':
      /* slyced never forks: systemd (Type=notify) and `make run` both want
       * it in the foreground. The flag is accepted for clarity. */
      break;
    case 'V':
      printf("slyced %s (libtorch %s)\n", SLY_VERSION, shim_torch_version());
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (config_path == NULL || optind != argc) {
    usage(stderr);
    return 2;
  }

  char err[CONFIG_ERROR_MAX];
  config *cfg;
  if (config_load(config_path, &cfg, err) < 0) {
    log_error("%s", err);
    return 1;
  }
  int r = log_configure(cfg->log_level, cfg->log_console, cfg->log_file);
  if (r < 0) {
    log_error("log file %s: %s", cfg->log_file, strerror(-r));
    config_free(cfg);
    return 1;
  }
  /* Fault injection, for the fault tests only; loud when armed. */
  const char *faults = getenv("SLYCED_FAULTS");
  if (faults_init(faults, err) < 0) {
    log_error("%s", err);
    config_free(cfg);
    return 1;
  }
  if (faults_armed())
    log_warn("SLYCED_FAULTS=%s: fault injection is armed (for tests only)",
             faults);
  /* A client that vanishes must cost a send() error, not the process. */
  signal(SIGPIPE, SIG_IGN);
  /* Weight blobs of a few MiB come and go; glibc's dynamic mmap threshold
   * would keep freed ones in per-thread heaps that never shrink, and RSS
   * would drift past the budgets. */
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  /* A file-size limit must fail a cache write (EFBIG), not kill us. */
  signal(SIGXFSZ, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  static slyced sd; /* static: big, and lives as long as the process */
  int code = 0;
  if (slyced_start(&sd, &loop, cfg) < 0) {
    code = 1;
  } else {
    uv_run(&loop, UV_RUN_DEFAULT);
    code = sd.exit_code;
    log_info("slyced stopped%s", code ? " (exit status 1 for a restart)" : "");
  }
  slyced_free(&sd);
  uv_loop_close(&loop);
  log_shutdown();
  return code;
}
