/* test_config.c — the config loader: every key, its default, its type and
 * range, and the message that names the file and the key.
 *
 * Each test writes its file into a fresh mkdtemp folder, so paths in
 * messages and resolved paths are known exactly. The shipped files are
 * loaded from config/ (tests run from the repository root).
 */
#include <criterion/criterion.h>
#include <grp.h>
#include <linux/limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static char tmp[PATH_MAX];  /* realpath of this test's folder */
static char file[PATH_MAX + 16]; /* tmp/slyced.json */
static char err[CONFIG_ERROR_MAX];

static void setup(void) {
  char t[] = "/tmp/slyced-config-XXXXXX";
  cr_assert_not_null(mkdtemp(t));
  cr_assert_not_null(realpath(t, tmp));
  snprintf(file, sizeof(file), "%s/slyced.json", tmp);
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
  cr_assert_eq(system(cmd), 0);
}

TestSuite(config, .init = setup, .fini = teardown);

static void write_text(const char *path, const char *text, size_t len) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s", path);
  cr_assert_eq(fwrite(text, 1, len, f), len);
  cr_assert_eq(fclose(f), 0);
}

/* Loads `json` from tmp/slyced.json; NULL on failure with err set. */
static config *load(const char *json) {
  write_text(file, json, strlen(json));
  config *c = NULL;
  memset(err, 0, sizeof(err));
  int r = config_load(file, &c, err);
  if (r == 0) {
    cr_assert_not_null(c);
    return c;
  }
  cr_assert_eq(r, -1);
  cr_assert_null(c, "output must stay untouched on failure");
  cr_assert_neq(err[0], '\0', "a failure must say why");
  return NULL;
}

static config *load_ok(const char *json) {
  config *c = load(json);
  cr_assert_not_null(c, "%s\nrejected: %s", json, err);
  return c;
}

/* Expects "FILE: KEY: ...WHAT..." (or "FILE: ...WHAT..." when key is NULL). */
static void expect_fail(const char *json, const char *key, const char *what) {
  config *c = load(json);
  cr_assert_null(c, "%s\nwas accepted", json);
  char prefix[PATH_MAX + 300];
  if (key)
    snprintf(prefix, sizeof(prefix), "%s: %s: ", file, key);
  else
    snprintf(prefix, sizeof(prefix), "%s: ", file);
  cr_assert(strncmp(err, prefix, strlen(prefix)) == 0,
            "%s\nmessage \"%s\" does not start with \"%s\"", json, err,
            prefix);
  cr_assert_not_null(strstr(err + strlen(prefix), what),
                     "%s\nmessage \"%s\" does not say \"%s\"", json, err,
                     what);
}

