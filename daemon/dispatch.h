/* dispatch.h — from a parsed request to its reply (daemon/).
 *
 * Owns: the op table of the daemon — the checks every request goes through
 * (fds only with map_region, draining, admin rights, leases to release) and
 * one handler per op. Runs on the loop thread and never blocks.
 */
#ifndef DAEMON_DISPATCH_H
#define DAEMON_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "request.h"

/* Handles one request and queues its reply on `c`. Takes ownership of the
 * `n_fds` received fds (closes them, or keeps what it maps). */
void dispatch_request(conn *c, const proto_request *req, int *fds,
                      size_t n_fds, uint64_t start_us);

/* Adds "retired_regions": [ids] to a reply. */
void dispatch_add_retired(cJSON *reply, const uint64_t *ids, size_t n);

#endif
