/* tierkit.c — models, references and figures for the tier tests. */
#include "tierkit.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"

#define TK_ARENA_BYTES (1u << 20)
#define TK_ALIGN 4096u
#define TK_CUDA_TOL 1e-4
#define TK_MAX_CACHE_DIRS 8

/* Cache folders of the running test (each Criterion test is a process). */
static char tk_dirs[TK_MAX_CACHE_DIRS][TD_PATH_MAX];

static uint64_t tk_align(uint64_t v) { return (v + TK_ALIGN - 1) / TK_ALIGN * TK_ALIGN; }

void tk_model_add(tk_model *m, const char *name, int hidden, int seed) {
  cr_assert(m->n < TK_MAX_SLICES, "more than %d slices", TK_MAX_SLICES);
  cr_assert(strlen(name) < TK_NAME_MAX, "slice name too long");
  tk_slice *s = &m->s[m->n++];
  strcpy(s->name, name);
  s->hidden = hidden;
  s->seed = seed;
}

void tk_slice_config(const tk_slice *s, char *out, size_t cap) {
  int n = snprintf(out, cap,
                   "{\"in_features\": %d, \"hidden_features\": [%d], "
                   "\"out_features\": %d, \"seed\": %d}",
                   TK_FEATURES, s->hidden, TK_FEATURES, s->seed);
  cr_assert(n > 0 && (size_t)n < cap, "slice config too long");
}

uint64_t tk_slice_bytes(const tk_slice *s) {
  uint64_t h = (uint64_t)s->hidden, f = TK_FEATURES;
  /* layers.0.weight, layers.0.bias, layers.2.weight, layers.2.bias */
  return tk_align(h * f * 4) + tk_align(h * 4) + tk_align(f * h * 4) +
         tk_align(f * 4);
}

uint64_t tk_model_bytes(const tk_model *m, size_t first_n) {
  uint64_t sum = 0;
  for (size_t i = 0; i < first_n && i < m->n; i++)
    sum += tk_slice_bytes(&m->s[i]);
  return sum;
}

int tk_model_find(const tk_model *m, const char *name) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->s[i].name, name) == 0)
      return (int)i;
  return -1;
}

bool tk_on_cuda(void) { return strncmp(td_device(), "cuda:", 5) == 0; }

const char *tk_gpu_device(void) { return tk_on_cuda() ? td_device() : "sim"; }

/* The config's slices (the first n) and pipeline, plus `keys`. */
static char *tk_config(const tk_model *m, size_t n, const char *device,
                       const char *keys) {
  size_t cap = 512 + (n + m->n_pipe) * 256 + (keys ? strlen(keys) : 0);
  char *out = malloc(cap);
  cr_assert(out, "out of memory");
  size_t len = (size_t)snprintf(out, cap, "\"device\": \"%s\",\n\"slices\": [",
                                device);
  for (size_t i = 0; i < n; i++) {
    char cfg[192];
    tk_slice_config(&m->s[i], cfg, sizeof cfg);
    len += (size_t)snprintf(out + len, cap - len,
                            "%s\n  {\"name\": \"%s\", \"constructor\": "
                            "\"mlp\", \"config\": %s}",
                            i ? "," : "", m->s[i].name, cfg);
  }
  len += (size_t)snprintf(out + len, cap - len, "]");
  if (m->n_pipe > 0) {
    len += (size_t)snprintf(out + len, cap - len, ",\n\"pipelines\": {\"p\": [");
    for (size_t i = 0; i < m->n_pipe; i++)
      len += (size_t)snprintf(out + len, cap - len, "%s\"%s\"", i ? ", " : "",
                              m->s[i].name);
    len += (size_t)snprintf(out + len, cap - len, "]}");
  }
  if (keys)
    len += (size_t)snprintf(out + len, cap - len, ",\n%s", keys);
  cr_assert(len < cap, "config too long");
  return out;
}

td *tk_start(const tk_model *m, const char *device, const char *keys) {
  char *cfg = tk_config(m, m->n_cfg, device, keys);
  td *d = td_start(cfg);
  free(cfg);
  return d;
}

