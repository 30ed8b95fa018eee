#!/bin/bash
# Builds the accelerator of one emulated architecture: the host-native cross
# compiler proper and binutils of the build root's gcc, in a private prefix
# with their own runtime libraries and dynamic loader, packaged as a .deb of
# the target architecture that an ARM build root installs like any other.
#
#   build-accelerator.sh --target TRIPLET (--debs DIR [--installed-binutils] | --installed)
#                        --out DIR [--version V] [--allow-revision-skew]
#
# --debs holds the cross toolchain's packages for this host:
# cpp-N-TRIPLET, gcc-N-TRIPLET, g++-N-TRIPLET (optional) and binutils-TRIPLET. They are
# Debian's own cross packages, or the ones built from the build root's gcc
# source (accel/gcc: gcc-12's packaging run as a cross build in the farm).
# --installed takes them all from this machine's installed packages (an OBS
# build root's Build-Depends); --installed-binutils takes only binutils-TRIPLET
# from there, with the compiler from --debs. What the accelerator was
# built from is recorded in its accel.conf; activate.sh compares it with the
# build root's compiler before using anything.
set -euo pipefail

usage() {
	echo "usage: $0 --target TRIPLET (--debs DIR [--installed-binutils] | --installed) --out DIR [--version V] [--allow-revision-skew]" >&2
	exit 2
}

target="" debs="" installed=no installed_binutils=no out="" version="" skew=no
while [ $# -gt 0 ]; do
	case "$1" in
	--target) target=${2:-} && shift 2 ;;
	--debs) debs=${2:-} && shift 2 ;;
	--installed) installed=yes && shift ;;
	--installed-binutils) installed_binutils=yes && shift ;;
	--out) out=${2:-} && shift 2 ;;
	--version) version=${2:-} && shift 2 ;;
	--allow-revision-skew) skew=yes && shift ;;
	*) usage ;;
	esac
done
if [ -z "$target" ] || [ -z "$out" ]; then usage; fi
if [ "$installed" = yes ]; then
	if [ -n "$debs" ] || [ "$installed_binutils" = yes ]; then usage; fi
elif [ ! -d "$debs" ]; then
	usage
fi

case "$target" in
aarch64-linux-gnu | arm-linux-gnueabihf) ;;
*)
	echo "build-accelerator: target must be aarch64-linux-gnu or arm-linux-gnueabihf; got '$target'" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
	echo "build-accelerator: $*" >&2
	exit 1
}

installed_pkg() { # the one installed package whose name matches the glob $1
	dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' "$1" 2>/dev/null |
		awk '$1 == "ii" { print $2 }' | head -n 1
}

# The toolchain comes from .deb files (unpacked into a stage) or from the
# packages installed on this machine (an OBS build root's Build-Depends).
if [ "$installed" = yes ]; then
	stage=""
	find_pkg() { installed_pkg "$1"; }
	field() { dpkg-query -W -f "\${$2}" "$1"; }
	where="installed on this machine"
