#!/bin/bash
# obs-farm-check-binfmt HANDLER...: succeed only if every named binfmt_misc
# handler (qemu-arm, qemu-aarch64) is registered, enabled and carries the F
# (fix-binary) flag. Without F the kernel looks the interpreter up inside the
# build chroot, which has no qemu, so every emulated build would fail late;
# refusing here keeps the worker from registering at all.
set -euo pipefail

binfmt_dir=${OBS_FARM_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}

if [ "$#" -eq 0 ]; then
  echo "usage: $0 HANDLER..." >&2
  exit 64
fi

if [ ! -e "$binfmt_dir/status" ] && [ "$binfmt_dir" = /proc/sys/fs/binfmt_misc ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt_dir" 2>/dev/null || true
fi

rc=0
for handler in "$@"; do
  entry="$binfmt_dir/$handler"
  if [ ! -r "$entry" ]; then
    echo "obs-farm: binfmt handler $handler is not registered (is qemu-user-static installed?)" >&2
    rc=1
    continue
  fi
  if ! grep -qx 'enabled' "$entry"; then
    echo "obs-farm: binfmt handler $handler is disabled" >&2
    rc=1
    continue
  fi
  flags=$(sed -n 's/^flags: *//p' "$entry")
  case "$flags" in
    *F*) echo "obs-farm: binfmt handler $handler ok (flags: $flags)" ;;
    *)
      echo "obs-farm: binfmt handler $handler lacks the F flag (flags: ${flags:-none}); emulated builds would fail inside chroots" >&2
      rc=1
      ;;
  esac
done
exit "$rc"
