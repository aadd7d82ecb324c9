/* json.h — strict JSON reading shared by request.c and reply.c (proto/,
 * internal: only the .c files of proto/ include it).
 *
 * Owns: the checks cJSON does not make (UTF-8, NUL, control characters,
 * trailing bytes, duplicate keys, exact integers) and the quoting of client
 * text into error messages. No I/O, no logging.
 */
#ifndef PROTO_JSON_H
#define PROTO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "errors.h"

/* Room for a field path such as "inputs[15].shape[7]" with a long key. */
#define PROTO__PATH_MAX 160
/* Client text quoted in a message is cut to this many bytes. */
#define PROTO__QUOTE_MAX 48

/* Parses `len` bytes as exactly one JSON object in valid UTF-8 with no NUL
 * byte, no "\u0000" escape, no control character and nothing but whitespace
 * after it. On success the caller owns *out (cJSON_Delete); on failure *out
 * is untouched and the return value is `code` (BAD_FRAME for requests,
 * PROTOCOL for replies) or SLY_E_NO_MEMORY. Duplicate keys are not checked
 * here (see proto__json_check_dups) so that the caller can first read the id. */
int proto__json_parse(const char *body, size_t len, int code, cJSON **out,
                      proto_error *err);

/* Fails with `code` naming the path of the first duplicate key found in any
 * object under `item` ("inputs[0].dtype: duplicate key"), or with
 * SLY_E_NO_MEMORY. Returns 0 when every object has distinct keys. */
int proto__json_check_dups(const cJSON *item, int code, proto_error *err);

/* True when `item` is a number that is integral and in 0..2^53-1; sets *out. */
bool proto__json_u53(const cJSON *item, uint64_t *out);

/* Copies `s` into `out` for a message: at most PROTO__QUOTE_MAX bytes, cut on
 * a character boundary and marked "...", control characters as '?'. */
void proto__quote(const char *s, char *out, size_t out_size);

/* Replaces every byte of `s` that breaks UTF-8 with '?', in place. */
void proto__utf8_repair(char *s);

/* Cuts an incomplete UTF-8 sequence off the end of `s`. */
void proto__utf8_trim(char *s);

#endif
