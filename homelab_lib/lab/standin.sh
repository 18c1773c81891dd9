#!/bin/busybox sh
# The stand-in for a homelab service in the rehearsal lab (built by homelab_lib.lab.images).
#
# Run by busybox sh as the container's entrypoint, from the image's environment:
#   STANDIN_SERVICE  the service's name
#   STANDIN_PORTS    TCP ports to serve (space-separated)
#   STANDIN_HEALTH   the HTTP path that answers 200, or "tcp"
#   STANDIN_VOLUMES  the service's volume paths (space-separated)
# It keeps real files in every volume (an id made on first boot, a line per boot
# in boots.log), serves every port with busybox httpd, and exits at once on
# SIGTERM or SIGINT. Arguments (a compose `command:`) are ignored.
set -eu

service="${STANDIN_SERVICE:-standin}"
ports="${STANDIN_PORTS:-}"
health="${STANDIN_HEALTH:-tcp}"
volumes="${STANDIN_VOLUMES:-}"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

for dir in $volumes; do
    mkdir -p "$dir"
    idfile="$dir/standin-$service.id"
    if [ ! -s "$idfile" ]; then
        hexdump -n 16 -e '16/1 "%02x"' /dev/urandom >"$idfile"
    fi
    echo "$now boot of $service stand-in $(cat "$idfile")" >>"$dir/boots.log"
done

mkdir -p /www
echo "stand-in for $service" >/www/index.html
path="${health%%\?*}"
case "$path" in
    tcp) ;;
    */) mkdir -p "/www$path" && echo ok >"/www${path}index.html" ;;
    *) mkdir -p "/www$(dirname "$path")" && echo ok >"/www$path" ;;
esac

pids=""
quit() {
    # shellcheck disable=SC2086  # one pid per word
    kill $pids 2>/dev/null || true
    exit 0
}
trap quit TERM INT

for port in $ports; do
    httpd -f -p "0.0.0.0:$port" -h /www &
    pids="$pids $!"
done
echo "stand-in for $service: ports ${ports:-none}, health $health, volumes ${volumes:-none}"
sleep 2147483647 &
pids="$pids $!"
wait
