"""K3s on its VM over SSH: what is installed and configured, the install script, the service.

The install is K3s's documented one, the same on every VM::

    curl -sfL <k3s.install_url> | INSTALL_K3S_VERSION=<k3s.version> INSTALL_K3S_EXEC=server sh -s -

with the settings in ``/etc/rancher/k3s/config.yaml`` (written first) and the cluster token
handed over as ``K3S_TOKEN`` from a private file that is removed at once (the installer keeps it
in ``k3s.service.env``, mode 600). The script is downloaded to a private temporary file before it
runs, so a failed download is an error rather than an empty script run by ``sh``, and with
``k3s.install_sha256`` the file is checked (``sha256sum -c``) before ``sh`` reads it; the
air-gapped install checks its copied script the same way. Every value put into the remote
command (the URL, the version, the checksum) is quoted with :func:`shlex.quote`: nothing of the
parameters is ever read by the VM's shell as shell.
"""

from __future__ import annotations

import secrets as pysecrets
import shlex
from collections.abc import Sequence

from homelab_lib.core.errors import K3sError, K3sInstallFailed, UnresolvedSecret
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.k3s.state import CONFIG_PATH, REMOTE_KUBECONFIG, K3sDesired

INSTALL_TIMEOUT_S = 600.0
TOKEN_FILE = "/root/.homelab-k3s-token"
TAIL_LINES = 12
#: The exit code :func:`install_command` gives when the script cannot be downloaded (curl's "HTTP error").
DOWNLOAD_FAILED = 22
#: The exit code the install commands give when the script's sha256 is not ``k3s.install_sha256`` (nothing ran).
CHECKSUM_FAILED = 86


def read_file(host: DockerHost, path: str) -> str | None:
    """A file's content on the VM; None when it is not there."""
    done = host.run(f"test -f {shlex.quote(path)} && cat {shlex.quote(path)}", timeout=60)
    return done.stdout if done.ok else None


def active(host: DockerHost) -> bool:
    """``systemctl is-active k3s`` says active."""
    return host.run("systemctl is-active k3s", timeout=60).stdout.strip() == "active"


def remote_kubeconfig(host: DockerHost) -> str | None:
    """The VM's /etc/rancher/k3s/k3s.yaml (a secret: never shown); None when K3s has not written it."""
    return read_file(host, REMOTE_KUBECONFIG)


MARK = "--homelab-k3s-section"


def snapshot(host: DockerHost) -> tuple[str, str | None, bool, str | None]:
    """What observe reads, in one command: version, config.yaml (None: none), active, k3s.yaml (None: none).

    Each file is printed between marker lines, with a newline after it that the split on lines takes
    off again, so content comes back byte for byte (a missing file and an empty one differ).
    """
    files = {"config": CONFIG_PATH, "kubeconfig": REMOTE_KUBECONFIG}
    parts = [
        f"echo '{MARK} version'",
        "(command -v k3s >/dev/null 2>&1 && k3s --version) 2>/dev/null",
        f"echo '{MARK} active'",
        "systemctl is-active k3s 2>/dev/null",
    ]
    for name, path in files.items():
        q = shlex.quote(path)
        parts.append(
            f"if test -f {q}; then echo '{MARK} {name} yes'; cat {q}; printf '\\n'; else echo '{MARK} {name} no'; fi"
        )
    parts.append(f"echo '{MARK} end'")
    done = host.run("; ".join(parts), timeout=60)
    sections: dict[str, list[str]] = {}
    current = ""
    for line in done.stdout.split("\n"):
        if line.startswith(MARK + " "):
            current = line[len(MARK) + 1 :]
            sections[current] = []
        elif current:
            sections[current].append(line)

    def text(name: str) -> str | None:
        for flag in ("yes", "no"):
            if f"{name} {flag}" in sections:
                return "\n".join(sections[f"{name} {flag}"]) if flag == "yes" else None
        return None

    first = "\n".join(sections.get("version", [])).strip().splitlines()
    words = first[0].split() if first else []
    version = words[2] if len(words) >= 3 and words[:2] == ["k3s", "version"] else (first[0] if first else "")
    active = "\n".join(sections.get("active", [])).strip() == "active"
    return version, text("config"), active, text("kubeconfig")


def write_config(host: DockerHost, desired: K3sDesired) -> None:
    """Write /etc/rancher/k3s/config.yaml (mode 600, atomically)."""
    folder, name = CONFIG_PATH.rsplit("/", 1)
    host.put_files(folder, {name: (desired.config.encode(), 0o600)})


