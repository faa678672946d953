// How much memory this process can count on holding, as opposed to how much the machine has: a
// systemd MemoryMax=, a container's --memory or a cgroup's memory.limit_in_bytes caps the page
// cache and the anonymous memory of the processes inside it together, whatever MemAvailable says.
#pragma once
#include <cstdint>

namespace edgellm {

// min(MemAvailable from /proc/meminfo, the memory limit of this process's cgroup and of each of
// its ancestors: v2 memory.max, v1 memory.limit_in_bytes). UINT64_MAX when none is known (not
// Linux). Not cached: another program's memory and the limits change at run time.
uint64_t memory_budget_bytes();

}  // namespace edgellm
