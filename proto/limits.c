/* limits.c — defaults of the configurable limits (proto/). */
#include "limits.h"

void proto_limits_default(proto_limits *l) {
#define PROTO__LIMIT_DEFAULT(key, def, lo, hi) l->key = (uint64_t)(def);
  PROTO_LIMIT_MAP(PROTO__LIMIT_DEFAULT)
#undef PROTO__LIMIT_DEFAULT
}
