#!/bin/bash
# obs-farm-worker-setup: start every configured worker group, unchecked
# (plain native) groups first; run at every boot by obs-farm-workers.service.
# A group whose CHECK fails (a binfmt handler missing or without the F flag,
# a CPU without AArch32) is not started, and this script then fails, so the
# unit fails (`systemctl is-system-running`: degraded) and cloud-init reports
# it on first boot; the groups that can build keep building. Each boot's
# outcome is in $run_dir/worker-health.json for ./check and the scaler.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
run_dir=${OBS_FARM_RUN_DIR:-/run/obs-farm}
systemctl=${OBS_FARM_SYSTEMCTL:-systemctl}

failed=()
groups=()
started=0
for pass in unchecked checked; do
  for env in "$conf_dir"/groups/*.env; do
    [ -e "$env" ] || continue
    group=$(basename "$env" .env)
    # Subshell: each group's settings stay its own.
    IFS=$'\t' read -r count group_check < <(
      # shellcheck source=/dev/null
      . "$env"
      printf '%s\t%s\n' "$INSTANCES" "$CHECK"
    )
    if [ -z "$group_check" ]; then kind=unchecked; else kind=checked; fi
    [ "$kind" = "$pass" ] || continue
    state=started detail=
    if [ -n "$group_check" ]; then
      read -ra check_cmd <<<"$group_check"
      if ! out=$("${check_cmd[@]}" 2>&1); then
        echo "$out" >&2
        failed+=("$group")
        state=check-failed detail=$(tail -n1 <<<"$out" | tr -d '\042\134')
      fi
    fi
    groups+=("{\"group\":\"$group\",\"instances\":$count,\"state\":\"$state\",\"detail\":\"$detail\"}")
    [ "$state" = started ] || continue
    for n in $(seq 1 "$count"); do
      "$systemctl" start "obs-farm-worker@$group-$n.service"
      started=$((started + 1))
    done
  done
done

mkdir -p "$run_dir"
printf '{"host":"%s","time":"%s","healthy":%s,"groups":[%s]}\n' "$(hostname)" \
  "$(date -u +%FT%TZ)" "$([ "${#failed[@]}" -eq 0 ] && echo true || echo false)" \
  "$(IFS=,; echo "${groups[*]}")" >"$run_dir/worker-health.json.new"
mv "$run_dir/worker-health.json.new" "$run_dir/worker-health.json"

echo "obs-farm-worker-setup: started $started worker instances"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "obs-farm-worker-setup: NOT started (check failed): ${failed[*]}" >&2
  exit 1
fi
