# pt_detach PIN_PATH: what `porttrig detach --pin-path PIN_PATH` does, in
# POSIX sh, for postrm purge: by then dpkg has removed porttrig's files and
# perhaps Node.js (Debian Policy 7.2: postrm purge may rely on essential
# packages only), so it cannot run porttrig itself (README, "Installing as a
# service"). Reads the pinned pt_attach map (ifindex -> flags) through bpffs,
# which prints a map with BTF as "KEY: VALUE" lines; removes porttrig's
# filter (TC ingress, priority PT_TC_PRIORITY 1, handle PT_TC_HANDLE 0x7074)
# from each recorded interface with tc (iproute2), and the clsact qdisc where
# porttrig created it (ATTACH_CREATED_QDISC, bit 2), and its XDP program
# pt_wan_xdp or pt_lan_xdp_pass where it attached one (ATTACH_XDP, bit 3; with
# ip, iproute2 too);
# then every pt_* and pt6_* pin (the IPv6 maps, the daemon's pt6_progs and
# the XDP path's tracepoint links), and
# the bpffs if porttrig mounted it on PIN_PATH. Idempotent. Prints what it did;
# returns 1 if something could not be removed (and says what).
# test/packaging/detach-sh.test.ts runs it against a real daemon's state.
pt_detach() {
	pin=$1 rc=0 ifs=0
	[ -d "$pin" ] || return 0
	if [ -e "$pin/pt_attach" ]; then
		if ! command -v tc >/dev/null 2>&1; then
			echo "porttrig: tc (iproute2) is missing: the programs on the interfaces in $pin/pt_attach stay attached" >&2
			echo "porttrig: remove them with: tc filter del dev IFACE ingress pref 1 handle 0x7074 bpf" >&2
			return 1
		fi
		entries=$(grep -E '^[0-9]+: [0-9]+$' "$pin/pt_attach") || entries=
		# Fields split on ": " and newlines only here.
		for entry in $(printf '%s\n' "$entries" | tr -d ' '); do
			ifindex=${entry%%:*} flags=${entry#*:} dev=
			for d in /sys/class/net/*; do
				[ "$(cat "$d/ifindex" 2>/dev/null)" = "$ifindex" ] && { dev=${d##*/}; break; }
			done
			# A vanished interface took its qdisc and filters with it.
			[ -n "$dev" ] || continue
			ifs=$((ifs + 1))
			if tc filter show dev "$dev" ingress pref 1 handle 0x7074 2>/dev/null | grep -q .; then
				tc filter del dev "$dev" ingress protocol all pref 1 handle 0x7074 bpf || rc=1
			fi
			if [ $((flags & 4)) -ne 0 ] && tc qdisc show dev "$dev" clsact 2>/dev/null | grep -q clsact; then
				tc qdisc del dev "$dev" clsact || rc=1
			fi
			# porttrig's XDP program (ATTACH_XDP, bit 3), only if it is still the one there.
			if [ $((flags & 8)) -ne 0 ] && ip -d link show dev "$dev" 2>/dev/null | grep -Eq 'prog/xdp id [0-9]+ name (pt_wan_xdp|pt_lan_xdp_pass) '; then
				ip link set dev "$dev" xdpdrv off || rc=1
			fi
		done
	fi
	pins=0
	for p in "$pin"/pt_* "$pin"/pt6_*; do
		[ -e "$p" ] || continue
		rm -f "$p" && pins=$((pins + 1))
	done
	echo "porttrig: detached from $ifs interfaces, removed $pins pins under $pin"
	# A bpffs of porttrig's own on PIN_PATH (never the system's /sys/fs/bpf).
	if [ "$pin" != /sys/fs/bpf ] && command -v mountpoint >/dev/null 2>&1 && mountpoint -q "$pin" \
		&& [ "$(stat -f -c %T "$pin" 2>/dev/null)" = bpf_fs ]; then
		umount -l "$pin" 2>/dev/null || true
	fi
	rmdir "$pin" 2>/dev/null || true
	return $rc
}
