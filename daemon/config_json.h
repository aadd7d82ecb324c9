/* config_json.h — JSON checking helpers private to the config loader.
 *
 * Owns: the error message format ("FILE: KEY.PATH: what is wrong"), typed
 * getters that name the expected type, unknown- and duplicate-key checks,
 * resolving relative paths against the config file's folder, and reading
 * the file. Only config.c calls these (hence the config__ prefix); nothing
 * here logs.
 */
#ifndef DAEMON_CONFIG_JSON_H
#define DAEMON_CONFIG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "config.h"

/* Key paths ("slices[12].config.hidden_features[3]") are cut at this
 * length; messages are cut at CONFIG_ERROR_MAX anyway. */
#define CONFIG__PATH_MAX 256

typedef struct {
  const char *file; /* as the caller named it, for messages */
  char *err;        /* CONFIG_ERROR_MAX bytes */
} config__ctx;

/* Formats "FILE: PATH: message" (or "FILE: message" when path is NULL or
 * empty) into ctx->err and returns -1, so callers can `return config__fail`. */
int config__fail(config__ctx *ctx, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "a string", "an integer", ... for "expected X, got Y" messages. */
const char *config__type_name(const cJSON *item);

/* Writes s into out (size n) quoted, escaping quotes, backslashes, control
 * and non-ASCII bytes, and cutting long strings, so a value can be shown in
 * a message without breaking its one line. Returns out. */
char *config__quote(char *out, size_t n, const char *s);

/* Appends ".key" (or "key" when prefix is empty) / "[i]" to a key path. */
void config__path_key(char out[CONFIG__PATH_MAX], const char *prefix,
                      const char *key);
void config__path_index(char out[CONFIG__PATH_MAX], const char *prefix,
                        size_t i);

/* Typed getters: on a wrong type or range they fail with a message naming
 * the expected type or range and leave *out untouched. */
int config__get_string(config__ctx *ctx, const cJSON *item, const char *path,
                       const char **out);
int config__get_bool(config__ctx *ctx, const cJSON *item, const char *path,
                     bool *out);
/* An integral JSON number in lo..hi (1.5, 1e400 and -1 are rejected). */
int config__get_uint(config__ctx *ctx, const cJSON *item, const char *path,
                     uint64_t lo, uint64_t hi, uint64_t *out);
/* A finite number with lo < value <= hi. */
int config__get_number(config__ctx *ctx, const cJSON *item, const char *path,
                       double lo_exclusive, double hi, double *out);
/* Requires an object (when `path` names it) whose keys are all in the
 * NULL-terminated `allowed` list. */
int config__check_object(config__ctx *ctx, const cJSON *item, const char *path,
                         const char *const *allowed);

/* Fails on the first object, anywhere under root, that holds one key twice:
 * cJSON keeps both and would silently use the first. */
int config__check_duplicates(config__ctx *ctx, const cJSON *root);

/* Fails unless text is valid UTF-8 without NUL bytes; the message gives the
 * byte offset. */
int config__check_text(config__ctx *ctx, const char *text, size_t len);

/* Resolves `value` against the absolute folder `dir`: absolute values are
 * kept, leading "./" and "../" are folded into dir (which has no symlinks,
 * being a realpath), the rest is appended. The caller frees *out. */
int config__resolve_path(config__ctx *ctx, const char *dir, const char *value,
                         const char *path, char **out);

/* Sets c->path and c->config_dir (the folder through realpath, so relative
 * paths in the file do not depend on the daemon's working directory). */
int config__locate(config__ctx *ctx, config *c, const char *path);

/* 1-based line and column of byte `pos` of text, for JSON syntax errors. */
void config__line_col(const char *text, size_t pos, size_t *line,
                      size_t *col);

/* Reads a regular file of at most `max` bytes; the caller frees *text. */
int config__read_file(config__ctx *ctx, const char *path, size_t max,
                      char **text, size_t *len);

#endif
