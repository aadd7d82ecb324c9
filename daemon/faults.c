/* faults.c — the armed faults: a count and an errno per point. */
#include "faults.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAULT_ALWAYS (-1)

typedef struct {
  atomic_int left; /* fires while > 0 (counting down), always when ALWAYS */
  atomic_int skip; /* device_lost: hits to let through first */
  int err;
} fault;

static fault faults__table[FAULT_N];
static atomic_bool faults__any;

static const char *const faults__names[FAULT_N] = {
    "disk_write", "disk_read", "device_alloc", "device_lost", "forward_oom"};

static int faults__errno(const char *s) {
  static const struct {
    const char *name;
    int err;
  } known[] = {{"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EDQUOT", EDQUOT},
               {"EROFS", EROFS},   {"ENOMEM", ENOMEM}};
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
    if (strcmp(s, known[i].name) == 0)
      return known[i].err;
  return 0;
}

/* A count: digits (1..1000000), or "*" when `star` is allowed. */
static int faults__count(const char *s, bool star) {
  if (star && strcmp(s, "*") == 0)
    return FAULT_ALWAYS;
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 1 || v > 1000000)
    return 0;
  return (int)v;
}

static int faults__item(char *item, fault *tab, char err[256]) {
  char *eq = strchr(item, '=');
  if (eq == NULL) {
    snprintf(err, 256, "SLYCED_FAULTS: '%.64s' has no '='", item);
    return -1;
  }
  *eq = '\0';
  char *val = eq + 1;
  int skip = 0;
  char *at = strchr(val, '@');
  if (at != NULL) {
    *at = '\0';
    skip = strcmp(at + 1, "0") == 0 ? 0 : faults__count(at + 1, false);
    if (skip == 0 && strcmp(at + 1, "0") != 0) {
      snprintf(err, 256, "SLYCED_FAULTS: %s: '@%.32s' wants a count", item,
               at + 1);
      return -1;
    }
  }
  int p = -1;
  for (int i = 0; i < FAULT_N; i++)
    if (strcmp(item, faults__names[i]) == 0)
      p = i;
  if (p < 0) {
    snprintf(err, 256, "SLYCED_FAULTS: unknown point '%.64s'", item);
    return -1;
  }
  fault *f = &tab[p];
  if (p == FAULT_DISK_WRITE || p == FAULT_DISK_READ) {
    char name[16] = "";
    const char *colon = strchr(val, ':');
    size_t n = colon ? (size_t)(colon - val) : strlen(val);
    if (n < sizeof(name))
      memcpy(name, val, n), name[n] = '\0';
    f->err = faults__errno(name);
    int count = colon ? faults__count(colon + 1, true) : 1;
    if (f->err == 0 || count == 0) {
      snprintf(err, 256, "SLYCED_FAULTS: %s=%.64s: want ERR[:N|*] with ERR "
               "one of ENOSPC, EIO, EDQUOT, EROFS, ENOMEM", item, val);
      return -1;
    }
    atomic_store(&f->left, count);
    atomic_store(&f->skip, skip);
    return 0;
  }
  if (p == FAULT_DEVICE_LOST && at != NULL) {
    snprintf(err, 256, "SLYCED_FAULTS: device_lost=N takes no '@'");
    return -1;
  }
  int count = faults__count(val, false);
  if (count == 0) {
    snprintf(err, 256, "SLYCED_FAULTS: %s=%.64s: want a count 1..1000000",
             item, val);
    return -1;
  }
  if (p == FAULT_DEVICE_LOST) {
    atomic_store(&f->skip, count - 1);
    atomic_store(&f->left, FAULT_ALWAYS);
  } else {
    atomic_store(&f->left, count);
    atomic_store(&f->skip, skip);
  }
  f->err = 1;
  return 0;
}

int faults_init(const char *spec, char err[256]) {
  fault tab[FAULT_N];
  memset(tab, 0, sizeof(tab));
  if (spec == NULL || spec[0] == '\0')
    return 0;
  char *copy = strdup(spec);
  if (copy == NULL) {
    snprintf(err, 256, "SLYCED_FAULTS: out of memory");
    return -1;
  }
  char *save = NULL;
  for (char *item = strtok_r(copy, ",", &save); item != NULL;
       item = strtok_r(NULL, ",", &save)) {
    if (faults__item(item, tab, err) < 0) {
      free(copy);
      return -1;
    }
  }
  free(copy);
  for (int i = 0; i < FAULT_N; i++) {
    faults__table[i].err = tab[i].err;
    atomic_store(&faults__table[i].skip, atomic_load(&tab[i].skip));
    atomic_store(&faults__table[i].left, atomic_load(&tab[i].left));
  }
  atomic_store(&faults__any, true);
  return 0;
}

bool faults_armed(void) { return atomic_load(&faults__any); }

int faults_take(fault_point p) {
  if (!atomic_load_explicit(&faults__any, memory_order_relaxed))
    return 0;
  fault *f = &faults__table[p];
  int left = atomic_load(&f->left);
  if (left == 0)
    return 0;
  int skip = atomic_load(&f->skip);
  while (skip > 0)
    if (atomic_compare_exchange_weak(&f->skip, &skip, skip - 1))
      return 0;
  if (left == FAULT_ALWAYS)
    return f->err;
  while (left > 0)
    if (atomic_compare_exchange_weak(&f->left, &left, left - 1))
      return f->err;
  return 0;
}
