/* test_forward_leases.c — outputs in server regions under leases: the cap on
 * unreleased outputs (max_output_mb), releasing leases, and server regions
 * that are retired once empty so that neither side's mappings grow. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(forward_leases, .timeout = 30, .fini = td_cleanup);

/* "wide": 8 -> 1024 features, so an input of [rows, 8] gives rows * 4 KiB. */
#define WIDE_SLICE                                                             \
  "{\"name\": \"wide\", \"constructor\": \"linear\", \"config\": "            \
  "{\"in_features\": 8, \"out_features\": 1024, \"dtype\": \"float32\", "     \
  "\"seed\": 5}}"
#define ROW_BYTES 4096u

static td *start_wide(const char *more_keys) {
  char *cfg = fx_config(WIDE_SLICE, more_keys);
  td *d = td_start(cfg);
  free(cfg);
  return d;
}

static sly_tensor wide_input(sly_arena *a, uint64_t rows) {
  const uint64_t shape[] = {rows, 8};
  return fx_put_pattern(a, 2, shape);
}

Test(forward_leases, unreleased_outputs_past_max_output_mb_get_busy) {
  td *d = start_wide("\"max_output_mb\": 1");
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, 1u << 20, &a, &err), 0, "%s", err.message);
  /* 640 KiB of output: one fits under 1 MiB, two do not. */
  sly_tensor in = wide_input(a, 160);
  sly_result *r1 = NULL, *r2 = NULL;
  cr_assert_eq(sly_forward(c, "wide", &in, 1, &r1, &err), 0, "%s",
               err.message);
  cr_assert_eq(sly_tensor_nbytes(sly_result_output(r1, 0)), 160 * ROW_BYTES);
  cr_assert_eq(sly_forward(c, "wide", &in, 1, &r2, &err), SLY_E_BUSY,
               "second 640 KiB under a 1 MiB cap: %s", err.message);
  cr_assert(strstr(err.message, "max_output_mb"), "%s", err.message);
  cr_assert_null(r2);
  /* BUSY does not consume the first result. */
  float first = ((const float *)sly_result_output(r1, 0)->data)[12345];

  /* Outputs written to the client's own memory do not count. */
  void *out = sly_arena_alloc(a, 160 * ROW_BYTES, 64);
  cr_assert(out);
  sly_forward_opts o = {.slice = "wide", .out = out,
                        .out_bytes = 160 * ROW_BYTES};
  cr_assert_eq(sly_forward_ex(c, &o, &in, 1, &r2, &err), 0,
               "out forward under a full cap: %s", err.message);
  cr_assert_eq(((const float *)out)[12345], first);
  sly_result_free(r2);

  /* The cap is per connection. */
  sly_conn *c2 = td_connect(d);
  sly_arena *a2 = NULL;
  cr_assert_eq(sly_arena_create(c2, 1u << 20, &a2, &err), 0, "%s",
               err.message);
  sly_tensor in2 = wide_input(a2, 160);
  cr_assert_eq(sly_forward(c2, "wide", &in2, 1, &r2, &err), 0,
               "another connection: %s", err.message);
  sly_result_free(r2);
  sly_close(c2);

  /* Freeing the result releases its lease with the next request. */
  sly_result_free(r1);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(sly_forward(c, "wide", &in, 1, &r1, &err), 0,
                 "forward %d after freeing: %s", i, err.message);
    cr_assert_eq(((const float *)sly_result_output(r1, 0)->data)[12345],
                 first);
    sly_result_free(r1);
  }
  /* One output larger than the whole cap can never fit. */
  sly_arena_reset(a);
  sly_tensor huge = wide_input(a, 300);
  cr_assert_eq(sly_forward(c, "wide", &huge, 1, &r1, &err), SLY_E_BUSY,
               "1.2 MiB under a 1 MiB cap: %s", err.message);
  sly_close(c);
  td_stop(d);
}

/* ---- Raw: lease ids, release, retired_regions ---------------------------- */

/* A raw connection with one client region holding a [rows, 8] input. */
typedef struct {
  int fd;
  uint64_t region;
  uint64_t next_id;
} raw;

static void raw_open(raw *w, const td *d, uint64_t rows) {
  w->fd = rc_connect(d->sock);
  size_t bytes = (size_t)(rows * 8 * 4 + 4095) / 4096 * 4096;
  int m = rc_memfd("in", bytes, F_SEAL_SHRINK | F_SEAL_GROW);
  float *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  cr_assert(p != MAP_FAILED);
  for (uint64_t i = 0; i < rows * 8; i++)
    p[i] = (float)(i % 7) * 0.25f;
  munmap(p, bytes);
  w->region = rc_map_region(w->fd, m, 1);
  close(m);
  w->next_id = 2;
}

/* Sends a forward of "wide" over `rows`, releasing `release` (0: none), and
 * returns its reply; *nfds counts the fds that came with it. */
