// This process's place in the cgroup hierarchies, read from /proc/self/cgroup: what the budgets
// that read a controller's limits (cpu_budget, memory_budget) start from.
#pragma once
#include <string>
#include <vector>

namespace edgellm {

// One line of /proc/self/cgroup, "hierarchy-id:controllers:path".
struct CgroupMembership {
  bool v2 = false;                       // "0::path": the unified hierarchy
  std::vector<std::string> controllers;  // v1: the controllers of that hierarchy ("cpu", "memory", ...)
  std::string path;                      // relative to the hierarchy's mount, "/" at its root
  bool has(const char* controller) const;
};

std::vector<CgroupMembership> own_cgroups();

// `path` and each of its ancestors, the root ("/") last: a limit at any level applies.
std::vector<std::string> cgroup_ancestry(const std::string& path);

}  // namespace edgellm
