#include "sys/cgroup.h"

#include <fstream>
#include <sstream>

namespace edgellm {

bool CgroupMembership::has(const char* controller) const {
  for (const std::string& c : controllers)
    if (c == controller) return true;
  return false;
}

std::vector<CgroupMembership> own_cgroups() {
  std::vector<CgroupMembership> out;
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    CgroupMembership m;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    m.path = line.substr(b + 1);
    m.v2 = line.compare(0, a, "0") == 0 && controllers.empty();
    std::stringstream ss(controllers);
    std::string c;
    while (std::getline(ss, c, ',')) m.controllers.push_back(c);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<std::string> cgroup_ancestry(const std::string& path) {
  std::vector<std::string> out;
  std::string p = path.empty() ? "/" : path;
  for (;;) {
    out.push_back(p);
    if (p == "/") break;
    const size_t slash = p.rfind('/');
    p = slash == std::string::npos || slash == 0 ? "/" : p.substr(0, slash);
  }
  return out;
}

}  // namespace edgellm
