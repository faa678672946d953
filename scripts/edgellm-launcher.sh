#!/bin/sh
# bin/edgellm of the offline bundle: runs the bundled Node.js with the bundled app and addon.
# Resolves its own path first, so /opt/edgellm/current/bin/edgellm runs the version `current`
# pointed to when it started. exec: the service's main PID is node itself (NotifyAccess=main).
set -eu
here=$(dirname "$(readlink -f "$0")")
dir=$(dirname "$here")
EDGELLM_ADDON="$dir/app/build/Release/edgellm.node"
# The command as it was run (/opt/edgellm/current/bin/edgellm under systemd): the daemon's log
# quotes it when it says how to try the node, instead of a development checkout's `npx edgellm`.
case "$0" in /*) EDGELLM_COMMAND=$0 ;; *) EDGELLM_COMMAND="$(pwd)/$0" ;; esac
export EDGELLM_ADDON EDGELLM_COMMAND
exec "$dir/runtime/bin/node" "$dir/app/dist/cli/main.js" "$@"
