/* slyctl_fmt.c — reply JSON and human formatting shared by slyctl's
 * commands. */
#include "slyctl_fmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sly__ctl_request(sly_conn *c, const char *op, cJSON **out,
                     sly_error *err) {
  char req[128];
  snprintf(req, sizeof(req), "{\"op\":\"%s\"}", op);
  char *text = NULL;
  int rc = sly_request_json(c, req, &text, err);
  if (rc < 0) {
    free(text);
    return rc;
  }
  cJSON *r = cJSON_Parse(text);
  free(text);
  if (r == NULL) {
    snprintf(err->message, sizeof(err->message), "out of memory");
    return err->code = SLY_E_NO_MEMORY;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(r, "id");
  cJSON_DeleteItemFromObjectCaseSensitive(r, "ok");
  *out = r;
  return 0;
}

void sly__ctl_print_json(const cJSON *j) {
  char *s = cJSON_Print(j);
  if (s != NULL)
    printf("%s\n", s);
  free(s);
}

/* The number at a dotted path ("requests.latency_us.p50"), or NAN. */
double sly__ctl_jnum(const cJSON *j, const char *path) {
  char key[64];
  while (j != NULL && *path != '\0') {
    size_t n = strcspn(path, ".");
    if (n >= sizeof(key))
      return NAN;
    memcpy(key, path, n);
    key[n] = '\0';
    j = cJSON_GetObjectItemCaseSensitive(j, key);
    path += n + (path[n] == '.');
  }
  return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

const char *sly__ctl_fmt_bytes(double b, char *buf, size_t size) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (isnan(b))
    return "-";
  size_t u = 0;
  while (b >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
    b /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, size, "%.0f B", b);
  else
    snprintf(buf, size, "%.1f %s", b, units[u]);
  return buf;
}

const char *sly__ctl_fmt_duration(double s, char *buf, size_t size) {
  if (isnan(s))
    return "-";
  if (s < 60) {
    snprintf(buf, size, "%.1fs", s);
    return buf;
  }
  unsigned long long t = (unsigned long long)s;
  unsigned long long d = t / 86400, h = t / 3600 % 24, m = t / 60 % 60,
                     sec = t % 60;
  if (d > 0)
    snprintf(buf, size, "%llud %lluh %02llum", d, h, m);
  else if (h > 0)
    snprintf(buf, size, "%lluh %02llum %02llus", h, m, sec);
  else
    snprintf(buf, size, "%llum %02llus", m, sec);
  return buf;
}

const char *sly__ctl_fmt_us(double us, char *buf, size_t size) {
  if (isnan(us))
    return "-";
  if (us < 1000)
    snprintf(buf, size, "%.0f us", us);
  else if (us < 1e6)
    snprintf(buf, size, "%.1f ms", us / 1e3);
  else
    snprintf(buf, size, "%.2f s", us / 1e6);
  return buf;
}

const char *sly__ctl_fmt_count(double v, char *buf, size_t size) {
  if (isnan(v))
    return "-";
  snprintf(buf, size, "%.0f", v);
  return buf;
}

#define LIST_COLS 8

int sly__ctl_print_slices(const sly_slice_list *l, sly_error *err) {
  if (l->count == 0) {
    printf("no slices\n");
    return 0;
  }
  static const char *head[LIST_COLS] = {"NAME",  "CONSTRUCTOR", "TIER",
                                        "STATE", "BYTES",       "PINNED",
                                        "HITS",  "LOADS"};
  /* Cells are formatted once to size the columns, then printed. */
  char(*cells)[LIST_COLS][136] = calloc(l->count, sizeof(*cells));
  if (cells == NULL) {
    snprintf(err->message, sizeof(err->message), "out of memory");
    return err->code = SLY_E_NO_MEMORY;
  }
  size_t width[LIST_COLS];
  for (int k = 0; k < LIST_COLS; k++)
    width[k] = strlen(head[k]);
  for (size_t i = 0; i < l->count; i++) {
    const sly_slice_info *s = &l->slices[i];
    char *c[LIST_COLS];
    for (int k = 0; k < LIST_COLS; k++)
      c[k] = cells[i][k];
    snprintf(c[0], 136, "%s", s->name);
    snprintf(c[1], 136, "%s", s->constructor);
    snprintf(c[2], 136, "%s", s->tier);
    snprintf(c[3], 136, "%s", s->state);
    sly__ctl_fmt_bytes((double)s->bytes, c[4], 136);
    const char *pin = sly_list_pinned_tier(l, i);
    snprintf(c[5], 136, "%s", pin == NULL ? "no" : pin[0] ? pin : "yes");
    snprintf(c[6], 136, "%llu", (unsigned long long)s->hits);
    snprintf(c[7], 136, "%llu", (unsigned long long)s->loads);
    for (int k = 0; k < LIST_COLS; k++)
      if (strlen(c[k]) > width[k])
        width[k] = strlen(c[k]);
  }
  for (int k = 0; k < LIST_COLS; k++)
    printf("%-*s%s", k + 1 < LIST_COLS ? (int)width[k] : 0, head[k],
           k + 1 < LIST_COLS ? "  " : "\n");
  for (size_t i = 0; i < l->count; i++)
    for (int k = 0; k < LIST_COLS; k++)
      printf("%-*s%s", k + 1 < LIST_COLS ? (int)width[k] : 0, cells[i][k],
             k + 1 < LIST_COLS ? "  " : "\n");
  free(cells);
  return 0;
}
