/* sysmem.h — process and system memory figures for stats (daemon/).
 *
 * Reads /proc; no state. Each function returns 0 or -errno and leaves its
 * outputs untouched on failure.
 */
#ifndef DAEMON_SYSMEM_H
#define DAEMON_SYSMEM_H

#include <stdint.h>

/* Resident set size of this process, in bytes (/proc/self/statm). */
int sysmem_rss(uint64_t *rss_bytes);
/* MemTotal and MemAvailable of the system, in bytes (/proc/meminfo). */
int sysmem_system(uint64_t *total_bytes, uint64_t *available_bytes);

#endif