void tk_open(tk_client *k, const td *d) {
  k->c = td_connect(d);
  sly_error err;
  int rc = sly_arena_create(k->c, TK_ARENA_BYTES, &k->a, &err);
  cr_assert_eq(rc, 0, "arena: %s", err.message);
  uint64_t shape[2] = {TK_ROWS, TK_FEATURES};
  k->x = fx_put_pattern(k->a, 2, shape);
}

void tk_close(tk_client *k) {
  sly_close(k->c);
  k->c = NULL;
  k->a = NULL;
}

/* Runs on `in` (a tensor in k's arena). */
static int tk_run(tk_client *k, const char *slice, const char *pipeline,
                  const sly_tensor *in, float *out, sly_error *err) {
  sly_result *r = NULL;
  int rc = pipeline ? sly_forward_pipeline(k->c, pipeline, in, 1, &r, err)
                    : sly_forward(k->c, slice, in, 1, &r, err);
  if (rc != 0)
    return rc;
  const sly_tensor *t = sly_result_output(r, 0);
  cr_assert(sly_result_count(r) == 1 && t != NULL, "%s: %zu outputs",
            pipeline ? pipeline : slice, sly_result_count(r));
  cr_assert(t->dtype == SLY_FLOAT32 && t->ndim == 2 && t->shape[0] == TK_ROWS &&
                t->shape[1] == TK_FEATURES,
            "%s: output is %s with %u dims, want float32 [%d, %d]",
            pipeline ? pipeline : slice, sly_dtype_name(t->dtype), t->ndim,
            TK_ROWS, TK_FEATURES);
  memcpy(out, t->data, sizeof(float) * TK_OUT_FLOATS);
  sly_result_free(r);
  return 0;
}

int tk_try_forward(tk_client *k, const char *slice, const char *pipeline,
                   float *out, sly_error *err) {
  return tk_run(k, slice, pipeline, &k->x, out, err);
}

bool tk_try_equal(const float *got, const float *want, char *why, size_t len) {
  double max_diff = 0, max_ref = 0;
  size_t worst = 0, differ = 0;
  for (size_t i = 0; i < TK_OUT_FLOATS; i++) {
    double d = fabs((double)got[i] - (double)want[i]);
    if (isnan(d))
      d = INFINITY;
    differ += memcmp(&got[i], &want[i], sizeof(float)) != 0;
    if (d > max_diff) {
      max_diff = d;
      worst = i;
    }
    if (fabs(want[i]) > max_ref)
      max_ref = fabs(want[i]);
  }
  bool ok = tk_on_cuda() ? max_diff <= TK_CUDA_TOL * max_ref : differ == 0;
  if (!ok)
    snprintf(why, len,
             "%zu of %d values differ; element %zu is %.9g, want %.9g "
             "(largest |reference| %.3g)",
             differ, TK_OUT_FLOATS, worst, (double)got[worst],
             (double)want[worst], max_ref);
  return ok;
}

void tk_assert_equal(const float *got, const float *want, const char *what) {
  char why[256];
  cr_assert(tk_try_equal(got, want, why, sizeof why), "%s: %s", what, why);
}

void tk_forward_check(tk_client *k, const char *slice, const char *pipeline,
                      const float *want, const char *what) {
  static float got[TK_OUT_FLOATS];
  sly_error err;
  int rc = tk_try_forward(k, slice, pipeline, got, &err);
  cr_assert_eq(rc, 0, "%s: forward %s: %s (%s)", what,
               pipeline ? pipeline : slice, err.message, sly_code_name(rc));
  tk_assert_equal(got, want, what);
}

