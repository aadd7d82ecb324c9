/* slyctl_fmt.h — reply JSON and human formatting for slyctl (client/,
 * internal to slyctl: these are not part of libslyce).
 *
 * The formatters write into the caller's buffer and return it, or return
 * "-" for NAN (a figure the reply did not have).
 */
#ifndef CLIENT_SLYCTL_FMT_H
#define CLIENT_SLYCTL_FMT_H

#include <stddef.h>

#include <cJSON.h>

#include "slyce.h"

/* Sends {"op": op} and returns the parsed reply without "id" and "ok". The
 * caller frees *out with cJSON_Delete(). 0 or a negative sly_code. */
int sly__ctl_request(sly_conn *c, const char *op, cJSON **out,
                     sly_error *err);
void sly__ctl_print_json(const cJSON *j);
/* The number at a dotted path ("requests.latency_us.p50"), or NAN. */
double sly__ctl_jnum(const cJSON *j, const char *path);

const char *sly__ctl_fmt_bytes(double b, char *buf, size_t size);
const char *sly__ctl_fmt_duration(double s, char *buf, size_t size);
const char *sly__ctl_fmt_us(double us, char *buf, size_t size);
const char *sly__ctl_fmt_count(double v, char *buf, size_t size);

/* The table `slyctl list` prints: one row a slice. 0, or SLY_E_NO_MEMORY. */
int sly__ctl_print_slices(const sly_slice_list *l, sly_error *err);

#endif
