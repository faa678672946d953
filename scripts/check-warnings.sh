#!/usr/bin/env bash
# Zero compiler warnings, checked with the second compiler: clang (Debian's clang-19) builds the
# core, the addon, the C++ tests and the tools for x86-64, and the core and the tests for aarch64
# (the Pi), every warning an error. GCC's builds (npm install's addon, build-tests.sh, the arm64
# cross-build of test-arm64.sh) are checked the same way in CI, where .ci/run sets EDGELLM_WERROR=1.
# Run by `npm test`; needs clang-19 (.ci/run installs it): without it, a loud skip, or a failure
# under CI=true. Build trees: build-clang/x64, build-clang/arm64.
set -euo pipefail
cd "$(dirname "$0")/.."

cxx=${EDGELLM_CLANG:-clang++-19}
if ! command -v "$cxx" >/dev/null; then
  echo "check-warnings: $cxx not found; install it with: apt-get install clang-19" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "check-warnings: SKIPPED (not under CI)" >&2
  exit 0
fi

common=(-DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release -DEDGELLM_WERROR=ON -DEDGELLM_TESTS=ON)
# The addon's includes as cmake-js passes them (node-api-headers and node-addon-api from
# node_modules); on Linux the addon links with Node's symbols left undefined, as cmake-js does.
addon=(-DEDGELLM_ADDON=ON -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api")

echo "check-warnings: $($cxx --version | head -1), x86-64"
cmake -S native -B build-clang/x64 "${common[@]}" "${addon[@]}" >/dev/null
cmake --build build-clang/x64 --parallel "$(nproc)"

if command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "check-warnings: $($cxx --version | head -1), aarch64"
  # Debian's cross toolchain (g++-aarch64-linux-gnu) gives clang the aarch64 headers and libraries.
  cmake -S native -B build-clang/arm64 "${common[@]}" -DCMAKE_SYSTEM_NAME=Linux \
    -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER_TARGET=aarch64-linux-gnu \
    -DEDGELLM_STATIC=ON -DEDGELLM_ADDON=OFF >/dev/null
  cmake --build build-clang/arm64 --parallel "$(nproc)" --target edgellm_core edgellm_tests
else
  echo "check-warnings: aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu)" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "check-warnings: aarch64 SKIPPED (not under CI)" >&2
fi
echo "check-warnings: no warnings"
