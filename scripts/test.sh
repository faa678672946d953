#!/usr/bin/env bash
# `npm test`: builds the C++ tests and tools (npm install builds only the addon), then runs a
# zero-warnings build with clang (x86-64 and aarch64), a strict typecheck of src/ and test/, the C++
# unit tests (CTest), the TypeScript tests (tap), the C++ kernel tests cross-compiled for aarch64
# and run under qemu as a Cortex-A76 and a Cortex-A72, and the offline bundles (npm run
# test:bundle: x64 and arm64 built, installed into a --root tree, run).
# Runs every step even when one fails, then prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
passed=0 failed=0 skipped=0 status=0
failed_steps=()

step() {  # step NAME COMMAND...
  local name=$1; shift
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log/$name.txt"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then status=1; failed_steps+=("$name (exit $rc)"); echo "=== $name FAILED (exit $rc)"; fi
  return 0
}

if [ ! -f build/Release/edgellm.node ] || [ ! -f dist/index.js ]; then
  echo "npm test: the build is missing; run \`npm install\` (or \`npm run build\`) first" >&2
  exit 1
fi

# `npm install` builds only the addon; the C++ tests and the tools some TypeScript tests run (the
# ggml oracle) are built here. A build failure stops the run: every later step needs them. In CI
# (a fresh clone after `npm ci`) finding them already built means the install built them.
if [ "${CI:-}" = "true" ] && [ -e build/native/edgellm_tests ] && [ ! -e build/native/.built-by-tests ]; then
  echo "npm test: build/native/edgellm_tests exists before build:tests: \`npm install\` built the C++ tests (it must build only the addon)" >&2
  status=1
fi
echo "=== build:tests: bash scripts/build-tests.sh"
if ! bash scripts/build-tests.sh; then
  echo "npm test: building the C++ tests failed (see above)" >&2
  echo "edgellm: 0 passed, 1 failed, 0 skipped"
  exit 1
fi

step warnings bash scripts/check-warnings.sh
step types npx tsc -p tsconfig.test.json
step native ctest --test-dir build --output-on-failure
step ts npx tap
step arm64 bash scripts/test-arm64.sh
step bundle npm run --silent test:bundle

# Counts: CTest suites from its summary, the qemu runs' cases from the harness' own
# "N passed, N failed" lines, tap's assertions from its summary.
if read -r nfail ntotal < <(grep -oE '[0-9]+ tests failed out of [0-9]+' "$log/native.txt" | grep -oE '[0-9]+' | tr '\n' ' '); then
  passed=$((passed + ntotal - nfail)); failed=$((failed + nfail))
fi
for f in "$log/arm64.txt"; do
  while read -r p _ q _; do
    passed=$((passed + p)); failed=$((failed + q))
  done < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$f" || true)
done
for f in arm64 warnings; do
  if grep -q 'SKIPPED' "$log/$f.txt"; then skipped=$((skipped + 1)); fi
done
# The warnings check is one test: passed when it built everything without one.
if grep -q '^check-warnings: no warnings$' "$log/warnings.txt"; then passed=$((passed + 1)); fi
for run in ts bundle; do
  tap_pass=$(grep -oE '# \{ total: [0-9]+, pass: [0-9]+' "$log/$run.txt" | tail -1 | grep -oE '[0-9]+$' || echo 0)
  tap_total=$(grep -oE '# \{ total: [0-9]+' "$log/$run.txt" | tail -1 | grep -oE '[0-9]+$' || echo 0)
  tap_fail=$(grep -oE 'fail: [0-9]+' "$log/$run.txt" | tail -1 | grep -oE '[0-9]+$' || echo 0)
  tap_skip=$(grep -oE 'skip: [0-9]+' "$log/$run.txt" | tail -1 | grep -oE '[0-9]+$' || echo 0)
  passed=$((passed + tap_pass)); failed=$((failed + tap_fail)); skipped=$((skipped + tap_skip))
  if [ "$tap_total" -eq 0 ]; then echo "npm test: tap ($run) ran no test"; status=1; fi
done
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi

# What failed, by name, last: a CI log is often read from its tail only.
if [ "${#failed_steps[@]}" -gt 0 ]; then
  echo "=== failed steps: ${failed_steps[*]}"
  for run in ts bundle; do
    # tap's top-level results are unindented: "not ok N - test/FILE.test.ts # time=...".
    grep -E '^not ok [0-9]+ - ' "$log/$run.txt" 2>/dev/null | sed "s/^/=== $run: /" || true
  done
  grep -E 'Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout)' "$log/native.txt" 2>/dev/null | sed 's/^/=== native: /' || true
  grep -E '^(FAIL|not ok)' "$log/arm64.txt" 2>/dev/null | sed 's/^/=== arm64: /' || true
fi
echo "edgellm: $passed passed, $failed failed, $skipped skipped"
exit $status
