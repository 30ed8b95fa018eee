#!/bin/bash
# obs-farm-worker-setup: start every configured worker group, native groups
# first. An emulated group whose binfmt handler is missing or lacks the F flag
# is not started, and this script then fails so that cloud-init reports the
# error; the groups that can build keep building.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
check_binfmt=${OBS_FARM_CHECK_BINFMT:-/usr/local/sbin/obs-farm-check-binfmt}
systemctl=${OBS_FARM_SYSTEMCTL:-systemctl}

failed=()
started=0
for pass in 0 1; do
  for env in "$conf_dir"/groups/*.env; do
    [ -e "$env" ] || continue
    group=$(basename "$env" .env)
    # Subshell: each group's settings stay its own.
    read -r count is_emulated handler < <(
      # shellcheck source=/dev/null
      . "$env"
      echo "$INSTANCES $EMULATED ${QEMU_HANDLER:--}"
    )
    [ "$is_emulated" = "$pass" ] || continue
    if [ "$is_emulated" = 1 ] && ! "$check_binfmt" "$handler"; then
      failed+=("$group")
      continue
    fi
    for n in $(seq 1 "$count"); do
      "$systemctl" enable --now "obs-farm-worker@$group-$n.service"
      started=$((started + 1))
    done
  done
done

echo "obs-farm-worker-setup: started $started worker instances"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "obs-farm-worker-setup: NOT started (binfmt check failed): ${failed[*]}" >&2
  exit 1
fi
