#!/usr/bin/env bash
# `npm run build:tests`: the C++ unit tests (CTest) and the native tools (ggml oracle, GEMM/decode
# benchmarks) in the addon's build tree, build/. `npm install` builds only the addon; `npm test`
# runs this first. Incremental: a second run with nothing changed only checks timestamps.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tree must be cmake-js's (it holds the Node headers' paths): configured without them, a
# later `npm run build:native` would find a cache and never build the addon.
if ! grep -q '^CMAKE_JS_VERSION' build/CMakeCache.txt 2>/dev/null; then
  echo "build:tests: no addon build in build/; building the addon first (npm run build:native)"
  npm run --silent build:native
fi
cmake -S . -B build -DEDGELLM_TESTS=ON >/dev/null
cmake --build build --parallel "$(nproc)"
touch build/native/.built-by-tests  # scripts/test.sh: under CI, tests built without this were built by `npm install`
