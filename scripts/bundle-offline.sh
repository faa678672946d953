#!/usr/bin/env bash
# Builds the offline bundle for a Pi with no network: one tarball
# DIR/edgellm-<version>-linux-<arch>.tar.gz holding everything the device needs.
#
#   scripts/bundle-offline.sh --arch arm64|x64 --out DIR [--model FILE.gguf]
#
# edgellm-<version>-linux-<arch>/
#   bin/edgellm               launcher: the bundled node + app + addon
#   runtime/bin/node          Node.js 20 for <arch> (the npm registry's node-linux-<arch> package)
#   app/dist/ app/package.json app/node_modules/ (production only; native modules built for <arch>)
#   app/build/Release/edgellm.node
#   systemd/edgellm.service   config.yaml (default)   install-offline.sh
#   models/FILE.gguf          with --model: the model install-offline.sh installs and serves
#   BUNDLE                    version=, arch=, node=
#   SHA256SUMS                every other file
#
# Progress goes to stderr; stdout is the tarball's path.
# Network: the npm registry only (production dependencies, the Node runtime). Native dependencies
# are compiled from source against the bundled Node's headers; nothing is downloaded from GitHub.
# arm64 is cross-compiled on x86-64 (scripts/build-arm64.sh); x64 uses this machine's build.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

arch='' out='' model=''
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    --model) model=${2:-}; shift 2 ;;
    *) echo "bundle-offline: unknown option $1 (usage: --arch arm64|x64 --out DIR [--model FILE.gguf])" >&2; exit 2 ;;
  esac
done
case "$arch" in arm64|x64) ;; *) echo "bundle-offline: --arch arm64|x64" >&2; exit 2 ;; esac
[ -n "$out" ] || { echo "bundle-offline: --out DIR" >&2; exit 2; }
if [ -n "$model" ]; then
  [ -f "$model" ] || { echo "bundle-offline: --model $model: no such file" >&2; exit 2; }
  [[ $model == *.gguf ]] || { echo "bundle-offline: --model $model: the file name must end in .gguf" >&2; exit 2; }
  [ "$(head -c 4 "$model")" = GGUF ] || { echo "bundle-offline: --model $model is not a GGUF file" >&2; exit 2; }
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

version=$(node -p "require('./package.json').version")
name="edgellm-$version-linux-$arch"
host_arch=$(uname -m)
log() { echo "bundle-offline: $*" >&2; }

# 1. This arch's addon.
case "$arch:$host_arch" in
  x64:x86_64 | arm64:aarch64)
    [ -f build/Release/edgellm.node ] || npm run build:native
    addon=build/Release/edgellm.node ;;
  arm64:*)
    log "cross-compiling the addon for arm64"
    bash scripts/build-arm64.sh >&2
    addon=build-arm64-addon/Release/edgellm.node ;;
  *) log "a linux-$arch bundle is built on a linux-$arch machine (or arm64 on x86-64)"; exit 1 ;;
esac

# 2. The runtime (its include/ also serves native dependencies' builds).
nodedir=$(bash scripts/fetch-node.sh "$arch")
node_version=v$(node -p "require('$nodedir/package.json').version")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage/bin" "$stage/runtime/bin" "$stage/app/build/Release" "$stage/systemd"

cp "$nodedir/bin/node" "$stage/runtime/bin/node"
cp "$nodedir/LICENSE" "$stage/runtime/LICENSE"

# 3. Production dependencies, exactly as locked. --ignore-scripts: no prepare (the app is already
# built) and no install-time downloads of prebuilt binaries; native modules are rebuilt below.
log "compiling TypeScript"
npx --no-install tsc -p tsconfig.json --outDir "$stage/app/dist" --sourceMap false --declaration false
cp package.json package-lock.json README.md "$stage/app/"
log "npm ci --omit=dev"
(cd "$stage/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$stage/app/package-lock.json"
if [ "$arch" = arm64 ] && [ "$host_arch" != aarch64 ]; then
  bash scripts/build-arm64.sh --modules "$stage/app/node_modules" >&2
else
  bash scripts/rebuild-native-deps.sh --arch "$arch" --nodedir "$nodedir" "$stage/app/node_modules" >&2
fi
cp "$addon" "$stage/app/build/Release/edgellm.node"

# 4. What the device needs around the app.
install -m 0755 scripts/edgellm-launcher.sh "$stage/bin/edgellm"
install -m 0755 scripts/install-offline.sh "$stage/install-offline.sh"
install -m 0644 systemd/edgellm.service "$stage/systemd/edgellm.service"
install -m 0644 systemd/config.yaml "$stage/config.yaml"
printf 'version=%s\narch=%s\nnode=%s\n' "$version" "$arch" "$node_version" >"$stage/BUNDLE"
if [ -n "$model" ]; then
  mkdir -p "$stage/models"
  install -m 0644 "$model" "$stage/models/$(basename "$model")"
  log "model $(basename "$model") included"
fi

# 5. The manifest, then one tarball (root-owned, fixed order and times: the same inputs give the same bytes).
(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum >SHA256SUMS)
tarball="$out/$name.tar.gz"
mtime=$(git -C "$repo" log -1 --format=%cI 2>/dev/null || echo '2024-01-01T00:00:00Z')
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" --mode='u+rwX,go+rX,go-w' \
  -cf - "$name" | gzip -9n >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
log "$tarball ($(du -h "$tarball" | cut -f1), $(du -sh "$stage" | cut -f1) unpacked)"
echo "$tarball"
