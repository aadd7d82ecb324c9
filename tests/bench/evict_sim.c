/* evict_sim.c — the eviction policy against plain LRU on synthetic traces.
 *
 * Simulates one tier of fixed capacity (the GPU under limit_gpu) holding
 * slices of given sizes, each of which comes back at a given bandwidth when
 * evicted, under three traces: a cyclic pipeline, Zipf calls and the two
 * mixed. Prints hit rate, bytes moved and reload time per policy, with the
 * ratio to LRU. Seeded PRNG, no clocks: the output is the same on every run.
 * See tests/bench/README.md for how to read it.
 *
 *   evict_sim [--half-life TICKS] [--seeds N]
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"

#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)
#define HOST_GBPS 54.3 /* pinned host -> GPU, measured on an H100 (GPU.md) */
#define DISK_GBPS 1.3  /* disk cache O_DIRECT, same machine */
#define PREFETCH_DEPTH 1

/* --- PRNG: splitmix64, so that traces do not depend on libc's rand(). --- */

static uint64_t rng_state;

static uint64_t rng_next(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

static size_t rng_below(size_t n) { return (size_t)(rng_next() % n); }

/* --- Traces --- */

typedef struct {
  uint64_t bytes;
  double gbps; /* reload bandwidth once evicted */
} slice_desc;

typedef struct {
  uint32_t slice;
  int32_t pipe_pos; /* step in the pipeline pass, -1 for a one-off call */
} access;

typedef struct {
  const char *name;
  slice_desc *slices;
  size_t n_slices;
  size_t pipe_len; /* slices 0..pipe_len-1 form the pipeline, in order */
  uint64_t capacity;
  access *acc;
  size_t n_acc;
  size_t *next_at; /* index of the same slice's next access, n_acc if none */
} trace;

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) {
    fprintf(stderr, "evict_sim: out of memory\n");
    exit(1);
  }
  return p;
}

static uint64_t total_bytes(const trace *t) {
  uint64_t s = 0;
  for (size_t i = 0; i < t->n_slices; i++)
    s += t->slices[i].bytes;
  return s;
}

/* Zipf(s) over n ranks as a cumulative table; ranks map to slices through a
 * random permutation so that popularity and size are unrelated. */
typedef struct {
  double *cdf;
  uint32_t *slice_of_rank;
  size_t n;
} zipf;

static void zipf_init(zipf *z, size_t n, double s, uint32_t first_slice) {
  z->n = n;
  z->cdf = xcalloc(n, sizeof(*z->cdf));
  z->slice_of_rank = xcalloc(n, sizeof(*z->slice_of_rank));
  double sum = 0;
  for (size_t k = 0; k < n; k++)
    z->cdf[k] = (sum += pow((double)(k + 1), -s));
  for (size_t k = 0; k < n; k++) {
    z->cdf[k] /= sum;
    z->slice_of_rank[k] = first_slice + (uint32_t)k;
  }
  for (size_t k = n - 1; k > 0; k--) { /* Fisher-Yates */
    size_t j = rng_below(k + 1);
    uint32_t tmp = z->slice_of_rank[k];
    z->slice_of_rank[k] = z->slice_of_rank[j];
    z->slice_of_rank[j] = tmp;
  }
}

