#!/bin/bash
# obs-farm-appliance-setup: first-boot setup of the appliance flavor (openSUSE
# Leap 15.6): upstream's OBS:Server:2.10 packages set up by upstream's own
# setup-appliance.sh, run non-interactively, with everything stateful on the
# data disk: /srv/obs (sources, builds, repositories, certificates), MariaDB's
# data directory where setup-appliance puts it (/srv/obs/MySQL), and the
# generated admin password (/srv/obs/obs-farm, root only). A replaced VM finds
# the disk populated: the database is migrated, not created, and the password
# is kept.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
srv=${OBS_FARM_SRV:-/srv/obs}
obs_lib=${OBS_FARM_OBS_LIB:-/usr/lib/obs/server}
api_dir=${OBS_FARM_API_DIR:-/srv/www/obs/api}
my_cnf=${OBS_FARM_MY_CNF:-/etc/my.cnf}
my_cnf_d=${OBS_FARM_MY_CNF_D:-/etc/my.cnf.d}
issue=${OBS_FARM_ISSUE:-/etc/issue}
# shellcheck source=/dev/null
. "$conf_dir/server.env"

state=$srv/obs-farm
mysql_dir=$srv/MySQL
say() { echo "obs-farm-appliance-setup: $*"; }

# 1. The data disk first: the packages then create /srv/obs on it. Leap's
# default file system is btrfs; the data disk is ext4 like on Debian, and a
# minimal image may lack its tools (zypper returns 0 when they are there).
zypper --non-interactive install --no-recommends e2fsprogs
obs-farm-prepare-data-disk "$DATA_DISK_DEVICE" "$srv"
fresh_disk=1
[ -d "$mysql_dir" ] && fresh_disk=0

# 2. Upstream's supported route: the OBS:Server:2.10 repository for this Leap
# release and the OBS_Server pattern. The repository's signing key is
# accepted on first refresh, as `zypper ref` would ask a human to.
# Removed first, so a re-run adds exactly this URL again.
zypper --non-interactive removerepo "$OBS_REPO_ALIAS" >/dev/null 2>&1 || true
zypper --non-interactive addrepo --refresh "$OBS_REPO_URL" "$OBS_REPO_ALIAS"
zypper --non-interactive --gpg-auto-import-keys refresh
zypper --non-interactive install --type pattern OBS_Server

# 3. The farm's BSConfig (server address, $ipaccess with the worker ranges
# from farm.pm) where the SUSE packages read it; the packaged one is kept.
if [ -e "$obs_lib/BSConfig.pm" ] && [ ! -e "$obs_lib/BSConfig.pm.package" ]; then
  cp -p "$obs_lib/BSConfig.pm" "$obs_lib/BSConfig.pm.package"
fi
install -m 0644 "$conf_dir/BSConfig.pm" "$obs_lib/BSConfig.pm"
# The worker ranges BSConfig reads come from obs-farm-apply-farm, which kept
# a copy on the data disk: a replaced VM accepts its workers from the start.
if [ -s "$state/farm.pm" ] && [ ! -e "$conf_dir/farm.pm" ]; then
  install -m 0644 "$state/farm.pm" "$conf_dir/farm.pm"
fi

# 4. MariaDB on the data disk. setup-appliance moves the datadir only when it
# initialises the database; a replaced VM must point at the existing one
# before setup-appliance looks, or it would try to initialise it again. The
# same edit setup-appliance makes, made here on every VM, and checked.
datadir_set() { grep -Eq "^[[:space:]]*datadir[[:space:]]*=[[:space:]]*${mysql_dir}[[:space:]]*\$" "$my_cnf"; }
if ! datadir_set; then
  sed -i -E "0,/(#\s*)?datadir/ s!#\s*datadir\s*=\s*/var/lib/mysql\$!datadir = $mysql_dir!" "$my_cnf"
fi
datadir_set || {
  echo "obs-farm-appliance-setup: could not set MariaDB's datadir to $mysql_dir in $my_cnf; stopping before any data lands on the OS disk" >&2
  exit 1
}
# The database serves the API on this host only.
mkdir -p "$my_cnf_d"
printf '# Rendered by obs-farm.\n[mysqld]\nbind-address = 127.0.0.1\n' >"$my_cnf_d/obs-farm.cnf"
if [ "$fresh_disk" = 1 ]; then
  # Leap's mysql.service initialises an empty datadir when it starts, which
  # setup-appliance does before it creates the API database.
  mkdir -p "$mysql_dir"
  chown mysql:mysql "$mysql_dir"
  chmod 0700 "$mysql_dir"
else
  # Another VM wrote this disk; MariaDB refuses a datadir it does not own.
  [ "$(stat -c %U "$mysql_dir")" = mysql ] || chown -R mysql:mysql "$mysql_dir"
fi

# 5. Upstream's setup, non-interactively: backend services (the recommended
# ones too), MariaDB and the API database (created on a blank disk, migrated
# otherwise), a self-signed certificate in /srv/obs/certs, Apache with
# Passenger, memcached and the API's support daemons (obs-api-support.target:
# clockwork, delayed-job queues, sphinx).
"$obs_lib/setup-appliance.sh" --non-interactive --force

# 6. What setup-appliance leaves optional: the warden (requeues jobs of
# workers that vanished) and, again, the API's support daemons.
systemctl enable --now obswarden.service obs-api-support.target

# 7. The admin password: made here, kept on the data disk (root only), shown
# nowhere else. Only a disk without one gets a new one, so a replaced VM
# leaves the password the admin may have changed since alone.
install -d -m 0700 "$state"
if [ ! -s "$state/admin-password" ]; then
  (
    umask 077
    # 48 bytes: 64 base64 characters, of which 32 letters or digits are kept.
    head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' | head -c 32 >"$state/admin-password.new"
  )
  # Read from the file, never from argv or the environment.
  (cd "$api_dir" && RAILS_ENV=production bin/rails runner \
    'pw = File.read(ARGV.first).strip; u = User.find_by!(login: "Admin"); u.password = pw; u.save!' \
    "$state/admin-password.new")
  mv "$state/admin-password.new" "$state/admin-password"
  say "Admin password set; it is in $state/admin-password (root only)"
fi
if [ -f "$issue" ]; then
  sed -i "s|^\* \"Admin\"/\"root\" user password is \"opensuse\" by default\.|* The Admin password is in $state/admin-password (root only).|" "$issue"
fi

say "OBS appliance running; waiting for obs-farm-apply-farm (schedulers, worker ranges, TLS)"
