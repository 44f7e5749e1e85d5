# record_pin_path: write the configuration's datapath.pin_path to
# $STATE/pin-path, where postrm purge finds it once porttrig and its
# configuration are gone. Asks porttrig (`check-config --json` prints it);
# keeps the last recorded one if the configuration does not load.
record_pin_path() {
	json=$(porttrig check-config --json "$DPKG_ROOT$CONFIG" 2>/dev/null) || return 0
	p=$(printf '%s\n' "$json" | sed -n 's/^ *"pinPath": "\(.*\)",\{0,1\}$/\1/p')
	[ -n "$p" ] || return 0
	mkdir -p "$STATE"
	printf '%s\n' "$p" >"$STATE/pin-path"
}