static uint32_t zipf_draw(const zipf *z) {
  double u = rng_unit();
  size_t lo = 0, hi = z->n - 1;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (z->cdf[mid] < u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return z->slice_of_rank[lo];
}

static void zipf_free(zipf *z) {
  free(z->cdf);
  free(z->slice_of_rank);
}

/* Half come back from pinned host memory, half from the disk cache. */
static double two_tiers(void) { return rng_below(2) ? HOST_GBPS : DISK_GBPS; }

/* Mixed sizes (32..512 MiB) on two tiers. */
static void mixed_slices(slice_desc *d, size_t n) {
  static const uint64_t sizes_mib[] = {32, 64, 128, 256, 512};
  for (size_t i = 0; i < n; i++) {
    d[i].bytes = sizes_mib[rng_below(5)] * MIB;
    d[i].gbps = two_tiers();
  }
}

static void finish_trace(trace *t) {
  t->next_at = xcalloc(t->n_acc, sizeof(*t->next_at));
  size_t *seen = xcalloc(t->n_slices, sizeof(*seen));
  for (size_t s = 0; s < t->n_slices; s++)
    seen[s] = t->n_acc;
  for (size_t i = t->n_acc; i-- > 0;) {
    t->next_at[i] = seen[t->acc[i].slice];
    seen[t->acc[i].slice] = i;
  }
  free(seen);
}

/* N equal slices run in a loop, room for N/2. */
static void make_cyclic(trace *t) {
  const size_t n = 16, passes = 50;
  t->name = "cyclic";
  t->n_slices = t->pipe_len = n;
  t->slices = xcalloc(n, sizeof(*t->slices));
  for (size_t i = 0; i < n; i++)
    t->slices[i] = (slice_desc){256 * MIB, HOST_GBPS};
  t->capacity = total_bytes(t) / 2;
  t->n_acc = n * passes;
  t->acc = xcalloc(t->n_acc, sizeof(*t->acc));
  for (size_t i = 0; i < t->n_acc; i++)
    t->acc[i] = (access){(uint32_t)(i % n), (int32_t)(i % n)};
  finish_trace(t);
}

/* Zipf s=1.1 over 64 slices of mixed sizes, room for a quarter. */
static void make_zipf(trace *t) {
  const size_t n = 64, calls = 100000;
  t->name = "zipf";
  t->n_slices = n;
  t->pipe_len = 0;
  t->slices = xcalloc(n, sizeof(*t->slices));
  mixed_slices(t->slices, n);
  t->capacity = total_bytes(t) / 4;
  zipf z;
  zipf_init(&z, n, 1.1, 0);
  t->n_acc = calls;
  t->acc = xcalloc(t->n_acc, sizeof(*t->acc));
  for (size_t i = 0; i < calls; i++)
    t->acc[i] = (access){zipf_draw(&z), -1};
  zipf_free(&z);
  finish_trace(t);
}

/* A 16-slice pipeline (256 MiB each) run 200 times, with Zipf one-off calls
 * over 64 other slices arriving between its steps (each tick: a one-off
 * call with probability 1/2), room for a quarter of all the bytes. */
static void make_mixed(trace *t) {
  const size_t pipe = 16, others = 64, passes = 200;
  t->name = "mixed";
  t->n_slices = pipe + others;
  t->pipe_len = pipe;
  t->slices = xcalloc(t->n_slices, sizeof(*t->slices));
  for (size_t i = 0; i < pipe; i++)
    t->slices[i] = (slice_desc){256 * MIB, two_tiers()};
  mixed_slices(t->slices + pipe, others);
  t->capacity = total_bytes(t) / 4;
  zipf z;
  zipf_init(&z, others, 1.1, (uint32_t)pipe);
  size_t cap = 4 * pipe * passes, steps = 0;
  t->acc = xcalloc(cap, sizeof(*t->acc));
  t->n_acc = 0;
  while (steps < pipe * passes) {
    if (t->n_acc == cap) {
      fprintf(stderr, "evict_sim: mixed trace overflow\n");
      exit(1);
    }
    if (rng_below(2)) {
      t->acc[t->n_acc++] = (access){zipf_draw(&z), -1};
    } else {
      t->acc[t->n_acc++] =
          (access){(uint32_t)(steps % pipe), (int32_t)(steps % pipe)};
      steps++;
    }
  }
  zipf_free(&z);
  finish_trace(t);
}

/* The same trace with every slice coming back from the host: what is left
 * is usage alone, so bytes moved and reload time agree. */
static void one_bandwidth(trace *dst, const trace *src, const char *name) {
  *dst = *src;
  dst->name = name;
  dst->slices = xcalloc(src->n_slices, sizeof(*dst->slices));
  dst->acc = xcalloc(src->n_acc, sizeof(*dst->acc));
  dst->next_at = xcalloc(src->n_acc, sizeof(*dst->next_at));
  for (size_t i = 0; i < src->n_slices; i++)
    dst->slices[i] = (slice_desc){src->slices[i].bytes, HOST_GBPS};
  memcpy(dst->acc, src->acc, src->n_acc * sizeof(*dst->acc));
  memcpy(dst->next_at, src->next_at, src->n_acc * sizeof(*dst->next_at));
}

static void trace_free(trace *t) {
  free(t->slices);
  free(t->acc);
  free(t->next_at);
}

/* --- Policies --- */

typedef enum {
  POL_LRU,      /* least recently used among the eligible */
  POL_NOHINT,   /* evict_choose without next_use: scores and costs only */
  POL_USAGE,    /* evict_choose with the next_use a running pipeline knows */
  POL_OPT,      /* Belady: farthest next use (knows the future) */
  POL_COUNT
} policy;

static const char *const policy_names[POL_COUNT] = {"lru", "usage-nohint",
                                                    "usage", "belady*"};

typedef struct {
  uint64_t hits, misses, pipe_hits, pipe_accesses, bytes_moved;
  double reload_s;
} result;

/* State of one run: which slices are resident, their usage, and where the
 * pipeline stands. */
typedef struct {
  const trace *t;
  bool *resident;
  evict_candidate *usage; /* per slice, kept across evictions */
  uint64_t used;
  int cur;             /* pipeline step last run, -1 before the first */
  uint64_t pipe_steps; /* pipeline steps so far, for ticks per step */
  size_t *next_of; /* per slice: index of its next access (Belady) */
  evict_candidate *cands;
  size_t *cand_slice, *out;
} sim;

/* Marks what the daemon would know at access i: the slice computing while
 * this one loads is in use (double buffering), the pipeline's next
 * PREFETCH_DEPTH slices are needed next, and with `hints` each of the
 * pipeline's slices gets its distance in ticks (steps times the ticks per
 * step seen so far): those ahead in the current pass, and, once the
 * pipeline has run a whole pass before (so it is taken to repeat), those
 * behind, at their place in the next pass. Between passes no pipeline is
 * running, so nothing is marked. */
static void describe(sim *s, size_t i, uint64_t tick, bool hints) {
  const trace *t = s->t;
  const access *a = &t->acc[i];
  bool running = a->pipe_pos >= 0 ||
                 (s->cur >= 0 && (size_t)s->cur + 1 < t->pipe_len);
  int cur = a->pipe_pos >= 0 ? a->pipe_pos : s->cur;
  double ticks_per_step =
      s->pipe_steps ? (double)tick / (double)s->pipe_steps : 1.0;
  bool repeats = s->pipe_steps >= t->pipe_len;
  for (size_t k = 0; k < t->n_slices; k++) {
    evict_candidate *c = &s->usage[k];
    c->in_use = c->needed_next = false;
    c->next_use = 0;
    if (!running || k >= t->pipe_len)
      continue;
    int pos = (int)k;
    if (a->pipe_pos > 0 && pos == a->pipe_pos - 1)
      c->in_use = true;
    if (pos > cur && pos <= cur + PREFETCH_DEPTH)
      c->needed_next = true;
    if (!hints)
      continue;
    if (pos > cur) /* ahead in this pass */
      c->next_use = (uint64_t)ceil((pos - cur) * ticks_per_step);
    else if (repeats) /* behind: its place in the next pass */
      c->next_use =
          (uint64_t)ceil(((int)t->pipe_len - cur + pos) * ticks_per_step);
  }
}

/* Frees room for the slice of access i under policy p; exits when the
 * policy cannot (the traces are sized so that it always can). */
static void make_room(sim *s, policy p, size_t i, uint64_t tick,
                      double half_life) {
  const trace *t = s->t;
  uint64_t bytes = t->slices[t->acc[i].slice].bytes;
  if (s->used + bytes <= t->capacity)
    return;
  uint64_t need = s->used + bytes - t->capacity;
  describe(s, i, tick, p == POL_USAGE);

  size_t n = 0;
  for (size_t k = 0; k < t->n_slices; k++) {
    if (!s->resident[k])
      continue;
    s->cands[n] = s->usage[k];
    s->cands[n].bytes = t->slices[k].bytes;
    s->cands[n].reload_gbps = t->slices[k].gbps;
    s->cand_slice[n++] = k;
  }

  int m;
  if (p == POL_NOHINT || p == POL_USAGE) {
    m = evict_choose(s->cands, n, need, tick, half_life, s->out, NULL);
  } else {
    /* Repeatedly the eligible candidate with the smallest key: last use
     * (LRU) or minus the next access (Belady); ties to the lower index. */
    m = 0;
    uint64_t freed = 0;
    while (freed < need) {
      size_t best = n;
      double best_key = 0;
      for (size_t k = 0; k < n; k++) {
        const evict_candidate *c = &s->cands[k];
        if (c->in_use || c->needed_next || c->bytes == 0)
          continue;
        double key = p == POL_LRU
                         ? (double)c->last_use_tick
                         : -(double)s->next_of[s->cand_slice[k]];
        if (best == n || key < best_key) {
          best = k;
          best_key = key;
        }
      }
      if (best == n) {
        m = -1;
        break;
      }
      s->cands[best].bytes = 0; /* taken */
      freed += t->slices[s->cand_slice[best]].bytes;
      s->out[m++] = best;
    }
  }
  if (m < 0) {
    fprintf(stderr, "evict_sim: %s/%s cannot make room at access %zu\n",
            t->name, policy_names[p], i);
    exit(1);
  }
  for (int k = 0; k < m; k++) {
    size_t sl = s->cand_slice[s->out[k]];
    s->resident[sl] = false;
    s->used -= t->slices[sl].bytes;
  }
}

static result run(const trace *t, policy p, double half_life) {
  sim s = {.t = t, .cur = -1};
  s.resident = xcalloc(t->n_slices, sizeof(*s.resident));
  s.usage = xcalloc(t->n_slices, sizeof(*s.usage));
  s.cands = xcalloc(t->n_slices, sizeof(*s.cands));
  s.cand_slice = xcalloc(t->n_slices, sizeof(*s.cand_slice));
  s.out = xcalloc(t->n_slices, sizeof(*s.out));
  s.next_of = xcalloc(t->n_slices, sizeof(*s.next_of));
  for (size_t k = 0; k < t->n_slices; k++)
    s.next_of[k] = t->n_acc;
  for (size_t i = t->n_acc; i-- > 0;)
    s.next_of[t->acc[i].slice] = i;
  result r = {0};
  for (size_t i = 0; i < t->n_acc; i++) {
    uint64_t tick = i + 1;
    uint32_t sl = t->acc[i].slice;
    bool pipe = t->acc[i].pipe_pos >= 0;
    r.pipe_accesses += pipe;
    if (s.resident[sl]) {
      r.hits++;
      r.pipe_hits += pipe;
    } else {
      r.misses++;
      make_room(&s, p, i, tick, half_life);
      s.resident[sl] = true;
      s.used += t->slices[sl].bytes;
      r.bytes_moved += t->slices[sl].bytes;
      r.reload_s += (double)t->slices[sl].bytes / (t->slices[sl].gbps * 1e9);
    }
    evict_touch(&s.usage[sl], tick, half_life);
    s.next_of[sl] = t->next_at[i];
    if (t->acc[i].pipe_pos >= 0) {
      s.cur = t->acc[i].pipe_pos;
      s.pipe_steps++;
    }
  }
  free(s.resident);
  free(s.usage);
  free(s.cands);
  free(s.cand_slice);
  free(s.out);
  free(s.next_of);
  return r;
}

#define N_TRACES 5

static void add(result *sum, const result *r) {
  sum->hits += r->hits;
  sum->misses += r->misses;
  sum->pipe_hits += r->pipe_hits;
  sum->pipe_accesses += r->pipe_accesses;
  sum->bytes_moved += r->bytes_moved;
  sum->reload_s += r->reload_s;
}

static double pct(uint64_t a, uint64_t b) {
  return b ? 100.0 * (double)a / (double)b : 0;
}

static int usage(void) {
  fprintf(stderr, "usage: evict_sim [--half-life TICKS>=1] [--seeds N>=1]\n");
  return 2;
}

int main(int argc, char **argv) {
  double half_life = EVICT_DEFAULT_HALF_LIFE;
  unsigned long seeds = 5;
  for (int a = 1; a < argc; a++) {
    char *end = NULL;
    if (!strcmp(argv[a], "--half-life") && a + 1 < argc)
      half_life = strtod(argv[++a], &end);
    else if (!strcmp(argv[a], "--seeds") && a + 1 < argc)
      seeds = strtoul(argv[++a], &end, 10);
    else
      return usage();
    if (*end || !(half_life >= 1) || seeds < 1 || seeds > 1000)
      return usage();
  }

  static const char *const names[N_TRACES] = {"cyclic", "zipf", "zipf-1bw",
                                              "mixed", "mixed-1bw"};
  result sum[N_TRACES][POL_COUNT] = {{{0}}};
  double data[N_TRACES] = {0}, cap[N_TRACES] = {0}, n_acc[N_TRACES] = {0};
  size_t n_slices[N_TRACES] = {0};
  for (unsigned long seed = 1; seed <= seeds; seed++) {
    rng_state = seed;
    trace traces[N_TRACES];
    make_cyclic(&traces[0]);
    make_zipf(&traces[1]);
    one_bandwidth(&traces[2], &traces[1], names[2]);
    make_mixed(&traces[3]);
    one_bandwidth(&traces[4], &traces[3], names[4]);
    for (int k = 0; k < N_TRACES; k++) {
      const trace *t = &traces[k];
      n_slices[k] = t->n_slices;
      data[k] += (double)total_bytes(t) / GIB / (double)seeds;
      cap[k] += (double)t->capacity / GIB / (double)seeds;
      n_acc[k] += (double)t->n_acc / (double)seeds;
      for (int p = 0; p < POL_COUNT; p++) {
        result r = run(t, (policy)p, half_life);
        add(&sum[k][p], &r);
      }
      trace_free(&traces[k]);
    }
  }

  printf("evict_sim: seeds 1..%lu (figures summed), half-life %.0f ticks, "
         "prefetch_depth %d,\nreload at %.1f GB/s (host) or %.1f GB/s (disk)"
         "\n\n",
         seeds, half_life, PREFETCH_DEPTH, HOST_GBPS, DISK_GBPS);
  printf("%-9s %6s %9s %10s %9s   (means over seeds)\n", "trace", "slices",
         "data GiB", "capacity", "accesses");
  for (int k = 0; k < N_TRACES; k++)
    printf("%-9s %6zu %9.2f %6.2f GiB %9.0f\n", names[k], n_slices[k],
           data[k], cap[k], n_acc[k]);
  printf("\n%-9s %-12s %8s %8s %10s %9s %9s %8s\n", "trace", "policy",
         "hit rate", "pipe hit", "moved GiB", "reload s", "bytes/LRU",
         "time/LRU");
  for (int k = 0; k < N_TRACES; k++) {
    const result *lru = &sum[k][POL_LRU];
    for (int p = 0; p < POL_COUNT; p++) {
      const result *r = &sum[k][p];
      char pipe_hit[16] = "-";
      if (r->pipe_accesses)
        snprintf(pipe_hit, sizeof(pipe_hit), "%.1f%%",
                 pct(r->pipe_hits, r->pipe_accesses));
      printf("%-9s %-12s %7.1f%% %8s %10.1f %9.1f %9.3f %8.3f\n", names[k],
             policy_names[p], pct(r->hits, r->hits + r->misses), pipe_hit,
             (double)r->bytes_moved / GIB, r->reload_s,
             (double)r->bytes_moved / (double)lru->bytes_moved,
             r->reload_s / lru->reload_s);
    }
  }
  return 0;
}
