#!/bin/bash
# obs-farm-worker run|stop GROUP-N: one OBS worker instance of a group.
#
# Debian's obsworker scripts cannot pass --arch, which is how one x86-64 VM
# runs emulated aarch64/armv7 instances beside native ones, so the farm runs
# bs_worker itself. Group settings come from $conf_dir/groups/GROUP.env.
set -euo pipefail

conf_dir=${OBS_FARM_CONF_DIR:-/etc/obs-farm}
# Exit status that tells systemd not to restart (RestartPreventExitStatus).
readonly EX_CONFIG=78

die() {
  echo "obs-farm-worker: $*" >&2
  exit "$EX_CONFIG"
}

[ "$#" -eq 2 ] || die "usage: $0 run|stop GROUP-N"
action=$1
group=${2%-*}
n=${2##*-}
case "$n" in '' | *[!0-9]*) die "instance '$2' is not GROUP-N" ;; esac

[ -r "$conf_dir/worker.env" ] || die "missing $conf_dir/worker.env"
[ -r "$conf_dir/groups/$group.env" ] || die "no worker group '$group' in $conf_dir/groups"
# shellcheck source=/dev/null
. "$conf_dir/worker.env"
# shellcheck source=/dev/null
. "$conf_dir/groups/$group.env"

if [ "$n" -lt 1 ] || [ "$n" -gt "$INSTANCES" ]; then
  die "group $group has instances 1..$INSTANCES, not $n"
fi

instance_dir="$WORK_DIR/$group/$n"
statedir="$instance_dir/state"

fetch_worker_code() {
  # All instances share one copy of the server's worker code, fetched from
  # the repserver so worker and server versions always match.
  local code_dir=$1 tmp
  mkdir -p "$code_dir"
  exec 9>"$code_dir.lock"
  flock 9
  if [ ! -x "$code_dir/bs_worker" ]; then
    tmp=$(mktemp -d "$code_dir.XXXXXX")
    local try
    for try in 1 2 3 4 5 6 7 8 9 10; do
      if curl -fsS --max-time 60 "$REPO_SERVER/getworkercode" | (cd "$tmp" && cpio --quiet -id); then
        break
      fi
      echo "obs-farm-worker: fetching worker code from $REPO_SERVER failed (try $try)" >&2
      [ "$try" -lt 10 ] || die "cannot fetch worker code from $REPO_SERVER"
      sleep 15
    done
    # The archive does not carry the execute bit (Debian's obsworker unit
    # sets it too).
    [ -f "$tmp/bs_worker" ] || die "$REPO_SERVER/getworkercode sent no bs_worker"
    chmod a+x "$tmp/bs_worker"
    ln -sfn . "$tmp/XML"
    rm -rf "$code_dir"
    mv "$tmp" "$code_dir"
  fi
  exec 9>&-
}

nativeonly_code() {
  # A copy of the worker code that reports itself native-only, as bs_worker
  # does by itself only for Cavium CPUs, so the dispatcher sends it no
  # armv7l jobs. --noworkerupdate keeps a server push from replacing it.
  local src=$1 dst=$2
  rm -rf "$dst"
  mkdir -p "$(dirname "$dst")"
  cp -a "$src" "$dst"
  sed -i "s/^my \$hw = {'cpu' => {}, 'processors' => 0};\$/&\n\$hw->{'nativeonly'} = undef; # obs-farm: no AArch32/" "$dst/bs_worker"
  grep -q "^\$hw->{'nativeonly'} = undef; # obs-farm" "$dst/bs_worker" ||
    die "cannot mark the worker native-only: bs_worker changed; refusing to take armv7l jobs this CPU cannot run"
}

case "$action" in
  run)
    # obs-farm-evict stopped this machine's workers: the cloud takes it away.
    [ ! -e "${OBS_FARM_RUN_DIR:-/run/obs-farm}/eviction.json" ] || die "machine evicted; not starting $2"
    if [ -n "$CHECK" ]; then
      read -ra check_cmd <<<"$CHECK"
      "${check_cmd[@]}" || die "refusing to start $EXECUTION $group worker $n: '$CHECK' failed"
    fi
    fetch_worker_code "$WORKER_CODE_DIR"
    code_dir=$WORKER_CODE_DIR
    extra=()
    if [ "${NATIVEONLY_UNLESS_AARCH32:-0}" = 1 ] && ! obs-farm-check-aarch32 >/dev/null 2>&1; then
      echo "obs-farm-worker: this CPU has no AArch32; $group worker $n takes no armv7l jobs"
      code_dir="$WORK_DIR/$group/code-nativeonly-$n"
      nativeonly_code "$WORKER_CODE_DIR" "$code_dir"
      extra+=(--noworkerupdate)
    fi
    mkdir -p "$instance_dir/root" "$statedir" "$WORK_DIR/$group/cache"
    args=(
      --hardstatus
      --root "$instance_dir/root"
      --statedir "$statedir"
      --id "$(hostname):$group-$n"
      --reposerver "$REPO_SERVER"
      --jobs "$JOBS"
      --cachedir "$WORK_DIR/$group/cache"
      --cachesize "$CACHE_SIZE_MB"
      --port "$((PORT_BASE + n))"
    )
    for label in ${HOSTLABELS:-}; do
      args+=(--hostlabel "$label")
    done
    # Without --arch the worker announces the host's own architecture.
    if [ "$HOSTARCH" != "$(uname -m)" ]; then
      args+=(--arch "$HOSTARCH")
    fi
    # bs_worker has no vm-type "none": chroot is what it does without --vm-type.
    if [ "$OBS_VM_TYPE" != none ]; then
      args+=(--vm-type "$OBS_VM_TYPE")
    fi
    cd "$code_dir"
    exec ./bs_worker "${args[@]}" "${extra[@]}"
    ;;
  stop)
    [ -x "$WORKER_CODE_DIR/bs_worker" ] || exit 0
    cd "$WORKER_CODE_DIR"
    exec ./bs_worker --statedir "$statedir" --exit
    ;;
  *) die "unknown action '$action'" ;;
esac
