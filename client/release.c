/* release.c — giving leases back to the server (client/).
 *
 * Owns: the queue of leases whose results were freed. They ride in the
 * "release" field of the connection's next request, whatever its op, so that
 * freeing a result costs no round trip; a full queue (the protocol's 64 ids)
 * is sent at once with the op release. The server applies them right after
 * parsing; when the request they rode on did not parse, they are settled
 * with the op release before the call returns.
 */
#include "conn_internal.h"

#include <string.h>

int sly__release_attach(sly_conn *c, cJSON *req, uint64_t *sent,
                        size_t *n_sent) {
  *n_sent = 0;
  /* A request written by hand (sly_request_json) may release leases of its
   * own; ours wait for the next one. */
  if (c->n_pending == 0 || cJSON_GetObjectItemCaseSensitive(req, "release"))
    return 0;
  cJSON *arr = cJSON_AddArrayToObject(req, "release");
  if (arr == NULL)
    return SLY_E_NO_MEMORY;
  for (size_t i = 0; i < c->n_pending; i++) {
    cJSON *n = cJSON_CreateNumber((double)c->pending[i]);
    if (n == NULL || !cJSON_AddItemToArray(arr, n)) {
      cJSON_Delete(n);
      cJSON_DeleteItemFromObjectCaseSensitive(req, "release");
      return SLY_E_NO_MEMORY;
    }
  }
  memcpy(sent, c->pending, c->n_pending * sizeof(*sent));
  *n_sent = c->n_pending;
  c->n_pending = 0;
  return 0;
}

/* One op release of `ids`; returns its code. */
static int release_op(sly_conn *c, const uint64_t *ids, size_t n) {
  cJSON *req = sly__request("release");
  cJSON *arr = req != NULL ? cJSON_AddArrayToObject(req, "leases") : NULL;
  for (size_t i = 0; arr != NULL && i < n; i++) {
    cJSON *num = cJSON_CreateNumber((double)ids[i]);
    if (num == NULL || !cJSON_AddItemToArray(arr, num)) {
      cJSON_Delete(num);
      arr = NULL;
    }
  }
  if (arr == NULL) {
    cJSON_Delete(req);
    return SLY_E_NO_MEMORY;
  }
  sly__reply rep;
  bool sent;
  int rc = sly__round_trip(c, req, -1, &rep, &sent, NULL);
  sly__reply_free(&rep);
  cJSON_Delete(req);
  return rc;
}

/* NOT_FOUND for the list means at least one id is no longer held; which
 * ones, only one at a time can tell. Each then ends released either way. */
void sly__release_settle(sly_conn *c, const uint64_t *ids, size_t n) {
  if (n == 0 || c->dead)
    return;
  int rc = release_op(c, ids, n);
  if (rc != SLY_E_NOT_FOUND || n == 1)
    return;
  for (size_t i = 0; i < n && !c->dead; i++)
    release_op(c, &ids[i], 1);
}

void sly__release_queue(sly_conn *c, uint64_t lease) {
  if (c->dead)
    return;
  c->pending[c->n_pending++] = lease;
  if (c->n_pending < PROTO_MAX_IDS)
    return;
  uint64_t ids[PROTO_MAX_IDS];
  size_t n = c->n_pending;
  memcpy(ids, c->pending, n * sizeof(ids[0]));
  c->n_pending = 0;
  sly__release_settle(c, ids, n);
}