tk_ref *tk_reference(const tk_model *m) {
  tk_ref *ref = calloc(1, sizeof *ref);
  cr_assert(ref, "out of memory");
  char *cfg = tk_config(m, m->n, "cpu", NULL);
  td *d = td_start(cfg);
  free(cfg);
  tk_client k;
  tk_open(&k, d);
  sly_error err;
  for (size_t i = 0; i < m->n; i++) {
    int rc = tk_try_forward(&k, m->s[i].name, NULL, ref->slice[i], &err);
    cr_assert_eq(rc, 0, "reference %s: %s", m->s[i].name, err.message);
  }
  if (m->n_pipe > 0) {
    int rc = tk_try_forward(&k, NULL, "p", ref->pipe, &err);
    cr_assert_eq(rc, 0, "reference pipeline: %s", err.message);
    /* The pipeline is its slices chained: the reference checks itself. */
    float *chain = malloc(sizeof(float) * TK_OUT_FLOATS);
    cr_assert(chain, "out of memory");
    memcpy(chain, ref->slice[0], sizeof(float) * TK_OUT_FLOATS);
    for (size_t i = 1; i < m->n_pipe; i++) {
      sly_tensor in = k.x;
      in.data = sly_arena_alloc(k.a, sizeof(float) * TK_OUT_FLOATS, 64);
      cr_assert(in.data, "arena full");
      memcpy(in.data, chain, sizeof(float) * TK_OUT_FLOATS);
      rc = tk_run(&k, m->s[i].name, NULL, &in, chain, &err);
      cr_assert_eq(rc, 0, "reference chain %s: %s", m->s[i].name, err.message);
    }
    tk_assert_equal(ref->pipe, chain, "reference pipeline against its slices "
                                      "one by one");
    free(chain);
  }
  tk_close(&k);
  td_stop(d);
  return ref;
}

static const cJSON *tk_at(const cJSON *o, const char *a, const char *b,
                          const char *c) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
  if (v && b)
    v = cJSON_GetObjectItemCaseSensitive(v, b);
  if (v && c)
    v = cJSON_GetObjectItemCaseSensitive(v, c);
  return v;
}

static double tk_num(const cJSON *o, const char *a, const char *b,
                     const char *c) {
  const cJSON *v = tk_at(o, a, b, c);
  cr_assert(cJSON_IsNumber(v), "stats: %s%s%s%s%s is not a number", a,
            b ? "." : "", b ? b : "", c ? "." : "", c ? c : "");
  cr_assert(v->valuedouble >= 0, "stats: %s.%s is negative", a, b ? b : "");
  return v->valuedouble;
}

static uint64_t tk_u64(const cJSON *o, const char *a, const char *b,
                       const char *c) {
  return (uint64_t)tk_num(o, a, b, c);
}

/* Sends a request without fds and parses the reply; aborts on an error. */
static cJSON *tk_request(sly_conn *c, const char *json) {
  char *text = NULL;
  sly_error err;
  int rc = sly_request_json(c, json, &text, &err);
  cr_assert_eq(rc, 0, "%s: %s (%s)", json, err.message, sly_code_name(rc));
  cJSON *reply = cJSON_Parse(text);
  cr_assert(reply, "%s: reply is not JSON: %.200s", json, text);
  free(text);
  return reply;
}

void tk_stats_get(sly_conn *c, tk_stats *s) {
  cJSON *r = tk_request(c, "{\"op\": \"stats\"}");
  memset(s, 0, sizeof *s);
  s->has_gpu = tk_at(r, "memory", "gpu", "high_water") != NULL;
  s->gpu_used = tk_u64(r, "memory", "gpu", "used");
  s->gpu_budget = tk_u64(r, "memory", "gpu", "budget");
  if (s->has_gpu)
    s->gpu_high_water = tk_u64(r, "memory", "gpu", "high_water");
  s->cpu_used = tk_u64(r, "memory", "cpu", "used");
  s->cpu_budget = tk_u64(r, "memory", "cpu", "budget");
  s->cpu_pinned = tk_u64(r, "memory", "cpu", "pinned");
  s->disk_written = tk_u64(r, "memory", "disk", "written");
  s->rss = tk_u64(r, "process", "rss_bytes", NULL);
  s->d2c_bytes = tk_u64(r, "transfers", "disk_to_cpu", "bytes");
  s->d2c_gbps = tk_num(r, "transfers", "disk_to_cpu", "gbps");
  s->c2g_bytes = tk_u64(r, "transfers", "cpu_to_gpu", "bytes");
  s->c2g_gbps = tk_num(r, "transfers", "cpu_to_gpu", "gbps");
  s->build_bytes = tk_u64(r, "transfers", "build", "bytes");
  s->hits = tk_u64(r, "hits", NULL, NULL);
  s->misses = tk_u64(r, "misses", NULL, NULL);
  s->ev_policy = tk_u64(r, "evictions", "policy", NULL);
  s->ev_explicit = tk_u64(r, "evictions", "explicit", NULL);
  s->ev_removed = tk_u64(r, "evictions", "removed", NULL);
  s->ev_failed = tk_u64(r, "evictions", "failed", NULL);
  s->pf_done = tk_u64(r, "prefetch", "done", NULL);
  s->pf_hits = tk_u64(r, "prefetch", "hits", NULL);
  s->pf_wasted = tk_u64(r, "prefetch", "wasted_bytes", NULL);
  s->pf_pending = tk_u64(r, "prefetch", "pending", NULL);
  cJSON_Delete(r);
}

