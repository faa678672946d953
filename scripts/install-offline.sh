#!/usr/bin/env bash
# Installs this edgellm bundle on a Raspberry Pi (any systemd Linux of the bundle's architecture),
# as root, with no network. Safe to run again: an installed version is not copied twice, the
# config is written only when absent, and the unit is rewritten with the same content.
#
#   sudo ./install-offline.sh [--model FILE] [--memory-max 75%] [--cpu-quota 400%] [--no-enable]
#   (without --model: the model inside the bundle, if `bundle-offline.sh --model` put one there)
#   sudo /opt/edgellm/current/install-offline.sh --rollback     # back to the previous version
#   sudo /opt/edgellm/current/install-offline.sh --uninstall    # keeps /etc/edgellm, /var/lib/edgellm
#   ./install-offline.sh --root DIR ...                         # into a directory tree (tests, images)
#
# Layout: /opt/edgellm/<version>/ (this bundle), /opt/edgellm/current -> <version> (switched
# atomically: a new symlink renamed over the old one), /opt/edgellm/previous -> the version before,
# /etc/edgellm/config.yaml, /etc/systemd/system/edgellm.service, /var/lib/edgellm/models/.
# With --root every path is under DIR and nothing outside it is touched: useradd, chown and
# systemctl are not run but recorded, one command a line, in DIR/edgellm-install.actions.
# The service is enabled only with a model it can open (the one config.yaml names): otherwise
# everything is installed, the service is left disabled with what to do, and the exit status is 3.
set -euo pipefail
umask 022

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
die() { echo "install-offline: $*" >&2; exit 1; }
say() { echo "install-offline: $*"; }

bundle="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
root='' enable=1 model='' action=install memory_max='75%' cpu_quota='400%'
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --no-enable) enable=0; shift ;;
    --model) [ $# -ge 2 ] || die "--model needs a GGUF file"; model=$2; shift 2 ;;
    --memory-max) [ $# -ge 2 ] || die "--memory-max needs a value"; memory_max=$2; shift 2 ;;
    --cpu-quota) [ $# -ge 2 ] || die "--cpu-quota needs a value"; cpu_quota=$2; shift 2 ;;
    --rollback) action=rollback; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install-offline: unknown option $1" >&2; usage 2 ;;
  esac
done

# systemd.resource-control(5) values; checked here so they cannot break the unit (or the sed below).
[[ $memory_max =~ ^([0-9]+[KMGT]?|[0-9]{1,3}%|infinity)$ ]] ||
  die "--memory-max takes bytes with K/M/G/T, a percentage of RAM or infinity (e.g. 6G, 75%), got '$memory_max'"
[[ $cpu_quota =~ ^[0-9]{1,4}%$ ]] || die "--cpu-quota takes a percentage of one CPU (400% = 4 cores), got '$cpu_quota'"

if [ -n "$root" ]; then
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
  actions="$root/edgellm-install.actions"
  : >"$actions"  # what this run would have done outside the tree
else
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...), or use --root DIR to install into a directory"
fi
opt="$root/opt/edgellm"
etc="$root/etc/edgellm"
state="$root/var/lib/edgellm"
unit="$root/etc/systemd/system/edgellm.service"

# host COMMAND...: changes the host beyond files under the install paths; recorded under --root.
host() {
  if [ -n "$root" ]; then
    local line
    line=$(printf '%q ' "$@")
    echo "${line% }" >>"$actions"
    say "would run: ${line% }"
  else
    "$@"
  fi
}
have_systemctl() { [ -n "$root" ] || command -v systemctl >/dev/null; }

# bundle_field KEY: a value from the bundle's BUNDLE file (version=..., arch=..., node=...).
bundle_field() { sed -n "s/^$1=//p" "$bundle/BUNDLE"; }

# Every file listed with the right hash, and no file that is not listed.
verify_tree() {  # verify_tree DIR
  local dir=$1 listed present
  [ -f "$dir/SHA256SUMS" ] || return 1
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS) || return 1
  listed=$(wc -l <"$dir/SHA256SUMS")
  present=$(cd "$dir" && find . -type f ! -name SHA256SUMS | wc -l)
  [ "$listed" -eq "$present" ] || { echo "install-offline: $dir has $present files, SHA256SUMS lists $listed" >&2; return 1; }
}

