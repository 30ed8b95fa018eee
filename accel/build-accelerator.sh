#!/bin/bash
# Builds the accelerator of one emulated architecture: the host-native cross
# compiler proper and binutils of the build root's gcc, in a private prefix
# with their own runtime libraries and dynamic loader, packaged as a .deb of
# the target architecture that an ARM build root installs like any other.
#
#   build-accelerator.sh --target TRIPLET --debs DIR --out DIR [--version V]
#                        [--allow-revision-skew]
#
# --debs holds the cross toolchain's packages for this host:
# cpp-N-TRIPLET, gcc-N-TRIPLET, g++-N-TRIPLET (optional) and binutils-TRIPLET. They are
# Debian's own cross packages, or the ones built from the build root's gcc
# source (the OBS package of this farm does that). What the accelerator was
# built from is recorded in its accel.conf; activate.sh compares it with the
# build root's compiler before using anything.
set -euo pipefail

usage() {
	echo "usage: $0 --target TRIPLET --debs DIR --out DIR [--version V] [--allow-revision-skew]" >&2
	exit 2
}

target="" debs="" out="" version="" skew=no
while [ $# -gt 0 ]; do
	case "$1" in
	--target) target=${2:-} && shift 2 ;;
	--debs) debs=${2:-} && shift 2 ;;
	--out) out=${2:-} && shift 2 ;;
	--version) version=${2:-} && shift 2 ;;
	--allow-revision-skew) skew=yes && shift ;;
	*) usage ;;
	esac
done
if [ -z "$target" ] || [ ! -d "$debs" ] || [ -z "$out" ]; then usage; fi

case "$target" in
aarch64-linux-gnu) debarch=arm64 ;;
arm-linux-gnueabihf) debarch=armhf ;;
*)
	echo "build-accelerator: target must be aarch64-linux-gnu or arm-linux-gnueabihf; got '$target'" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

