#!/usr/bin/env bash
# Fetches the official Node.js build for linux-<arch> through the npm registry (the
# node-linux-<arch> package: bin/node plus include/node, the headers native modules build against),
# unpacks it once into a cache, and prints the unpacked directory.
#
#   dir=$(scripts/fetch-node.sh arm64|x64)
#
# EDGELLM_NODE_VERSION picks the release (default below: the Node 20 LTS the bundle is tested with);
# EDGELLM_CACHE_DIR the cache (default ~/.cache/edgellm).
set -euo pipefail
arch=${1:?usage: fetch-node.sh arm64|x64}
case "$arch" in arm64|x64) ;; *) echo "fetch-node: arch must be arm64 or x64" >&2; exit 2 ;; esac
version=${EDGELLM_NODE_VERSION:-20.20.2}
cache=${EDGELLM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgellm}
dir="$cache/node-linux-$arch-$version"

if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch-node: npm pack node-linux-$arch@$version" >&2
  # npm verifies the tarball against the registry's integrity hash.
  (cd "$tmp" && npm pack "node-linux-$arch@$version" --silent >/dev/null)
  mkdir "$tmp/x"
  tar -xzf "$tmp"/node-linux-"$arch"-"$version".tgz -C "$tmp/x"
  [ -x "$tmp/x/package/bin/node" ] || { echo "fetch-node: node-linux-$arch@$version has no bin/node" >&2; exit 1; }
  rm -rf "$dir"
  mv "$tmp/x/package" "$dir"
fi
echo "$dir"