def token_value(ref: SecretRef, *, where: str) -> str:
    """The cluster token: read from its reference; a missing ``file:`` is made once (mode 600) and reused.

    Raises:
        K3sError: an ``env:`` reference is unset (a token cannot be made for it), or the file cannot be written.
    """
    try:
        return ref.reveal()
    except UnresolvedSecret:
        if ref.kind != "file" or ref.path.exists():
            raise K3sError(
                f"the cluster token {ref} cannot be read",
                where=where,
                hint="set it (an env: reference is never made for you), or use a file: reference, which "
                "runbook 03 fills once",
            ) from None
    import os

    value = pysecrets.token_hex(32)
    try:
        ref.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(ref.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    except OSError as e:
        raise K3sError(
            f"cannot write the new cluster token to {ref.path} ({e.strerror})", where=where, hint="check the folder"
        ) from None
    return ref.reveal()


def _token_prefix(with_token: bool) -> str:
    """Shell that exports K3S_TOKEN from the private file put on the VM, and removes the file."""
    return f'K3S_TOKEN="$(cat {TOKEN_FILE})"; rm -f {TOKEN_FILE}; export K3S_TOKEN; ' if with_token else ""


def _checked(script: str, sha256: str | None) -> str:
    """Shell that stops (exit CHECKSUM_FAILED, the script removed) unless the file script has sha256; '' for None."""
    if sha256 is None:
        return ""
    q = shlex.quote
    wrong = f"the K3s install script's sha256 is not k3s.install_sha256 ({sha256}); nothing was run"
    return (
        f"printf '%s  %s\\n' {q(sha256)} {script} | sha256sum -c - >/dev/null 2>&1 || "
        f"{{ echo {q(wrong)} >&2; rm -f {script}; exit {CHECKSUM_FAILED}; }}; "
    )


def install_command(desired: K3sDesired, *, with_token: bool) -> str:
    """The documented install: the script downloaded to a private file first (exit 22 when it cannot be),
    checked against ``install_sha256`` (exit 86 when it differs), then run by ``sh -s -``; every value quoted."""
    q, script = shlex.quote, '"$script"'
    failed = f"cannot download the K3s install script from {desired.install_url}"
    return (
        f"{_token_prefix(with_token)}script=$(mktemp) || exit 1; "
        f"curl -sfL -o {script} {q(desired.install_url)} || "
        f"{{ echo {q(failed)} >&2; rm -f {script}; exit {DOWNLOAD_FAILED}; }}; "
        f"{_checked(script, desired.install_sha256)}"
        f"INSTALL_K3S_VERSION={q(desired.version)} INSTALL_K3S_EXEC=server sh -s - <{script} 2>&1; "
        f"rc=$?; rm -f {script}; exit $rc"
    )


AIRGAP_SCRIPT = "/root/.homelab-k3s-install.sh"
BIN = "/usr/local/bin/k3s"


def airgap_command(desired: K3sDesired, *, with_token: bool) -> str:
    """The documented air-gapped install: the copied script, checked against ``install_sha256`` on the VM,
    with INSTALL_K3S_SKIP_DOWNLOAD=true."""
    q = shlex.quote
    return (
        f"{_token_prefix(with_token)}{_checked(AIRGAP_SCRIPT, desired.install_sha256)}INSTALL_K3S_SKIP_DOWNLOAD=true "
        f"INSTALL_K3S_VERSION={q(desired.version)} INSTALL_K3S_EXEC=server "
        f"sh {AIRGAP_SCRIPT} 2>&1; rc=$?; rm -f {AIRGAP_SCRIPT}; exit $rc"
    )


def copy_airgap(host: DockerHost, desired: K3sDesired) -> None:
    """Check the local binary's and script's sha256, copy both to the VM, check the binary there, put it in place.

    Raises:
        K3sInstallFailed: the binary's or the script's sha256 is not the one the parameters name (nothing
            was copied), or the binary's copy on the VM does not match (it was removed; nothing installed).
        K3sError: the files cannot be read, or k3s.install_sha256 is not set (the script would run unchecked).
    """
    import hashlib

    assert desired.airgap is not None
    binary, sha, script = desired.airgap
    if desired.install_sha256 is None:
        raise K3sError(
            "an air-gapped install runs its script only checked, and k3s.install_sha256 is not set",
            where=desired.where,
            hint="set k3s.install_sha256 to the sha256sum of airgap.install_script, once you have read it",
        )
    try:
        data = binary.read_bytes()
        script_text = script.read_bytes()
    except OSError as e:
        raise K3sError(
            f"cannot read the air-gap files ({e.strerror}: {e.filename})",
            where=desired.where,
            hint="download the release's k3s binary and install script to the paths in k3s.airgap",
        ) from None
    for path, content, want, named in (
        (binary, data, sha, "k3s.airgap.sha256"),
        (script, script_text, desired.install_sha256, "k3s.install_sha256"),
    ):
        have = hashlib.sha256(content).hexdigest()
        if have != want:
            raise K3sInstallFailed(
                f"checksum mismatch: {path} has sha256 {have}, {named} says {want}; nothing was installed",
                exit_code=0,
                where=desired.where,
                hint="download the file again from the release (the binary's sha256sum-amd64.txt; the script "
                "from the install URL, read before you pin it), then run again",
            )
    folder, name = BIN.rsplit("/", 1)
    host.put_files(folder, {f"{name}.homelab-new": (data, 0o755)})
    host.put_files(AIRGAP_SCRIPT.rsplit("/", 1)[0], {AIRGAP_SCRIPT.rsplit("/", 1)[1]: (script_text, 0o700)})
    q, new = shlex.quote, shlex.quote(f"{BIN}.homelab-new")
    check = host.run(
        f"printf '%s  %s\\n' {q(sha)} {new} | sha256sum -c - >/dev/null 2>&1 && mv -f {new} {q(BIN)}", timeout=120
    )
    if not check.ok:
        host.run(f"rm -f {BIN}.homelab-new {AIRGAP_SCRIPT}", timeout=60)
        raise K3sInstallFailed(
            "the binary copied to the VM does not match its sha256; it was removed, nothing was installed",
            exit_code=check.exit_code,
            where=desired.where,
            hint="is the VM's disk full? run again",
        )


def tail(text: str, secrets: Sequence[str] = (), lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last lines of output, any secret value replaced by ``***``."""
    out = []
    for line in text.strip().splitlines()[-lines:]:
        for value in secrets:
            if value:
                line = line.replace(value, "***")
        out.append(line)
    return tuple(out)


def install(host: DockerHost, desired: K3sDesired, *, timeout: float = INSTALL_TIMEOUT_S) -> tuple[str, ...]:
    """Run the install script for desired.version (install or upgrade); its last lines.

    Raises:
        K3sInstallFailed: the script exited non-zero; its exit code and last lines (token redacted).
        K3sError: the token cannot be read or made.
    """
    if desired.airgap:
        copy_airgap(host, desired)
    token = token_value(desired.token, where=desired.where) if desired.token else ""
    if token:
        host.put_files(TOKEN_FILE.rsplit("/", 1)[0], {TOKEN_FILE.rsplit("/", 1)[1]: (token.encode(), 0o600)})
    command = airgap_command if desired.airgap else install_command
    done = host.run(command(desired, with_token=bool(token)), timeout=timeout)
    if token:
        host.run(f"rm -f {TOKEN_FILE}", timeout=60)
    last = tail(done.stdout + ("\n" + done.stderr if done.stderr.strip() else ""), [token])
    if not done.ok:
        different = any("different token" in line for line in last)
        raise K3sInstallFailed(
            f"the K3s install script ({'air-gapped' if desired.airgap else desired.install_url}, {desired.version}) "
            f"failed with exit code {done.exit_code}",
            exit_code=done.exit_code,
            tail=last,
            where=desired.where,
            hint=(
                "K3s on the VM holds data made with another token: set k3s.token to the token it was installed "
                "with, or uninstall K3s there (k3s-uninstall.sh) to start over"
                if different
                else "the script is not the one k3s.install_sha256 names: read the new one (it runs as root), "
                "then set its sha256, or find out who changed it"
                if done.exit_code == CHECKSUM_FAILED
                else "read the last lines above; fix the cause (URL, version, disk, network), then run again"
            ),
        )
    return last


def restart(host: DockerHost, desired: K3sDesired) -> None:
    """``systemctl restart k3s`` (reads the new config.yaml).

    Raises:
        K3sInstallFailed: systemctl failed; its exit code and last lines.
    """
    done = host.run("systemctl restart k3s", timeout=INSTALL_TIMEOUT_S)
    if not done.ok:
        raise K3sInstallFailed(
            "systemctl restart k3s failed",
            exit_code=done.exit_code,
            tail=tail(done.stdout + "\n" + done.stderr),
            where=desired.where,
            hint="look at the service's log on the VM (journalctl -u k3s); a bad config.yaml key stops k3s",
        )
