/* tiers_stats.c — the tiers' part of the stats reply, from atomics and
 * libtorch's (thread-safe) allocator figures only: the loop thread calls it
 * while the executor and the mover work. */
#include <stdlib.h>

#include "hostmem.h"
#include "tiers_internal.h"
#include "torch_shim.h"

static double gbps(uint64_t bytes, uint64_t ns) {
  return ns == 0 ? 0.0 : (double)bytes / (double)ns;
}

static void add_path(cJSON *o, const char *name, tier_path_stats *p) {
  cJSON *j = cJSON_AddObjectToObject(o, name);
  uint64_t b = atomic_load(&p->bytes), ns = atomic_load(&p->ns);
  cJSON_AddNumberToObject(j, "bytes", (double)b);
  cJSON_AddNumberToObject(j, "seconds", (double)ns / 1e9);
  cJSON_AddNumberToObject(j, "gbps", gbps(b, ns));
}

void tiers_stats_json(tiers *t, cJSON *reply) {
  cJSON *mem = cJSON_AddObjectToObject(reply, "memory");
  cJSON *gpu = cJSON_AddObjectToObject(mem, "gpu");
  if (t->dev != NULL) {
    device_stats ds;
    device_get_stats(t->dev, &ds);
    cJSON_AddNumberToObject(gpu, "used", (double)atomic_load(&t->gpu_used));
    cJSON_AddNumberToObject(gpu, "budget", (double)tiers__gpu_budget(t));
    cJSON_AddNumberToObject(gpu, "high_water", (double)ds.high_water);
    cJSON_AddNumberToObject(gpu, "device_free", (double)ds.free_bytes);
    cJSON_AddNumberToObject(gpu, "device_total", (double)ds.total_bytes);
    cJSON_AddNumberToObject(gpu, "blocks_reused",
                            (double)atomic_load(&t->blocks_reused));
    /* libtorch's own pool (activations), next to our weights' bytes. */
    shim_allocator_stats as;
    const char *name = t->conf.device;
    if (!device_is_sim(t->dev) &&
        shim_cuda_allocator_stats(atoi(name + 5), &as) == 0) {
      cJSON *ta = cJSON_AddObjectToObject(gpu, "torch_allocator");
      cJSON_AddNumberToObject(ta, "allocated", (double)as.allocated);
      cJSON_AddNumberToObject(ta, "peak_allocated", (double)as.peak_allocated);
      cJSON_AddNumberToObject(ta, "reserved", (double)as.reserved);
    }
  } else {
    cJSON_AddNumberToObject(gpu, "used", 0);
    cJSON_AddNumberToObject(gpu, "budget", 0);
  }
  cJSON *cpu = cJSON_AddObjectToObject(mem, "cpu");
  cJSON_AddNumberToObject(cpu, "used", (double)atomic_load(&t->cpu_used));
  cJSON_AddNumberToObject(
      cpu, "budget", t->conf.max_cpu_mem_mb ? (double)tiers__cpu_budget(t) : 0.0);
  cJSON_AddNumberToObject(cpu, "pinned", (double)atomic_load(&t->cpu_pinned));
  cJSON_AddNumberToObject(cpu, "blocks_reused",
                          (double)atomic_load(&t->host_blocks_reused));
  /* Shared-memory regions registered with CUDA (max_registered_mb). */
  cJSON_AddNumberToObject(cpu, "registered_regions",
                          (double)hostmem_registered_bytes());
  cJSON *disk = cJSON_AddObjectToObject(mem, "disk");
  cJSON_AddNumberToObject(disk, "written", (double)atomic_load(&t->disk_used));
  cJSON *tr = cJSON_AddObjectToObject(reply, "transfers");
  add_path(tr, "disk_to_cpu", &t->disk_to_cpu);
  add_path(tr, "cpu_to_gpu", &t->cpu_to_gpu);
  /* Reads whose copy on to the GPU overlapped them (also in disk_to_cpu). */
  add_path(tr, "disk_to_gpu", &t->disk_to_gpu);
  add_path(tr, "build", &t->build);
  cJSON_AddNumberToObject(reply, "hits", (double)atomic_load(&t->hits));
  cJSON_AddNumberToObject(reply, "misses", (double)atomic_load(&t->misses));
  cJSON *ev = cJSON_AddObjectToObject(reply, "evictions");
  for (int i = 0; i < 4; i++)
    cJSON_AddNumberToObject(ev, tiers__why_name(i),
                            (double)atomic_load(&t->evictions[i]));
  cJSON *pf = cJSON_AddObjectToObject(reply, "prefetch");
  cJSON_AddNumberToObject(pf, "depth", (double)t->conf.prefetch_depth);
  cJSON_AddNumberToObject(pf, "done", (double)atomic_load(&t->prefetches));
  cJSON_AddNumberToObject(pf, "pending",
                          (double)atomic_load(&t->prefetch_pending));
  cJSON_AddNumberToObject(pf, "hits", (double)atomic_load(&t->prefetch_hits));
  cJSON_AddNumberToObject(pf, "wasted_bytes",
                          (double)atomic_load(&t->prefetch_wasted_bytes));
}
