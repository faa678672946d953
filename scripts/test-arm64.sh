#!/usr/bin/env bash
# ARM truth on an x86 machine: cross-compile the C++ kernel tests for aarch64 (static) and run
# them under qemu as a Cortex-A76 (Pi 5: NEON + dotprod) and a Cortex-A72 (Pi 4: NEON only).
# Needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test:arm64: missing ${missing[*]}; install with: apt-get install ${missing[*]}" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "test:arm64: SKIPPED (not under CI)" >&2
  exit 0
fi

build=build-arm64
cmake -S native -B "$build" -DCMAKE_TOOLCHAIN_FILE="$PWD/native/cmake/aarch64-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DEDGELLM_STATIC=ON -DEDGELLM_ADDON=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target edgellm_tests

status=0
for cpu in cortex-a76 cortex-a72; do
  echo "=== qemu-aarch64 -cpu $cpu"
  if ! qemu-aarch64 -cpu "$cpu" "$build/edgellm_tests" "$@"; then status=1; fi
done
exit $status
