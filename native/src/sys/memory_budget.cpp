#include "sys/memory_budget.h"

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "sys/cgroup.h"

namespace edgellm {

namespace {

// A limit file's value: a byte count, or "max" / v1's page-rounded INT64_MAX for no limit.
uint64_t read_limit(const std::string& file) {
  std::ifstream in(file);
  std::string v;
  if (!(in >> v) || v == "max") return UINT64_MAX;
  try {
    const unsigned long long n = std::stoull(v);
    return n >= (1ull << 62) ? UINT64_MAX : (uint64_t)n;
  } catch (const std::exception&) {
    return UINT64_MAX;
  }
}

uint64_t mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  unsigned long long kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return (uint64_t)kb * 1024;
  return UINT64_MAX;
}

// The v2 mount is /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one
// (where the v1 memory controller does the limiting and v2 has no memory.max files).
uint64_t cgroup_memory_limit() {
  static const std::vector<std::string> v2_mounts = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
  static const std::vector<std::string> v1_mounts = {"/sys/fs/cgroup/memory"};
  uint64_t limit = UINT64_MAX;
  for (const CgroupMembership& m : own_cgroups()) {
    if (!m.v2 && !m.has("memory")) continue;
    const char* file = m.v2 ? "/memory.max" : "/memory.limit_in_bytes";
    for (const std::string& mount : m.v2 ? v2_mounts : v1_mounts)
      for (const std::string& dir : cgroup_ancestry(m.path))
        limit = std::min(limit, read_limit(mount + (dir == "/" ? "" : dir) + file));
  }
  return limit;
}

}  // namespace

uint64_t memory_budget_bytes() { return std::min(mem_available(), cgroup_memory_limit()); }

}  // namespace edgellm