Test(config, an_empty_object_gets_every_default) {
  config *c = load_ok("{}");
  cr_assert_str_eq(c->path, file);
  cr_assert_str_eq(c->config_dir, tmp);
  cr_assert_str_eq(c->socket, "/run/slyced/slyced.sock");
  cr_assert_not(c->has_socket_mode);
  cr_assert_eq(c->socket_mode, 0660);
  cr_assert_null(c->admin_group);
  cr_assert_not(c->has_admin_gid);
  cr_assert_eq(c->log_level, LOG_LEVEL_INFO);
  cr_assert(c->log_console);
  cr_assert_null(c->log_file);
  cr_assert_str_eq(c->device, "cpu");
  cr_assert_eq(c->gpu_strategy, GPU_STRATEGY_NONE);
  cr_assert_eq(c->max_gpu_mem_mb, 0);
  cr_assert_eq(c->gpu_reserve_mb, 0);
  cr_assert_eq(c->max_cpu_mem_mb, 0);
  cr_assert_null(c->disk_cache_path);
  cr_assert_eq(c->prefetch_depth, 1);
  cr_assert_eq(c->loaders, 2);
  cr_assert_eq(c->sim_copy_gbps, 0.0);
#define CHECK_DEFAULT(key, def, lo, hi)                                        \
  cr_assert_eq(c->limits.key, (uint64_t)(def), #key);
  PROTO_LIMIT_MAP(CHECK_DEFAULT)
#undef CHECK_DEFAULT
  cr_assert_eq(c->n_slices, 0);
  cr_assert_eq(c->n_pipelines, 0);
  config_free(c);
}

Test(config, every_key_is_accepted_with_a_good_value) {
  struct group *g = getgrgid(getgid());
  cr_assert_not_null(g);
  char json[4096];
  snprintf(json, sizeof(json),
           "{\"socket\": \"/tmp/s.sock\", \"socket_mode\": \"0600\","
           " \"admin_group\": \"%s\","
           " \"log\": {\"file\": \"/tmp/x.log\", \"level\": \"debug\","
           " \"console\": false},"
           " \"device\": \"sim\", \"gpu_strategy\": \"limit_gpu\","
           " \"max_gpu_mem_mb\": 4096, \"gpu_reserve_mb\": 512,"
           " \"max_cpu_mem_mb\": 8192, \"disk_cache_path\": \"/tmp/cache\","
           " \"prefetch_depth\": 3, \"loaders\": 3, \"sim_copy_gbps\": 12.5,"
           " \"slices\": [{\"name\": \"a\", \"constructor\": \"linear\","
           " \"config\": {\"in_features\": 4, \"out_features\": 2}},"
           " {\"name\": \"b.v-2_x\", \"constructor\": \"torchscript\"}],"
           " \"pipelines\": {\"p\": [\"a\", \"b.v-2_x\", \"a\"]}}",
           g->gr_name);
  config *c = load_ok(json);
  cr_assert_str_eq(c->socket, "/tmp/s.sock");
  cr_assert(c->has_socket_mode);
  cr_assert_eq(c->socket_mode, 0600);
  cr_assert_str_eq(c->admin_group, g->gr_name);
  cr_assert(c->has_admin_gid);
  cr_assert_eq(c->admin_gid, getgid());
  cr_assert_str_eq(c->log_file, "/tmp/x.log");
  cr_assert_eq(c->log_level, LOG_LEVEL_DEBUG);
  cr_assert_not(c->log_console);
  cr_assert_str_eq(c->device, "sim");
  cr_assert_eq(c->gpu_strategy, GPU_STRATEGY_LIMIT_GPU);
  cr_assert_eq(c->max_gpu_mem_mb, 4096);
  cr_assert_eq(c->gpu_reserve_mb, 512);
  cr_assert_eq(c->max_cpu_mem_mb, 8192);
  cr_assert_str_eq(c->disk_cache_path, "/tmp/cache");
  cr_assert_eq(c->prefetch_depth, 3);
  cr_assert_eq(c->loaders, 3);
  cr_assert_eq(c->sim_copy_gbps, 12.5);
  cr_assert_eq(c->n_slices, 2);
  cr_assert_str_eq(c->slices[0].name, "a");
  cr_assert_str_eq(c->slices[0].constructor, "linear");
  cJSON *in = cJSON_GetObjectItemCaseSensitive(c->slices[0].config,
                                               "in_features");
  cr_assert(cJSON_IsNumber(in) && in->valuedouble == 4);
  cr_assert_str_eq(c->slices[1].name, "b.v-2_x");
  cr_assert(cJSON_IsObject(c->slices[1].config), "config defaults to {}");
  cr_assert_null(c->slices[1].config->child);
  cr_assert_eq(c->n_pipelines, 1);
  cr_assert_str_eq(c->pipelines[0].name, "p");
  cr_assert_eq(c->pipelines[0].n_slices, 3);
  cr_assert_str_eq(c->pipelines[0].slices[1], "b.v-2_x");
  cr_assert_str_eq(c->pipelines[0].slices[2], "a");
  config_free(c);
}

Test(config, the_message_is_file_then_key_path_then_what_is_wrong) {
  config *c = load("{\"slices\": [{\"name\": \"a\", \"constructor\": "
                   "\"linear\"}, {\"name\": 7, \"constructor\": \"mlp\"}]}");
  cr_assert_null(c);
  char want[PATH_MAX + 100];
  snprintf(want, sizeof(want),
           "%s: slices[1].name: expected a string, got a number", file);
  cr_assert_str_eq(err, want);
}

Test(config, every_limit_takes_its_range_and_nothing_outside) {
  static const struct {
    const char *key;
    size_t off;
    uint64_t lo, hi;
  } limits[] = {
#define ROW(key, def, lo, hi) {#key, offsetof(proto_limits, key), lo, hi},
      PROTO_LIMIT_MAP(ROW)
#undef ROW
  };
  char json[256];
  for (size_t i = 0; i < COUNT(limits); i++) {
    const char *k = limits[i].key;
    uint64_t bounds[] = {limits[i].lo, limits[i].hi};
    for (size_t b = 0; b < 2; b++) {
      snprintf(json, sizeof(json), "{\"%s\": %llu}", k,
               (unsigned long long)bounds[b]);
      config *c = load_ok(json);
      uint64_t got = *(uint64_t *)((char *)&c->limits + limits[i].off);
      cr_assert_eq(got, bounds[b], "%s", k);
      config_free(c);
    }
    snprintf(json, sizeof(json), "{\"%s\": %llu}", k,
             (unsigned long long)limits[i].hi + 1);
    expect_fail(json, k, "out of range");
    if (limits[i].lo > 0) {
      snprintf(json, sizeof(json), "{\"%s\": %llu}", k,
               (unsigned long long)limits[i].lo - 1);
      expect_fail(json, k, "out of range");
    }
    snprintf(json, sizeof(json), "{\"%s\": -1}", k);
    expect_fail(json, k, "out of range");
    snprintf(json, sizeof(json), "{\"%s\": \"%llu\"}", k,
             (unsigned long long)limits[i].lo);
    expect_fail(json, k, "expected an integer, got a string");
    snprintf(json, sizeof(json), "{\"%s\": %llu.5}", k,
             (unsigned long long)limits[i].lo);
    expect_fail(json, k, "expected an integer");
  }
}

/* One wrong value per row: the key path the message must name and what it
 * must say. */
static const struct {
  const char *json, *key, *what;
} bad[] = {
    {"{\"socket\": 5}", "socket", "expected a string, got a number"},
    {"{\"socket\": \"\"}", "socket", "non-empty path"},
    {"{\"socket_mode\": 432}", "socket_mode", "expected a string"},
    {"{\"socket_mode\": \"0690\"}", "socket_mode", "octal digits"},
    {"{\"socket_mode\": \"\"}", "socket_mode", "octal digits"},
    {"{\"socket_mode\": \"00660\"}", "socket_mode", "octal digits"},
    {"{\"socket_mode\": \"1777\"}", "socket_mode", "out of range"},
    {"{\"socket_mode\": \"0\"}", "socket_mode", "no write permission"},
    {"{\"socket_mode\": \"0577\"}", "socket_mode", "only root could connect"},
    {"{\"admin_group\": 0}", "admin_group", "expected a string"},
    {"{\"admin_group\": \"\"}", "admin_group", "group name"},
    {"{\"admin_group\": \"no-such-group-slyced\"}", "admin_group",
     "unknown group \"no-such-group-slyced\""},
    {"{\"log\": []}", "log", "expected an object, got an array"},
    {"{\"log\": {\"file\": 1}}", "log.file", "expected a string"},
    {"{\"log\": {\"file\": \"\"}}", "log.file", "non-empty path"},
    {"{\"log\": {\"level\": 2}}", "log.level", "expected a string"},
    {"{\"log\": {\"level\": \"verbose\"}}", "log.level", "\"verbose\""},
    {"{\"log\": {\"level\": \"INFO\"}}", "log.level", "\"debug\""},
    {"{\"log\": {\"console\": \"yes\"}}", "log.console",
     "expected a boolean, got a string"},
    {"{\"log\": {\"console\": 1}}", "log.console", "expected a boolean"},
    {"{\"device\": 0}", "device", "expected a string"},
    {"{\"device\": \"gpu\"}", "device", "\"cuda:N\""},
    {"{\"device\": \"cuda\"}", "device", "\"cuda:N\""},
    {"{\"device\": \"cuda:\"}", "device", "\"cuda:N\""},
    {"{\"device\": \"cuda:64\"}", "device", "0..63"},
    {"{\"device\": \"cuda:01\"}", "device", "\"cuda:N\""},
    {"{\"device\": \"cuda:-1\"}", "device", "\"cuda:N\""},
    {"{\"device\": \"CPU\"}", "device", "\"cpu\""},
    {"{\"gpu_strategy\": \"all\"}", "gpu_strategy", "\"limit_gpu\""},
    {"{\"gpu_strategy\": null}", "gpu_strategy", "expected a string, got null"},
    {"{\"max_gpu_mem_mb\": -1}", "max_gpu_mem_mb", "out of range"},
    {"{\"max_gpu_mem_mb\": 16777217}", "max_gpu_mem_mb", "out of range"},
    {"{\"max_gpu_mem_mb\": 1.5}", "max_gpu_mem_mb", "expected an integer"},
    {"{\"max_gpu_mem_mb\": 1e400}", "max_gpu_mem_mb", "expected an integer"},
    {"{\"max_gpu_mem_mb\": \"100\"}", "max_gpu_mem_mb", "expected an integer"},
    {"{\"gpu_reserve_mb\": true}", "gpu_reserve_mb",
     "expected an integer, got a boolean"},
    {"{\"gpu_reserve_mb\": 16777217}", "gpu_reserve_mb", "out of range"},
    {"{\"max_cpu_mem_mb\": [1]}", "max_cpu_mem_mb", "expected an integer"},
    {"{\"max_cpu_mem_mb\": 16777217}", "max_cpu_mem_mb", "out of range"},
    {"{\"disk_cache_path\": {}}", "disk_cache_path", "expected a string"},
    {"{\"disk_cache_path\": \"\"}", "disk_cache_path", "non-empty path"},
    {"{\"prefetch_depth\": 17}", "prefetch_depth", "out of range (0..16)"},
    {"{\"prefetch_depth\": -1}", "prefetch_depth", "out of range"},
    {"{\"prefetch_depth\": 0.5}", "prefetch_depth", "expected an integer"},
    {"{\"loaders\": 0}", "loaders", "out of range (1..4)"},
    {"{\"loaders\": 5}", "loaders", "out of range (1..4)"},
    {"{\"loaders\": \"2\"}", "loaders", "expected an integer"},
    {"{\"sim_copy_gbps\": 0}", "sim_copy_gbps", "out of range"},
    {"{\"sim_copy_gbps\": -3}", "sim_copy_gbps", "out of range"},
    {"{\"sim_copy_gbps\": 10000.5}", "sim_copy_gbps", "out of range"},
    {"{\"sim_copy_gbps\": \"fast\"}", "sim_copy_gbps", "expected a number"},
    {"{\"slices\": {}}", "slices", "expected an array, got an object"},
    {"{\"slices\": [1]}", "slices[0]", "expected an object, got a number"},
    {"{\"slices\": [{\"constructor\": \"linear\"}]}", "slices[0].name",
     "required"},
    {"{\"slices\": [{\"name\": \"a\"}]}", "slices[0].constructor", "required"},
    {"{\"slices\": [{\"name\": \"a b\", \"constructor\": \"linear\"}]}",
     "slices[0].name", "\"a b\" is not a valid slice name"},
    {"{\"slices\": [{\"name\": \"\", \"constructor\": \"linear\"}]}",
     "slices[0].name", "not a valid slice name"},
    {"{\"slices\": [{\"name\": \"a\\nb\", \"constructor\": \"linear\"}]}",
     "slices[0].name", "\"a\\x0ab\" is not a valid"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"linear\"},"
     " {\"name\": \"a\", \"constructor\": \"mlp\"}]}",
     "slices[1].name", "duplicate slice name \"a\" (also slices[0])"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": 1}]}",
     "slices[0].constructor", "expected a string"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"resnet\"}]}",
     "slices[0].constructor", "unknown constructor \"resnet\""},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\","
     " \"config\": []}]}",
     "slices[0].config", "expected an object, got an array"},
    {"{\"pipelines\": []}", "pipelines", "expected an object, got an array"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
     " \"pipelines\": {\"p\": []}}",
     "pipelines.p", "non-empty"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
     " \"pipelines\": {\"p\": \"a\"}}",
     "pipelines.p", "expected an array of slice names, got a string"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
     " \"pipelines\": {\"p\": [\"a\", 1]}}",
     "pipelines.p[1]", "expected a string"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
     " \"pipelines\": {\"p\": [\"a\", \"b\"]}}",
     "pipelines.p[1]", "unknown slice \"b\""},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
     " \"pipelines\": {\"a\": [\"a\"]}}",
     "pipelines.a", "also the name of a slice"},
    {"{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
     " \"pipelines\": {\"p q\": [\"a\"]}}",
     "pipelines", "\"p q\" is not a valid pipeline name"},
    /* Rules that tie keys together. */
    {"{\"gpu_strategy\": \"active_only\"}", "gpu_strategy",
     "needs device \"sim\" or \"cuda:N\""},
    {"{\"gpu_strategy\": \"limit_gpu\", \"device\": \"cpu\"}", "gpu_strategy",
     "needs device"},
    {"{\"device\": \"sim\"}", "max_gpu_mem_mb", "device \"sim\" needs"},
    {"{\"device\": \"cuda:0\", \"gpu_strategy\": \"limit_gpu\"}",
     "max_gpu_mem_mb", "greater than gpu_reserve_mb"},
    {"{\"device\": \"sim\", \"gpu_strategy\": \"limit_gpu\","
     " \"max_gpu_mem_mb\": 1024, \"gpu_reserve_mb\": 1024}",
     "max_gpu_mem_mb", "(1024) greater than gpu_reserve_mb (1024)"},
};

