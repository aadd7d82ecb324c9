/* config.c — loading and validating slyced's JSON config (see config.h).
 *
 * The whole file is checked before anything is kept: the caller gets either a
 * complete config or one message naming the file and the key, so SIGHUP and
 * `reload` can reject a bad file without touching the running one. The JSON
 * helpers (types, unknown and duplicate keys, paths) are in config_json.c.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config_json.h"

/* A config is written by hand; anything bigger is a mistake, and reading it
 * whole into memory must stay cheap. */
#define CONFIG_FILE_MAX ((size_t)4 << 20)
#define CONFIG_MB_MAX ((uint64_t)1 << 24) /* 16 TiB, far past any machine */
#define CONFIG_PREFETCH_MAX 16
#define CONFIG_SIM_GBPS_MAX 10000.0
#define CONFIG_CUDA_INDEX_MAX 63
#define CONFIG_SLICES_MAX 4096
#define CONFIG_PIPELINES_MAX 4096
#define CONFIG_PIPELINE_LEN_MAX 1024
#define CONFIG_DEFAULT_SOCKET "/run/slyced/slyced.sock"
#define CONFIG_DEFAULT_SOCKET_MODE 0660
#define CONFIG_DEFAULT_PREFETCH 1
/* Loader threads: two slices that take long to come in (builds, disk
 * reads) come in side by side, so that a second client's slice is not held
 * up for all of the first one's build. More mostly add transient memory: a
 * build holds its slice outside the budgets until its copy is placed. */
#define CONFIG_DEFAULT_LOADERS 2

static const char *const config__constructors[] = {
    "torchscript", "linear", "mlp", "transformer_encoder_layer", NULL};

static const char *const config__top_keys[] = {
    "socket", "socket_mode", "admin_group", "log", "device", "gpu_strategy",
    "max_gpu_mem_mb", "gpu_reserve_mb", "max_cpu_mem_mb", "disk_cache_path",
    "prefetch_depth", "loaders", "sim_copy_gbps",
#define CONFIG__LIMIT_KEY(key, def, lo, hi) #key,
    PROTO_LIMIT_MAP(CONFIG__LIMIT_KEY)
#undef CONFIG__LIMIT_KEY
    "slices", "pipelines", NULL};

static const char *const config__log_keys[] = {"file", "level", "console",
                                               NULL};
static const char *const config__slice_keys[] = {"name", "constructor",
                                                 "config", NULL};

