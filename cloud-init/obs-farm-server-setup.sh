#!/bin/bash
# obs-farm-server-setup: first-boot setup of the OBS server. The data disk is
# mounted on /srv/obs before obs-server is installed, so the package puts its
# tree on the disk that outlives the VM.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
# shellcheck source=/dev/null
. "$conf_dir/server.env"

/usr/local/sbin/obs-farm-prepare-data-disk "$DATA_DISK_DEVICE" /srv/obs

# obs-server's postinst enables and starts units this farm must not run.
# Masked before the package arrives, so neither this install nor a later
# upgrade's postinst starts them (deb-systemd-invoke skips masked units, and
# deb-systemd-helper unmasks only masks it made itself):
# - obssigner: bs_signer exits at once ("sign program is not configured!")
#   unless BSConfig sets $sign, and Debian 12 packages no signd/`sign` for
#   it. The farm does not sign, so the repserver never queues a job for the
#   signer (it does only when $sign is set) and the unit would only be a
#   failed unit on every boot.
# - obsscheduler@i586 and @armv7hl: Debian's default architectures. The
#   farm's schedulers (x86_64, aarch64, armv7l) are enabled by
#   obs-farm-apply-farm; these two would schedule nothing here.
systemctl mask obssigner.service obsscheduler@i586.service obsscheduler@armv7hl.service

# Our BSConfig.pm is in place BEFORE the package: its postinst starts
# daemons (obsscheduler@x86_64 among them, which obs-farm-apply-farm's
# `enable --now` then leaves running), and a daemon reads BSConfig once, at
# start. Installed after, that scheduler kept Debian's default
# (srcserver http://localhost:5352) and every x86_64 job it made sent the
# worker to its own localhost for the sources. dpkg keeps a conffile that
# exists before the package's first install with --force-confold (the
# packaged one lands as BSConfig.pm.dpkg-dist).
install -d /etc/obs
install -m 0644 "$conf_dir/BSConfig.pm" /etc/obs/BSConfig.pm

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q -o Dpkg::Options::=--force-confold obs-server
install -m 0644 "$conf_dir/BSConfig.pm" /etc/obs/BSConfig.pm

# obs-server's units wait only for the network, and fstab mounts the data
# disk with nofail: after a reboot a daemon could start before /srv/obs is
# mounted and write a new, empty tree onto the OS disk. Every one of them
# waits for the data disk.
for unit in /lib/systemd/system/obs*.service; do
  dropin="/etc/systemd/system/$(basename "$unit").d"
  install -d "$dropin"
  printf '[Unit]\nRequiresMountsFor=/srv/obs\n' >"$dropin/obs-farm-data-disk.conf"
done
systemctl daemon-reload

# Schedulers and the workers' address ranges follow the worker pools; they
# arrive later through obs-farm-apply-farm (a VM run command), so that
# changing the workers never changes this VM's custom data.
units=(obssrcserver obsrepserver obsdispatcher obspublisher obswarden)
systemctl enable "${units[@]}"
systemctl restart "${units[@]}"
# What else the postinst started reads the file above from now on too,
# should dpkg have put the packaged one in place after all.
systemctl try-restart obsscheduler@x86_64.service obsdodup.service obsdeltastore.service obsservice.service

echo "obs-farm-server-setup: backend running; waiting for obs-farm-apply-farm"
