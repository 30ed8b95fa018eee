#!/bin/bash
# bench/accel-gcc/build.sh: the real gcc build of the accelerator built from
# the build root's own compiler source (accel/gcc, issue 14), once, timed.
#
#   bench/accel-gcc/build.sh [--targets "arm64 armhf"] [--jobs N] [--work DIR]
#
# It builds obs-farm-accel-gcc the way an OBS worker would: a Debian 12
# (bookworm) amd64 build root made by debootstrap, the package's
# Build-Depends installed from Debian's archive (the host's apt sources,
# security updates included, so gcc-12-source is the version the ARM build
# roots' gcc-12 has), then dpkg-buildpackage. Needs root, debootstrap and
# about 10 GB in --work (default /var/tmp/obs-farm-accel-gcc, kept between
# runs: the build root is reused, the build is not). The .debs land in
# --work; the times are printed and written to --work/times.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
targets="arm64 armhf" jobs=$(nproc) work=/var/tmp/obs-farm-accel-gcc
while [ $# -gt 0 ]; do
	case "$1" in
	--targets) targets=${2:?} && shift 2 ;;
	--jobs) jobs=${2:?} && shift 2 ;;
	--work) work=${2:?} && shift 2 ;;
	*)
		echo "usage: $0 [--targets \"arm64 armhf\"] [--jobs N] [--work DIR]" >&2
		exit 2
		;;
	esac
done
for t in $targets; do
	case "$t" in
	arm64 | armhf) ;;
	*)
		echo "--targets: arm64 and/or armhf; got '$t'" >&2
		exit 2
		;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "$0: run as root (debootstrap, chroot)" >&2; exit 1; }

mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
mirror=${mirror:-$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)}
[ -n "$mirror" ] || { echo "no Debian mirror in the host's apt sources" >&2; exit 1; }

root=$work/root
mkdir -p "$work"
times=$work/times
: >"$times"
stamp() { # label seconds
	printf '%-52s %6d s\n' "$1" "$2" | tee -a "$times"
}

start=$(date +%s)
if [ ! -x "$root/usr/bin/dpkg-buildpackage" ]; then
	rm -rf "$root"
	debootstrap --variant=buildd bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
	stamp "build root (debootstrap)" $(($(date +%s) - start))
fi
# The host's sources (bookworm, -updates, -security): the base the
# integration tier's build roots are resolved from.
if [ -e /etc/apt/sources.list.d/debian.sources ]; then
	cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
	rm -f "$root/etc/apt/sources.list"
else
	cp /etc/apt/sources.list "$root/etc/apt/sources.list"
fi

mounted=()
cleanup() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT
for fs in proc sys dev dev/pts; do
	mount --bind "/$fs" "$root/$fs"
	mounted+=("$root/$fs")
done

src=/build/obs-farm-accel-gcc
rm -rf "$root/build"
mkdir -p "$root$src"
cp -a "$repo/accel/gcc/debian" "$root$src/"
cp "$repo/accel/build-accelerator.sh" "$repo/accel/accel-exec.c" "$repo/accel/activate.sh" "$root$src/"

t0=$(date +%s)
chroot "$root" apt-get update -q >"$work/apt.log" 2>&1
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get build-dep -y -q "$src" >>"$work/apt.log" 2>&1 ||
	{ tail -30 "$work/apt.log" >&2; exit 1; }
stamp "Build-Depends installed" $(($(date +%s) - t0))
chroot "$root" dpkg-query -W gcc-12-source cpp-12 binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf |
	tee "$work/versions"

t0=$(date +%s)
if ! chroot "$root" /usr/bin/time -v -o /build/time.txt sh -c \
	"cd $src && ACCEL_TARGETS='$targets' DEB_BUILD_OPTIONS='parallel=$jobs' dpkg-buildpackage -b -uc -us" \
	>"$work/build.log" 2>&1; then
	tail -40 "$work/build.log" >&2
	exit 1
fi
stamp "dpkg-buildpackage ($targets, $jobs jobs)" $(($(date +%s) - t0))
grep 'obs-farm-accel-gcc: gcc-12 for' "$work/build.log" | tee -a "$times"
grep -E 'User time|System time|Maximum resident|Elapsed' "$root/build/time.txt" | tee -a "$times"
du -sh "$root/build" | tee -a "$times"
cp "$root"/build/obs-farm-accel-*_all.deb "$work/"
ls -l "$work"/obs-farm-accel-*_all.deb
