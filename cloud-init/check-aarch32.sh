#!/bin/bash
# obs-farm-check-aarch32: succeed only if this arm64 CPU runs 32-bit ARM
# (AArch32) code natively, which native armv7 builds need (OBS runs them
# under the linux32 personality). Graviton4 CPUs cannot: there the build
# would fail on its first 32-bit binary, so the group must not register.
set -euo pipefail

probe=${OBS_FARM_AARCH32_PROBE:-/usr/local/lib/obs-farm/aarch32-probe}
binfmt_dir=${OBS_FARM_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}

# A qemu-arm handler would run the probe (and every armv7 build) emulated,
# and the check would prove nothing.
if [ -r "$binfmt_dir/qemu-arm" ] && grep -qx enabled "$binfmt_dir/qemu-arm"; then
  echo "obs-farm: qemu-arm is registered in binfmt_misc; native armv7 would run emulated" >&2
  exit 1
fi
# The probe is a minimal static ARM EABI executable that exits with 42.
set +e
"$probe"
status=$?
set -e
if [ "$status" -ne 42 ]; then
  echo "obs-farm: this CPU does not run 32-bit ARM code (probe status $status); refusing native armv7 workers" >&2
  exit 1
fi
echo "obs-farm: CPU runs 32-bit ARM code natively"
