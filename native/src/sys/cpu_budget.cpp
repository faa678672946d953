#include "sys/cpu_budget.h"

#include "sys/cgroup.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

namespace edgellm {

// CPUs allowed by a quota of `quota` microseconds per `period`: whole CPUs only, since a
// thread that runs past the quota stalls the whole group until the next period.
static int cpus_for_quota(double quota, double period) {
  if (quota <= 0 || period <= 0) return INT_MAX;
  return std::max(1, (int)(quota / period));
}

// cgroup v2: "max 100000" (unlimited) or "200000 100000" (2 CPUs), at every level up to the root.
static int cgroup_v2_limit(const std::string& rel) {
  int limit = INT_MAX;
  for (const std::string& path : cgroup_ancestry(rel)) {
    std::ifstream in("/sys/fs/cgroup" + (path == "/" ? std::string() : path) + "/cpu.max");
    std::string quota;
    double period = 0;
    if (in >> quota >> period && quota != "max") limit = std::min(limit, cpus_for_quota(std::stod(quota), period));
  }
  return limit;
}

// cgroup v1: cpu.cfs_quota_us is -1 when unlimited.
static int cgroup_v1_limit(const std::string& rel) {
  for (const char* mount : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
    for (const std::string& p : {std::string(mount) + rel, std::string(mount)}) {
      std::ifstream q(p + "/cpu.cfs_quota_us"), per(p + "/cpu.cfs_period_us");
      double quota = 0, period = 0;
      if (q >> quota && per >> period) return quota < 0 ? INT_MAX : cpus_for_quota(quota, period);
    }
  }
  return INT_MAX;
}

static int cgroup_cpu_limit() {
  int limit = INT_MAX;
  for (const CgroupMembership& m : own_cgroups()) {
    if (m.v2) limit = std::min(limit, cgroup_v2_limit(m.path));
    else if (m.has("cpu")) limit = std::min(limit, cgroup_v1_limit(m.path));
  }
  return limit;
}

int usable_cpu_count() {
  unsigned hw = std::thread::hardware_concurrency();
  int n = hw ? (int)hw : 1;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) n = std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1, std::min(n, cgroup_cpu_limit()));
}

}  // namespace edgellm