void tk_stats_settled(sly_conn *c, tk_stats *s) {
  for (int i = 0; i < 3000; i++) {
    tk_stats_get(c, s);
    if (s->pf_pending == 0)
      return;
    usleep(10 * 1000);
  }
  cr_assert_fail("prefetch still pending after 30 s (%llu)",
                 (unsigned long long)s->pf_pending);
}

uint64_t tk_evictions(const tk_stats *s) {
  return s->ev_policy + s->ev_explicit + s->ev_removed + s->ev_failed;
}

void tk_assert_budgets(const tk_stats *s, const char *when) {
  if (s->has_gpu) {
    cr_assert_leq(s->gpu_used, s->gpu_budget, "%s: gpu.used %llu > budget %llu",
                  when, (unsigned long long)s->gpu_used,
                  (unsigned long long)s->gpu_budget);
    cr_assert_leq(s->gpu_high_water, s->gpu_budget,
                  "%s: gpu.high_water %llu > budget %llu", when,
                  (unsigned long long)s->gpu_high_water,
                  (unsigned long long)s->gpu_budget);
  } else {
    cr_assert_eq(s->gpu_used, 0, "%s: gpu.used %llu without a gpu tier", when,
                 (unsigned long long)s->gpu_used);
  }
  if (s->cpu_budget > 0)
    cr_assert_leq(s->cpu_used, s->cpu_budget, "%s: cpu.used %llu > budget %llu",
                  when, (unsigned long long)s->cpu_used,
                  (unsigned long long)s->cpu_budget);
}

static void tk_copy_str(char *dst, size_t cap, const cJSON *v,
                        const char *what) {
  cr_assert(cJSON_IsString(v) && strlen(v->valuestring) < cap,
            "list: %s is not a short string", what);
  strcpy(dst, v->valuestring);
}

size_t tk_list(sly_conn *c, tk_entry *out, size_t max) {
  cJSON *r = tk_request(c, "{\"op\": \"list\"}");
  const cJSON *slices = cJSON_GetObjectItemCaseSensitive(r, "slices");
  cr_assert(cJSON_IsArray(slices), "list: no slices array");
  size_t n = 0;
  const cJSON *s;
  cJSON_ArrayForEach(s, slices) {
    if (n == max)
      break;
    tk_entry *e = &out[n++];
    memset(e, 0, sizeof *e);
    tk_copy_str(e->name, sizeof e->name,
                cJSON_GetObjectItemCaseSensitive(s, "name"), "name");
    tk_copy_str(e->tier, sizeof e->tier,
                cJSON_GetObjectItemCaseSensitive(s, "tier"), "tier");
    tk_copy_str(e->state, sizeof e->state,
                cJSON_GetObjectItemCaseSensitive(s, "state"), "state");
    const cJSON *pin = cJSON_GetObjectItemCaseSensitive(s, "pinned");
    if (cJSON_IsString(pin))
      tk_copy_str(e->pinned, sizeof e->pinned, pin, "pinned");
    else
      cr_assert(cJSON_IsFalse(pin), "list: %s.pinned is neither false nor a "
                "tier", e->name);
    e->bytes = tk_u64(s, "bytes", NULL, NULL);
  }
  cJSON_Delete(r);
  return n;
}