Test(config, every_key_is_rejected_with_a_wrong_type_or_value) {
  for (size_t i = 0; i < COUNT(bad); i++)
    expect_fail(bad[i].json, bad[i].key, bad[i].what);
}

Test(config, good_values_next_to_the_edges_are_accepted) {
  const char *good[] = {
      "{\"socket_mode\": \"0777\"}", "{\"socket_mode\": \"0200\"}",
      "{\"socket_mode\": \"660\"}", "{\"device\": \"cuda:63\"}",
      "{\"device\": \"cuda:0\", \"gpu_strategy\": \"active_only\"}",
      "{\"device\": \"sim\", \"max_gpu_mem_mb\": 1}",
      "{\"device\": \"sim\", \"gpu_strategy\": \"limit_gpu\","
      " \"max_gpu_mem_mb\": 1025, \"gpu_reserve_mb\": 1024}",
      "{\"max_gpu_mem_mb\": 16777216, \"max_cpu_mem_mb\": 0}",
      "{\"prefetch_depth\": 0}", "{\"prefetch_depth\": 16}",
      "{\"loaders\": 1}", "{\"loaders\": 4}",
      "{\"sim_copy_gbps\": 10000}", "{\"sim_copy_gbps\": 0.001}",
      "{\"max_frame_bytes\": 1e6}", "{\"log\": {}}", "{\"slices\": []}",
      "{\"pipelines\": {}}",
  };
  for (size_t i = 0; i < COUNT(good); i++)
    config_free(load_ok(good[i]));

  char json[512], name[PROTO_NAME_MAX + 2];
  memset(name, 'n', PROTO_NAME_MAX);
  name[PROTO_NAME_MAX] = '\0';
  snprintf(json, sizeof(json),
           "{\"slices\": [{\"name\": \"%s\", \"constructor\": \"mlp\"}]}",
           name);
  config_free(load_ok(json));
  strcat(name, "n");
  snprintf(json, sizeof(json),
           "{\"slices\": [{\"name\": \"%s\", \"constructor\": \"mlp\"}]}",
           name);
  expect_fail(json, "slices[0].name", "not a valid slice name");
}

