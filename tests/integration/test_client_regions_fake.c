/* test_client_regions_fake.c — shared memory between libslyce and a
 * scripted fake server (fakeserver.h): arenas (sealed memfds registered with
 * map_region), server regions a reply may bring or retire, and what the
 * client refuses: forward replies that break the protocol (fds that do not
 * match the new regions, outputs out of bounds, unknown dtypes, more than 8
 * dims, a region retired under a live result) are SLY_E_PROTOCOL and end the
 * connection; inputs outside an arena are SLY_E_INVALID_ARG and send nothing.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "fakeserver.h"
#include "limits.h"
#include "reply.h"
#include "slyce.h"

/* ---- arenas ---- */

#define ARENA_BYTES 12345
#define ARENA_REGION 7

static void script_arena(fake *f) {
  int fds[8];
  size_t n = 0;
  cJSON *j = fake_recv(f, fds, &n);
  FCHECK(f, j != NULL, "no map_region");
  const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
  bool is_map =
      cJSON_IsString(op) && strcmp(op->valuestring, "map_region") == 0;
  uint64_t id = 0;
  proto_json_u64(j, "id", &id);
  cJSON_Delete(j);
  FCHECK(f, is_map, "expected map_region");
  FCHECK(f, n == 1, "map_region carried %zu fds, not 1", n);
  int fd = fds[0];
  char path[64], link[256] = "";
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t k = readlink(path, link, sizeof(link) - 1);
  link[k > 0 ? k : 0] = '\0';
  int seals = fcntl(fd, F_GET_SEALS);
  struct stat sb;
  fstat(fd, &sb);
  void *m = mmap(NULL, ARENA_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  bool can_grow = ftruncate(fd, ARENA_BYTES * 2) == 0;
  close(fd);
  FCHECK(f, strncmp(link, "/memfd:", 7) == 0, "fd is %s, not a memfd", link);
  FCHECK(f, seals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
         "seals are %#x", seals);
  FCHECK(f, sb.st_size == ARENA_BYTES, "memfd of %lld bytes",
         (long long)sb.st_size);
  FCHECK(f, !can_grow, "the memfd could grow");
  FCHECK(f, m != MAP_FAILED, "mmap: %s", strerror(errno));
  strcpy(m, "from the server");
  fake_reply(f, "{\"id\":%llu,\"ok\":true,\"region\":%d,\"bytes\":%d}",
             (unsigned long long)id, ARENA_REGION, ARENA_BYTES);

  j = fake_recv(f, NULL, NULL);
  bool good = false;
  if (j != NULL) {
    uint64_t region = 0;
    op = cJSON_GetObjectItemCaseSensitive(j, "op");
    good = cJSON_IsString(op) && strcmp(op->valuestring, "unmap_region") == 0 &&
           proto_json_u64(j, "id", &id) == 0 &&
           proto_json_u64(j, "region", &region) == 0 && region == ARENA_REGION;
    cJSON_Delete(j);
  }
  bool shared = strcmp((char *)m + 100, "from the client") == 0;
  munmap(m, ARENA_BYTES);
  FCHECK(f, good, "expected unmap_region of region %d", ARENA_REGION);
  FCHECK(f, shared, "the client's write is not visible here");
  fake_reply(f, "{\"id\":%llu,\"ok\":true}", (unsigned long long)id);
  fake_expect_eof(f);
}

Test(client_fake, an_arena_is_one_sealed_memfd_shared_with_the_server,
     .timeout = 20) {
  fake *f = fake_start(script_arena, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_arena *a = NULL;
  cr_assert(eq(int, sly_arena_create(c, ARENA_BYTES, &a, &err), 0), "%s",
            err.message);
  cr_assert(eq(u64, sly_arena_region(a), ARENA_REGION));
  cr_assert(eq(sz, sly_arena_size(a), ARENA_BYTES));
  char *base = sly_arena_base(a);
  cr_assert(eq(str, base, "from the server"));
  strcpy(base + 100, "from the client");
  /* The fd went to the server and was closed here. */
  cr_assert(eq(int, fake_count_fds("memfd:slyce-arena"), 0));

  /* Bump allocation: aligned offsets, NULL when full, reset starts over. */
  char *p1 = sly_arena_alloc(a, 3, 1);
  char *p2 = sly_arena_alloc(a, 8, 64);
  cr_assert(p1 == base && p2 == base + 64);
  cr_assert(sly_arena_alloc(a, 8, 3) == NULL, "non power of two");
  cr_assert(sly_arena_alloc(a, 8, 8192) == NULL, "alignment over 4096");
  cr_assert(sly_arena_alloc(a, ARENA_BYTES, 1) == NULL, "full");
  cr_assert(sly_arena_alloc(a, SIZE_MAX, 1) == NULL, "overflow");
  cr_assert(sly_arena_alloc(a, ARENA_BYTES - 72, 8) == base + 72);
  cr_assert(sly_arena_alloc(a, 1, 1) == NULL);
  cr_assert(sly_arena_alloc(a, 0, 1) == base + ARENA_BYTES, "empty tensor");
  sly_arena_reset(a);
  cr_assert(sly_arena_alloc(a, 16, 16) == base);

  sly_arena_destroy(a);
  sly_close(c);
  fake_finish(f);
}

static void script_arena_refused(fake *f) {
  int fds[8];
  size_t n = 0;
  cJSON *j = fake_recv(f, fds, &n);
  FCHECK(f, j != NULL, "no map_region");
  uint64_t id = 0;
  proto_json_u64(j, "id", &id);
  cJSON_Delete(j);
  for (size_t i = 0; i < n; i++)
    close(fds[i]);
  fake_reply(f,
             "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":\"BAD_REGION\","
             "\"message\":\"more than 16 regions\"}}",
             (unsigned long long)id);
  long long lid = fake_expect(f, "list");
  FCHECK(f, lid >= 0, "no list");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             lid);
  fake_expect_eof(f);
}

Test(client_fake, a_refused_arena_leaves_no_fd_or_mapping, .timeout = 20) {
  fake *f = fake_start(script_arena_refused, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_arena *a = (sly_arena *)0x1;
  cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), SLY_E_BAD_REGION));
  cr_assert(eq(str, err.message, "more than 16 regions"));
  cr_assert(a == (sly_arena *)0x1);
  cr_assert(eq(int, fake_count_fds("memfd:slyce-arena"), 0));
  cr_assert(eq(int, sly_arena_create(c, 0, &a, &err), SLY_E_INVALID_ARG));
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

