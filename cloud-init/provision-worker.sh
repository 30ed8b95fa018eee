#!/bin/bash
# obs-farm-provision-worker [--deprovision]: everything an OBS worker machine
# needs that is the same on every pool and every farm: the Debian packages
# (cloud-init/worker-packages.txt, rendered in below), Debian's own obsworker
# service off, docker on. Two things run it: the image services while they
# bake a worker image, and cloud-init on a stock image at first boot. It
# writes no farm configuration and starts no worker group: the per-pool
# user-data does both. Running it again changes nothing.
#
# --deprovision cleans the machine for capture as an image, as the image
# services' deprovisioning step does: cloud-init's state, logs and seed, the
# machine id, SSH host keys and logins, apt's lists and caches, docker's
# engine identity. Power the machine off afterwards; do not run anything in
# between. OBS_FARM_ROOT (tests) prefixes the paths it cleans.
set -euo pipefail

packages=(
@@PACKAGES@@
)

root=${OBS_FARM_ROOT:-}
retry_delay=${OBS_FARM_APT_RETRY_DELAY:-15}

die() {
  echo "obs-farm-provision-worker: $*" >&2
  exit "${2:-1}"
}

retry() {
  # Debian's mirrors sometimes serve an index mid-sync; a later try gets a
  # consistent one.
  local try
  for try in 1 2 3; do
    if "$@"; then
      return 0
    fi
    echo "obs-farm-provision-worker: '$*' failed (try $try of 3)" >&2
    if [ "$try" -lt 3 ]; then sleep "$retry_delay"; fi
  done
  return 1
}

apt_get() {
  # Keep the configuration files the packages ship; never ask.
  apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

provision() {
  case " ${packages[*]} " in
    *@@*) die "unrendered template: run the script components/provision.py renders" ;;
  esac
  export DEBIAN_FRONTEND=noninteractive
  retry apt_get update
  retry apt_get install "${packages[@]}"
  # Debian's obsworker service would start instances with its own idea of
  # the host; the farm runs its groups through obs-farm-worker@.service.
  if ! systemctl disable --now obsworker.service; then
    echo "obs-farm-provision-worker: no obsworker.service to disable" >&2
  fi
  # Build roots of container images need the daemon.
  systemctl enable --now docker.service
  echo "obs-farm-provision-worker: provisioned (${#packages[@]} packages)"
}

deprovision() {
  # A stopped daemon does not rewrite what is removed below.
  systemctl stop docker.service docker.socket || true
  # New instance at next boot: cloud-init runs every module again.
  cloud-init clean --logs --seed
  # Empty, not absent: systemd makes a new id at next boot.
  if [ -e "$root/etc/machine-id" ]; then : >"$root/etc/machine-id"; fi
  if [ -f "$root/var/lib/dbus/machine-id" ] && [ ! -L "$root/var/lib/dbus/machine-id" ]; then
    rm -f "$root/var/lib/dbus/machine-id"
  fi
  rm -f "$root"/etc/ssh/ssh_host_*
  rm -f "$root"/root/.ssh/authorized_keys "$root"/home/*/.ssh/authorized_keys
  rm -f "$root"/root/.bash_history "$root"/home/*/.bash_history
  # docker 20.10 names its engine by this key; each machine needs its own.
  rm -f "$root/etc/docker/key.json" "$root/var/lib/docker/engine-id"
  rm -f "$root/var/lib/systemd/random-seed" "$root"/var/lib/dhcp/*.leases
  if [ -d "$root/var/lib/apt/lists" ]; then
    find "$root/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock \
      -exec rm -rf {} +
  fi
  rm -f "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  rm -rf "$root"/var/log/journal/*/
  echo "obs-farm-provision-worker: deprovisioned; power off now"
}

case "$#:${1:-}" in
  0:) provision ;;
  1:--deprovision) deprovision ;;
  *) die "usage: $0 [--deprovision]" 64 ;;
esac
