#!/bin/sh
# systemctl for a rehearsal-lab VM, which runs no systemd (installed by homelab_lab.vms as
# /usr/local/bin/systemctl in the VM). It answers the verbs an installer and a runbook use,
# for units in /etc/systemd/system: daemon-reload, enable, disable, is-enabled, start, stop,
# restart, is-active, status, show -p MainPID. A started unit runs its ExecStart (with its
# Environment= and EnvironmentFile= settings) in the background, output to
# /var/log/<unit>.log, pid in /run/<unit>.pid. For Type=notify units, start waits (up to
# TimeoutStartSec, default 90 s) until the file its X-Lab-Ready-File= names exists, or its process is gone;
# the lab's K3s writes its kubeconfig when its API is ready, as K3s does before it notifies.
set -eu

UNITS=/etc/systemd/system
WANTS=$UNITS/multi-user.target.wants

die() { echo "systemctl: $*" >&2; exit 1; }

unit_file() {
    name=$1
    case "$name" in *.service) ;; *) name="$name.service" ;; esac
    [ -f "$UNITS/$name" ] || { echo "Unit $name could not be found." >&2; exit 5; }
    echo "$UNITS/$name"
}

unit_name() { basename "$1" .service; }

key() { # key FILE NAME: the last value of NAME= in the unit file (continuation lines joined)
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$1" | sed -n "s/^$2=//p" | tail -n 1
}

pid_of() {
    pidfile="/run/$(unit_name "$1").pid"
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    file=$(unit_file "$1")
    name=$(unit_name "$file")
    if pid_of "$file" >/dev/null; then return 0; fi
    exec_start=$(key "$file" ExecStart)
    [ -n "$exec_start" ] || die "$name has no ExecStart"
    env_files=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$file")
    envs=$(sed -n 's/^Environment=//p' "$file")
    ready_file=$(key "$file" X-Lab-Ready-File || true)
    kind=$(key "$file" Type)
    timeout=$(key "$file" TimeoutStartSec)
    case "$timeout" in ''|0|infinity) timeout=90 ;; esac
    timeout=${timeout%s}
    mkdir -p /var/log
    [ -z "$ready_file" ] || rm -f "$ready_file"
    (
        for f in $env_files; do
            # shellcheck disable=SC1090
            [ -f "$f" ] && { set -a; . "$f"; set +a; }
        done
        for e in $envs; do export "$(echo "$e" | tr -d '"')"; done
        # shellcheck disable=SC2086  # ExecStart is a command line
        exec setsid $exec_start >>"/var/log/$name.log" 2>&1 </dev/null
    ) &
    echo $! >"/run/$name.pid"
    if [ "$kind" = notify ] && [ -n "$ready_file" ]; then
        waited=0
        while [ ! -e "$ready_file" ]; do
            pid_of "$file" >/dev/null || { tail -n 20 "/var/log/$name.log" >&2; die "$name exited while starting"; }
            [ "$waited" -lt $((timeout * 10)) ] || die "$name did not become ready in ${timeout}s"
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
}

stop() {
    file=$(unit_file "$1")
    pid=$(pid_of "$file") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "/run/$(unit_name "$file").pid"
}

[ $# -ge 1 ] || die "no verb given"
verb=$1
shift
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done # options (--now, -q, --no-pager) are accepted
case "$verb" in
    daemon-reload) ;;
    enable)
        mkdir -p "$WANTS"
        for u in "$@"; do f=$(unit_file "$u"); ln -sf "$f" "$WANTS/$(basename "$f")"; done ;;
    disable)
        for u in "$@"; do f=$(unit_file "$u"); rm -f "$WANTS/$(basename "$f")"; done ;;
    is-enabled)
        f=$(unit_file "$1"); if [ -e "$WANTS/$(basename "$f")" ]; then echo enabled; else echo disabled; exit 1; fi ;;
    start) for u in "$@"; do start "$u"; done ;;
    stop) for u in "$@"; do stop "$u"; done ;;
    restart) for u in "$@"; do stop "$u"; start "$u"; done ;;
    is-active)
        f=$(unit_file "$1"); if pid_of "$f" >/dev/null; then echo active; else echo inactive; exit 3; fi ;;
    status)
        f=$(unit_file "$1")
        if pid=$(pid_of "$f"); then
            echo "● $(basename "$f") - $(key "$f" Description)"
            echo "     Active: active (running)"
            echo "   Main PID: $pid"
        else
            echo "● $(basename "$f") - $(key "$f" Description)"
            echo "     Active: inactive (dead)"
            exit 3
        fi ;;
    show)
        f=$(unit_file "${2:-$1}")
        echo "MainPID=$(pid_of "$f" || echo 0)" ;;
    boot) # the lab's VM boot: start every enabled unit of the VM's own (in /etc/systemd/system; the
        # links to /lib/systemd/system units are this machine's packages, seen through the /etc overlay).
        # One unit failing to start does not keep the others down.
        for f in "$WANTS"/*.service; do
            n=$(basename "$f")
            [ -f "$UNITS/$n" ] || continue
            ( start "$n" ) || echo "systemctl: $n did not start" >&2
        done ;;
    *) die "unknown verb '$verb' (the lab's systemctl answers daemon-reload, enable, disable, is-enabled, start, stop, restart, is-active, status, show)" ;;
esac
