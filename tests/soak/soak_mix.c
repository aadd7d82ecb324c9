/* soak_mix.c — one soak client: its connection and arenas, the mix of
 * requests it sends, and the check of every reply against the reference. */
#include "soak.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Atomic uint64_t g_ops, g_unexp, g_wrong, g_expected, g_fwd;
_Atomic uint64_t g_kind[SK_KINDS];
const char *const sk_kind_name[SK_KINDS] = {
    "forward", "pipeline",  "active",    "list/stats", "load/evict",
    "pin",     "map/unmap", "reconnect", "must-fail"};
/* Where each kind's share of 1000 rolls ends. */
static const int sk_kind_cut[SK_KINDS] = {500, 650, 680, 760, 880,
                                          895, 920, 925, 1000};
static pthread_mutex_t g_pin_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_printed;

static uint64_t sk_rand(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int sk_pick(sk_client *k, int n) {
  return (int)(sk_rand(&k->rng) % (uint64_t)n);
}

/* One line per unexpected outcome, the first SK_MAX_PRINTED of them. */
void sk_unexpected(const sk_client *k, bool wrong, const char *fmt, ...) {
  atomic_fetch_add(wrong ? &g_wrong : &g_unexp, 1);
  pthread_mutex_lock(&g_mu);
  if (g_printed++ < SK_MAX_PRINTED) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: client %d: %s", k ? k->id : -1,
            wrong ? "WRONG OUTPUT: " : "unexpected: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
  pthread_mutex_unlock(&g_mu);
}

void sk_tensor(sly_tensor *t, void *data, uint64_t cols) {
  memset(t, 0, sizeof *t);
  t->dtype = SLY_FLOAT32;
  t->ndim = 2;
  t->shape[0] = SK_ROWS;
  t->shape[1] = cols;
  t->data = data;
}

/* Connects, says hello, and lays the inputs and an out range in an arena. */
int sk_open(sk_client *k, const char *sock, sly_error *err) {
  sly_hello_info info;
  k->gen++;
  int rc = sly_connect(sock, &k->c, err);
  if (rc == 0)
    rc = sly_hello(k->c, "soak", &info, err);
  if (rc == 0)
    rc = sly_arena_create(k->c, SK_ARENA, &k->a, err);
  for (int i = 0; rc == 0 && i < SK_INPUTS; i++) {
    k->in[i] = sly_arena_alloc(k->a, SK_BYTES, 4096);
    memcpy(k->in[i], g_in[i], SK_BYTES);
  }
  if (rc == 0)
    k->out = sly_arena_alloc(k->a, SK_BYTES, 4096);
  if (rc != 0) {
    sly_close(k->c);
    k->c = NULL;
  }
  return rc;
}

/* Whether output 0 of `r` is reference `ref` (an index into g_ref, times
 * SK_INPUTS plus the input), lying in [lo, lo+bytes) when lo is given. */
static bool sk_check(sk_client *k, const sly_result *r, int ref, const void *lo,
                     size_t bytes, const char *what) {
  const sly_tensor *t = sly_result_output(r, 0);
  const float *want = g_ref[ref / SK_INPUTS][ref % SK_INPUTS];
  if (sly_result_count(r) != 1 || t == NULL || t->dtype != SLY_FLOAT32 ||
      t->ndim != 2 || t->shape[0] != SK_ROWS || t->shape[1] != SK_FEATURES) {
    sk_unexpected(k, true, "%s: %zu outputs, not one float32 [4, 1024]", what,
                  sly_result_count(r));
    return false;
  }
  const char *p = t->data;
  if (lo && (p < (const char *)lo || p + SK_BYTES > (const char *)lo + bytes)) {
    sk_unexpected(k, true, "%s: output outside the out range", what);
    return false;
  }
  if (memcmp(p, want, SK_BYTES) != 0) {
    size_t i = 0;
    while (memcmp(&((const float *)p)[i], &want[i], sizeof(float)) == 0)
      i++;
    sk_unexpected(k, true, "%s: element %zu is %.9g, reference %.9g", what, i,
                  (double)((const float *)p)[i], (double)want[i]);
    return false;
  }
  return true;
}

static void sk_release_held(sk_client *k) {
  for (size_t i = 0; i < k->n_held; i++) {
    /* Leased bytes stay unchanged until released, evictions or not. */
    sk_check(k, k->held[i], k->held_ref[i], NULL, 0, "held lease");
    sly_result_free(k->held[i]);
  }
  k->n_held = 0;
}

void sk_close(sk_client *k) {
  sk_release_held(k);
  sly_close(k->c);
  k->c = NULL;
  k->a = NULL;
}

/* After an I/O error or on purpose: a fresh connection, retried a while. */
static void sk_reconnect(sk_client *k) {
  sk_close(k);
  sly_error err;
  for (double end = sk_now() + 10; sk_open(k, g_soak.sock, &err) != 0;) {
    if (atomic_load(&g_stop))
      return;
    if (sk_now() > end) {
      sk_unexpected(k, false, "reconnect: %s", err.message);
      atomic_store(&g_stop, true);
      return;
    }
    sk_sleep(0.05);
  }
}

static void sk_fail_rc(sk_client *k, int rc, const sly_error *err,
                       const char *what) {
  sk_unexpected(k, false, "%s: %s (%s)", what, err->message, sly_code_name(rc));
  if (rc == SLY_E_IO || rc == SLY_E_PROTOCOL)
    sk_reconnect(k);
}

static void sk_record_latency(double ms) {
  int w = atomic_load(&g_win);
  pthread_mutex_lock(&g_mu);
  sk_window *win = &g_w[w];
  if (win->n == win->cap) {
    win->cap = win->cap ? 2 * win->cap : 4096;
    win->lat = realloc(win->lat, win->cap * sizeof *win->lat);
    if (win->lat == NULL)
      sk_die("out of memory");
  }
  win->lat[win->n++] = ms;
  pthread_mutex_unlock(&g_mu);
}

/* ---- The mix ---------------------------------------------------------------
 */

/* slice >= 0: that slice; -1: the pipeline; -2: the active slice `act`.
 * `in` (NULL: the client's own input) may lie in another arena. */
void sk_forward(sk_client *k, int slice, int act, float *in, void *out,
                size_t out_bytes, bool hold) {
  int inp = sk_pick(k, SK_INPUTS);
  if (in)
    memcpy(in, g_in[inp], SK_BYTES);
  sly_tensor t;
  sk_tensor(&t, in ? in : k->in[inp], SK_FEATURES);
  char name[16];
  snprintf(name, sizeof name, "s%d", slice);
  sly_forward_opts o = {.slice = slice >= 0 ? name : NULL,
                        .pipeline = slice == -1 ? "p" : NULL,
                        .out = out,
                        .out_bytes = out_bytes};
  int ref = (slice >= 0    ? slice
             : slice == -1 ? SK_SLICES
                           : act) *
                SK_INPUTS +
            inp;
  sly_result *r = NULL;
  sly_error err;
  double t0 = sk_now();
  int rc = sly_forward_ex(k->c, &o, &t, 1, &r, &err);
  if (rc != 0) {
    sk_fail_rc(k, rc, &err, slice == -1 ? "forward p" : "forward");
    return;
  }
  if (slice >= 0 && k->id >= 0)
    sk_record_latency((sk_now() - t0) * 1e3);
  atomic_fetch_add(&g_fwd, 1);
  bool ok =
      sk_check(k, r, ref, out, out_bytes, slice == -1 ? "pipeline" : name);
  if (ok && hold && out == NULL && k->n_held < SK_HELD) {
    k->held[k->n_held] = r;
    k->held_ref[k->n_held++] = ref;
    return;
  }
  sly_result_free(r);
  if (k->n_held == SK_HELD && sk_pick(k, 2) == 0)
    sk_release_held(k);
}

static void sk_active(sk_client *k) {
  int s = sk_pick(k, SK_SLICES);
  char name[16], tier[8];
  snprintf(name, sizeof name, "s%d", s);
  sly_error err;
  int rc = sly_set_active_slice(k->c, name, sk_pick(k, 2), tier, &err);
  if (rc != 0) {
    sk_fail_rc(k, rc, &err, "set_active_slice");
    return;
  }
  sk_forward(k, -2, s, NULL, NULL, 0, false);
}

static bool sk_tier_ok(const char *t) {
  return !strcmp(t, "gpu") || !strcmp(t, "cpu") || !strcmp(t, "disk") ||
         !strcmp(t, "none");
}

/* Checks list: every slice there, in order, none failed; slice `pin_of`
 * (when >= 0) pinned exactly when `want_pin` is not NULL. */
static void sk_list(sk_client *k, int pin_of, const char *want_pin) {
  sly_slice_list *l = NULL;
  sly_error err;
  int rc = sly_list(k->c, &l, &err);
  if (rc != 0) {
    sk_fail_rc(k, rc, &err, "list");
    return;
  }
  if (l->count != SK_SLICES)
    sk_unexpected(k, false, "list: %zu slices, want %d", l->count, SK_SLICES);
  for (size_t i = 0; i < l->count; i++) {
    sly_slice_info *s = &l->slices[i];
    char want[32];
    snprintf(want, sizeof want, "s%zu", i);
    if (strcmp(s->name, want) != 0 || !sk_tier_ok(s->tier) ||
        strcmp(s->state, "failed") == 0)
      sk_unexpected(k, false, "list: slice %zu is %s, tier %s, state %s", i,
                    s->name, s->tier, s->state);
    const char *at = sly_list_pinned_tier(l, i);
    if ((int)i == pin_of &&
        (s->pinned != (want_pin != NULL) ||
         strcmp(at != NULL ? at : "-", want_pin != NULL ? want_pin : "-")))
      sk_unexpected(k, false, "list: %s pinned %d at %s, want %s", s->name,
                    s->pinned, at != NULL ? at : "-",
                    want_pin != NULL ? want_pin : "-");
  }
  sly_slice_list_free(l);
}

static double sk_json_num(const cJSON *o, const char *a, const char *b,
                          const char *c) {
  const char *keys[] = {a, b, c};
  for (int i = 0; i < 3 && o && keys[i]; i++)
    o = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
  return cJSON_IsNumber(o) ? o->valuedouble : -1;
}

/* Stats as JSON: the tiers' budgets hold at every moment. */
void sk_stats(sk_client *k, double *evictions) {
  char *text = NULL;
  sly_error err;
  int rc = sly_request_json(k->c, "{\"op\": \"stats\"}", &text, &err);
  if (rc != 0) {
    free(text);
    sk_fail_rc(k, rc, &err, "stats");
    return;
  }
  cJSON *r = cJSON_Parse(text);
  free(text);
  double gu = sk_json_num(r, "memory", "gpu", "used");
  double gb = sk_json_num(r, "memory", "gpu", "budget");
  double cu = sk_json_num(r, "memory", "cpu", "used");
  double cb = sk_json_num(r, "memory", "cpu", "budget");
  if (gu < 0 || gb <= 0 || cu < 0 || cb <= 0 || gu > gb || cu > cb)
    sk_unexpected(k, false, "stats: gpu %.0f of %.0f, cpu %.0f of %.0f", gu, gb,
                  cu, cb);
  if (evictions)
    *evictions = sk_json_num(r, "evictions", "policy", NULL) +
                 sk_json_num(r, "evictions", "explicit", NULL);
  cJSON_Delete(r);
}

static const char *const sk_tiers[] = {"gpu", "cpu", "disk"};

static void sk_load_evict(sk_client *k, bool load) {
  int s = sk_pick(k, load ? SK_SLICES : SK_PIN_FIRST);
  char name[16], where[8];
  snprintf(name, sizeof name, "s%d", s);
  const char *tier = sk_tiers[sk_pick(k, 3)];
  sly_error err;
  int rc = load ? sly_load(k->c, name, tier, where, &err)
                : sly_evict(k->c, name, tier, where, &err);
  if (rc != 0) {
    sk_fail_rc(k, rc, &err, load ? "load" : "evict");
    return;
  }
  if (!sk_tier_ok(where))
    sk_unexpected(k, false, "%s %s: tier %s", load ? "load" : "evict", name,
                  where);
}

/* One client at a time pins, so that pins never fill a budget. */
static void sk_pin(sk_client *k) {
  if (pthread_mutex_trylock(&g_pin_mu) != 0) {
    sk_forward(k, sk_pick(k, SK_SLICES), 0, NULL, NULL, 0, false);
    return;
  }
  int s = SK_PIN_FIRST + sk_pick(k, SK_SLICES - SK_PIN_FIRST);
  char name[16];
  snprintf(name, sizeof name, "s%d", s);
  const char *tier = sk_tiers[sk_pick(k, 3)];
  sly_error err;
  int rc = sly_pin(k->c, name, tier, &err);
  if (rc == 0) {
    sk_list(k, s, tier);
    sk_forward(k, s, 0, NULL, NULL, 0, false);
    rc = sly_unpin(k->c, name, &err);
  }
  pthread_mutex_unlock(&g_pin_mu);
  if (rc != 0)
    sk_fail_rc(k, rc, &err, "pin/unpin");
}

/* A second arena mapped for one forward (input, and maybe out, in it). */
static void sk_map_unmap(sk_client *k) {
  sly_arena *b = NULL;
  sly_error err;
  int rc = sly_arena_create(k->c, 64 * 1024, &b, &err);
  if (rc != 0) {
    sk_fail_rc(k, rc, &err, "map_region");
    return;
  }
  float *in = sly_arena_alloc(b, SK_BYTES, 4096);
  void *out = sk_pick(k, 2) ? sly_arena_alloc(b, SK_BYTES, 4096) : NULL;
  unsigned gen = k->gen;
  sk_forward(k, sk_pick(k, SK_SLICES), 0, in, out, out ? SK_BYTES : 0, false);
  if (k->gen == gen) /* else a reconnect took the arena with the connection */
    sly_arena_destroy(b);
}

/* Requests that must fail with one code, and leave the connection serving. */
static void sk_must_fail(sk_client *k) {
  int kind = sk_pick(k, 6), want, rc;
  sly_error err;
  sly_tensor t;
  sly_result *r = NULL;
  char *text = NULL, req[256];
  sk_tensor(&t, k->in[0], SK_FEATURES);
  switch (kind) {
  case 0:
    want = SLY_E_NOT_FOUND;
    rc = sly_forward(k->c, "no_such_slice", &t, 1, &r, &err);
    break;
  case 1:
    want = SLY_E_NOT_FOUND;
    rc = sly_forward_pipeline(k->c, "no_such_pipeline", &t, 1, &r, &err);
    break;
  case 2: /* a dtype libslyce cannot send: the request as JSON */
    want = SLY_E_BAD_TENSOR;
    snprintf(
        req, sizeof req,
        "{\"op\": \"forward\", \"slice\": \"s1\", \"inputs\": [{\"dtype\": "
        "\"float99\", \"shape\": [4, 1024], \"region\": %llu, \"offset\": 0}]}",
        (unsigned long long)sly_arena_region(k->a));
    rc = sly_request_json(k->c, req, &text, &err);
    break;
  case 3: /* the module rejects the shape: libtorch's error path */
    want = SLY_E_BAD_TENSOR;
    sk_tensor(&t, k->in[1], 1000);
    rc = sly_forward(k->c, "s2", &t, 1, &r, &err);
    break;
  case 4: {
    want = SLY_E_BAD_TENSOR;
    sly_forward_opts o = {.slice = "s3", .out = k->out, .out_bytes = 4096};
    rc = sly_forward_ex(k->c, &o, &t, 1, &r, &err);
    if (rc == want && err.needed != SK_BYTES)
      sk_unexpected(k, false, "out too small: needed %llu, want %zu",
                    (unsigned long long)err.needed, SK_BYTES);
    break;
  }
  default:
    want = SLY_E_NOT_FOUND;
    rc = sly_load(k->c, "no_such_slice", "cpu", NULL, &err);
    break;
  }
  free(text);
  sly_result_free(r);
  if (rc == want)
    atomic_fetch_add(&g_expected, 1);
  else if (rc == 0)
    sk_unexpected(k, false, "must-fail request %d succeeded", kind);
  else
    sk_fail_rc(k, rc, &err, "must-fail request");
}

/* One request (or a short sequence) of the mix, picked at random. */
static void sk_step(sk_client *k) {
  int roll = sk_pick(k, 1000), kind = 0;
  while (roll >= sk_kind_cut[kind])
    kind++;
  void *out = sk_pick(k, 2) ? k->out : NULL;
  size_t out_bytes = out ? SK_BYTES : 0;
  switch (kind) {
  case 0:
    sk_forward(k, sk_pick(k, SK_SLICES), 0, NULL, out, out_bytes,
               sk_pick(k, 4) == 0);
    break;
  case 1:
    sk_forward(k, -1, 0, NULL, out, out_bytes, false);
    break;
  case 2:
    sk_active(k);
    break;
  case 3:
    if (sk_pick(k, 2))
      sk_list(k, -1, NULL);
    else
      sk_stats(k, NULL);
    break;
  case 4:
    sk_load_evict(k, sk_pick(k, 2));
    break;
  case 5:
    sk_pin(k);
    break;
  case 6:
    sk_map_unmap(k);
    break;
  case 7: /* leases held and released unsent: the daemon drops them */
    sk_reconnect(k);
    break;
  default:
    sk_must_fail(k);
  }
  atomic_fetch_add(&g_kind[kind], 1);
  atomic_fetch_add(&g_ops, 1);
}

void *sk_client_main(void *arg) {
  sk_client *k = arg;
  sly_error err;
  for (int phase = 0; phase < 2; phase++) {
    if (sk_open(k, g_soak.sock, &err) != 0) {
      sk_unexpected(k, false, "connect: %s", err.message);
      atomic_store(&g_stop, true);
    }
    while (k->c != NULL && !atomic_load(&g_stop) && sk_now() < g_phase_end)
      sk_step(k);
    sk_close(k);
    pthread_barrier_wait(&g_bar); /* main measures the idle daemon */
    pthread_barrier_wait(&g_bar); /* and sets the next phase's end */
  }
  return NULL;
}
