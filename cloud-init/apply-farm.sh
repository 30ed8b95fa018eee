#!/bin/bash
# obs-farm-apply-farm: hand the OBS server what follows the worker pools: the
# workers' address ranges ($ipaccess, via farm.pm) and one scheduler per
# architecture. Azure runs it as a VM run command whenever the workers
# change, so the server's custom data (and the VM) never does. It waits for
# first-boot setup, writes both files, and restarts what reads them.
# Both server flavors run it: Debian's backend starts one obsscheduler@ARCH
# unit per architecture; the openSUSE appliance starts every scheduler from
# one obsscheduler unit, for the architectures its API has written into the
# backend's configuration.xml. On the appliance it also installs the HTTPS
# certificate the stack supplies (OBS_FARM_TLS_CERT and OBS_FARM_TLS_KEY,
# the run command's protected parameters: never in the script, never logged).
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
systemctl=${OBS_FARM_SYSTEMCTL:-systemctl}
cloud_init=${OBS_FARM_CLOUD_INIT:-cloud-init}
srv=${OBS_FARM_SRV:-/srv/obs}
obs_lib=${OBS_FARM_OBS_LIB:-/usr/lib/obs/server}
sysconfig=${OBS_FARM_SYSCONFIG:-/etc/sysconfig/obs-server}
api_url=${OBS_FARM_API_URL:-https://127.0.0.1}
wait_s=${OBS_FARM_SCHEDULER_WAIT:-300}
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

flavor=backend
if [ -r "$conf_dir/server.env" ]; then
  # shellcheck source=/dev/null
  flavor=$(. "$conf_dir/server.env" && echo "${FLAVOR:-backend}")
fi

appliance_schedulers() {
  # The fallback obsscheduler reads when configuration.xml names none.
  if [ -f "$sysconfig" ]; then
    sed -i -E "s/^OBS_SCHEDULER_ARCHITECTURES=.*/OBS_SCHEDULER_ARCHITECTURES=\"$schedulers\"/" "$sysconfig"
  fi
  # The API owns configuration.xml: tell it which architectures are
  # available (PUT /configuration, as the Admin) and it writes them to the
  # backend. A lone <arch> parses as a string, not a list, in the API's
  # configuration controller, so the first one is given twice.
  local first body arch
  first=${schedulers%% *}
  body="<configuration><schedulers><arch>$first</arch>"
  for arch in $schedulers; do body+="<arch>$arch</arch>"; done
  body+="</schedulers></configuration>"
  # curl reads the credentials from stdin, so they are in no argv. The
  # connection stays on this host (127.0.0.1), whose certificate may name
  # only the public host name: no verification on loopback.
  local pwfile=$srv/obs-farm/admin-password
  [ -s "$pwfile" ] || {
    echo "obs-farm-apply-farm: no $pwfile: the appliance's first-boot setup did not finish (cloud-init status --long)" >&2
    exit 1
  }
  printf 'user = "Admin:%s"\n' "$(cat "$pwfile")" |
    curl --silent --show-error --fail --insecure --config - -X PUT \
      -H 'Content-Type: application/xml' --data-binary "$body" "$api_url/configuration" >/dev/null || {
    echo "obs-farm-apply-farm: the API refused or did not answer PUT $api_url/configuration (systemctl status apache2)" >&2
    exit 1
  }
  local have="" i
  for ((i = 0; i < wait_s; i += 5)); do
    have=$("$obs_lib/bs_admin" --show-scheduler-architectures 2>/dev/null || true)
    [ "$(tr ' ' '\n' <<<"$have" | sort | xargs)" = "$(tr ' ' '\n' <<<"$schedulers" | sort | xargs)" ] && break
    sleep 5
  done
  if [ "$(tr ' ' '\n' <<<"$have" | sort | xargs)" != "$(tr ' ' '\n' <<<"$schedulers" | sort | xargs)" ]; then
    echo "obs-farm-apply-farm: the backend's configuration.xml names schedulers '$have', not '$schedulers' after ${wait_s}s; check the API's delayed jobs (systemctl status obs-api-support.target)" >&2
    exit 1
  fi
  "$systemctl" enable obsscheduler.service
  "$systemctl" restart obsscheduler.service
}

appliance_tls() {
  [ -n "${OBS_FARM_TLS_CERT:-}" ] || return 0
  [ -n "${OBS_FARM_TLS_KEY:-}" ] || {
    echo "obs-farm-apply-farm: a TLS certificate without its key" >&2
    exit 1
  }
  local certs=$srv/certs tmp
  tmp=$(mktemp -d "$certs/.obs-farm.XXXXXX")
  (
    umask 077
    printf '%s\n' "${OBS_FARM_TLS_CERT%$'\n'}" >"$tmp/server.crt"
    printf '%s\n' "${OBS_FARM_TLS_KEY%$'\n'}" >"$tmp/server.key"
  )
  if [ "$(openssl x509 -noout -pubkey -in "$tmp/server.crt" 2>/dev/null)" != \
    "$(openssl pkey -pubout -in "$tmp/server.key" 2>/dev/null)" ]; then
    rm -rf "$tmp"
    echo "obs-farm-apply-farm: obs-farm:tlsCertificate and obs-farm:tlsPrivateKey do not belong together; keeping the current certificate" >&2
    exit 1
  fi
  chmod 0644 "$tmp/server.crt"
  # server.crt is setup-appliance's symlink to its self-signed certificate;
  # a real file there is left alone by it, so the supplied one stays.
  mv -f "$tmp/server.key" "$certs/server.key"
  mv -f "$tmp/server.crt" "$certs/server.crt"
  rm -rf "$tmp"
  "$systemctl" reload apache2.service
  echo "obs-farm-apply-farm: HTTPS certificate installed: $(openssl x509 -noout -subject -enddate -in "$certs/server.crt" | xargs)"
}

if [ "$flavor" = appliance ]; then
  appliance_tls
  appliance_schedulers
  # A replaced VM restores the worker ranges from the data disk at first
  # boot (obs-farm-appliance-setup), before this command runs again.
  install -m 0644 "$conf_dir/farm.pm" "$srv/obs-farm/farm.pm"
else
  for arch in $all_archs; do
    case " $schedulers " in
      *" $arch "*) "$systemctl" enable --now "obsscheduler@$arch.service" ;;
      *) "$systemctl" disable --now "obsscheduler@$arch.service" || true ;;
    esac
  done
fi
# $ipaccess is read at start.
"$systemctl" restart obssrcserver.service obsrepserver.service obsdispatcher.service
echo "obs-farm-apply-farm: schedulers: $schedulers; worker ranges: $(grep -c "=> 'worker'" "$conf_dir/farm.pm") ($flavor)"
