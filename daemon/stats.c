/* stats.c — request counters and a log-linear latency histogram. */
#include "stats.h"

#include "errors.h"

static unsigned bucket_of(uint64_t us) {
  if (us < STATS_SUB)
    return (unsigned)us;
  unsigned p = 63u - (unsigned)__builtin_clzll(us); /* us >= 8, so p >= 3 */
  unsigned sub = (unsigned)((us >> (p - 3)) & (STATS_SUB - 1));
  return (p - 2) * STATS_SUB + sub;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_top(unsigned b) {
  if (b < STATS_SUB)
    return b;
  unsigned p = b / STATS_SUB + 2, sub = b % STATS_SUB;
  uint64_t base = (uint64_t)(STATS_SUB + sub) << (p - 3);
  return base + ((uint64_t)1 << (p - 3)) - 1;
}

void stats_record(stats *s, int op, int code, uint64_t latency_us) {
  s->total++;
  if (op >= 0 && op < PROTO_OP_COUNT)
    s->by_op[op]++;
  if (code < 0) {
    s->errors++;
    if (-code < STATS_N_CODES)
      s->by_error[-code]++;
  }
  unsigned b = bucket_of(latency_us);
  if (b >= STATS_BUCKETS)
    b = STATS_BUCKETS - 1;
  s->latency[b]++;
  if (latency_us > s->latency_max_us)
    s->latency_max_us = latency_us;
}

uint64_t stats_latency_quantile(const stats *s, double q) {
  uint64_t n = 0;
  for (unsigned b = 0; b < STATS_BUCKETS; b++)
    n += s->latency[b];
  if (n == 0)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)n);
  if (rank >= n)
    rank = n - 1;
  uint64_t seen = 0;
  for (unsigned b = 0; b < STATS_BUCKETS; b++) {
    seen += s->latency[b];
    if (seen > rank) {
      uint64_t top = bucket_top(b);
      return top < s->latency_max_us ? top : s->latency_max_us;
    }
  }
  return s->latency_max_us;
}

int stats_add_json(const stats *s, cJSON *obj) {
  cJSON *req = cJSON_AddObjectToObject(obj, "requests");
  if (req == NULL)
    return SLY_E_NO_MEMORY;
  cJSON_AddNumberToObject(req, "total", (double)s->total);
  cJSON_AddNumberToObject(req, "errors", (double)s->errors);
  cJSON *by_op = cJSON_AddObjectToObject(req, "by_op");
  cJSON *by_err = cJSON_AddObjectToObject(req, "by_error");
  cJSON *lat = cJSON_AddObjectToObject(req, "latency_us");
  if (by_op == NULL || by_err == NULL || lat == NULL)
    return SLY_E_NO_MEMORY;
  for (int op = 0; op < PROTO_OP_COUNT; op++)
    if (s->by_op[op] != 0)
      cJSON_AddNumberToObject(by_op, proto_op_name((proto_op)op),
                              (double)s->by_op[op]);
  for (int c = 1; c < STATS_N_CODES; c++) {
    const char *name = proto_code_wire_name(-c);
    if (name != NULL && s->by_error[c] != 0)
      cJSON_AddNumberToObject(by_err, name, (double)s->by_error[c]);
  }
  cJSON_AddNumberToObject(lat, "p50", (double)stats_latency_quantile(s, 0.50));
  cJSON_AddNumberToObject(lat, "p90", (double)stats_latency_quantile(s, 0.90));
  cJSON_AddNumberToObject(lat, "p99", (double)stats_latency_quantile(s, 0.99));
  cJSON_AddNumberToObject(lat, "max", (double)s->latency_max_us);
  return 0;
}
