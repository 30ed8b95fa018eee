#!/bin/bash
# obs-farm-prepare-data-disk DEVICE MOUNTPOINT: make the OBS data disk usable
# without ever destroying data. A disk with no signature at all is formatted;
# a disk with a filesystem is mounted as it is; anything else (a partition
# table, an unknown signature, a blkid error) stops the boot rather than
# risking a reformat. The mount goes into fstab by UUID, so later boots and a
# replaced VM mount the same filesystem.
set -euo pipefail

[ "$#" -eq 2 ] || { echo "usage: $0 DEVICE MOUNTPOINT" >&2; exit 64; }
device=$1
mountpoint=$2
fstab=${OBS_FARM_FSTAB:-/etc/fstab}
wait_s=${OBS_FARM_DISK_WAIT:-180}

for _ in $(seq 1 "$wait_s"); do
  [ -b "$device" ] && break
  sleep 1
done
[ -b "$device" ] || { echo "obs-farm: data disk $device did not appear within ${wait_s}s" >&2; exit 1; }
dev=$(readlink -f "$device")

# blkid -p probes the device itself (not the cache): 0 = signature found,
# 2 = nothing found; any other status is an error and formats nothing.
set +e
fstype=$(blkid -p -s TYPE -o value "$dev")
status=$?
set -e
case "$status" in
  2)
    echo "obs-farm: $dev is blank; creating ext4"
    mkfs.ext4 -q -L obs-data "$dev"
    fstype=ext4
    ;;
  0)
    if [ -z "$fstype" ]; then
      echo "obs-farm: $dev holds a signature that is not a filesystem (partition table?); not touching it" >&2
      exit 1
    fi
    echo "obs-farm: $dev already holds $fstype; keeping its data"
    ;;
  *)
    echo "obs-farm: cannot probe $dev (blkid status $status); not touching it" >&2
    exit 1
    ;;
esac

uuid=$(blkid -p -s UUID -o value "$dev")
[ -n "$uuid" ] || { echo "obs-farm: $dev has no filesystem UUID" >&2; exit 1; }
if ! grep -q "^UUID=$uuid " "$fstab"; then
  echo "UUID=$uuid $mountpoint $fstype defaults,nofail,x-systemd.device-timeout=180 0 2" >>"$fstab"
fi
mkdir -p "$mountpoint"
if ! mountpoint -q "$mountpoint"; then
  mount UUID="$uuid" "$mountpoint"
fi
echo "obs-farm: $dev (UUID $uuid) mounted on $mountpoint"