Test(config, every_constructor_name_is_known) {
  const char *ctors[] = {"torchscript", "linear", "mlp",
                         "transformer_encoder_layer"};
  char json[256];
  for (size_t i = 0; i < COUNT(ctors); i++) {
    snprintf(json, sizeof(json),
             "{\"slices\": [{\"name\": \"s\", \"constructor\": \"%s\","
             " \"config\": {\"anything\": [1, {\"x\": null}]}}]}",
             ctors[i]);
    config *c = load_ok(json);
    cr_assert_str_eq(c->slices[0].constructor, ctors[i]);
    cr_assert_not_null(
        cJSON_GetObjectItemCaseSensitive(c->slices[0].config, "anything"),
        "the slice's own keys are kept for its constructor");
    config_free(c);
  }
}

Test(config, unknown_keys_are_rejected_at_every_level) {
  expect_fail("{\"max_frame_byte\": 4096}", NULL,
              "unknown key \"max_frame_byte\"");
  expect_fail("{\"Socket\": \"/x\"}", NULL, "unknown key \"Socket\"");
  expect_fail("{\"log\": {\"colour\": true}}", "log",
              "unknown key \"colour\"");
  expect_fail("{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"},"
              " {\"name\": \"b\", \"constructor\": \"mlp\", \"weights\": 1}]}",
              "slices[1]", "unknown key \"weights\"");
}