void tk_where(sly_conn *c, const char *slice, tk_entry *out) {
  tk_entry all[TK_MAX_SLICES + 8];
  size_t n = tk_list(c, all, TK_MAX_SLICES + 8);
  for (size_t i = 0; i < n; i++)
    if (strcmp(all[i].name, slice) == 0) {
      *out = all[i];
      return;
    }
  cr_assert_fail("list does not show slice %s", slice);
}

int tk_tier_rank(const char *tier) {
  static const char *const names[] = {"gpu", "cpu", "disk", "none"};
  for (int i = 0; i < 4; i++)
    if (strcmp(tier, names[i]) == 0)
      return i;
  return -1;
}

char *tk_log(const td *d) {
  char *text = td_read_tail(d->log, 64u << 20);
  cr_assert(text, "cannot read %s", d->log);
  return text;
}

size_t tk_count_lines(const char *text, const char *a, const char *b) {
  size_t n = 0;
  for (const char *line = text; *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    const char *pa = memmem(line, len, a, strlen(a));
    if (pa && (!b || memmem(line, len, b, strlen(b))))
      n++;
    line += len + (end ? 1 : 0);
  }
  return n;
}

uint64_t tk_move_bytes(const char *log, const char *from, const char *to) {
  char want[64];
  snprintf(want, sizeof want, " from=%s to=%s bytes=", from, to);
  uint64_t sum = 0;
  for (const char *p = log; (p = strstr(p, "move slice=")); p++) {
    const char *eol = strchr(p, '\n');
    const char *f = strstr(p, want);
    if (f && (!eol || f < eol))
      sum += strtoull(f + strlen(want), NULL, 10);
  }
  return sum;
}

void tk_cache_new(char dir[TD_PATH_MAX]) {
  snprintf(dir, TD_PATH_MAX, "/tmp/slytc-XXXXXX");
  cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
  for (int i = 0; i < TK_MAX_CACHE_DIRS; i++)
    if (tk_dirs[i][0] == '\0') {
      strcpy(tk_dirs[i], dir);
      return;
    }
  cr_assert_fail("more than %d cache folders in one test", TK_MAX_CACHE_DIRS);
}

static int tk_rm_entry(const char *path, const struct stat *st, int flag,
                       struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

void tk_cache_remove(const char *dir) {
  const char *keep = getenv("SLY_TEST_KEEP");
  if (!keep || strcmp(keep, "1") != 0)
    nftw(dir, tk_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  for (int i = 0; i < TK_MAX_CACHE_DIRS; i++)
    if (strcmp(tk_dirs[i], dir) == 0)
      tk_dirs[i][0] = '\0';
}

void tk_cleanup(void) {
  td_cleanup();
  for (int i = 0; i < TK_MAX_CACHE_DIRS; i++)
    if (tk_dirs[i][0] != '\0')
      tk_cache_remove(tk_dirs[i]);
}

static bool tk_is_cache(const char *name) {
  size_t n = strlen(name), k = strlen(".safetensors");
  return n > k && strcmp(name + n - k, ".safetensors") == 0;
}

/* Counts entries of `dir` matching `cache` (else temp files); the last
 * cache file's name goes into `last` when not NULL. */
static int tk_scan(const char *dir, bool cache, char *last, size_t cap) {
  DIR *dd = opendir(dir);
  cr_assert(dd, "opendir %s: %s", dir, strerror(errno));
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dd))) {
    bool match = cache ? tk_is_cache(e->d_name)
                       : strstr(e->d_name, ".tmp.") != NULL;
    if (!match)
      continue;
    n++;
    if (last)
      snprintf(last, cap, "%s/%s", dir, e->d_name);
  }
  closedir(dd);
  return n;
}

int tk_cache_files(const char *dir) { return tk_scan(dir, true, NULL, 0); }

int tk_cache_temps(const char *dir) { return tk_scan(dir, false, NULL, 0); }

void tk_cache_only(const char *dir, char path[TD_PATH_MAX + 64]) {
  int n = tk_scan(dir, true, path, TD_PATH_MAX + 64);
  cr_assert_eq(n, 1, "%s holds %d cache files, want 1", dir, n);
}