static cJSON *raw_forward(raw *w, uint64_t rows, uint64_t release, int *nfds) {
  char req[512];
  char rel[64] = "";
  if (release)
    snprintf(rel, sizeof rel, ", \"release\": [%llu]",
             (unsigned long long)release);
  snprintf(req, sizeof req,
           "{\"id\": %llu, \"op\": \"forward\", \"slice\": \"wide\"%s, "
           "\"inputs\": [{\"dtype\": \"float32\", \"shape\": [%llu, 8], "
           "\"region\": %llu, \"offset\": 0}]}",
           (unsigned long long)w->next_id++, rel, (unsigned long long)rows,
           (unsigned long long)w->region);
  cr_assert_eq(rc_send_json(w->fd, req), 0);
  char *body = NULL;
  uint32_t len;
  rc_status s = rc_read_frame(w->fd, RC_REPLY_TIMEOUT_MS, &body, &len, nfds);
  cr_assert_eq(s, RC_FRAME, "forward: %s", rc_status_name(s));
  cJSON *j = cJSON_ParseWithLength(body, len);
  cr_assert(j, "reply not JSON: %s", body);
  free(body);
  return j;
}

static uint64_t out_region_of(const cJSON *reply) {
  const cJSON *outs = cJSON_GetObjectItemCaseSensitive(reply, "outputs");
  cr_assert_eq(cJSON_GetArraySize(outs), 1);
  return rc_u64(cJSON_GetArrayItem(outs, 0), "region");
}

Test(forward_leases, release_of_a_lease_not_held_is_not_found) {
  td *d = start_wide(NULL);
  raw w;
  raw_open(&w, d, 4);
  int nfds;
  cJSON *r = raw_forward(&w, 4, 0, &nfds);
  rc_assert_ok(r, 2);
  uint64_t l1 = rc_u64(r, "lease");
  cJSON_Delete(r);
  r = raw_forward(&w, 4, 0, &nfds);
  uint64_t l2 = rc_u64(r, "lease");
  cJSON_Delete(r);
  cr_assert_neq(l1, l2, "two forwards got the same lease %llu",
                (unsigned long long)l1);

  rc_call_error(w.fd, "{\"id\": 10, \"op\": \"release\", \"leases\": [99999]}",
                10, "NOT_FOUND");
  rc_call_error(w.fd, "{\"id\": 11, \"op\": \"hello\", \"release\": [88888]}",
                11, "NOT_FOUND");
  /* All or nothing: l1 stays held when its list names an unknown lease. */
  char req[160];
  snprintf(req, sizeof req,
           "{\"id\": 12, \"op\": \"release\", \"leases\": [%llu, 77777]}",
           (unsigned long long)l1);
  rc_call_error(w.fd, req, 12, "NOT_FOUND");
  snprintf(req, sizeof req,
           "{\"id\": 13, \"op\": \"release\", \"leases\": [%llu, %llu]}",
           (unsigned long long)l1, (unsigned long long)l2);
  r = rc_call(w.fd, req);
  rc_assert_ok(r, 13);
  cr_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r,
                                                           "retired_regions")),
            "release reply lacks retired_regions");
  cJSON_Delete(r);
  /* Released is released: a second time is NOT_FOUND. */
  snprintf(req, sizeof req,
           "{\"id\": 14, \"op\": \"release\", \"leases\": [%llu]}",
           (unsigned long long)l2);
  rc_call_error(w.fd, req, 14, "NOT_FOUND");
  /* Leases are per connection. */
  int other = rc_connect(d->sock);
  r = raw_forward(&w, 4, 0, &nfds);
  uint64_t l3 = rc_u64(r, "lease");
  cJSON_Delete(r);
  snprintf(req, sizeof req,
           "{\"id\": 15, \"op\": \"release\", \"leases\": [%llu]}",
           (unsigned long long)l3);
  rc_call_error(other, req, 15, "NOT_FOUND");
  close(other);
  rc_assert_hello(w.fd, 16);
  close(w.fd);
  td_stop(d);
}

Test(forward_leases, busy_reply_for_max_output_mb_carries_no_needed) {
  td *d = start_wide("\"max_output_mb\": 1");
  raw w;
  raw_open(&w, d, 160);
  int nfds;
  cJSON *r = raw_forward(&w, 160, 0, &nfds);
  rc_assert_ok(r, 2);
  cJSON_Delete(r);
  r = raw_forward(&w, 160, 0, &nfds);
  rc_assert_error(r, 3, "BUSY");
  /* PROTOCOL.md: error.needed comes only with NO_MEMORY and a too-small
   * out. */
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
  cr_expect_null(cJSON_GetObjectItemCaseSensitive(e, "needed"),
                 "BUSY for max_output_mb carries \"needed\"");
  cJSON_Delete(r);
  close(w.fd);
  td_stop(d);
}

#define MAX_SEEN 64