Test(config, duplicate_keys_are_rejected_wherever_they_are) {
  expect_fail("{\"device\": \"cpu\", \"device\": \"sim\"}", NULL,
              "duplicate key \"device\"");
  expect_fail("{\"log\": {\"level\": \"info\", \"level\": \"debug\"}}", "log",
              "duplicate key \"level\"");
  expect_fail("{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"},"
              " {\"name\": \"b\", \"constructor\": \"mlp\","
              " \"config\": {\"seed\": 1, \"seed\": 2}}]}",
              "slices[1].config", "duplicate key \"seed\"");
  expect_fail("{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\","
              " \"config\": {\"w\": [{\"k\": 1, \"k\": 1}]}}]}",
              "slices[0].config.w[0]", "duplicate key \"k\"");
  expect_fail("{\"slices\": [{\"name\": \"a\", \"constructor\": \"mlp\"}],"
              " \"pipelines\": {\"p\": [\"a\"], \"p\": [\"a\"]}}",
              "pipelines", "duplicate key \"p\"");
}

Test(config, relative_paths_resolve_against_the_config_folder) {
  char sub[PATH_MAX + 8], path[PATH_MAX + 32], want[PATH_MAX + 64];
  snprintf(sub, sizeof(sub), "%s/etc", tmp);
  cr_assert_eq(mkdir(sub, 0700), 0);
  snprintf(path, sizeof(path), "%s/slyced.json", sub);
  const char *json = "{\"socket\": \"../run/s.sock\","
                     " \"log\": {\"file\": \"./logs/d.log\"},"
                     " \"disk_cache_path\": \"cache\"}";
  write_text(path, json, strlen(json));

  /* From another working directory, through a path with "..": the result
   * must not depend on either. */
  char cwd[PATH_MAX];
  cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
  cr_assert_eq(chdir("/"), 0);
  char indirect[PATH_MAX + 64];
  snprintf(indirect, sizeof(indirect), "%s/etc/../etc/slyced.json", tmp + 1);
  config *c = NULL;
  int r = config_load(indirect, &c, err);
  cr_assert_eq(chdir(cwd), 0);
  cr_assert_eq(r, 0, "%s", err);

  cr_assert_str_eq(c->config_dir, sub);
  cr_assert_str_eq(c->path, path);
  snprintf(want, sizeof(want), "%s/run/s.sock", tmp);
  cr_assert_str_eq(c->socket, want);
  snprintf(want, sizeof(want), "%s/logs/d.log", sub);
  cr_assert_str_eq(c->log_file, want);
  snprintf(want, sizeof(want), "%s/cache", sub);
  cr_assert_str_eq(c->disk_cache_path, want);
  config_free(c);

  c = load_ok("{\"socket\": \"/abs/s.sock\", \"disk_cache_path\": \"a/../b\","
              " \"log\": {\"file\": \"../../../../../../../../../../x.log\"}}");
  cr_assert_str_eq(c->socket, "/abs/s.sock");
  snprintf(want, sizeof(want), "%s/a/../b", tmp);
  cr_assert_str_eq(c->disk_cache_path, want,
                   "a \"..\" after a name is left to the kernel (symlinks)");
  cr_assert_str_eq(c->log_file, "/x.log", "\"..\" stops at the root");
  config_free(c);
}

