#!/bin/sh
# Make sure a Docker Engine answers. As root with no engine running (no
# systemd here), start dockerd in the background; otherwise say what to do.
set -eu
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
    echo "no Docker Engine answers: start it (sudo systemctl start docker) and make sure you may use it (group docker)" >&2
    exit 1
fi
log=${DOCKERD_LOG:-/var/log/homelab-dockerd.log}
echo "starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
i=0
until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 60 ]; then echo "dockerd did not come up in 30 s; see $log" >&2; tail -5 "$log" >&2; exit 1; fi
    sleep 0.5
done
