/* sysmem.c — /proc readers for memory figures. */
#include "sysmem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int sysmem_rss(uint64_t *rss_bytes) {
  FILE *f = fopen("/proc/self/statm", "re");
  if (f == NULL)
    return -errno;
  unsigned long long size, resident;
  int n = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  if (n != 2)
    return -EIO;
  *rss_bytes = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
  return 0;
}

int sysmem_system(uint64_t *total_bytes, uint64_t *available_bytes) {
  FILE *f = fopen("/proc/meminfo", "re");
  if (f == NULL)
    return -errno;
  char line[256];
  unsigned long long total = 0, avail = 0;
  int found = 0;
  while (fgets(line, sizeof(line), f) != NULL && found != 3) {
    unsigned long long kb;
    if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
      total = kb;
      found |= 1;
    } else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
      avail = kb;
      found |= 2;
    }
  }
  fclose(f);
  if (found != 3)
    return -EIO;
  *total_bytes = (uint64_t)total * 1024;
  *available_bytes = (uint64_t)avail * 1024;
  return 0;
}
