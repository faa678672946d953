#!/usr/bin/env bash
# Rebuilds, in place, every native dependency (a package with a binding.gyp) under a node_modules
# directory, from source, for the Node.js runtime the bundle ships: its headers come from the
# node-linux-<arch> package (--nodedir), so nothing is downloaded. For arm64 the compilers are
# Debian's aarch64-linux-gnu cross toolchain.
#
#   scripts/rebuild-native-deps.sh --arch arm64|x64 --nodedir DIR NODE_MODULES_DIR
#
# Used by scripts/build-arm64.sh --modules and scripts/bundle-offline.sh (which installs production
# dependencies with --ignore-scripts: prebuilt-binary downloaders would need the network).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

arch='' nodedir='' modules=''
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --nodedir) nodedir=$2; shift 2 ;;
    -*) echo "rebuild-native-deps: unknown option $1" >&2; exit 2 ;;
    *) modules=$1; shift ;;
  esac
done
case "$arch" in arm64|x64) ;; *) echo "rebuild-native-deps: --arch arm64|x64" >&2; exit 2 ;; esac
[ -f "$nodedir/include/node/common.gypi" ] || { echo "rebuild-native-deps: --nodedir $nodedir has no include/node/common.gypi" >&2; exit 2; }
[ -d "$modules" ] || { echo "rebuild-native-deps: no directory $modules" >&2; exit 2; }
nodedir="$(cd "$nodedir" && pwd)"

# node-gyp: the project's (a dev dependency), else the copy bundled with npm.
gyp="$root/node_modules/node-gyp/bin/node-gyp.js"
if [ ! -f "$gyp" ]; then
  gyp="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js"
fi
[ -f "$gyp" ] || { echo "rebuild-native-deps: node-gyp not found (npm install in $root)" >&2; exit 1; }

# node-gyp lets npm_config_* variables override its command line, and `npm run` exports the user's
# npm config (an ~/.npmrc with nodedir=/usr would build against the host's headers): say it both ways.
export npm_config_nodedir="$nodedir" npm_config_arch="$arch"
unset npm_config_target npm_config_dist_url npm_config_disturl npm_config_runtime

if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar
  # Host-side tools some gyp files build (e.g. generators) stay native.
  export CC_host=gcc CXX_host=g++ LINK_host=g++
fi

count=0
# A package root holds package.json and binding.gyp; a binding.gyp deeper in a package (tests,
# vendored sources) is that package's business.
while IFS= read -r gypfile; do
  pkg="$(dirname "$gypfile")"
  [ -f "$pkg/package.json" ] || continue
  name="$(node -p "require('$pkg/package.json').name")"
  echo "rebuild-native-deps: $name for linux-$arch"
  if ! (cd "$pkg" && node "$gyp" rebuild --release --arch="$arch" --nodedir="$nodedir" --jobs="$(nproc)") >"$pkg/node-gyp.log" 2>&1; then
    tail -40 "$pkg/node-gyp.log" >&2
    echo "rebuild-native-deps: $name failed to build for linux-$arch (log: $pkg/node-gyp.log)" >&2
    exit 1
  fi
  rm -f "$pkg/node-gyp.log"
  # Keep only the built modules (build/Release/*.node): objects and makefiles are dead weight on a Pi.
  mv "$pkg/build/Release" "$pkg/.release.$$"
  rm -rf "$pkg/build" "$pkg/.release.$$/obj.target" "$pkg/.release.$$/.deps" "$pkg/.release.$$/obj"
  find "$pkg/.release.$$" -mindepth 1 -maxdepth 1 ! -name '*.node' -exec rm -rf {} +
  mkdir -p "$pkg/build"
  mv "$pkg/.release.$$" "$pkg/build/Release"
  count=$((count + 1))
done < <(find "$modules" -name binding.gyp -not -path '*/test/*' -not -path '*/deps/*' | sort)
echo "rebuild-native-deps: $count native package(s) rebuilt for linux-$arch"