Test(forward_leases, new_region_fds_ride_once_and_empty_regions_retire) {
  td *d = start_wide(NULL);
  raw w;
  /* 6 MiB outputs: two share a 16 MiB server region, a third needs another. */
  raw_open(&w, d, 1536);
  uint64_t seen[MAX_SEEN], retired[MAX_SEEN], leases[40];
  int n_seen = 0, n_retired = 0;
  for (int i = 0; i < 40; i++) {
    int nfds = 0;
    cJSON *r = raw_forward(&w, 1536, i >= 3 ? leases[i - 3] : 0, &nfds);
    rc_assert_ok(r, w.next_id - 1);
    leases[i] = rc_u64(r, "lease");
    const cJSON *ret = cJSON_GetObjectItemCaseSensitive(r, "retired_regions");
    for (int k = 0; k < cJSON_GetArraySize(ret); k++) {
      uint64_t id = (uint64_t)cJSON_GetArrayItem(ret, k)->valuedouble;
      bool known = false;
      for (int s = 0; s < n_seen; s++)
        known = known || seen[s] == id;
      cr_assert(known, "retired region %llu was never sent",
                (unsigned long long)id);
      cr_assert_lt(n_retired, MAX_SEEN);
      retired[n_retired++] = id;
    }
    uint64_t reg = out_region_of(r);
    bool is_new = true;
    for (int s = 0; s < n_seen; s++)
      is_new = is_new && seen[s] != reg;
    for (int s = 0; s < n_retired; s++)
      cr_assert_neq(retired[s], reg, "forward %d wrote into retired region "
                    "%llu", i, (unsigned long long)reg);
    /* The fd of a server region rides on the first reply naming it only. */
    cr_assert_eq(nfds, is_new ? 1 : 0,
                 "forward %d: region %llu (%s) came with %d fds", i,
                 (unsigned long long)reg, is_new ? "new" : "known", nfds);
    if (is_new) {
      cr_assert_lt(n_seen, MAX_SEEN, "too many server regions");
      seen[n_seen++] = reg;
    }
    cr_assert_leq(n_seen - n_retired, 3,
                  "forward %d: %d server regions live with 3 leases held", i,
                  n_seen - n_retired);
    cJSON_Delete(r);
  }
  /* 40 forwards of 6 MiB with 3 held at a time needed fresh regions, and
   * the emptied ones went back. */
  cr_assert_gt(n_seen, 3, "only %d server regions for 240 MiB", n_seen);
  cr_assert_geq(n_retired, n_seen - 3, "%d regions, %d retired", n_seen,
                n_retired);
  cr_assert_leq(td_maps_files(d->pid, "slyced-out", NULL, 0), 3,
                "the daemon still maps more than 3 server regions");
  close(w.fd);
  td_stop(d);
}

Test(forward_leases, server_regions_stay_bounded_over_200_forwards) {
  td *d = start_wide(NULL);
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, 1u << 20, &a, &err), 0, "%s", err.message);
  sly_tensor in = wide_input(a, 1536); /* 6 MiB out */
  enum { HELD = 3, N = 200 };
  sly_result *ring[HELD] = {0};
  unsigned long inodes[MAX_SEEN], all[MAX_SEEN * 4];
  int n_all = 0, max_daemon = 0, max_client = 0;
  for (int i = 0; i < N; i++) {
    sly_result_free(ring[i % HELD]);
    ring[i % HELD] = NULL;
    cr_assert_eq(sly_forward(c, "wide", &in, 1, &ring[i % HELD], &err), 0,
                 "forward %d: %s: %s", i, sly_code_name(err.code),
                 err.message);
    const sly_tensor *t = sly_result_output(ring[i % HELD], 0);
    cr_assert_eq(sly_tensor_nbytes(t), 1536 * ROW_BYTES);
    int nd = td_maps_files(d->pid, "slyced-out", inodes, MAX_SEEN);
    int nc = td_maps_files(0, "slyced-out", NULL, 0);
    max_daemon = nd > max_daemon ? nd : max_daemon;
    max_client = nc > max_client ? nc : max_client;
    for (int k = 0; k < nd && k < MAX_SEEN; k++) {
      bool known = false;
      for (int s = 0; s < n_all && !known; s++)
        known = all[s] == inodes[k];
      if (!known && n_all < MAX_SEEN * 4)
        all[n_all++] = inodes[k];
    }
  }
  cr_assert_leq(max_daemon, 3, "the daemon mapped %d server regions at once",
                max_daemon);
  cr_assert_leq(max_client, 3, "this client mapped %d server regions at once",
                max_client);
  cr_assert_gt(n_all, 3, "only %d server regions were ever made for 1.2 GiB",
               n_all);
  for (int k = 0; k < HELD; k++)
    sly_result_free(ring[k]);
  /* The releases ride on the next request; after it, at most the newest
   * region remains. */
  sly_slice_list *l = NULL;
  cr_assert_eq(sly_list(c, &l, &err), 0, "%s", err.message);
  sly_slice_list_free(l);
  cr_assert_leq(td_maps_files(d->pid, "slyced-out", NULL, 0), 1);
  cr_assert_leq(td_maps_files(0, "slyced-out", NULL, 0), 1);
  sly_close(c);
  cr_assert_eq(td_maps_files(0, "slyced-out", NULL, 0), 0,
               "sly_close left server regions mapped");
  td_stop(d);
}
