/* json_print.c — printing cJSON trees into frames (proto/).
 *
 * cJSON's own printer writes a number with 15 significant digits and keeps
 * that when it compares equal within a relative epsilon, so an id of
 * 9007199254740991 goes out as 9.00719925474099e+15. Ids and byte counts
 * must cross exactly, so replies and requests are printed here instead:
 * integral numbers as integers, others in the shortest form that reads back
 * to the same double. The frame header is reserved up front, so the body is
 * never copied, and printing stops as soon as the body passes the limit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "json.h"
#include "reply.h"

typedef struct {
  uint8_t *buf;
  size_t len, cap;
  size_t limit; /* header plus the body bytes allowed */
  int error;  /* 0, SLY_E_NO_MEMORY or SLY_E_BAD_FRAME */
} printer;

static bool reserve(printer *p, size_t n) {
  if (p->error)
    return false;
  if (n > p->limit - p->len) {
    p->error = SLY_E_BAD_FRAME;
    return false;
  }
  if (p->len + n <= p->cap)
    return true;
  size_t cap = p->cap ? p->cap : 256;
  while (cap < p->len + n)
    cap *= 2;
  uint8_t *b = realloc(p->buf, cap);
  if (b == NULL) {
    p->error = SLY_E_NO_MEMORY;
    return false;
  }
  p->buf = b;
  p->cap = cap;
  return true;
}

static void put(printer *p, const char *s, size_t n) {
  if (reserve(p, n)) {
    memcpy(p->buf + p->len, s, n);
    p->len += n;
  }
}

static void puts_(printer *p, const char *s) { put(p, s, strlen(s)); }

static void put_string(printer *p, const char *s) {
  put(p, "\"", 1);
  const char *run = s;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    put(p, run, (size_t)(s - run));
    char esc[8];
    switch (c) {
    case '"': strcpy(esc, "\\\""); break;
    case '\\': strcpy(esc, "\\\\"); break;
    case '\n': strcpy(esc, "\\n"); break;
    case '\r': strcpy(esc, "\\r"); break;
    case '\t': strcpy(esc, "\\t"); break;
    case '\b': strcpy(esc, "\\b"); break;
    case '\f': strcpy(esc, "\\f"); break;
    default: snprintf(esc, sizeof(esc), "\\u%04x", c); break;
    }
    puts_(p, esc);
    run = s + 1;
  }
  put(p, run, (size_t)(s - run));
  put(p, "\"", 1);
}

static void put_number(printer *p, double d) {
  char num[32];
  if (!isfinite(d)) {
    puts_(p, "null"); /* JSON has no NaN or infinity; cJSON does the same */
    return;
  }
  /* 2^63 bounds what a long long holds; integral doubles below it print
   * exactly as integers. */
  if (d > -9223372036854775808.0 && d < 9223372036854775808.0 &&
      (double)(long long)d == d) {
    /* By hand: snprintf's cost showed in every request and reply. */
    long long v = (long long)d;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v
                                 : (unsigned long long)v;
    char *e = num + sizeof(num), *b = e;
    do {
      *--b = (char)('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (v < 0)
      *--b = '-';
    put(p, b, (size_t)(e - b));
    return;
  } else {
    for (int digits = 15; digits <= 17; digits++) {
      snprintf(num, sizeof(num), "%.*g", digits, d);
      if (strtod(num, NULL) == d)
        break;
    }
  }
  puts_(p, num);
}

static void put_item(printer *p, const cJSON *item) {
  switch (item->type & 0xff) {
  case cJSON_False:
    puts_(p, "false");
    return;
  case cJSON_True:
    puts_(p, "true");
    return;
  case cJSON_NULL:
    puts_(p, "null");
    return;
  case cJSON_Number:
    put_number(p, item->valuedouble);
    return;
  case cJSON_String:
    put_string(p, item->valuestring ? item->valuestring : "");
    return;
  case cJSON_Raw:
    puts_(p, item->valuestring ? item->valuestring : "null");
    return;
  case cJSON_Array:
  case cJSON_Object: {
    bool obj = (item->type & 0xff) == cJSON_Object;
    put(p, obj ? "{" : "[", 1);
    for (const cJSON *c = item->child; c != NULL && !p->error; c = c->next) {
      if (c != item->child)
        put(p, ",", 1);
      if (obj) {
        put_string(p, c->string ? c->string : "");
        put(p, ":", 1);
      }
      put_item(p, c);
    }
    put(p, obj ? "}" : "]", 1);
    return;
  }
  default:
    puts_(p, "null"); /* cJSON_Invalid: nothing a builder should leave */
    return;
  }
}

/* The caller frees *frame with free(). */
int proto_json_frame(const cJSON *obj, size_t max, uint8_t **frame,
                     size_t *len, proto_error *err) {
  if (max > UINT32_MAX)
    max = UINT32_MAX;
  printer p = {.limit = PROTO_HEADER_BYTES + max};
  if (reserve(&p, PROTO_HEADER_BYTES))
    p.len = PROTO_HEADER_BYTES;
  if (obj == NULL)
    puts_(&p, "null");
  else
    put_item(&p, obj);
  if (p.error) {
    free(p.buf);
    if (p.error == SLY_E_NO_MEMORY)
      return proto_fail(err, SLY_E_NO_MEMORY, "out of memory printing JSON");
    return proto_fail(err, SLY_E_BAD_FRAME,
                      "JSON body exceeds the limit of %zu bytes", max);
  }
  proto_frame_header_encode((uint32_t)(p.len - PROTO_HEADER_BYTES), p.buf);
  *frame = p.buf;
  *len = p.len;
  return 0;
}
