#!/bin/bash
# obs-farm-register-qemu-arm: register qemu-arm-static for 32-bit ARM
# executables with the F flag, for armv7 builds emulated on arm64 hosts
# (Graviton4 has no AArch32). Debian's qemu-user-static leaves this handler
# out on arm64, whose kernel is expected to run such code itself.
set -euo pipefail

binfmt_dir=${OBS_FARM_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}
name=${1:-qemu-arm}
interpreter=${OBS_FARM_QEMU_ARM:-/usr/bin/qemu-arm-static}

[ -x "$interpreter" ] || { echo "obs-farm: $interpreter missing (install qemu-user-static)" >&2; exit 1; }
if [ ! -e "$binfmt_dir/register" ] && [ "$binfmt_dir" = /proc/sys/fs/binfmt_misc ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt_dir"
fi
if [ -e "$binfmt_dir/$name" ]; then
  echo "obs-farm: binfmt handler $name already registered"
  exit 0
fi
# ELF32, little-endian, ARM (e_machine 40): the magic and mask of qemu's
# own qemu-binfmt-conf.sh.
magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
printf ':%s:M::%s:%s:%s:F\n' "$name" "$magic" "$mask" "$interpreter" >"$binfmt_dir/register"
echo "obs-farm: registered $name -> $interpreter (flags F)"
