#!/bin/bash
# obs-farm-worker-setup: start every configured worker group, unchecked
# (plain native) groups first. A group whose CHECK fails (a binfmt handler
# missing or without the F flag, a CPU without AArch32) is not started, and
# this script then fails so that cloud-init reports the error; the groups
# that can build keep building.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
systemctl=${OBS_FARM_SYSTEMCTL:-systemctl}

failed=()
started=0
for pass in unchecked checked; do
  for env in "$conf_dir"/groups/*.env; do
    [ -e "$env" ] || continue
    group=$(basename "$env" .env)
    # Subshell: each group's settings stay its own.
    count=$(
      # shellcheck source=/dev/null
      . "$env"
      echo "$INSTANCES"
    )
    group_check=$(
      # shellcheck source=/dev/null
      . "$env"
      echo "$CHECK"
    )
    if [ -z "$group_check" ]; then kind=unchecked; else kind=checked; fi
    [ "$kind" = "$pass" ] || continue
    if [ -n "$group_check" ]; then
      read -ra check_cmd <<<"$group_check"
      if ! "${check_cmd[@]}"; then
        failed+=("$group")
        continue
      fi
    fi
    for n in $(seq 1 "$count"); do
      "$systemctl" enable --now "obs-farm-worker@$group-$n.service"
      started=$((started + 1))
    done
  done
done

echo "obs-farm-worker-setup: started $started worker instances"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "obs-farm-worker-setup: NOT started (check failed): ${failed[*]}" >&2
  exit 1
fi
