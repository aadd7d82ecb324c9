/* stats.h — request counters and latency percentiles (daemon/).
 *
 * Owns: the daemon's request statistics. Only the loop thread touches them.
 * Latency is kept in a log-linear histogram (8 sub-buckets per power of two,
 * so a percentile is within 12.5% of the truth) of fixed size: recording is
 * O(1) and memory does not grow with traffic.
 */
#ifndef DAEMON_STATS_H
#define DAEMON_STATS_H

#include <stdint.h>

#include <cJSON.h>

#include "request.h"
#include "slyce.h"

#define STATS_SUB 8
#define STATS_BUCKETS (64 * STATS_SUB)
#define STATS_N_CODES 16 /* wire codes are -1..-13 */

typedef struct {
  uint64_t total;
  uint64_t errors;
  uint64_t by_op[PROTO_OP_COUNT];
  uint64_t by_error[STATS_N_CODES];
  uint64_t latency[STATS_BUCKETS];
  uint64_t latency_max_us;
  uint64_t conns_accepted;
  uint64_t conns_rejected;
} stats;

/* Counts one finished request: `op` < 0 when the frame never got that far,
 * `code` 0 or a negative wire code. */
void stats_record(stats *s, int op, int code, uint64_t latency_us);
/* The latency below which `q` (0..1) of the requests fell, in microseconds. */
uint64_t stats_latency_quantile(const stats *s, double q);
/* Adds "requests": {...} to obj. Returns 0 or SLY_E_NO_MEMORY. */
int stats_add_json(const stats *s, cJSON *obj);

#endif
