#!/bin/sh
# Make sure the system packages the lab and the tests need are here.
# As root on Debian/Ubuntu, missing ones are installed with apt; otherwise
# this stops with one line saying what to install.
set -eu

missing=""
need() { # need PACKAGE CHECK...
    pkg=$1; shift
    if ! "$@" >/dev/null 2>&1; then missing="$missing $pkg"; fi
}
# A static ELF has no PT_INTERP (type 3) program header; python3 reads the headers (no binutils needed).
is_static() {
    python3 - "$1" <<'PY'
import struct, sys
try:
    data = open(sys.argv[1], "rb").read()
except OSError:
    sys.exit(1)
if data[:4] != b"\x7fELF" or data[4] != 2:
    sys.exit(1)
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(1 if 3 in types else 0)
PY
}

need python3-venv python3 -c 'import ensurepip, venv'
need docker.io sh -c 'command -v dockerd && command -v docker'
need openssh-server test -x /usr/sbin/sshd
need openssh-client sh -c 'command -v ssh-keygen'
need busybox-static is_static /bin/busybox
need cloud-init sh -c 'command -v cloud-init'   # its schema validator checks the generated user-data
need golang-go sh -c 'command -v go'            # compiles the lab's stand-in program (lab/homelab_lab/standin)
need iproute2 sh -c 'command -v ip'             # the bridge of each lab VM's engine
need iptables sh -c 'command -v iptables'       # a lab VM engine's forwarding rule
need util-linux sh -c 'command -v unshare && command -v mountpoint'  # each lab VM's namespace
need curl sh -c 'command -v curl'               # the K3s installer is fetched with it on the K3s VM
need systemd sh -c 'command -v systemd-analyze'  # tests verify the units `homelab schedule` writes
need prometheus-alertmanager sh -c 'command -v prometheus-alertmanager'  # tests post alerts to a real one
need restic sh -c 'command -v restic'           # backups (runbook 06): the real restic, static
need prometheus sh -c 'command -v prometheus && command -v promtool'  # monitoring (runbook 07): config checks, rule tests
need prometheus-node-exporter sh -c 'command -v prometheus-node-exporter'  # real exporters on the lab VMs
need chromium sh -c 'command -v chromium'       # the browser test of the walkthrough (Playwright, never a download)

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    exit 0
fi
echo "missing system packages:$missing -- install them (e.g. sudo apt-get install$missing) and re-run" >&2
exit 1