Test(config, the_socket_path_must_fit_sun_path) {
  char json[512], p[200];
  /* 107 bytes fit sun_path (108 with the NUL); 108 do not. */
  memset(p, 'x', sizeof(p));
  memcpy(p, "/tmp/", 5);
  p[107] = '\0';
  snprintf(json, sizeof(json), "{\"socket\": \"%s\"}", p);
  config_free(load_ok(json));
  p[107] = 'x';
  p[108] = '\0';
  snprintf(json, sizeof(json), "{\"socket\": \"%s\"}", p);
  expect_fail(json, "socket", "is 108 bytes");
}

/* Found by tests/fuzz (corpus/config/crash-socket-control-char): a socket
 * path too long for sun_path went into the message as it was, so a control
 * character in it broke the message's one line. */
Test(config, a_socket_path_too_long_is_quoted_in_the_message) {
  char p[128], json[256];
  memset(p, 'x', sizeof(p));
  memcpy(p, "/tmp/", 5);
  /* 5 + 50 + 1 + 1 + 63 = 120 bytes once the escapes are decoded. */
  memcpy(p + 55, "\\n\\u007f", 8);
  p[55 + 8 + 63] = '\0';
  snprintf(json, sizeof(json), "{\"socket\": \"%s\"}", p);
  expect_fail(json, "socket", "is 120 bytes");
  cr_assert_null(strpbrk(err, "\n\x7f"), "one line: %s", err);
  cr_assert_not_null(strstr(err, ": \"/tmp/xx"), "%s", err);
  cr_assert_not_null(strstr(err, "x\\x0a\\x7fx"), "%s", err);
}

