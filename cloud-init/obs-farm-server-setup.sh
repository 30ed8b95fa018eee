#!/bin/bash
# obs-farm-server-setup: first-boot setup of the OBS server. The data disk is
# mounted on /srv/obs before obs-server is installed, so the package puts its
# tree on the disk that outlives the VM.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
# shellcheck source=/dev/null
. "$conf_dir/server.env"

/usr/local/sbin/obs-farm-prepare-data-disk "$DATA_DISK_DEVICE" /srv/obs

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q -o Dpkg::Options::=--force-confold obs-server
install -m 0644 "$conf_dir/BSConfig.pm" /etc/obs/BSConfig.pm

# Schedulers and the workers' address ranges follow the worker pools; they
# arrive later through obs-farm-apply-farm (a VM run command), so that
# changing the workers never changes this VM's custom data.
units=(obssrcserver obsrepserver obsdispatcher obspublisher obswarden)
systemctl enable "${units[@]}"
systemctl restart "${units[@]}"

if [ -n "${FRONTEND_IMAGE:-}" ]; then
  # The frontend's database password is made here, on the data disk, so it is
  # never in user-data, the stack state or a log.
  secret_dir=/srv/obs/frontend
  install -d -m 0700 "$secret_dir"
  if [ ! -s "$secret_dir/db.env" ]; then
    umask 077
    printf 'MARIADB_ROOT_PASSWORD=%s\nMARIADB_PASSWORD=%s\n' \
      "$(head -c 32 /dev/urandom | base64 | tr -d '/+=')" \
      "$(head -c 32 /dev/urandom | base64 | tr -d '/+=')" >"$secret_dir/db.env"
  fi
  systemctl enable --now docker
  docker-compose -f "$conf_dir/frontend-compose.yaml" up -d
fi
echo "obs-farm-server-setup: backend running; waiting for obs-farm-apply-farm"
