// How many CPUs this process may actually use, as opposed to how many the machine has.
// A systemd service with CPUQuota=, a container with --cpus, or a taskset/cpuset limits the
// process to fewer CPUs than /proc/cpuinfo lists; planning threads for the full machine then
// oversubscribes and the quota throttles every thread for the rest of its period.
#pragma once

namespace edgellm {

// min(CPUs in the sched_getaffinity mask, floor(cgroup CPU quota)), at least 1.
// Reads the cgroup v2 cpu.max (the process's cgroup and its ancestors) or the v1
// cpu.cfs_quota_us / cpu.cfs_period_us; a missing or unlimited quota does not limit.
// Not cached: affinity can change at run time.
int usable_cpu_count();

}  // namespace edgellm