one_deb() { # the single package in $debs whose name matches $1
	local found
	# shellcheck disable=SC2206 # $1 is a glob on purpose
	found=("$debs"/$1_*.deb)
	[ -e "${found[0]}" ] || return 1
	[ ${#found[@]} -eq 1 ] || {
		echo "build-accelerator: more than one $1 in $debs" >&2
		exit 1
	}
	echo "${found[0]}"
}

cpp_deb=$(one_deb "cpp-[0-9]*-$target") || {
	echo "build-accelerator: no cpp-N-$target package in $debs" >&2
	exit 1
}
binutils_deb=$(one_deb "binutils-$target") || {
	echo "build-accelerator: no binutils-$target package in $debs" >&2
	exit 1
}
cpp_name=$(dpkg-deb -f "$cpp_deb" Package)
gccmajor=${cpp_name#cpp-}
gccmajor=${gccmajor%%-*}
gcc_deb=$(one_deb "gcc-$gccmajor-$target") || {
	echo "build-accelerator: no gcc-$gccmajor-$target package in $debs" >&2
	exit 1
}
gxx_deb=$(one_deb "g++-$gccmajor-$target") || gxx_deb=""

# The native gcc version this cross compiler was built from: Debian's cross
# packages say it in Built-Using ("gcc-12 (= 12.2.0-14)"); packages built from
# the build root's own source carry the source version as their own.
built_using=$(dpkg-deb -f "$cpp_deb" Built-Using)
gcc_from=$(printf '%s\n' "$built_using" | tr ',' '\n' |
	sed -n "s/^ *gcc-$gccmajor (= \(.*\))$/\1/p")
[ -n "$gcc_from" ] || gcc_from=$(dpkg-deb -f "$cpp_deb" Version)
binutils_from=$(dpkg-deb -f "$binutils_deb" Version)
[ -n "$version" ] || version="$gcc_from+accel1"

stage=$work/stage
for deb in "$cpp_deb" "$gcc_deb" "$binutils_deb" ${gxx_deb:+"$gxx_deb"}; do
	dpkg-deb -x "$deb" "$stage"
done

prefix=/usr/lib/obs-farm-accel/$target
root=$work/root
dest=$root$prefix
mkdir -p "$dest/bin" "$dest/lib" "$dest/wrap"

libexec=$stage/usr/lib/gcc-cross/$target/$gccmajor
install -m 0755 "$libexec/cc1" "$dest/bin/cc1"
[ -z "$gxx_deb" ] || install -m 0755 "$libexec/cc1plus" "$dest/bin/cc1plus"
install -m 0755 "$stage/usr/bin/$target-as" "$dest/bin/as"
install -m 0755 "$stage/usr/bin/$target-ld.bfd" "$dest/bin/ld.bfd"
# The gcc driver always hands the linker its LTO plugin; a host linker needs
# the host build of it.
install -m 0644 "$libexec/liblto_plugin.so" "$dest/lib/liblto_plugin.so"

# The runtime libraries the host's loader resolves for these binaries, and the
# loader itself: copied, so nothing depends on the build root's own libraries.
loader=""
for bin in "$dest"/bin/*; do
	LD_LIBRARY_PATH=$stage/usr/lib/$(gcc -print-multiarch) ldd "$bin" |
		awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u >"$work/libs"
while read -r lib; do
	case "$lib" in
	*/ld-linux*.so.*) loader=$(basename "$lib") ;;
	esac
	cp -L "$lib" "$dest/lib/"
done <"$work/libs"
[ -n "$loader" ] || {
	echo "build-accelerator: no dynamic loader among the tools' libraries" >&2
	exit 1
}
for bin in "$dest"/bin/*; do
	patchelf --set-interpreter "$prefix/lib/$loader" "$bin"
	# DT_RPATH, not RUNPATH: it also applies to the libraries' own needs
	# (libbfd needs libsframe), and nothing else may be searched.
	patchelf --remove-rpath "$bin"
	patchelf --force-rpath --set-rpath "$prefix/lib" "$bin"
done

for bin in "$dest"/bin/*; do
	tool=$(basename "$bin")
	flags=(-DREAL="\"$prefix/bin/$tool\"")
	case "$tool" in
	cc1 | cc1plus)
		flags+=(-DCOMPILER -DGCCLIB="\"/usr/lib/gcc/$target/$gccmajor\""
			-DTRIPLET="\"$target\"" -DGCCVER="\"$gccmajor\"")
		;;
	esac
	[ "$tool" != cc1plus ] || flags+=(-DCXX)
	[ "$tool" != ld.bfd ] || flags+=(-DLINKER
		-DPLUGIN_FROM="\"/usr/lib/gcc/$target/$gccmajor/liblto_plugin.so\""
		-DPLUGIN_TO="\"$prefix/lib/liblto_plugin.so\"")
	gcc -static -O2 -Wall -Werror "${flags[@]}" -o "$dest/wrap/$tool" "$here/accel-exec.c"
done

cat >"$dest/accel.conf" <<EOF
# What this accelerator was built from; activate.sh compares it with the build root.
ACCEL_TARGET=$target
ACCEL_GCC_MAJOR=$gccmajor
ACCEL_GCC_FROM=$gcc_from
ACCEL_BINUTILS_FROM=$binutils_from
ACCEL_HOST=$(dpkg --print-architecture)
ACCEL_ALLOW_REVISION_SKEW=$skew
EOF
install -m 0755 "$here/activate.sh" "$dest/activate"

pkg=obs-farm-accel-$target
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $debarch
Maintainer: obs-farm <obs-farm@example.invalid>
Depends: cpp-$gccmajor, binutils-$target
Section: devel
Priority: optional
Description: host-native compiler proper and binutils for emulated $debarch builds
 Built from gcc-$gccmajor $gcc_from and binutils $binutils_from for
 $(dpkg --print-architecture) hosts. Used in a build root only when they
 match the build root's own compiler; see $prefix/accel.conf.
EOF
printf '#!/bin/sh\nset -e\nexec %s/activate\n' "$prefix" >"$root/DEBIAN/postinst"
printf '#!/bin/sh\nset -e\nexec %s/activate --undo\n' "$prefix" >"$root/DEBIAN/prerm"
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz -b "$root" "$out/${pkg}_${version}_$debarch.deb" >/dev/null
echo "$out/${pkg}_${version}_$debarch.deb"