static void script_two_arenas(fake *f) {
  for (int i = 1; i <= 2; i++) {
    int fds[8];
    size_t n = 0;
    cJSON *j = fake_recv(f, fds, &n);
    FCHECK(f, j != NULL && n == 1, "no map_region with one fd");
    uint64_t id = 0;
    proto_json_u64(j, "id", &id);
    cJSON_Delete(j);
    close(fds[0]);
    fake_reply(f, "{\"id\":%llu,\"ok\":true,\"region\":%d,\"bytes\":4096}",
               (unsigned long long)id, i);
  }
  /* sly_close unmaps locally: the server drops regions with the socket. */
  fake_expect_eof(f);
}

Test(client_fake, close_frees_the_arenas_left, .timeout = 20) {
  fake *f = fake_start(script_two_arenas, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  sly_arena *a = NULL, *b = NULL;
  cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), 0), "%s", err.message);
  cr_assert(eq(int, sly_arena_create(c, 4096, &b, &err), 0), "%s", err.message);
  cr_assert(eq(u64, sly_arena_region(b), 2));
  sly_close(c); /* ASan's leak check fails the test if an arena is left */
  fake_finish(f);
}

/* ---- forward replies that break the protocol ---- */

#define TIMING                                                                 \
  "\"timing\":{\"queue_us\":1,\"load_us\":2,\"compute_us\":3,\"total_us\":7}"

static const struct {
  int fds;           /* fds of server region 2 attached */
  const char *reply; /* after {"id":N,"ok":true, */
  const char *why;   /* in the client's message */
} bad_replies[] = {
    {0,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1],"
     "\"region\":2,\"offset\":0}]," TIMING,
     "names 1 new server regions but carries 0 file descriptors"},
    {2,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1],"
     "\"region\":2,\"offset\":0}]," TIMING,
     "names 1 new server regions but carries 2 file descriptors"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1025],"
     "\"region\":2,\"offset\":0}]," TIMING,
     "(4100 bytes at offset 0) extends past"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[2],"
     "\"region\":2,\"offset\":9007199254740988}]," TIMING,
     "extends past"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"complex64\",\"shape\":[1],"
     "\"region\":2,\"offset\":0}]," TIMING,
     "outputs[0] has no known dtype"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"uint8\",\"shape\":[1,1,1,1,1,1,"
     "1,1,1],\"region\":2,\"offset\":0}]," TIMING,
     "at most 8 dims"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"uint8\",\"shape\":[-1],"
     "\"region\":2,\"offset\":0}]," TIMING,
     "outputs[0].shape[0] is not an integer"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1],"
     "\"region\":2,\"offset\":2}]," TIMING,
     "not aligned"},
    {0,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1],"
     "\"region\":1,\"offset\":0}]," TIMING,
     "region 1, not a server region"},
    {1,
     "\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1],\"region\":2,"
     "\"offset\":0}]," TIMING,
     "\"lease\" is not an integer"},
    {1,
     "\"lease\":1,\"outputs\":[{\"dtype\":\"float32\",\"shape\":[1],"
     "\"region\":2,\"offset\":0}]",
     "\"timing\" lacks"},
    {0, "\"lease\":1,\"outputs\":{}," TIMING, "\"outputs\" is not an array"},
    {0, "\"lease\":1,\"outputs\":[],\"retired_regions\":[9]," TIMING,
     "retires region 9, which is not a server region"},
    {0, "\"lease\":1,\"outputs\":[],\"retired_regions\":9," TIMING,
     "\"retired_regions\" is not an array"},
};
#define N_BAD (sizeof(bad_replies) / sizeof(bad_replies[0]))