Test(config, the_file_itself_must_be_a_json_object_of_at_most_4_mib) {
  expect_fail("[]", NULL, "expected an object at the top level, got an array");
  expect_fail("\"x\"", NULL, "expected an object at the top level");
  expect_fail("", NULL, "empty file");
  expect_fail("{\n  \"device\": \"cpu\",\n  oops\n}", NULL,
              "invalid JSON at line 3, column ");
  expect_fail("{} {}", NULL, "unexpected text after the JSON value");
  expect_fail("{\"device\": \"cpu\xff\"}", NULL, "invalid UTF-8 at offset 15");
  expect_fail("{\"device\": \"\xc0\xaf\"}", NULL, "invalid UTF-8");

  const char with_nul[] = "{\"device\": \"cpu\"}\0";
  write_text(file, with_nul, sizeof(with_nul) - 1);
  config *c = NULL;
  cr_assert_eq(config_load(file, &c, err), -1);
  cr_assert_not_null(strstr(err, "NUL byte at offset 17"), "%s", err);

  /* Exactly 4 MiB loads; one byte more does not. */
  size_t max = (size_t)4 << 20;
  char *big = malloc(max + 2);
  cr_assert_not_null(big);
  memset(big, ' ', max + 1);
  big[0] = '{';
  big[max - 1] = '}';
  write_text(file, big, max);
  cr_assert_eq(config_load(file, &c, err), 0, "%s", err);
  config_free(c);
  c = NULL;
  big[max - 1] = ' ';
  big[max] = '}';
  write_text(file, big, max + 1);
  cr_assert_eq(config_load(file, &c, err), -1);
  cr_assert_not_null(strstr(err, "larger than 4194304 bytes"), "%s", err);
  cr_assert_eq(config_parse(file, big, max + 1, &c, err), -1);
  cr_assert_not_null(strstr(err, "larger than"), "%s", err);
  cr_assert_null(c);
  free(big);
}

Test(config, unreadable_paths_name_the_file) {
  config *c = NULL;
  char missing[PATH_MAX + 32];
  snprintf(missing, sizeof(missing), "%s/none.json", tmp);
  cr_assert_eq(config_load(missing, &c, err), -1);
  char want[PATH_MAX + 64];
  snprintf(want, sizeof(want), "%s: cannot open: ", missing);
  cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
  cr_assert_eq(config_load(tmp, &c, err), -1);
  cr_assert_not_null(strstr(err, "not a regular file"), "%s", err);
  cr_assert_null(c);
}

Test(config, parsing_from_memory_matches_loading_the_file) {
  const char *json = "{\"socket\": \"s.sock\", \"device\": \"cuda:3\"}";
  config *c = NULL;
  cr_assert_eq(config_parse(file, json, strlen(json), &c, err), 0, "%s", err);
  char want[PATH_MAX + 32];
  snprintf(want, sizeof(want), "%s/s.sock", tmp);
  cr_assert_str_eq(c->socket, want);
  cr_assert_str_eq(c->device, "cuda:3");
  config_free(c);
  config_free(NULL);

  /* A failure leaves the caller's pointer alone. */
  config *keep = (config *)&want;
  cr_assert_eq(config_parse(file, "{\"device\": 1}", 13, &keep, err), -1);
  cr_assert_eq(keep, (config *)&want);
}

Test(config, gpu_strategy_names_round_trip) {
  cr_assert_str_eq(gpu_strategy_name(GPU_STRATEGY_NONE), "none");
  cr_assert_str_eq(gpu_strategy_name(GPU_STRATEGY_ACTIVE_ONLY), "active_only");
  cr_assert_str_eq(gpu_strategy_name(GPU_STRATEGY_LIMIT_GPU), "limit_gpu");
  const char *names[] = {"none", "active_only", "limit_gpu"};
  gpu_strategy want[] = {GPU_STRATEGY_NONE, GPU_STRATEGY_ACTIVE_ONLY,
                         GPU_STRATEGY_LIMIT_GPU};
  char json[128];
  for (size_t i = 0; i < COUNT(names); i++) {
    snprintf(json, sizeof(json),
             "{\"device\": \"sim\", \"max_gpu_mem_mb\": 64,"
             " \"gpu_strategy\": \"%s\"}",
             names[i]);
    config *c = load_ok(json);
    cr_assert_eq(c->gpu_strategy, want[i], "%s", names[i]);
    config_free(c);
  }
}

