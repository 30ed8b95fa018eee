#!/bin/bash
# obs-farm-apply-farm: hand the OBS server what follows the worker pools: the
# workers' address ranges ($ipaccess, via farm.pm) and one scheduler per
# architecture. Azure runs it as a VM run command whenever the workers
# change, so the server's custom data (and the VM) never does. It waits for
# first-boot setup, writes both files, and restarts what reads them.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
systemctl=${OBS_FARM_SYSTEMCTL:-systemctl}
cloud_init=${OBS_FARM_CLOUD_INIT:-cloud-init}
all_archs="x86_64 armv7l aarch64"
schedulers="@@SCHEDULER_ARCHS@@"

# First boot installs obs-server; on an existing server this returns at once.
# Run commands time out on Azure's side too; bound the wait here as well.
timeout 3000 "$cloud_init" status --wait >/dev/null || {
  echo "obs-farm-apply-farm: cloud-init did not finish cleanly; see cloud-init status --long" >&2
  exit 1
}

mkdir -p "$conf_dir"
tmp=$(mktemp "$conf_dir/farm.pm.XXXXXX")
cat >"$tmp" <<'PERL'
@@FARM_PM_CONTENT@@
PERL
chmod 0644 "$tmp"
mv "$tmp" "$conf_dir/farm.pm"
echo "$schedulers" >"$conf_dir/schedulers"

for arch in $all_archs; do
  case " $schedulers " in
    *" $arch "*) "$systemctl" enable --now "obsscheduler@$arch.service" ;;
    *) "$systemctl" disable --now "obsscheduler@$arch.service" || true ;;
  esac
done
# $ipaccess is read at start.
"$systemctl" restart obssrcserver.service obsrepserver.service obsdispatcher.service
echo "obs-farm-apply-farm: schedulers: $schedulers; worker ranges: $(grep -c "=> 'worker'" "$conf_dir/farm.pm")"
