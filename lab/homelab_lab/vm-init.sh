#!/bin/sh
# The "boot" of one rehearsal-lab VM (written by homelab_lab.vms). Run as root by
#   unshare --mount --propagation private -- /bin/sh vm-init.sh
# so every mount below is private to this VM. Then it becomes the VM's sshd (exec).
#
# Run with --uts too: the VM's hostname is its name.
#
# Environment:
#   VM_NAME       the VM's name
#   VM_DIR        the VM's folder in the lab's state dir: everything the VM writes lands here
#   SSHD_CONFIG   the sshd_config of the VM's SSH endpoint
#   VM_ENGINE     1: run the VM's own Docker Engine (dockerd) before sshd
#   VM_BRIDGE     the engine's default bridge (a Linux bridge made for this VM)
#   VM_POOL       the engine's address pool for its networks (base=10.X.0.0/16,size=24)
#   VM_DEVICES    device stand-ins to make in the VM's /dev: "PATH:c:MAJOR:MINOR ..."
#
# The VM's view of the machine:
#   /run                  a fresh tmpfs (sshd, dockerd and containerd sockets and pid files);
#                         VM_DIR is bound at /run/vm
#   /etc /usr/local /opt /srv /var/lib /root /home /dev
#                         overlays: the machine's files below, what the VM writes in
#                         VM_DIR/fs/<path> (a folder holding the lab's state dir is skipped:
#                         overlayfs refuses an upper layer inside its lower one)
#   /var/lib/docker       VM_DIR/docker, the engine's data-root
set -eu

log() { echo "vm-init[$VM_NAME]: $*"; }

hostname "$VM_NAME"
# The machine's engine mounts were copied into this namespace: drop them, or they would keep
# its containers' folders busy (deepest first).
for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E '^/(var/lib/docker|var/lib/containerd|run)/' | sort -r); do
    umount -l "$m" 2>/dev/null || true
done

mount -t tmpfs -o mode=0755 "vmrun-$VM_NAME" /run
mkdir -p /run/vm /run/sshd /run/lock
mount --bind "$VM_DIR" /run/vm
mkdir -p /run/vm/fs /run/vm/work /run/vm/docker

# Keep the machine's /dev submounts (pts, shm, mqueue) to put back over the /dev overlay.
mkdir -p /run/hostdev
mount --rbind /dev /run/hostdev

state_real=$(readlink -f "$VM_DIR")
for dir in /etc /usr/local /opt /srv /var/lib /root /home /dev; do
    [ -d "$dir" ] || continue
    case "$state_real/" in
        "$dir"/*) log "not overlaying $dir: it holds the lab's state dir"; continue ;;
    esac
    key=$(echo "$dir" | tr / _)
    mkdir -p "/run/vm/fs$dir" "/run/vm/work/$key"
    mount -t overlay "vm-$VM_NAME" -o "lowerdir=$dir,upperdir=/run/vm/fs$dir,workdir=/run/vm/work/$key" "$dir"
done
for sub in pts shm mqueue hugepages; do
    if mountpoint -q "/run/hostdev/$sub" 2>/dev/null; then
        mkdir -p "/dev/$sub"
        mount --rbind "/run/hostdev/$sub" "/dev/$sub"
    fi
done
for spec in ${VM_DEVICES:-}; do
    path=${spec%%:*}
    rest=${spec#*:}
    if [ ! -e "$path" ]; then
        mkdir -p "$(dirname "$path")"
        # shellcheck disable=SC2086  # type major minor
        mknod -m 0666 "$path" $(echo "$rest" | tr : ' ')
        log "device stand-in $path ($rest)"
    fi
done

if [ -n "${VM_NAS:-}" ] && [ -d "$VM_NAS" ]; then
    # the lab's NAS share, the same folder on every VM (as a homelab mounts its NAS)
    mkdir -p /srv/nas
    mount --bind "$VM_NAS" /srv/nas
fi

mkdir -p /var/lib/docker
mount --bind /run/vm/docker /var/lib/docker
rm -f /etc/docker/key.json # the engine's identity: each VM's engine makes its own

if [ "${VM_ENGINE:-0}" = 1 ]; then
    # The VM's own engine, at the usual places of the VM's view (/run/docker.sock, /var/lib/docker),
    # plus a second socket in VM_DIR for the lab itself (building images, status).
    dockerd \
        --data-root /var/lib/docker \
        --exec-root /run/docker \
        --pidfile /run/docker.pid \
        -H unix:///run/docker.sock -H unix:///run/vm/docker.sock \
        --bridge "$VM_BRIDGE" --ip-masq=false --iptables=false \
        --default-address-pool "$VM_POOL" \
        --cgroup-parent "/homelab-lab-$VM_NAME" \
        --shutdown-timeout 5 \
        --log-level warn \
        >>/run/vm/dockerd.log 2>&1 &
    echo $! >/run/vm/dockerd.pid
    log "dockerd started (pid $!)"
fi

if [ -x /usr/local/bin/systemctl ]; then
    # the VM's enabled services (K3s once installed) come up as after a boot
    /usr/local/bin/systemctl boot >>/run/vm/services.log 2>&1 &
fi

log "sshd"
exec /usr/sbin/sshd -D -e -f "$SSHD_CONFIG"
