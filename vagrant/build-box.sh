#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) Vagrant box for the libvirt provider from
# Debian's packages alone (debootstrap; no Vagrant Cloud), with what the VM
# tests need in the guests: sshd, sudo, nftables, iproute2, libbpf1, socat,
# curl, libstdc++ for the node binary copied in from the host, and PPPoE:
# pppd with its rp-pppoe plugin (ppp) on the gateway, pppoe-server (pppoe) on
# the server. The kernel is Debian's generic one: the cloud flavour has no
# PPP or PPPoE; the drivers no VM needs (sound, graphics, media, wireless,
# ...) are removed from the image to keep it small.
#
# The host kernel here parses no partition tables and has no device-mapper or
# nbd, so the disk is partitionless: one ext4 filesystem on the whole image,
# extlinux's boot sector at sector 0 (the filesystem's own boot block), and the
# kernel finds its root by label (root=LABEL=...). Only a loop mount is needed
# (for extlinux --install).
#
# Usage: build-box.sh OUT_DIR      writes OUT_DIR/porttrig-debian12.box
# Env:   PT_DEBIAN_MIRROR          Debian mirror (default http://deb.debian.org/debian)
#        PT_BOX_DISK_GB            virtual disk size in GiB (default 4)
set -euo pipefail

out=${1:?usage: build-box.sh OUT_DIR}
mirror=${PT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
disk_gb=${PT_BOX_DISK_GB:-4}
# The label the kernel command line and fstab find the root filesystem by.
root_label=ptroot
vagrant_pub=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1)
[ -n "$vagrant_pub" ] || { echo "build-box: vagrant's insecure public key not found (is the vagrant package installed?)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "build-box: run as root (debootstrap, loop mount)" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d "$out/work.XXXXXX")
root="$work/root"
mnt="$work/mnt"
cleanup() {
  for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev" "$mnt"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

packages=(
  systemd-sysv udev kmod initramfs-tools linux-image-amd64
  openssh-server sudo nftables iproute2 iputils-ping procps libbpf1
  socat curl libstdc++6 ppp pppoe
)
echo "build-box: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

echo "build-box: configuring the guest"
echo "LABEL=$root_label / ext4 errors=remount-ro 0 1" > "$root/etc/fstab"
echo porttrig-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 porttrig-vm\n' > "$root/etc/hosts"
# The management NIC (eth0, net.ifnames=0) takes its address from libvirt's
# DHCP; the test NICs are configured by the Vagrantfile's provisioners.
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0
[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
# Management only: the default route is the test network's (set by the Vagrantfile).
[DHCPv4]
UseGateway=no
UseDNS=no
NET
chroot "$root" systemctl enable systemd-networkd ssh >/dev/null 2>&1
# No wait for "network online": nothing in the guest needs it, and it costs
# boot time under emulation.
chroot "$root" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
chroot "$root" useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | chroot "$root" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$vagrant_pub" "$root/home/vagrant/.ssh/authorized_keys"
# sshd answers quickly even with no DNS (the networks are isolated).
echo 'UseDNS no' > "$root/etc/ssh/sshd_config.d/10-vagrant.conf"
echo 'GSSAPIAuthentication no' >> "$root/etc/ssh/sshd_config.d/10-vagrant.conf"
# Serial console too, so a VM that does not come up can be diagnosed.
chroot "$root" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
# Drivers for hardware that a libvirt guest never has (the initrd, made by
# the kernel's postinst, holds what booting needs); then the module index.
kver=$(cd "$root/lib/modules" && ls | head -1)
for d in sound drivers/gpu drivers/media drivers/infiniband drivers/net/wireless \
         drivers/staging drivers/bluetooth drivers/iio drivers/isdn drivers/hid \
         drivers/usb drivers/input/touchscreen drivers/net/ethernet net/wireless net/mac80211 net/bluetooth; do
  rm -rf "$root/lib/modules/$kver/kernel/$d"
done
chroot "$root" depmod -a "$kver"
rm -rf "$root/usr/lib/firmware" "$root/lib/firmware"
rm -f "$root/etc/machine-id" && touch "$root/etc/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

kernel=$(cd "$root/boot" && ls vmlinuz-* | head -1)
initrd=$(cd "$root/boot" && ls initrd.img-* | head -1)
[ -n "$kernel" ] && [ -n "$initrd" ] || { echo "build-box: no kernel or initrd in the guest's /boot" >&2; exit 1; }
mkdir -p "$root/boot/extlinux"
cat > "$root/boot/extlinux/extlinux.conf" <<CONF
DEFAULT linux
TIMEOUT 0
PROMPT 0
LABEL linux
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=LABEL=$root_label ro net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200 quiet
CONF

echo "build-box: making the disk image (${disk_gb} GiB, partitionless ext4, extlinux)"
img="$work/disk.raw"
truncate -s "${disk_gb}G" "$img"
# extlinux reads ext4 without 64bit and metadata_csum most reliably.
mkfs.ext4 -q -F -L "$root_label" -O ^64bit,^metadata_csum -d "$root" "$img"
mkdir -p "$mnt"
mount -o loop "$img" "$mnt"
# (Its warning about device geometry is moot for a loop file: shown only on failure.)
extlinux --install "$mnt/boot/extlinux" > "$work/extlinux.log" 2>&1 || { cat "$work/extlinux.log" >&2; exit 1; }
umount "$mnt"

qemu-img convert -O qcow2 "$img" "$work/box.img"
rm -f "$img"
cat > "$work/metadata.json" <<META
{"provider": "libvirt", "format": "qcow2", "virtual_size": $disk_gb}
META
cat > "$work/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
VF
tar -C "$work" -cf "$out/porttrig-debian12.box.tmp" metadata.json Vagrantfile box.img
mv "$out/porttrig-debian12.box.tmp" "$out/porttrig-debian12.box"
echo "build-box: $out/porttrig-debian12.box ($(du -h "$out/porttrig-debian12.box" | cut -f1))"
