#!/bin/bash
# obs-farm-install-scaler: install obs-farm-scaler on the OBS server, write its
# configuration and (re)start it; or, with the scaler turned off, stop and
# remove it. Azure runs it as a VM run command after obs-farm-apply-farm, and
# again whenever the scaler package, its settings or the pools change (the
# package is inside this script). Debian 12 (python3 3.11) and openSUSE Leap
# 15.6 (python311). Nothing secret is in here: the scaler authenticates with
# the VM's managed identity.
set -euo pipefail

enabled=@@ENABLED@@
prefix=${OBS_FARM_SCALER_PREFIX:-/opt/obs-farm-scaler}
conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
unit_dir=${OBS_FARM_UNIT_DIR:-/etc/systemd/system}
os_release=${OBS_FARM_OS_RELEASE:-/etc/os-release}
systemctl=${OBS_FARM_SYSTEMCTL:-systemctl}
cloud_init=${OBS_FARM_CLOUD_INIT:-cloud-init}
unit=obs-farm-scaler.service
me=obs-farm-install-scaler

# First boot installs obs-server; on an existing server this returns at once.
timeout 3000 "$cloud_init" status --wait >/dev/null || {
  echo "$me: cloud-init did not finish cleanly; see cloud-init status --long" >&2
  exit 1
}

if [ "$enabled" != 1 ]; then
  "$systemctl" disable --now "$unit" 2>/dev/null || true
  rm -f "$unit_dir/$unit" "$conf_dir/scaler.json"
  "$systemctl" daemon-reload
  echo "$me: obs-farm:scaler.enabled is false: scaler stopped and removed"
  exit 0
fi

# shellcheck source=/dev/null
. "$os_release"
case "${ID:-}" in
  debian)
    python=python3
    install_python() {
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q
      apt-get install -y -q python3-venv
    }
    ;;
  opensuse-leap)
    # Leap's python3 is 3.6; the scaler's SDKs need 3.9+, we test with 3.11.
    python=python3.11
    install_python() { zypper --non-interactive install python311; }
    ;;
  *)
    echo "$me: unsupported server OS '${ID:-unknown}' (Debian 12 or openSUSE Leap 15.6)" >&2
    exit 1
    ;;
esac
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  install_python
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "$me: $python is older than 3.11" >&2
  exit 1
}

mkdir -p "$prefix"
new=$(mktemp -d "$prefix/lib.new.XXXXXX")
trap 'rm -rf "$new"' EXIT
base64 -d <<'PACKAGE' | tar -xz --no-same-owner -C "$new"
@@PACKAGE_B64@@
PACKAGE
if [ ! -f "$new/obs_farm_scaler/__main__.py" ] || [ ! -f "$new/requirements.txt" ]; then
  echo "$me: the shipped package has no obs_farm_scaler/__main__.py or requirements.txt" >&2
  exit 1
fi

# A venv made by another interpreter (an OS upgrade, a new server flavor) is
# rebuilt; the requirements are installed again only when they change.
venv=$prefix/venv
want=$("$python" -c 'import sys; print(sys.version)')
if [ ! -x "$venv/bin/python" ] || [ "$("$venv/bin/python" -c 'import sys; print(sys.version)')" != "$want" ]; then
  rm -rf "$venv" "$prefix/requirements.installed"
  "$python" -m venv "$venv"
fi
if ! cmp -s "$new/requirements.txt" "$prefix/requirements.installed"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$new/requirements.txt"
  cp "$new/requirements.txt" "$prefix/requirements.installed"
fi
PYTHONPATH=$new "$venv/bin/python" -c 'import obs_farm_scaler' || {
  echo "$me: obs_farm_scaler does not import in $venv" >&2
  exit 1
}
chmod -R a+rX "$new"
rm -rf "$prefix/lib.old"
if [ -d "$prefix/lib" ]; then mv "$prefix/lib" "$prefix/lib.old"; fi
mv "$new" "$prefix/lib"
rm -rf "$prefix/lib.old"
trap - EXIT

install -d -m 0755 "$conf_dir"
tmp=$(mktemp "$conf_dir/scaler.json.XXXXXX")
cat >"$tmp" <<'JSON'
@@CONFIG_JSON@@
JSON
"$venv/bin/python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$conf_dir/scaler.json"

tmp=$(mktemp "$unit_dir/$unit.XXXXXX")
cat >"$tmp" <<'UNIT'
@@UNIT@@
UNIT
chmod 0644 "$tmp"
mv "$tmp" "$unit_dir/$unit"

"$systemctl" daemon-reload
"$systemctl" enable "$unit"
"$systemctl" restart "$unit"
echo "$me: $("$venv/bin/python" --version) in $venv; watch it with journalctl -u $unit -f"
