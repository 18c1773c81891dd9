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
is_static() { [ -x "$1" ] && ! (LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'); }

need python3-venv python3 -c 'import ensurepip, venv'
need docker.io sh -c 'command -v dockerd && command -v docker'
need openssh-server test -x /usr/sbin/sshd
need openssh-client sh -c 'command -v ssh-keygen'
need busybox-static is_static /bin/busybox
need binutils sh -c 'command -v readelf'
need cloud-init sh -c 'command -v cloud-init'   # its schema validator checks the generated user-data

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