static void script_bad_reply(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  long long id = fake_expect(f, "forward");
  FCHECK(f, id >= 0, "no forward");
  int fds[2];
  int n = bad_replies[f->arg].fds;
  for (int i = 0; i < n; i++) {
    fake_region *r = fake_server_region(f, 4096);
    FCHECK(f, r != NULL, "no server region");
    fds[i] = r->fd;
  }
  fake_reply_fds(f, fds, (size_t)n, "{\"id\":%lld,\"ok\":true,%s}", id,
                 bad_replies[f->arg].reply);
  fake_expect_eof(f);
}

Test(client_regions, forward_replies_that_break_the_protocol_end_the_conn,
     .timeout = 20) {
  for (size_t i = 0; i < N_BAD; i++) {
    fake *f = fake_start(script_bad_reply, i);
    sly_conn *c = fake_connect(f);
    sly_arena *a = NULL;
    sly_error err = {0};
    cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), 0), "%s",
              err.message);
    sly_result *r = (sly_result *)0x1;
    cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r, &err), SLY_E_PROTOCOL),
              "case %zu", i);
    cr_assert(strstr(err.message, bad_replies[i].why) != NULL, "case %zu: %s",
              i, err.message);
    cr_assert(eq(ptr, r, (sly_result *)0x1), "case %zu", i);
    cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r, &err), SLY_E_IO));
    sly_close(c);
    fake_finish(f);
    /* Every fd that came was closed, every mapping undone. */
    cr_assert(eq(int, fake_count_fds("memfd:fake-out"), 0), "case %zu", i);
    cr_assert(eq(int, fake_count_maps("memfd:fake-out", NULL), 0), "case %zu",
              i);
  }
}

static void script_retire_live(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  long long id = fake_expect(f, "forward");
  FCHECK(f, id >= 0, "no forward");
  fake_region *r = fake_server_region(f, 4096);
  FCHECK(f, r != NULL, "no server region");
  strcpy(r->base, "still here");
  fake_reply_fds(f, &r->fd, 1,
                 "{\"id\":%lld,\"ok\":true,\"lease\":1,\"outputs\":[{\"dtype\""
                 ":\"uint8\",\"shape\":[11],\"region\":2,\"offset\":0}]," TIMING
                 "}",
                 id);
  id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "no list");
  fake_reply(f,
             "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[],"
             "\"retired_regions\":[2]}",
             id);
  fake_expect_eof(f);
}

Test(client_regions, a_region_retired_under_a_live_result_stays_mapped,
     .timeout = 20) {
  fake *f = fake_start(script_retire_live, 0);
  sly_conn *c = fake_connect(f);
  sly_arena *a = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), 0), "%s", err.message);
  sly_result *r = NULL;
  cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r, &err), 0), "%s",
            err.message);
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_PROTOCOL));
  cr_assert(strstr(err.message, "holds outputs of lease 1") != NULL, "%s",
            err.message);
  cr_assert(eq(str, (char *)sly_result_output(r, 0)->data, "still here"));
  sly_result_free(r); /* the connection is dead: nothing is sent */
  sly_close(c);
  fake_finish(f);
}

/* ---- inputs the client refuses before sending ---- */

static void script_refused_inputs(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  long long id = fake_expect(f, "list");
  FCHECK(f, id >= 0, "a refused forward was sent");
  fake_reply(f, "{\"id\":%lld,\"ok\":true,\"slices\":[],\"pipelines\":[]}", id);
  fake_expect_eof(f);
}