/* Reads a shipped file from the repository (tests run from its root). */
static char *read_repo_file(const char *rel, char abs[PATH_MAX]) {
  cr_assert_not_null(realpath(rel, abs),
                     "%s not found: run the tests from the repository root",
                     rel);
  FILE *f = fopen(abs, "r");
  cr_assert_not_null(f);
  static char text[65536];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  return text;
}

Test(config, the_shipped_example_loads_as_it_is) {
  char abs[PATH_MAX], dir[PATH_MAX], want[PATH_MAX + 32];
  read_repo_file("config/slyced.json", abs);
  config *c = NULL;
  cr_assert_eq(config_load("config/slyced.json", &c, err), 0, "%s", err);
  cr_assert_str_eq(c->path, abs);
  cr_assert_not_null(realpath("config/..", dir));
  snprintf(want, sizeof(want), "%s/run/slyced.sock", dir);
  cr_assert_str_eq(c->socket, want);
  snprintf(want, sizeof(want), "%s/run/slyced.log", dir);
  cr_assert_str_eq(c->log_file, want);
  snprintf(want, sizeof(want), "%s/run/cache", dir);
  cr_assert_str_eq(c->disk_cache_path, want);
  cr_assert_str_eq(c->device, "cpu");
  cr_assert_eq(c->gpu_strategy, GPU_STRATEGY_NONE);
  cr_assert(c->log_console);
  cr_assert_eq(c->log_level, LOG_LEVEL_INFO);
  cr_assert_geq(c->n_slices, 3);
  cr_assert_str_eq(c->slices[0].name, "demo_linear");
  cr_assert_str_eq(c->slices[0].constructor, "linear");
  cr_assert_eq(c->n_pipelines, 1);
  cr_assert_str_eq(c->pipelines[0].name, "demo");
  config_free(c);
}

/* production.json names admin_group "slyce", which this machine may lack:
 * it is loaded with that one value patched to a group that exists. */
Test(config, the_shipped_production_file_loads) {
  char abs[PATH_MAX];
  const char *text = read_repo_file("config/production.json", abs);
  const char *needle = "\"admin_group\": \"slyce\"";
  const char *at = strstr(text, needle);
  cr_assert_not_null(at, "production.json should name admin_group \"slyce\"");
  struct group *g = getgrgid(getgid());
  cr_assert_not_null(g);
  static char patched[70000];
  snprintf(patched, sizeof(patched), "%.*s\"admin_group\": \"%s\"%s",
           (int)(at - text), text, g->gr_name, at + strlen(needle));
  /* Where it is, so that relative paths would resolve the same way. */
  char path[PATH_MAX + 32];
  snprintf(path, sizeof(path), "%s/production.json", tmp);
  config *c = NULL;
  cr_assert_eq(config_parse(path, patched, strlen(patched), &c, err), 0, "%s",
               err);
  cr_assert_str_eq(c->socket, "/run/slyced/slyced.sock");
  cr_assert_eq(c->socket_mode, 0660);
  cr_assert_eq(c->admin_gid, getgid());
  cr_assert_str_eq(c->log_file, "/var/log/slyced/slyced.log");
  cr_assert_str_eq(c->device, "cuda:0");
  cr_assert_eq(c->gpu_strategy, GPU_STRATEGY_LIMIT_GPU);
  cr_assert_eq(c->max_gpu_mem_mb, 6000);
  cr_assert_eq(c->gpu_reserve_mb, 1024);
  cr_assert_eq(c->max_cpu_mem_mb, 16000);
  cr_assert_str_eq(c->disk_cache_path, "/var/cache/slyced");
  cr_assert_eq(c->n_slices, 2);
  cr_assert_str_eq(c->pipelines[0].name, "model");
  cr_assert_eq(c->pipelines[0].n_slices, 2);
  config_free(c);

  if (getgrnam("slyce")) {
    cr_assert_eq(config_load("config/production.json", &c, err), 0, "%s", err);
    config_free(c);
  }
}
