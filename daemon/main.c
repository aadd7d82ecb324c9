/* main.c — slyced's entry point: arguments, config, log, loop. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "faults.h"
#include "log.h"
#include "slyced.h"
#include "torch_shim.h"

static void usage(FILE *f) {
  fprintf(f, "usage: slyced -c CONFIG [--foreground]\n"
             "       slyced -c CONFIG --check\n"
             "       slyced --version | --help\n"
             "Serves PyTorch model slices over a Unix socket (see "
             "config/README.md).\n"
             "--check loads CONFIG as a start would, declares each slice's "
             "module\n"
             "(reading no weights; no socket, device or log file is "
             "opened) and exits:\n"
             "0 when all is well.\n");
}

/* A slice's "weights" file, when it names one that is not a readable
 * regular file: the message, else NULL. */
static const char *bad_weights(const config *cfg, const config_slice *cs,
                               char *buf, size_t cap) {
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(cs->config, "weights");
  if (!cJSON_IsString(w))
    return NULL;
  char path[4096];
  snprintf(path, sizeof(path), "%s%s%s",
           w->valuestring[0] == '/' ? "" : cfg->config_dir,
           w->valuestring[0] == '/' ? "" : "/", w->valuestring);
  struct stat st;
  if (stat(path, &st) != 0)
    snprintf(buf, cap, "config.weights: %.400s: %s", path, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    snprintf(buf, cap, "config.weights: %.400s: not a regular file", path);
  else if (access(path, R_OK) != 0)
    snprintf(buf, cap, "config.weights: %.400s: %s", path, strerror(errno));
  else
    return NULL;
  return buf;
}

/* --check: what a start would refuse, and each slice's constructor config,
 * which a running slyced checks only at the slice's first use. Declaring a
 * module reads no weights (a weights file is only looked for), but a
 * TorchScript file is loaded whole. */
static int check_config(const config *cfg) {
  int bad = 0;
  for (size_t i = 0; i < cfg->n_slices; i++) {
    const config_slice *cs = &cfg->slices[i];
    char msg[SHIM_ERROR_MAX];
    shim_module *m = NULL;
    const char *why = NULL;
    if (shim_module_create_deferred(cs->constructor, cs->config,
                                    cfg->config_dir, "cpu", &m, msg) < 0)
      why = msg;
    else
      why = bad_weights(cfg, cs, msg, sizeof(msg));
    if (why != NULL) {
      fprintf(stderr, "%s: slices[%zu] (%s): %s\n", cfg->path, i, cs->name,
              why);
      shim_module_free(m);
      bad++;
      continue;
    }
    printf("slice %s: %s, %llu bytes\n", cs->name, cs->constructor,
           (unsigned long long)shim_module_blob_bytes(m));
    shim_module_free(m);
  }
  if (bad > 0)
    return 1;
  printf("%s: ok (%zu slices, %zu pipelines)\n", cfg->path, cfg->n_slices,
         cfg->n_pipelines);
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"foreground", no_argument, NULL, 'f'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {"check", no_argument, NULL, 'k'},
      {NULL, 0, NULL, 0},
  };
  const char *config_path = NULL;
  bool check = false;
  int opt;
  while ((opt = getopt_long(argc, argv, "c:fVh", opts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      config_path = optarg;
      break;
    case 'k':
      check = true;
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
    if (config_path == NULL)
      fprintf(stderr, "slyced: no config: -c CONFIG is required\n");
    else
      fprintf(stderr, "slyced: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }

  char err[CONFIG_ERROR_MAX];
  config *cfg;
  if (config_load(config_path, &cfg, err) < 0) {
    if (check)
      fprintf(stderr, "%s\n", err);
    else
      log_error("%s", err);
    return 1;
  }
  if (check) {
    int rc = check_config(cfg);
    config_free(cfg);
    return rc;
  }
  int r = log_configure(cfg->log_level, cfg->log_console, cfg->log_file);
  if (r < 0) {
    log_error("log.file %s: %s", cfg->log_file, strerror(-r));
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
