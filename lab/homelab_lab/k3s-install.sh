#!/bin/sh
# The rehearsal lab's K3s installer (written for the lab, not a copy of get.k3s.io). It is
# served by the lab at the URL that parameters/lab.yaml names as k3s.install_url and is run
# on a lab VM exactly as the official one is:
#
#   curl -sfL URL | INSTALL_K3S_VERSION=v1.31.4+k3s1 INSTALL_K3S_EXEC="server --disable traefik" sh -s -
#
# It honours, as get.k3s.io does: INSTALL_K3S_VERSION, INSTALL_K3S_EXEC and the arguments after
# `sh -s -`, INSTALL_K3S_SKIP_DOWNLOAD (air-gapped: the binary is already at the bin dir),
# INSTALL_K3S_SKIP_ENABLE, INSTALL_K3S_SKIP_START, INSTALL_K3S_BIN_DIR, K3S_TOKEN,
# K3S_KUBECONFIG_MODE and /etc/rancher/k3s/config.yaml (read by k3s itself). It downloads the
# binary and its sha256 from the lab (the lab's K3s is its Kubernetes API stand-in), verifies
# it, installs /usr/local/bin/k3s, the k3s service (systemctl on the VM), the uninstall
# script, and starts the service.
set -e

DOWNLOAD_BASE="@DOWNLOAD_BASE@"
BIN_DIR=${INSTALL_K3S_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=/etc/systemd/system
SERVICE=k3s

info() { echo "[INFO]  $*"; }
fatal() { echo "[ERROR]  $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fatal "You need to be root to perform this install"

if [ -z "$INSTALL_K3S_VERSION" ]; then
    INSTALL_K3S_VERSION=$(curl -sfL "$DOWNLOAD_BASE/k3s/stable.txt") || fatal "Failed to find the stable release"
fi
VERSION_K3S=$INSTALL_K3S_VERSION
info "Using $VERSION_K3S as release"

CMD_K3S_EXEC="${INSTALL_K3S_EXEC:-server} $*"
case "$CMD_K3S_EXEC" in
    server*|agent*) ;;
    *) CMD_K3S_EXEC="server $CMD_K3S_EXEC" ;;
esac

TMP_DIR=$(mktemp -d -t k3s-install.XXXXXXXXXX)
trap 'rm -rf "$TMP_DIR"' EXIT

if [ "$INSTALL_K3S_SKIP_DOWNLOAD" = true ]; then
    info "Skipping k3s download and verify"
    [ -x "$BIN_DIR/k3s" ] || fatal "Executable k3s binary not found at $BIN_DIR/k3s"
else
    info "Downloading hash $DOWNLOAD_BASE/k3s/$VERSION_K3S/sha256sum-amd64.txt"
    curl -sfL -o "$TMP_DIR/k3s.hash" "$DOWNLOAD_BASE/k3s/$VERSION_K3S/sha256sum-amd64.txt" \
        || fatal "Download failed: no release $VERSION_K3S"
    HASH_EXPECTED=$(grep " k3s$" "$TMP_DIR/k3s.hash" | awk '{print $1}')
    if [ -x "$BIN_DIR/k3s" ] && [ "$(sha256sum "$BIN_DIR/k3s" | awk '{print $1}')" = "$HASH_EXPECTED" ]; then
        info "Skipping binary downloaded, installed k3s matches hash"
    else
        info "Downloading binary $DOWNLOAD_BASE/k3s/$VERSION_K3S/k3s"
        curl -sfL -o "$TMP_DIR/k3s.bin" "$DOWNLOAD_BASE/k3s/$VERSION_K3S/k3s" || fatal "Download failed"
        info "Verifying binary download"
        HASH_BIN=$(sha256sum "$TMP_DIR/k3s.bin" | awk '{print $1}')
        [ "$HASH_BIN" = "$HASH_EXPECTED" ] || fatal "Download sha256 does not match $HASH_EXPECTED, got $HASH_BIN"
        info "Installing k3s to $BIN_DIR/k3s"
        mkdir -p "$BIN_DIR"
        chmod 755 "$TMP_DIR/k3s.bin"
        mv -f "$TMP_DIR/k3s.bin" "$BIN_DIR/k3s"
    fi
fi

for cmd in kubectl crictl ctr; do
    if [ -e "$BIN_DIR/$cmd" ] || command -v "$cmd" >/dev/null 2>&1; then
        info "Skipping $BIN_DIR/$cmd symlink to k3s, command exists in PATH at $(command -v "$cmd" || echo "$BIN_DIR/$cmd")"
    else
        info "Creating $BIN_DIR/$cmd symlink to k3s"
        ln -sf k3s "$BIN_DIR/$cmd"
    fi
done

info "Creating uninstall script $BIN_DIR/k3s-uninstall.sh"
cat >"$BIN_DIR/k3s-uninstall.sh" <<EOF
#!/bin/sh
set -x
systemctl stop $SERVICE || true
systemctl disable $SERVICE || true
rm -f $SYSTEMD_DIR/$SERVICE.service $SYSTEMD_DIR/$SERVICE.service.env
for cmd in kubectl crictl ctr; do [ -L $BIN_DIR/\$cmd ] && rm -f $BIN_DIR/\$cmd; done
rm -rf /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/kubelet
rm -f $BIN_DIR/k3s $BIN_DIR/k3s-uninstall.sh
EOF
chmod 755 "$BIN_DIR/k3s-uninstall.sh"

info "env: Creating environment file $SYSTEMD_DIR/$SERVICE.service.env"
mkdir -p "$SYSTEMD_DIR"
umask 077
env | grep -E '^(K3S|CONTAINERD)_' | sed -e 's/=\(.*\)/="\1"/' >"$SYSTEMD_DIR/$SERVICE.service.env" || true
umask 022

info "systemd: Creating service file $SYSTEMD_DIR/$SERVICE.service"
cat >"$SYSTEMD_DIR/$SERVICE.service" <<EOF
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-$SYSTEMD_DIR/$SERVICE.service.env
KillMode=process
Delegate=yes
LimitNOFILE=1048576
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=$BIN_DIR/k3s $CMD_K3S_EXEC
X-Lab-Ready-File=/etc/rancher/k3s/k3s.yaml

[Install]
WantedBy=multi-user.target
EOF

systemctl daemon-reload
if [ "$INSTALL_K3S_SKIP_ENABLE" != true ]; then
    info "systemd: Enabling $SERVICE unit"
    systemctl enable "$SERVICE" >/dev/null 2>&1
fi
if [ "$INSTALL_K3S_SKIP_START" != true ]; then
    info "systemd: Starting $SERVICE"
    systemctl restart "$SERVICE"
fi
