/* fuzz_config.c — libFuzzer target: the config loader, from text in memory.
 *
 * Input: the text of a config file, handed to config_parse() (what
 * config_load() does after reading the file) as "/fuzz.json", so relative
 * paths resolve against "/". A config that loads is checked against what
 * config.h promises the daemon; a rejection must be one line that names the
 * file.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"

#include "fuzz.h"

#define FILE_NAME "/fuzz.json"

static bool name_ok(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n < 1 || n > PROTO_NAME_MAX)
    return false;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
      return false;
  return true;
}

static bool abs_path_ok(const char *p) {
  return p == NULL || (p[0] == '/' && strlen(p) < PATH_MAX);
}

static const config_slice *find_slice(const config *c, const char *name) {
  for (size_t i = 0; i < c->n_slices; i++)
    if (strcmp(c->slices[i].name, name) == 0)
      return &c->slices[i];
  return NULL;
}

static void check_limits(const proto_limits *l) {
#define CHECK_LIMIT(key, def, lo, hi)                                          \
  FUZZ_CHECK(l->key >= (uint64_t)(lo) && l->key <= (uint64_t)(hi),             \
             #key " = %llu", (unsigned long long)l->key);
  PROTO_LIMIT_MAP(CHECK_LIMIT)
#undef CHECK_LIMIT
}

static void check_config(const config *c) {
  FUZZ_CHECK(strcmp(c->path, FILE_NAME) == 0 &&
                 strcmp(c->config_dir, "/") == 0,
             "path %s, dir %s", c->path, c->config_dir);
  size_t sun_path = sizeof(((struct sockaddr_un *)0)->sun_path);
  FUZZ_CHECK(c->socket && c->socket[0] == '/' && strlen(c->socket) < sun_path,
             "socket");
  FUZZ_CHECK(c->socket_mode <= 0777, "socket_mode %o", c->socket_mode);
  FUZZ_CHECK(abs_path_ok(c->log_file) && abs_path_ok(c->disk_cache_path),
             "paths");
  FUZZ_CHECK(c->admin_group == NULL || c->has_admin_gid, "admin_group");
  FUZZ_CHECK(c->device != NULL, "device");
  bool cpu = strcmp(c->device, "cpu") == 0, sim = strcmp(c->device, "sim") == 0;
  FUZZ_CHECK(cpu || sim || strncmp(c->device, "cuda:", 5) == 0, "device %s",
             c->device);
  FUZZ_CHECK(!cpu || c->gpu_strategy == GPU_STRATEGY_NONE, "cpu strategy");
  FUZZ_CHECK(!sim || c->max_gpu_mem_mb > 0, "sim size");
  FUZZ_CHECK(c->gpu_strategy != GPU_STRATEGY_LIMIT_GPU ||
                 c->max_gpu_mem_mb > c->gpu_reserve_mb,
             "limit_gpu");
  FUZZ_CHECK(c->prefetch_depth <= 16, "prefetch_depth");
  FUZZ_CHECK(c->sim_copy_gbps >= 0.0 && c->sim_copy_gbps <= 10000.0, "gbps");
  check_limits(&c->limits);

  for (size_t i = 0; i < c->n_slices; i++) {
    const config_slice *s = &c->slices[i];
    FUZZ_CHECK(name_ok(s->name), "slices[%zu].name", i);
    FUZZ_CHECK(s->constructor && cJSON_IsObject(s->config), "slices[%zu]", i);
    FUZZ_CHECK(find_slice(c, s->name) == s, "slices[%zu]: name twice", i);
  }
  for (size_t i = 0; i < c->n_pipelines; i++) {
    const config_pipeline *p = &c->pipelines[i];
    FUZZ_CHECK(name_ok(p->name) && !find_slice(c, p->name),
               "pipelines[%zu].name", i);
    FUZZ_CHECK(p->n_slices >= 1, "pipelines[%zu] empty", i);
    for (size_t j = 0; j < p->n_slices; j++)
      FUZZ_CHECK(p->slices[j] && find_slice(c, p->slices[j]),
                 "pipelines[%zu][%zu]", i, j);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Exact size: config_parse must not read past `size`. */
  char *text = fuzz_dup(data, size);
  char err[CONFIG_ERROR_MAX];
  memset(err, 0x55, sizeof(err));
  config *c = NULL;
  int r = config_parse(FILE_NAME, text, size, &c, err);
  free(text);
  if (r == 0) {
    FUZZ_CHECK(c != NULL, "no config");
    check_config(c);
    config_free(c);
  } else {
    FUZZ_CHECK(r == -1 && c == NULL, "r %d", r);
    FUZZ_CHECK(strncmp(err, FILE_NAME ": ", sizeof(FILE_NAME) + 1) == 0,
               "message does not name the file: %.80s", err);
    FUZZ_CHECK(fuzz_one_line(err, sizeof(err)), "message is not one line: %.*s",
               (int)sizeof(err), err);
  }
  return 0;
}