static const struct {
  const char *key;
  size_t offset;
  uint64_t lo, hi;
} config__limits[] = {
#define CONFIG__LIMIT_ROW(key, def, lo, hi)                                    \
  {#key, offsetof(proto_limits, key), lo, hi},
    PROTO_LIMIT_MAP(CONFIG__LIMIT_ROW)
#undef CONFIG__LIMIT_ROW
};

const char *gpu_strategy_name(gpu_strategy s) {
  switch (s) {
  case GPU_STRATEGY_NONE: return "none";
  case GPU_STRATEGY_ACTIVE_ONLY: return "active_only";
  case GPU_STRATEGY_LIMIT_GPU: return "limit_gpu";
  }
  return "?";
}

void config_free(config *c) {
  if (!c)
    return;
  free(c->path);
  free(c->config_dir);
  free(c->socket);
  free(c->admin_group);
  free(c->log_file);
  free(c->device);
  free(c->disk_cache_path);
  for (size_t i = 0; i < c->n_slices; i++) {
    free(c->slices[i].name);
    free(c->slices[i].constructor);
    cJSON_Delete(c->slices[i].config);
  }
  free(c->slices);
  for (size_t i = 0; i < c->n_pipelines; i++) {
    free(c->pipelines[i].name);
    for (size_t j = 0; j < c->pipelines[i].n_slices; j++)
      free(c->pipelines[i].slices[j]);
    free(c->pipelines[i].slices);
  }
  free(c->pipelines);
  free(c);
}

static const cJSON *config__get(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static int config__strdup(config__ctx *ctx, const char *path, const char *s,
                          char **out) {
  char *d = strdup(s);
  if (!d)
    return config__fail(ctx, path, "out of memory");
  *out = d;
  return 0;
}

/* Slice and pipeline names travel in requests and log lines, so they are
 * kept to a small, printable alphabet. */
static bool config__name_ok(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > PROTO_NAME_MAX)
    return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
      return false;
  return true;
}

static int config__name(config__ctx *ctx, const char *path, const char *s,
                        const char *what) {
  if (config__name_ok(s))
    return 0;
  char q[96];
  return config__fail(ctx, path,
                      "%s is not a valid %s name (1..%d bytes of A-Z a-z 0-9 "
                      "_ . -)",
                      config__quote(q, sizeof(q), s), what, PROTO_NAME_MAX);
}

/* A path-valued key: a non-empty string, resolved against the config's
 * folder. */
static int config__path(config__ctx *ctx, const config *c, const cJSON *v,
                        const char *path, char **out) {
  const char *s;
  if (config__get_string(ctx, v, path, &s) < 0)
    return -1;
  return config__resolve_path(ctx, c->config_dir, s, path, out);
}

static int config__socket(config__ctx *ctx, config *c, const cJSON *root) {
  const cJSON *v = config__get(root, "socket");
  if (v) {
    if (config__path(ctx, c, v, "socket", &c->socket) < 0)
      return -1;
  } else if (config__strdup(ctx, "socket", CONFIG_DEFAULT_SOCKET,
                            &c->socket) < 0) {
    return -1;
  }
  size_t room = sizeof(((struct sockaddr_un *)0)->sun_path);
  if (strlen(c->socket) >= room) {
    char q[96];
    return config__fail(ctx, "socket",
                        "%s is %zu bytes; a Unix socket path must be "
                        "shorter than %zu",
                        config__quote(q, sizeof(q), c->socket),
                        strlen(c->socket), room);
  }

  c->socket_mode = CONFIG_DEFAULT_SOCKET_MODE;
  if ((v = config__get(root, "socket_mode"))) {
    const char *s;
    if (config__get_string(ctx, v, "socket_mode", &s) < 0)
      return -1;
    size_t n = strlen(s);
    if (n < 1 || n > 4 || strspn(s, "01234567") != n) {
      char q[96];
      return config__fail(ctx, "socket_mode",
                          "expected 1 to 4 octal digits like \"0660\", got %s",
                          config__quote(q, sizeof(q), s));
    }
    unsigned long mode = strtoul(s, NULL, 8);
    if (mode > 0777)
      return config__fail(ctx, "socket_mode",
                          "%s is out of range (at most 0777)", s);
    /* Connecting to a Unix socket takes write permission on it. */
    if (!(mode & 0200))
      return config__fail(ctx, "socket_mode",
                          "%s gives its owner no write permission, so only "
                          "root could connect (\"0600\" is the least that "
                          "lets slyced's own user in)",
                          s);
    c->socket_mode = (unsigned)mode;
    c->has_socket_mode = true;
  }
  return 0;
}

static int config__admin_group(config__ctx *ctx, config *c,
                               const cJSON *root) {
  const cJSON *v = config__get(root, "admin_group");
  if (!v)
    return 0;
  const char *name;
  if (config__get_string(ctx, v, "admin_group", &name) < 0)
    return -1;
  char q[96];
  if (!*name)
    return config__fail(ctx, "admin_group", "expected a group name, got \"\"");
  long size = sysconf(_SC_GETGR_R_SIZE_MAX);
  if (size <= 0)
    size = 1024;
  struct group gr, *res = NULL;
  int r;
  for (;;) {
    char *buf = malloc((size_t)size);
    if (!buf)
      return config__fail(ctx, "admin_group", "out of memory");
    r = getgrnam_r(name, &gr, buf, (size_t)size, &res);
    if (r == 0 && res)
      c->admin_gid = gr.gr_gid;
    free(buf);
    if (r != ERANGE || size >= (1 << 20))
      break;
    size *= 2;
  }
  if (r != 0) {
    char eb[128];
    return config__fail(ctx, "admin_group", "cannot look up group %s: %s",
                        config__quote(q, sizeof(q), name),
                        strerror_r(r, eb, sizeof(eb)));
  }
  if (!res)
    return config__fail(ctx, "admin_group", "unknown group %s",
                        config__quote(q, sizeof(q), name));
  c->has_admin_gid = true;
  return config__strdup(ctx, "admin_group", name, &c->admin_group);
}

static int config__log(config__ctx *ctx, config *c, const cJSON *root) {
  c->log_level = LOG_LEVEL_INFO;
  c->log_console = true;
  const cJSON *log = config__get(root, "log");
  if (!log)
    return 0;
  if (config__check_object(ctx, log, "log", config__log_keys) < 0)
    return -1;
  const cJSON *v;
  if ((v = config__get(log, "file")) &&
      config__path(ctx, c, v, "log.file", &c->log_file) < 0)
    return -1;
  if ((v = config__get(log, "console")) &&
      config__get_bool(ctx, v, "log.console", &c->log_console) < 0)
    return -1;
  if ((v = config__get(log, "level"))) {
    const char *s;
    if (config__get_string(ctx, v, "log.level", &s) < 0)
      return -1;
    if (log_level_parse(s, &c->log_level) < 0) {
      char q[96];
      return config__fail(ctx, "log.level",
                          "expected \"error\", \"warn\", \"info\" or "
                          "\"debug\", got %s",
                          config__quote(q, sizeof(q), s));
    }
  }
  return 0;
}

static bool config__device_ok(const char *s) {
  if (!strcmp(s, "cpu") || !strcmp(s, "sim"))
    return true;
  if (strncmp(s, "cuda:", 5))
    return false;
  const char *d = s + 5;
  size_t n = strlen(d);
  /* Canonical decimal only: "cuda:07" would name the same device twice. */
  if (n < 1 || n > 2 || strspn(d, "0123456789") != n || (n == 2 && d[0] == '0'))
    return false;
  return atoi(d) <= CONFIG_CUDA_INDEX_MAX;
}

static int config__device(config__ctx *ctx, config *c, const cJSON *root) {
  char q[96];
  const cJSON *v = config__get(root, "device");
  const char *s = "cpu";
  if (v) {
    if (config__get_string(ctx, v, "device", &s) < 0)
      return -1;
    if (!config__device_ok(s))
      return config__fail(ctx, "device",
                          "expected \"cpu\", \"sim\" or \"cuda:N\" (N 0..%d), "
                          "got %s",
                          CONFIG_CUDA_INDEX_MAX,
                          config__quote(q, sizeof(q), s));
  }
  if (config__strdup(ctx, "device", s, &c->device) < 0)
    return -1;

  c->gpu_strategy = GPU_STRATEGY_NONE;
  if ((v = config__get(root, "gpu_strategy"))) {
    if (config__get_string(ctx, v, "gpu_strategy", &s) < 0)
      return -1;
    if (!strcmp(s, "none"))
      c->gpu_strategy = GPU_STRATEGY_NONE;
    else if (!strcmp(s, "active_only"))
      c->gpu_strategy = GPU_STRATEGY_ACTIVE_ONLY;
    else if (!strcmp(s, "limit_gpu"))
      c->gpu_strategy = GPU_STRATEGY_LIMIT_GPU;
    else
      return config__fail(ctx, "gpu_strategy",
                          "expected \"none\", \"active_only\" or "
                          "\"limit_gpu\", got %s",
                          config__quote(q, sizeof(q), s));
  }
  return 0;
}

static int config__numbers(config__ctx *ctx, config *c, const cJSON *root) {
  const struct {
    const char *key;
    uint64_t *out;
    uint64_t lo, hi;
  } ints[] = {
      {"max_gpu_mem_mb", &c->max_gpu_mem_mb, 0, CONFIG_MB_MAX},
      {"gpu_reserve_mb", &c->gpu_reserve_mb, 0, CONFIG_MB_MAX},
      {"max_cpu_mem_mb", &c->max_cpu_mem_mb, 0, CONFIG_MB_MAX},
      {"prefetch_depth", &c->prefetch_depth, 0, CONFIG_PREFETCH_MAX},
      {"loaders", &c->loaders, 1, CONFIG_LOADERS_MAX},
  };
  c->prefetch_depth = CONFIG_DEFAULT_PREFETCH;
  c->loaders = CONFIG_DEFAULT_LOADERS;
  const cJSON *v;
  for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
    if ((v = config__get(root, ints[i].key)) &&
        config__get_uint(ctx, v, ints[i].key, ints[i].lo, ints[i].hi,
                         ints[i].out) < 0)
      return -1;
  if ((v = config__get(root, "sim_copy_gbps")) &&
      config__get_number(ctx, v, "sim_copy_gbps", 0.0, CONFIG_SIM_GBPS_MAX,
                         &c->sim_copy_gbps) < 0)
    return -1;
  if ((v = config__get(root, "disk_cache_path")) &&
      config__path(ctx, c, v, "disk_cache_path", &c->disk_cache_path) < 0)
    return -1;

  proto_limits_default(&c->limits);
  for (size_t i = 0; i < sizeof(config__limits) / sizeof(config__limits[0]);
       i++) {
    uint64_t *field = (uint64_t *)((char *)&c->limits + config__limits[i].offset);
    if ((v = config__get(root, config__limits[i].key)) &&
        config__get_uint(ctx, v, config__limits[i].key, config__limits[i].lo,
                         config__limits[i].hi, field) < 0)
      return -1;
  }
  return 0;
}

static int config__slice(config__ctx *ctx, config *c, size_t i,
                         const cJSON *el) {
  char path[CONFIG__PATH_MAX], sub[CONFIG__PATH_MAX], q[96];
  config_slice *s = &c->slices[i];
  config__path_index(path, "slices", i);
  if (config__check_object(ctx, el, path, config__slice_keys) < 0)
    return -1;

  const char *name, *ctor;
  const cJSON *v = config__get(el, "name");
  config__path_key(sub, path, "name");
  if (!v)
    return config__fail(ctx, sub, "required key is missing");
  if (config__get_string(ctx, v, sub, &name) < 0 ||
      config__name(ctx, sub, name, "slice") < 0)
    return -1;
  for (size_t k = 0; k < i; k++)
    if (!strcmp(c->slices[k].name, name))
      return config__fail(ctx, sub, "duplicate slice name %s (also slices[%zu])",
                          config__quote(q, sizeof(q), name), k);

  v = config__get(el, "constructor");
  config__path_key(sub, path, "constructor");
  if (!v)
    return config__fail(ctx, sub, "required key is missing");
  if (config__get_string(ctx, v, sub, &ctor) < 0)
    return -1;
  bool known = false;
  for (const char *const *k = config__constructors; *k && !known; k++)
    known = !strcmp(*k, ctor);
  if (!known)
    return config__fail(ctx, sub,
                        "unknown constructor %s (expected \"torchscript\", "
                        "\"linear\", \"mlp\" or \"transformer_encoder_layer\")",
                        config__quote(q, sizeof(q), ctor));

  v = config__get(el, "config");
  config__path_key(sub, path, "config");
  if (v && !cJSON_IsObject(v))
    return config__fail(ctx, sub, "expected an object, got %s",
                        config__type_name(v));
  cJSON *own = v ? cJSON_Duplicate(v, true) : cJSON_CreateObject();
  if (!own)
    return config__fail(ctx, sub, "out of memory");
  s->config = own;
  if (config__strdup(ctx, path, name, &s->name) < 0 ||
      config__strdup(ctx, path, ctor, &s->constructor) < 0)
    return -1;
  return 0;
}

static int config__slices(config__ctx *ctx, config *c, const cJSON *root) {
  const cJSON *v = config__get(root, "slices");
  if (!v)
    return 0;
  if (!cJSON_IsArray(v))
    return config__fail(ctx, "slices", "expected an array, got %s",
                        config__type_name(v));
  size_t n = (size_t)cJSON_GetArraySize(v);
  if (n > CONFIG_SLICES_MAX)
    return config__fail(ctx, "slices", "%zu slices, more than the %d allowed",
                        n, CONFIG_SLICES_MAX);
  if (n == 0)
    return 0;
  if (!(c->slices = calloc(n, sizeof(*c->slices))))
    return config__fail(ctx, "slices", "out of memory");
  c->n_slices = n; /* entries not yet filled are zero, which frees cleanly */
  size_t i = 0;
  for (const cJSON *el = v->child; el; el = el->next, i++)
    if (config__slice(ctx, c, i, el) < 0)
      return -1;
  return 0;
}

static const config_slice *config__find_slice(const config *c,
                                              const char *name) {
  for (size_t i = 0; i < c->n_slices; i++)
    if (!strcmp(c->slices[i].name, name))
      return &c->slices[i];
  return NULL;
}

static int config__pipeline(config__ctx *ctx, config *c, size_t i,
                            const cJSON *m) {
  char path[CONFIG__PATH_MAX], sub[CONFIG__PATH_MAX], q[96];
  config_pipeline *p = &c->pipelines[i];
  if (config__name(ctx, "pipelines", m->string, "pipeline") < 0)
    return -1;
  config__path_key(path, "pipelines", m->string);
  if (config__find_slice(c, m->string))
    return config__fail(ctx, path,
                        "pipeline name %s is also the name of a slice",
                        config__quote(q, sizeof(q), m->string));
  if (!cJSON_IsArray(m))
    return config__fail(ctx, path, "expected an array of slice names, got %s",
                        config__type_name(m));
  size_t n = (size_t)cJSON_GetArraySize(m);
  if (n == 0)
    return config__fail(ctx, path, "expected a non-empty array of slice names");
  if (n > CONFIG_PIPELINE_LEN_MAX)
    return config__fail(ctx, path, "%zu slices, more than the %d allowed", n,
                        CONFIG_PIPELINE_LEN_MAX);
  if (config__strdup(ctx, path, m->string, &p->name) < 0)
    return -1;
  if (!(p->slices = calloc(n, sizeof(*p->slices))))
    return config__fail(ctx, path, "out of memory");
  p->n_slices = n;
  size_t j = 0;
  for (const cJSON *el = m->child; el; el = el->next, j++) {
    const char *name;
    config__path_index(sub, path, j);
    if (config__get_string(ctx, el, sub, &name) < 0)
      return -1;
    if (!config__find_slice(c, name))
      return config__fail(ctx, sub, "unknown slice %s (not in \"slices\")",
                          config__quote(q, sizeof(q), name));
    if (config__strdup(ctx, sub, name, &p->slices[j]) < 0)
      return -1;
  }
  return 0;
}

static int config__pipelines(config__ctx *ctx, config *c, const cJSON *root) {
  const cJSON *v = config__get(root, "pipelines");
  if (!v)
    return 0;
  if (!cJSON_IsObject(v))
    return config__fail(ctx, "pipelines", "expected an object, got %s",
                        config__type_name(v));
  size_t n = (size_t)cJSON_GetArraySize(v);
  if (n > CONFIG_PIPELINES_MAX)
    return config__fail(ctx, "pipelines",
                        "%zu pipelines, more than the %d allowed", n,
                        CONFIG_PIPELINES_MAX);
  if (n == 0)
    return 0;
  if (!(c->pipelines = calloc(n, sizeof(*c->pipelines))))
    return config__fail(ctx, "pipelines", "out of memory");
  c->n_pipelines = n;
  size_t i = 0;
  for (const cJSON *m = v->child; m; m = m->next, i++)
    if (config__pipeline(ctx, c, i, m) < 0)
      return -1;
  return 0;
}

/* Rules that tie keys together, checked once every key is known. */
static int config__cross_check(config__ctx *ctx, const config *c) {
  bool sim = !strcmp(c->device, "sim");
  bool cpu = !strcmp(c->device, "cpu");
  if (c->gpu_strategy != GPU_STRATEGY_NONE && cpu)
    return config__fail(ctx, "gpu_strategy",
                        "\"%s\" needs device \"sim\" or \"cuda:N\", not "
                        "\"cpu\"",
                        gpu_strategy_name(c->gpu_strategy));
  if (sim && c->max_gpu_mem_mb == 0)
    return config__fail(ctx, "max_gpu_mem_mb",
                        "device \"sim\" needs max_gpu_mem_mb (the size of the "
                        "simulated GPU, more than 0)");
  if (c->gpu_strategy == GPU_STRATEGY_LIMIT_GPU &&
      c->max_gpu_mem_mb <= c->gpu_reserve_mb)
    return config__fail(ctx, "max_gpu_mem_mb",
                        "gpu_strategy \"limit_gpu\" needs max_gpu_mem_mb "
                        "(%" PRIu64 ") greater than gpu_reserve_mb (%" PRIu64
                        ")",
                        c->max_gpu_mem_mb, c->gpu_reserve_mb);
  return 0;
}

static int config__fill(config__ctx *ctx, config *c, const cJSON *root) {
  if (!cJSON_IsObject(root))
    return config__fail(ctx, NULL, "expected an object at the top level, got %s",
                        config__type_name(root));
  if (config__check_duplicates(ctx, root) < 0 ||
      config__check_object(ctx, root, "", config__top_keys) < 0)
    return -1;
  if (config__socket(ctx, c, root) < 0 ||
      config__admin_group(ctx, c, root) < 0 || config__log(ctx, c, root) < 0 ||
      config__device(ctx, c, root) < 0 || config__numbers(ctx, c, root) < 0 ||
      config__slices(ctx, c, root) < 0 || config__pipelines(ctx, c, root) < 0)
    return -1;
  return config__cross_check(ctx, c);
}

int config_parse(const char *path, const char *text, size_t len, config **out,
                 char err[CONFIG_ERROR_MAX]) {
  config__ctx ctx = {.file = path, .err = err};
  if (len > CONFIG_FILE_MAX)
    return config__fail(&ctx, NULL, "file is larger than %zu bytes",
                        CONFIG_FILE_MAX);
  if (len == 0)
    return config__fail(&ctx, NULL, "empty file");
  if (config__check_text(&ctx, text, len) < 0)
    return -1;

  size_t line, col;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
  if (!root) {
    size_t pos = end && end >= text && end <= text + len ? (size_t)(end - text)
                                                         : 0;
    config__line_col(text, pos, &line, &col);
    return config__fail(&ctx, NULL, "invalid JSON at line %zu, column %zu",
                        line, col);
  }
  size_t pos = (size_t)(end - text);
  while (pos < len && strchr(" \t\r\n", text[pos]))
    pos++;
  if (pos < len) {
    cJSON_Delete(root);
    config__line_col(text, pos, &line, &col);
    return config__fail(&ctx, NULL,
                        "unexpected text after the JSON value at line %zu, "
                        "column %zu",
                        line, col);
  }

  config *c = calloc(1, sizeof(*c));
  if (!c) {
    cJSON_Delete(root);
    return config__fail(&ctx, NULL, "out of memory");
  }
  int r = config__locate(&ctx, c, path);
  if (r == 0)
    r = config__fill(&ctx, c, root);
  cJSON_Delete(root);
  if (r < 0) {
    config_free(c);
    return -1;
  }
  *out = c;
  return 0;
}

int config_load(const char *path, config **out, char err[CONFIG_ERROR_MAX]) {
  config__ctx ctx = {.file = path, .err = err};
  char *text;
  size_t len;
  if (config__read_file(&ctx, path, CONFIG_FILE_MAX, &text, &len) < 0)
    return -1;
  int r = config_parse(path, text, len, out, err);
  free(text);
  return r;
}
