/* errors.h — the protocol's error values (proto/).
 *
 * Owns: proto_error, the value every proto/ and daemon/ function fills when a
 * request fails, and the mapping between sly_code and wire names. The list of
 * codes itself is SLY_CODE_MAP in client/slyce.h, so the enum, the wire name
 * and the message come from one table. No I/O, no logging.
 */
#ifndef PROTO_ERRORS_H
#define PROTO_ERRORS_H

#include <stdbool.h>
#include <stdint.h>

#include "slyce.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PROTO_MESSAGE_MAX 256

typedef struct {
  int code;                        /* a negative sly_code */
  char message[PROTO_MESSAGE_MAX]; /* what and why, one line */
  bool has_needed;
  uint64_t needed; /* bytes; NO_MEMORY and a too-small out */
} proto_error;

/* Fills `err` (printf-style message) and returns `code`, so callers can write
 * `return proto_fail(err, SLY_E_BAD_REQUEST, "...", ...);`. err may be NULL. */
int proto_fail(proto_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The wire name ("NOT_FOUND") of a wire code; NULL for client-only codes. */
const char *proto_code_wire_name(int code);
/* The code of a wire name, or 0 when the name is unknown. */
int proto_code_from_wire_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