# The model a bundle carries (bundle-offline.sh --model): models/NAME.gguf, checksummed with the rest.
bundled_model() {
  local found=("$bundle"/models/*.gguf)
  [ -f "${found[0]}" ] && [ ${#found[@]} -eq 1 ] && echo "${found[0]}"
  return 0
}

# The version directory holds the program, not the bundle's model (that goes to state/models):
# its SHA256SUMS lists everything but models/.
program_sums() { grep -v '^[0-9a-f]*  models/' "$1/SHA256SUMS" || true; }

# model_problem DEST: why the model config.yaml names cannot be served, or nothing. The file must
# exist, be a GGUF file, and (when this machine can run the bundle) open in `edgellm inspect`.
model_problem() {
  local dest=$1 m path out
  m=$(sed -n 's/^model:[[:space:]]*\([^#[:space:]]*\).*/\1/p' "$etc/config.yaml" | head -1)
  m=${m%\"}; m=${m#\"}; m=${m%\'}; m=${m#\'}
  [ -n "$m" ] || { echo "/etc/edgellm/config.yaml names no model"; return 0; }
  case "$m" in /*) path="$root$m" ;; *) path="$state/$m"; m="/var/lib/edgellm/$m" ;; esac
  [ -f "$path" ] || { echo "the configured model $m does not exist"; return 0; }
  [ -r "$path" ] || { echo "the configured model $m is not readable"; return 0; }
  [ "$(head -c 4 "$path" 2>/dev/null)" = GGUF ] || { echo "the configured model $m is not a GGUF file"; return 0; }
  if "$dest/bin/edgellm" --version >/dev/null 2>&1; then
    out=$("$dest/bin/edgellm" inspect "$path" 2>&1 >/dev/null) || { echo "the configured model $m does not open: ${out##*$'\n'}"; return 0; }
  fi
  return 0
}

# swap_link NAME TARGET: points $opt/NAME at TARGET (relative) with one rename(2).
swap_link() {
  ln -sfn "$2" "$opt/.$1.tmp.$$"
  mv -T "$opt/.$1.tmp.$$" "$opt/$1"
}

restart_if_enabled() {
  [ "$enable" -eq 1 ] && have_systemctl || return 0
  if [ -n "$root" ] || systemctl is-enabled --quiet edgellm 2>/dev/null; then host systemctl try-restart edgellm; fi
}

install_bundle() {
  local version arch machine cur dest tmp d
  [ -f "$bundle/BUNDLE" ] || die "$bundle is not an edgellm bundle (no BUNDLE file)"
  version=$(bundle_field version)
  arch=$(bundle_field arch)
  [[ $version =~ ^[0-9A-Za-z.+-]+$ ]] || die "bad version '$version' in $bundle/BUNDLE"
  verify_tree "$bundle" || die "checksums do not match: the bundle is damaged or was changed; copy it again"
  say "bundle edgellm $version linux-$arch verified"

  machine=$(uname -m)
  case "$arch:$machine" in
    arm64:aarch64 | x64:x86_64) ;;
    *)
      [ -n "$root" ] || die "this bundle is for linux-$arch, this machine is $machine: use the matching bundle"
      say "note: linux-$arch bundle into --root on a $machine machine" ;;
  esac

  # 1. The version directory: copied beside its final name, then renamed into place.
  dest="$opt/$version"
  mkdir -p "$opt"
  if [ -d "$dest" ] && [ "$(program_sums "$bundle")" = "$(cat "$dest/SHA256SUMS")" ] && verify_tree "$dest"; then
    say "$dest already installed and intact"
  else
    tmp="$opt/.$version.tmp.$$"
    rm -rf "$tmp"
    cp -R "$bundle/." "$tmp"
    rm -rf "$tmp/models"
    program_sums "$bundle" >"$tmp/SHA256SUMS"
    [ -n "$root" ] || chown -R root:root "$tmp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    say "installed $dest"
  fi

  # 2. The service user (the unit's User=/Group=).
  if [ -n "$root" ] || ! getent passwd edgellm >/dev/null; then
    host useradd --system --user-group --home-dir /var/lib/edgellm --no-create-home \
      --shell /usr/sbin/nologin --comment "edgellm daemon" edgellm
  fi

  # 3. Config (only when absent: the admin's edits win) and state.
  mkdir -p "$etc" "$state/models"
  if [ -z "$model" ]; then
    model=$(bundled_model)
    [ -z "$model" ] || say "the bundle carries the model $(basename "$model")"
  fi
  if [ -n "$model" ]; then
    [ -f "$model" ] || die "--model $model: no such file"
    local name
    name=$(basename "$model")
    if cmp -s "$model" "$state/models/$name"; then
      say "model /var/lib/edgellm/models/$name already in place"
    else
      cp "$model" "$state/models/.$name.tmp.$$"
      mv "$state/models/.$name.tmp.$$" "$state/models/$name"
      say "model copied to /var/lib/edgellm/models/$name"
    fi
  fi
  if [ ! -e "$etc/config.yaml" ]; then
    if [ -n "$model" ]; then
      sed "s|^model: .*|model: /var/lib/edgellm/models/$(basename "$model")|" "$dest/config.yaml" >"$etc/.config.yaml.tmp.$$"
    else
      cp "$dest/config.yaml" "$etc/.config.yaml.tmp.$$"
    fi
    chmod 0640 "$etc/.config.yaml.tmp.$$"
    mv "$etc/.config.yaml.tmp.$$" "$etc/config.yaml"
    say "wrote /etc/edgellm/config.yaml (edit it, then: systemctl restart edgellm)"
  else
    say "kept the existing /etc/edgellm/config.yaml"
    [ -z "$model" ] || say "set 'model: /var/lib/edgellm/models/$(basename "$model")' in it to serve the new model"
  fi
  host chown root:edgellm "$etc/config.yaml"
  host chown -R edgellm:edgellm "$state"

  # 4. The unit, with this machine's resource limits.
  mkdir -p "$(dirname "$unit")"
  sed -e "s/@MEMORY_MAX@/$memory_max/" -e "s/@CPU_QUOTA@/$cpu_quota/" "$dest/systemd/edgellm.service" >"$unit.tmp.$$"
  chmod 0644 "$unit.tmp.$$"
  mv "$unit.tmp.$$" "$unit"
  say "unit /etc/systemd/system/edgellm.service (MemoryMax=$memory_max, CPUQuota=$cpu_quota)"

  # 5. The switch: `current` moves only once everything it needs is in place.
  cur=$(readlink "$opt/current" 2>/dev/null || true)
  local changed=0
  if [ "$cur" != "$version" ]; then
    [ -z "$cur" ] || swap_link previous "$cur"
    swap_link current "$version"
    changed=1
    say "current -> $version${cur:+ (previous -> $cur)}"
  fi
  # Keep two versions: current and previous.
  local prev
  prev=$(readlink "$opt/previous" 2>/dev/null || true)
  for d in "$opt"/*/; do
    d=$(basename "$d")
    [ -L "$opt/$d" ] || [ "$d" = "$version" ] || [ "$d" = "$prev" ] || { rm -rf "${opt:?}/$d"; say "removed old version $d"; }
  done

  # 6. systemd: never a service that would fail to start and restart every RestartSec forever.
  local problem
  problem=$(model_problem "$dest")
  if have_systemctl; then
    host systemctl daemon-reload
    if [ "$enable" -eq 1 ] && [ -n "$problem" ]; then
      echo "install-offline: WARNING: edgellm is installed but NOT enabled: $problem." >&2
      echo "install-offline: copy a GGUF model with: $0 --model FILE.gguf (it is copied to /var/lib/edgellm/models/ and" >&2
      echo "install-offline: named in /etc/edgellm/config.yaml), or set 'model:' there; then: systemctl enable --now edgellm" >&2
      exit 3
    elif [ "$enable" -eq 1 ]; then
      if [ "$changed" -eq 1 ]; then host systemctl try-restart edgellm; fi
      host systemctl enable --now edgellm
    else
      say "--no-enable: start it with: systemctl enable --now edgellm"
      [ -z "$problem" ] || say "note: $problem; set 'model:' in /etc/edgellm/config.yaml first"
    fi
  else
    say "systemctl not found: the unit is installed but not enabled"
  fi
  say "done: edgellm $version (check the machine with: /opt/edgellm/current/bin/edgellm doctor --config /etc/edgellm/config.yaml)"
}

rollback() {
  local cur prev
  cur=$(readlink "$opt/current" 2>/dev/null || true)
  prev=$(readlink "$opt/previous" 2>/dev/null || true)
  [ -n "$prev" ] && [ -d "$opt/$prev" ] || die "no previous version in $opt to roll back to"
  verify_tree "$opt/$prev" || die "$opt/$prev is damaged; reinstall a bundle instead"
  swap_link current "$prev"
  [ -z "$cur" ] || swap_link previous "$cur"
  say "current -> $prev${cur:+ (previous -> $cur)}"
  restart_if_enabled
}

uninstall() {
  if have_systemctl; then
    if [ -n "$root" ] || [ -e "$unit" ]; then host systemctl disable --now edgellm; fi
  fi
  rm -f "$unit"
  have_systemctl && host systemctl daemon-reload
  rm -rf "${opt:?}"
  say "removed /opt/edgellm and the unit; kept /etc/edgellm, /var/lib/edgellm and the user edgellm"
  say "to remove those too: rm -rf /etc/edgellm /var/lib/edgellm && userdel edgellm"
}

case "$action" in
  install) install_bundle ;;
  rollback) rollback ;;
  uninstall) uninstall ;;
esac
