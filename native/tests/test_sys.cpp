// The budgets read from this process's cgroups: the ancestry every limit is read along, and a
// memory budget never above what /proc/meminfo says is available.
#include <fstream>
#include <string>
#include <vector>

#include "sys/cgroup.h"
#include "sys/memory_budget.h"
#include "test.h"

using namespace edgellm;

TEST(sys, cgroup_ancestry_runs_from_the_cgroup_to_the_root) {
  CHECK(cgroup_ancestry("/a/b/c") == (std::vector<std::string>{"/a/b/c", "/a/b", "/a", "/"}));
  CHECK(cgroup_ancestry("/") == (std::vector<std::string>{"/"}));
  CHECK(cgroup_ancestry("") == (std::vector<std::string>{"/"}));
}

TEST(sys, own_cgroups_lists_this_process_in_every_hierarchy) {
  std::ifstream in("/proc/self/cgroup");
  if (!in) return;  // not Linux
  int lines = 0;
  for (std::string l; std::getline(in, l);) lines += l.empty() ? 0 : 1;
  const std::vector<CgroupMembership> own = own_cgroups();
  CHECK_EQ((int)own.size(), lines);
  for (const CgroupMembership& m : own) CHECK(!m.path.empty() && m.path[0] == '/');
}

TEST(sys, memory_budget_is_at_most_mem_available) {
  std::ifstream in("/proc/meminfo");
  if (!in) return;  // not Linux
  std::string key, unit;
  unsigned long long kb = 0, available = 0;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") available = kb * 1024;
  const uint64_t budget = memory_budget_bytes();
  CHECK(budget > 0);
  // MemAvailable moves while other programs run: allow 64 MiB of drift between the two reads.
  CHECK(budget <= available + (64ull << 20));
}
