#!/bin/bash
# bench/arm64/build-image.sh OUT_DIR: a Debian bookworm arm64 disk image that
# looks to cloud-init like a cloud image (the recipe of the x86-64 test VM in
# tests/integration/vm.py), built on this x86-64 host under qemu-user.
#
# Under qemu-user one mkinitramfs run takes ~16 minutes, so initramfs updates
# are disabled while the image is built (INITRD=No for the kernel's hook,
# update_initramfs=no for triggers) and the initrd is built exactly once at
# the end. Needs root, debootstrap, qemu-user-static with the qemu-aarch64
# binfmt handler (F flag) and the integration lock (binfmt_misc is global).
set -euo pipefail

out=${1:?usage: $0 OUT_DIR}
size=${IMAGE_SIZE:-8G}
suite=bookworm
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
mirror=${mirror:-$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)}
[ -n "$mirror" ] || { echo "no Debian mirror in the host's apt sources" >&2; exit 1; }
grep -q F /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
  { echo "qemu-aarch64 binfmt handler with F needed (update-binfmts --enable qemu-aarch64)" >&2; exit 1; }

# Same packages as the x86-64 test VM, minus the kernel (installed later,
# without its initrd), plus what the worker user-data installs at boot
# (baked in: each package install under TCG costs minutes).
packages=systemd-sysv,udev,dbus,cloud-init,ifupdown,isc-dhcp-client,iproute2,ca-certificates
packages+=,sudo,netbase,kmod,e2fsprogs,openssh-server,python3-cffi-backend,curl,wget,gnupg
packages+=,fdisk,cloud-guest-utils,tzdata,apt-utils,procps,less,iputils-ping,initramfs-tools
bake="docker.io obs-worker cpio qemu-user-static binfmt-support"

root=$(mktemp -d /var/tmp/obs-farm-arm64-root.XXXXXX)
trap 'umount -R "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
t0=$(date +%s)
debootstrap --variant=minbase --arch=arm64 --components=main --include="$packages" \
  "$suite" "$root" "$mirror"
echo "bench: debootstrap $(($(date +%s) - t0)) s"

rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  if [ -f "$f" ]; then cp "$f" "$root$f"; fi
done
cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/"
sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$root/etc/initramfs-tools/update-initramfs.conf"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
chroot "$root" apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive INITRD=No chroot "$root" \
  apt-get install -y -q --no-install-recommends linux-image-arm64 $bake
echo "bench: kernel and baked packages $(($(date +%s) - t0)) s"
kver=$(basename "$(find "$root/boot" -name 'vmlinuz-*' | sort -V | tail -n1)")
kver=${kver#vmlinuz-}
chroot "$root" update-initramfs -c -k "$kver"
echo "bench: initrd (once) $(($(date +%s) - t0)) s"
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get clean
find "$root/var/lib/apt/lists" -type f -delete

echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
echo 'LANG=C.UTF-8' >"$root/etc/default/locale"
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"$root/etc/fstab"
printf 'source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n' >"$root/etc/network/interfaces"
printf 'datasource_list: [ NoCloud, None ]\napt:\n  preserve_sources_list: true\n' \
  >"$root/etc/cloud/cloud.cfg.d/90_obsfarm_test_vm.cfg"
# The console report unit of the x86-64 test VM, so VmRun.wait_for_cloud_init works.
python3 - "$root" <<'PY'
import re, sys
from pathlib import Path
script = Path("tests/integration/vm.py").read_text()
build = re.search(r'BUILD_SCRIPT = r"""(.*?)"""', script, re.S).group(1)
start = build.index('cat > "$ROOT/usr/local/sbin/obsfarm-cloudinit-report"')
end = build.index("# qemu boots the kernel")
Path(sys.argv[1], "report.sh").write_text(build[start:end])
PY
ROOT=$root bash "$root/report.sh"
rm "$root/report.sh"

mkdir -p "$out"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
mkfs.ext4 -q -F -L obsfarm-root -d "$root" "$out/disk.img" "$size"
echo "bench: image built in $(($(date +%s) - t0)) s: $out"