else
	stage=$work/stage
	find_pkg() {
		local found
		# shellcheck disable=SC2206 # $1 is a glob on purpose
		found=("$debs"/$1_*.deb)
		[ -e "${found[0]}" ] || return 0
		[ ${#found[@]} -eq 1 ] || fail "more than one $1 in $debs"
		echo "${found[0]}"
	}
	field() { dpkg-deb -f "$1" "$2"; }
	where="in $debs"
fi

cpp_pkg=$(find_pkg "cpp-[0-9]*-$target")
[ -n "$cpp_pkg" ] || fail "no cpp-N-$target package $where"
gccmajor=$(field "$cpp_pkg" Package)
gccmajor=${gccmajor#cpp-}
gccmajor=${gccmajor%%-*}
gcc_pkg=$(find_pkg "gcc-$gccmajor-$target")
[ -n "$gcc_pkg" ] || fail "no gcc-$gccmajor-$target package $where"
if [ "$installed_binutils" = yes ]; then
	binutils_pkg=$(installed_pkg "binutils-$target")
	[ -n "$binutils_pkg" ] || fail "no binutils-$target package installed on this machine"
	binutils_from=$(dpkg-query -W -f '${Version}' "$binutils_pkg")
else
	binutils_pkg=$(find_pkg "binutils-$target")
	[ -n "$binutils_pkg" ] || fail "no binutils-$target package $where"
	binutils_from=$(field "$binutils_pkg" Version)
fi
gxx_pkg=$(find_pkg "g++-$gccmajor-$target")

# The native gcc version this cross compiler was built from: Debian's cross
# packages say it in Built-Using ("gcc-12 (= 12.2.0-14)"); packages built from
# the build root's own source carry the source version as their own.
gcc_from=$(field "$cpp_pkg" Built-Using | tr ',' '\n' |
	sed -n "s/^ *gcc-$gccmajor (= \(.*\))$/\1/p")
[ -n "$gcc_from" ] || gcc_from=$(field "$cpp_pkg" Version)
[ -n "$version" ] || version="$gcc_from+accel1"

if [ -n "$stage" ]; then
	for deb in "$cpp_pkg" "$gcc_pkg" ${gxx_pkg:+"$gxx_pkg"}; do
		dpkg-deb -x "$deb" "$stage"
	done
	[ "$installed_binutils" = yes ] || dpkg-deb -x "$binutils_pkg" "$stage"
fi

# Where binutils' files are: the stage, or / when they are installed here.
binroot=$stage
[ "$installed_binutils" = no ] || binroot=""

prefix=/usr/lib/obs-farm-accel/$target
root=$work/root
dest=$root$prefix
mkdir -p "$dest/bin" "$dest/lib" "$dest/wrap"

libexec=$stage/usr/lib/gcc-cross/$target/$gccmajor
install -m 0755 "$libexec/cc1" "$dest/bin/cc1"
[ -z "$gxx_pkg" ] || install -m 0755 "$libexec/cc1plus" "$dest/bin/cc1plus"
install -m 0755 "$binroot/usr/bin/$target-as" "$dest/bin/as"
install -m 0755 "$binroot/usr/bin/$target-ld.bfd" "$dest/bin/ld.bfd"
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
Architecture: all
Maintainer: obs-farm <obs-farm@example.invalid>
Depends: cpp-$gccmajor, binutils-$target
Section: devel
Priority: optional
Description: host-native compiler proper and binutils for emulated $target builds
 Built from gcc-$gccmajor $gcc_from and binutils $binutils_from for
 $(dpkg --print-architecture) hosts. Used in a build root only when they
 match the build root's own compiler; see $prefix/accel.conf.
EOF
printf '#!/bin/sh\nset -e\nexec %s/activate\n' "$prefix" >"$root/DEBIAN/postinst"
printf '#!/bin/sh\nset -e\nexec %s/activate --undo\n' "$prefix" >"$root/DEBIAN/prerm"
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
# obs-build installs a build root one `dpkg --install --force-depends` at a
# time, in its own order: g++ (cc1plus) came after the accelerator in real
# builds, so the postinst never saw it. A file trigger on each tool's path
# runs the postinst again ("triggered") once a package puts that tool in
# place, at the end of that dpkg run, and activate checks the versions and
# switches the tools anew.
for path in "/usr/lib/gcc/$target/$gccmajor/cc1" "/usr/lib/gcc/$target/$gccmajor/cc1plus" \
	"/usr/bin/$target-as" "/usr/bin/$target-ld.bfd"; do
	echo "interest-noawait $path"
done >"$root/DEBIAN/triggers"
mkdir -p "$out"
deb=$out/${pkg}_${version}_all.deb
# dpkg-deb's default compression (xz) unless DPKG_DEB_COMPRESSOR_TYPE says
# otherwise (the tests build uncompressed: faster, and never shipped).
dpkg-deb --root-owner-group -b "$root" "$deb" >/dev/null
echo "$deb"