Test(client_regions, tensors_outside_an_arena_are_refused_before_sending,
     .timeout = 20) {
  fake *f = fake_start(script_refused_inputs, 0);
  sly_conn *c = fake_connect(f);
  sly_arena *a = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_arena_create(c, 4096, &a, &err), 0), "%s", err.message);
  char *base = sly_arena_base(a);
  float on_stack[4];
  static const struct {
    const char *why;
  } why[] = {
      {"inputs[0]: its 16 bytes do not lie inside an arena"},
      {"inputs[0]: its 8 bytes do not lie inside an arena"},
      {"inputs[0]: offset 2 in the arena is not a multiple of 4"},
      {"inputs[0]: data is NULL"},
      {"inputs[0]: unknown dtype 42"},
      {"inputs[0]: shape: 9 dims exceed the limit of 8"},
      {"inputs[0]: shape: tensor size overflows 2^53-1 bytes"},
  };
  sly_tensor bad[] = {
      {SLY_FLOAT32, 1, {4}, on_stack},
      {SLY_FLOAT32, 1, {2}, base + 4092}, /* one element past the end */
      {SLY_FLOAT32, 1, {1}, base + 2},
      {SLY_FLOAT32, 1, {1}, NULL},
      {(sly_dtype)42, 1, {1}, base},
      {SLY_UINT8, 9, {1, 1, 1, 1, 1, 1, 1, 1}, base},
      {SLY_FLOAT64, 2, {1ull << 30, 1ull << 30}, base},
  };
  sly_result *r = (sly_result *)0x1;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    /* The bad tensor second: its index is named. */
    sly_tensor in[2] = {{SLY_UINT8, 1, {4}, base}, bad[i]};
    cr_assert(
        eq(int, sly_forward(c, "enc", &in[1], 1, &r, &err), SLY_E_INVALID_ARG),
        "case %zu", i);
    cr_assert(strncmp(err.message, why[i].why, strlen(why[i].why)) == 0,
              "case %zu: %s", i, err.message);
    cr_assert(
        eq(int, sly_forward(c, "enc", in, 2, &r, &err), SLY_E_INVALID_ARG));
    cr_assert(strncmp(err.message, "inputs[1]", 9) == 0, "%s", err.message);
  }
  sly_tensor ok = {SLY_UINT8, 1, {4}, base};
  sly_tensor many[SLY_MAX_TENSORS + 1];
  for (size_t i = 0; i < SLY_MAX_TENSORS + 1; i++)
    many[i] = ok;
  cr_assert(eq(int, sly_forward(c, "enc", many, SLY_MAX_TENSORS + 1, &r, &err),
               SLY_E_INVALID_ARG));
  cr_assert(
      eq(int, sly_forward(c, "enc", NULL, 1, &r, &err), SLY_E_INVALID_ARG));
  cr_assert(
      eq(int, sly_forward(c, "enc", &ok, 1, NULL, &err), SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_forward_pipeline(c, NULL, &ok, 1, &r, &err),
               SLY_E_INVALID_ARG));
  sly_forward_opts both = {.slice = "a", .pipeline = "b"};
  cr_assert(
      eq(int, sly_forward_ex(c, &both, &ok, 1, &r, &err), SLY_E_INVALID_ARG));
  sly_forward_opts out = {.out = on_stack, .out_bytes = sizeof(on_stack)};
  cr_assert(
      eq(int, sly_forward_ex(c, &out, &ok, 1, &r, &err), SLY_E_INVALID_ARG));
  cr_assert(strstr(err.message, "out: its 16 bytes") != NULL, "%s",
            err.message);
  out = (sly_forward_opts){.out = base + 4000, .out_bytes = 97};
  cr_assert(
      eq(int, sly_forward_ex(c, &out, &ok, 1, &r, &err), SLY_E_INVALID_ARG));
  cr_assert(eq(ptr, r, (sly_result *)0x1), "output written on failure");
  cr_assert(
      eq(int, sly_forward(NULL, "enc", &ok, 1, &r, &err), SLY_E_INVALID_ARG));

  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

/* ---- the fds of a forward sent as JSON ---- */

static void script_json_forward(fake *f) {
  long long id = fake_expect(f, "forward");
  FCHECK(f, id >= 0, "no forward");
  fake_region *r = fake_server_region(f, 4096);
  FCHECK(f, r != NULL, "no server region");
  fake_reply_fds(f, &r->fd, 1,
                 "{\"id\":%lld,\"ok\":true,\"lease\":1,\"outputs\":[{\"dtype\""
                 ":\"int8\",\"shape\":[1],\"region\":1,\"offset\":0}]," TIMING
                 "}",
                 id);
  close(r->fd);
  r->fd = -1;
  fake_expect_eof(f);
}

Test(client_regions, a_forward_sent_as_json_maps_its_region_until_close,
     .timeout = 20) {
  fake *f = fake_start(script_json_forward, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  char *reply = NULL;
  cr_assert(eq(int,
               sly_request_json(c, "{\"op\":\"forward\",\"inputs\":[]}", &reply,
                                &err),
               0),
            "%s", err.message);
  cr_assert(strstr(reply, "\"lease\":1") != NULL, "%s", reply);
  free(reply);
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 1));
  sly_close(c);
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 0));
  fake_finish(f);
  cr_assert(eq(int, fake_count_fds("memfd:fake-out"), 0));
}
