/* config.h — loading and validating slyced's JSON config (daemon/).
 *
 * Owns: the config struct, a fully validated, self-contained copy of one
 * config file. Every unknown key, wrong type or out-of-range value is an
 * error whose message names the file and the key path
 * ("config/slyced.json: slices[1].name: expected a string"). Relative paths
 * are resolved against the config file's folder. No logging: callers log
 * the message once.
 */
#ifndef DAEMON_CONFIG_H
#define DAEMON_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <cJSON.h>

#include "limits.h"
#include "log.h"

#define CONFIG_ERROR_MAX 512
/* The most loader threads (key `loaders`): the executor's most workers. */
#define CONFIG_LOADERS_MAX 4

typedef enum {
  GPU_STRATEGY_NONE,
  GPU_STRATEGY_ACTIVE_ONLY,
  GPU_STRATEGY_LIMIT_GPU,
} gpu_strategy;

typedef struct {
  char *name;        /* 1..PROTO_NAME_MAX bytes of [A-Za-z0-9_.-] */
  char *constructor; /* checked against the known constructors later */
  cJSON *config;     /* the slice's own object (owned); relative paths inside
                        are resolved by the constructor with config_dir */
} config_slice;

typedef struct {
  char *name;
  char **slices; /* names of slices listed in this config */
  size_t n_slices;
} config_pipeline;

typedef struct {
  char *path;       /* the file, absolute */
  char *config_dir; /* its folder, absolute */

  char *socket; /* absolute; default /run/slyced/slyced.sock */
  bool has_socket_mode;
  unsigned socket_mode; /* default 0660 */
  char *admin_group;    /* NULL when unset */
  bool has_admin_gid;
  gid_t admin_gid; /* looked up at load time; unknown group is an error */

  log_level log_level; /* default info */
  bool log_console;    /* default true */
  char *log_file;      /* absolute or NULL */

  char *device; /* "cpu", "sim" or "cuda:N"; default "cpu" */
  gpu_strategy gpu_strategy; /* default none */
  uint64_t max_gpu_mem_mb;   /* 0: unset */
  uint64_t gpu_reserve_mb;
  uint64_t max_cpu_mem_mb; /* 0: unset */
  char *disk_cache_path;   /* absolute or NULL */
  uint64_t prefetch_depth; /* default 1 */
  uint64_t loaders;        /* default 2, at most CONFIG_LOADERS_MAX */
  double sim_copy_gbps;    /* 0: copy as fast as memcpy goes */

  proto_limits limits;

  config_slice *slices;
  size_t n_slices;
  config_pipeline *pipelines;
  size_t n_pipelines;
} config;

/* Reads and validates `path`. On success the caller owns *out and frees it
 * with config_free(); on failure *out is untouched and `err` holds one line
 * naming the file and the key. Returns 0 or -1. */
int config_load(const char *path, config **out, char err[CONFIG_ERROR_MAX]);

/* The same from text in memory; `path` is used for messages and to resolve
 * relative paths. */
int config_parse(const char *path, const char *text, size_t len, config **out,
                 char err[CONFIG_ERROR_MAX]);

void config_free(config *c);

const char *gpu_strategy_name(gpu_strategy s);

#endif
