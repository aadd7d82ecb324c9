/* errors.c — the error table of protocol v1 (proto/).
 *
 * Everything here is generated from SLY_CODE_MAP (client/slyce.h), so a code
 * added there gets its wire name and message in one place.
 */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

int proto_fail(proto_error *err, int code, const char *fmt, ...) {
  if (err == NULL)
    return code;
  err->code = code;
  err->has_needed = false;
  err->needed = 0;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
  va_end(ap);
  if (n < 0)
    err->message[0] = '\0';
  else if ((size_t)n >= sizeof(err->message))
    /* A cut message must still be valid UTF-8: it goes into a JSON reply. */
    proto__utf8_trim(err->message);
  if (err->message[0] == '\0')
    snprintf(err->message, sizeof(err->message), "%s", sly_code_message(code));
  return code;
}

const char *proto_code_wire_name(int code) {
  switch (code) {
#define PROTO__WIRE_NAME(name, value, msg)                                     \
  case value:                                                                  \
    return #name;
    SLY_WIRE_CODE_MAP(PROTO__WIRE_NAME)
#undef PROTO__WIRE_NAME
  default:
    return NULL;
  }
}

int proto_code_from_wire_name(const char *name) {
  if (name == NULL)
    return 0;
#define PROTO__FROM_WIRE(cname, value, msg)                                    \
  if (strcmp(name, #cname) == 0)                                               \
    return value;
  SLY_WIRE_CODE_MAP(PROTO__FROM_WIRE)
#undef PROTO__FROM_WIRE
  return 0;
}

const char *sly_code_name(int code) {
  switch (code) {
  case SLY_OK:
    return "OK";
#define PROTO__CODE_NAME(name, value, msg)                                     \
  case value:                                                                  \
    return #name;
    SLY_CODE_MAP(PROTO__CODE_NAME)
#undef PROTO__CODE_NAME
  default:
    return "UNKNOWN";
  }
}

const char *sly_code_message(int code) {
  switch (code) {
  case SLY_OK:
    return "success";
#define PROTO__CODE_MESSAGE(name, value, msg)                                  \
  case value:                                                                  \
    return msg;
    SLY_CODE_MAP(PROTO__CODE_MESSAGE)
#undef PROTO__CODE_MESSAGE
  default:
    return "unknown error";
  }
}
