#!/bin/sh
# Runs inside an emulated build root, from the accelerator package's postinst
# (installed as /usr/lib/obs-farm-accel/TRIPLET/activate), at install and
# again through the package's file triggers whenever a later package puts
# one of the tools in place (obs-build installs g++ after it): puts the
# host-native compiler proper and binutils in place of the build root's
# emulated ones, or says in one line why it does not.
#
# Version lockstep is checked here, against the packages actually installed
# in this build root, every time a build root is set up: the accelerator is
# used only when it was built from the same gcc and binutils versions, or,
# when it was built with revision skew allowed, the same upstream versions.
# Everything else (the gcc driver, collect2, make, the package's own tests)
# stays emulated.
#
#   activate            turn it on if the versions allow, and log the outcome
#   activate --undo     put the emulated tools back (the package's prerm)
set -eu

here=${OBS_FARM_ACCEL_DIR:-$(dirname "$0")}
# shellcheck source=/dev/null
. "$here/accel.conf"
target=$ACCEL_TARGET
major=$ACCEL_GCC_MAJOR
pkg=obs-farm-accel-$target
libexec=/usr/lib/gcc/$target/$major

say() { echo "obs-farm-accel: $*"; }

# path-in-the-build-root:accelerated-tool
tools="$libexec/cc1:cc1 $libexec/cc1plus:cc1plus /usr/bin/$target-as:as /usr/bin/$target-ld.bfd:ld.bfd"

undo() {
	for entry in $tools; do
		path=${entry%%:*}
		if [ "$(dpkg-divert --listpackage "$path")" = "$pkg" ]; then
			rm -f "$path"
			dpkg-divert --package "$pkg" --rename --quiet --remove "$path"
		fi
	done
}

if [ "${1:-}" = --undo ]; then
	undo
	exit 0
fi

installed() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || true; }
upstream() { # a Debian version without its epoch and revision
	v=${1#*:}
	echo "${v%-*}"
}

if [ ! -e "$libexec/cc1" ]; then
	say "not accelerating $target: this build root has no gcc-$major for $target ($libexec/cc1)"
	exit 0
fi

root_gcc=$(installed "cpp-$major")
root_binutils=$(installed "binutils-$target")
versions="gcc-$major ${root_gcc:-(none)} and binutils ${root_binutils:-(none)} in the build root; accelerator built from gcc-$major $ACCEL_GCC_FROM and binutils $ACCEL_BINUTILS_FROM"

if [ "$root_gcc" = "$ACCEL_GCC_FROM" ] && [ "$root_binutils" = "$ACCEL_BINUTILS_FROM" ]; then
	how="exact versions"
elif [ "${ACCEL_ALLOW_REVISION_SKEW:-no}" = yes ] && [ -n "$root_gcc" ] && [ -n "$root_binutils" ] &&
	[ "$(upstream "$root_gcc")" = "$(upstream "$ACCEL_GCC_FROM")" ] &&
	[ "$(upstream "$root_binutils")" = "$(upstream "$ACCEL_BINUTILS_FROM")" ]; then
	how="revision skew allowed"
else
	say "not accelerating $target, versions differ: $versions"
	exit 0
fi

if ! "$here/wrap/as" --version >/dev/null 2>&1; then
	say "not accelerating $target, this machine cannot run the accelerator's $ACCEL_HOST programs: $versions"
	exit 0
fi

undo
done_tools=""
for entry in $tools; do
	path=${entry%%:*}
	tool=${entry#*:}
	[ -e "$path" ] || continue # cc1plus without g++
	dpkg-divert --package "$pkg" --rename --quiet --divert "$path.emulated" --add "$path"
	ln -s "$here/wrap/$tool" "$path"
	done_tools="$done_tools $tool"
done
say "accelerating $target ($how):${done_tools}; $versions"
