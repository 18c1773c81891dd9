"""The lab's Proxmox VE: fakepve in its own process, over HTTPS with a lab CA.

The process is the lab's launcher, :mod:`homelab_lab.pve_server`
(``python -m homelab_lab.pve_server``), which builds fakepve through its
Python API and adds what fakepve 0.5 lacks (disk resize recorded in the config,
a guest agent in clones, API tokens); nothing else here imports fakepve. The
nodes are the inventory's, each with one cloud-init template, all named
``proxmox.template``, vmids counting up from ``proxmox.template_vmid``.

The lab accepts the inventory's own credentials, as a real cluster would: the
API token ``proxmox.user!proxmox.token_id`` with the secret ``proxmox.token_secret``
points to (a file, made with a fresh secret when missing), and the password
login of ``proxmox.user`` when ``proxmox.password`` is given (else of root@pam,
with a password the lab keeps to itself). Readiness and status are checked
with the credentials the runbooks use. Files, under ``state_dir/pve``:

    password        the login password (mode 600), unless proxmox.password names another place
    ca.pem, ca.key  the lab CA (key mode 600); clients verify against ca.pem
    cert.pem, key.pem   the server certificate for the endpoint's IP, signed by the CA
    guests.json     what the launcher serves: the nodes, the templates, the backup job and backups
    log             the launcher's output
(and, in parameters/lab.yaml, ``token``: the API token's secret, mode 600.)
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homelab_lab import common
from homelab_lab.common import PartStatus, Proc
from homelab_lab.errors import LabError
from homelab_lib.core.secrets import Redactor, SecretRef, UnresolvedSecret
from homelab_lib.inventory.model import Inventory

KEY = "pve"
DEFAULT_PORT = 8006
START_TIMEOUT_S = 30.0


def endpoint(inv: Inventory) -> tuple[str, int]:
    """The (host, port) fakepve listens on, from proxmox.endpoint; the host must be a 127.x address."""
    url = urlsplit(inv.proxmox.endpoint)
    host = url.hostname or ""
    common.require_loopback(host, f"proxmox.endpoint {inv.proxmox.endpoint}")
    return host, url.port or DEFAULT_PORT


def pve_dir(inv: Inventory) -> Path:
    return common.lab_settings(inv).state_dir / "pve"


def ca_path(inv: Inventory) -> Path:
    """The lab CA certificate that clients verify the endpoint against."""
    return pve_dir(inv) / "ca.pem"


def guests(inv: Inventory) -> dict[str, Any]:
    """The launcher's lab file: the inventory's nodes, and one stopped cloud-init template VM per node."""
    px = inv.proxmox
    out = []
    for i, node in enumerate(inv.nodes):
        vmid = px.template_vmid + i
        config = {
            "name": px.template,
            "description": "Debian 12 cloud-init template (rehearsal lab)",
            "ostype": "l26",
            "machine": "q35",
            "cpu": "x86-64-v2-AES",
            "cores": 2,
            "sockets": 1,
            "memory": 2048,
            "scsihw": "virtio-scsi-single",
            "scsi0": f"{px.storage}:base-{vmid}-disk-0,discard=on,iothread=1,size=2G",
            "ide2": f"{px.storage}:vm-{vmid}-cloudinit,media=cdrom",
            "boot": "order=scsi0",
            "net0": f"virtio={_mac(vmid)},bridge={px.bridge}",
            "agent": "1",
            "serial0": "socket",
            "vga": "serial0",
            "citype": "nocloud",
            "ipconfig0": "ip=dhcp",
            "template": 1,
        }
        out.append(
            {
                "vmid": vmid,
                "name": px.template,
                "node": node.name,
                "status": "stopped",
                "template": True,
                "config": config,
            }
        )
    return {"nodes": [node.name for node in inv.nodes], "guests": out, **backup_state(inv)}


def backup_state(inv: Inventory) -> dict[str, Any]:
    """The lab's backups at start, so that runbook 06's first dry run has two things to flag.

    With ``backups.vzdump`` set: the inventory's backup job (``vzdump.job_id``) exists, in snapshot
    mode on the vzdump storage, but covers every VM except the last one of the inventory (no job
    covers that one, and it has no backup); the second VM's latest backup is a day older than its
    RPO; every other VM has a backup a few hours old. The VMs themselves come later (runbook 01
    makes them with these vmids), as backups outlive a VM in a real cluster. Sections of the
    launcher's lab file: ``backup_jobs`` and ``backups`` (see :mod:`homelab_lab.pve_server`).
    """
    policy = inv.backups.vzdump
    if policy is None or not inv.vms:
        return {}
    covered = inv.vms[:-1]
    job = {
        "id": policy.job_id,
        "schedule": policy.schedule,
        "storage": policy.storage,
        "mode": "snapshot",
        "compress": "zstd",
        "vmid": ",".join(str(vm.vmid) for vm in covered),
        "enabled": 1,
        "prune-backups": f"keep-daily={policy.keep_daily}",
        "notes-template": policy.notes_template,
    }
    backups = []
    for i, vm in enumerate(covered):
        rpo = inv.backups.rpo_hours.get(vm.name, policy.rpo_hours)
        age = rpo + 24 if i == 1 else 3 + i
        size = vm.disk_gib * 1024**3 // 16
        for day in (2, 1, 0):  # the two backups before, a day apart, as a daily job leaves them
            backups.append(
                {
                    "storage": policy.storage,
                    "node": vm.node,
                    "vmid": vm.vmid,
                    "age_hours": age + 24 * day,
                    "size": size,
                    "notes": vm.name,
                }
            )
    return {"backup_jobs": [job], "backups": backups}


def _mac(vmid: int) -> str:
    """A stable MAC in Proxmox's BC:24:11 prefix."""
    return f"BC:24:11:{(vmid >> 16) & 0xFF:02X}:{(vmid >> 8) & 0xFF:02X}:{vmid & 0xFF:02X}"


# ---------------------------------------------------------------- secrets and certificates


def login_user(inv: Inventory) -> str:
    """The user of the lab's password login: proxmox.user when proxmox.password is given, else root@pam."""
    return inv.proxmox.user if inv.proxmox.password is not None else "root@pam"


def password(inv: Inventory, *, create: bool = True) -> str:
    """The password of the lab's login: proxmox.password's, else the lab's own ``pve/password``.

    A missing file is made with a fresh password (mode 600) when create is set.
    """
    ref = inv.proxmox.password
    if ref is None:
        ref = SecretRef("file", str(pve_dir(inv) / "password"), pve_dir(inv))
    if create and ref.kind == "file" and not ref.path.exists():
        common.write_private(ref.path, secrets.token_urlsafe(24) + "\n")
    try:
        return ref.reveal()
    except UnresolvedSecret as e:
        raise LabError(e.message, where="proxmox.password", hint=e.hint) from None


def token(inv: Inventory) -> tuple[str, Path] | None:
    """(token id ``user@realm!name``, secret file) of the inventory's API token; None when it names none."""
    px = inv.proxmox
    if not px.token_id:
        return None
    ref = px.token_secret
    if ref is None or ref.kind != "file":
        given = f"{ref.kind}:{ref.target}" if ref is not None else "not set"
        raise LabError(
            f"proxmox.token_secret is {given}; the lab keeps the API token's secret in a file",
            where="proxmox.token_secret",
            hint=f"give `token_secret: file:{pve_dir(inv) / 'token'}` (the lab makes it)",
        )
    return f"{px.user}!{px.token_id}", ref.path


def token_secret(path: Path) -> str:
    """The secret in path; a fresh one (a UUID, as PVE makes them) is written there (mode 600) if it is missing."""
    if not path.exists():
        common.write_private(path, f"{uuid.uuid4()}\n")
    secret = path.read_text().strip()
    if not secret:
        raise LabError(
            f"the API token's secret file {path} is empty",
            where="proxmox.token_secret",
            hint="delete it: `homelab lab up` makes a fresh one",
        )
    return secret


def ensure_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The lab CA: loaded from ca.pem/ca.key, or made when missing or about to expire."""
    cert_file, key_file = folder / "ca.pem", folder / "ca.key"
    now = datetime.datetime.now(datetime.UTC)
    if cert_file.exists() and key_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > now + datetime.timedelta(days=1):
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homelab rehearsal lab CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    common.write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue_server_cert(folder: Path, host: str) -> tuple[Path, Path]:
    """Sign a fresh server certificate for host (an IP SAN) with the lab CA; returns (cert, key) paths."""
    ca_key, ca_cert = ensure_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    common.write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# ---------------------------------------------------------------- the process


def _argv(inv: Inventory) -> list[str]:
    host, port = endpoint(inv)
    folder = pve_dir(inv)
    tok = token(inv)
    return [
        sys.executable, "-m", "homelab_lab.pve_server", str(folder / "guests.json"),
        "--host", host, "--port", str(port),
        "--time-scale", repr(common.lab_settings(inv).pve_time_scale), "--run-schedules",
        "--cert", str(folder / "cert.pem"), "--key", str(folder / "key.pem"),
        *(["--token", tok[0], "--token-file", str(tok[1])] if tok else []),
    ]  # fmt: skip


def _check_ca_file(inv: Inventory) -> None:
    given = inv.proxmox.ca_file
    if given is not None and given != ca_path(inv):
        raise LabError(
            f"proxmox.ca_file is {given}, but the lab's CA is {ca_path(inv)}",
            where="proxmox.ca_file",
            hint=f"set `ca_file: {ca_path(inv)}` (or leave it out) in the lab parameters",
        )


def start(inv: Inventory, progress: Callable[[str], None]) -> bool:
    """Start the lab's fakepve, or reuse the one running with the same inputs and accepting the credentials.

    Returns:
        True if a fresh process was started (then :func:`wait` for it), False if reused.
    """
    host, port = endpoint(inv)
    _check_ca_file(inv)
    state_dir = common.lab_settings(inv).state_dir
    folder = pve_dir(inv)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = password(inv)
    tok = token(inv)
    if tok is not None:
        token_secret(tok[1])
    argv = _argv(inv)
    body = json.dumps(guests(inv), indent=2, sort_keys=True) + "\n"
    # Not the interpreter's path: `python` and `python3` of one venv start the same server.
    inputs = common.digest(*argv[1:], body, login_user(inv))
    old = common.load_state(state_dir).get(KEY)
    if old is not None and old.inputs == inputs and common.is_running(old) and _ready(inv) is None:
        progress(f"proxmox: fakepve already answering at https://{host}:{port} (pid {old.pid})")
        return False
    if old is not None and common.stop(old):
        progress(f"proxmox: stopped the previous fakepve (pid {old.pid}): it did not answer, or its inputs changed")
    ensure_ca(folder)
    issue_server_cert(folder, host)
    (folder / "guests.json").write_text(body)
    env = dict(os.environ, PVE_USER=login_user(inv), PVE_PASS=secret)
    pid = common.spawn(argv, folder / "log", env=env)
    common.record(state_dir, KEY, Proc(pid, argv, inputs))
    progress(f"proxmox: started fakepve at https://{host}:{port} with {len(inv.nodes)} nodes (pid {pid})")
    return True


def wait(inv: Inventory, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until fakepve accepts the runbooks' credentials (TLS verified against the lab CA) and has the storage."""
    state_dir = common.lab_settings(inv).state_dir
    proc = common.load_state(state_dir).get(KEY)
    log = pve_dir(inv) / "log"
    where = f"proxmox {inv.proxmox.endpoint}"
    redactor = Redactor(_secrets(inv))

    def ready() -> str | None:
        if not common.is_running(proc):
            raise LabError(
                f"fakepve exited while starting\n--- {log} (tail) ---\n{redactor.redact(common.log_tail(log))}",
                where=where,
                hint="is the address and port free (another lab, a real service)? is fakepve installed "
                "(pip install -e ./lab, the homelab-lab distribution)?",
            )
        return _ready(inv)

    common.wait_until("fakepve to accept the credentials", ready, timeout, where, log=log, redact=redactor.redact)
    _check_storage(inv)


def _secrets(inv: Inventory) -> list[str]:
    """The secrets the lab's fakepve knows (to mask them in what the lab shows)."""
    found = [password(inv, create=False)]
    tok = token(inv)
    if tok is not None and tok[1].exists():
        found.append(tok[1].read_text().strip())
    return [s for s in found if s]


def _base(inv: Inventory) -> str:
    host, port = endpoint(inv)
    return f"https://{host}:{port}/api2/json"


def _login(inv: Inventory, session: requests.Session) -> str | None:
    """Authenticate session as the runbooks do (API token, else a login ticket); None, or why it failed.

    TLS is verified against the lab CA (per request: a Session's verify loses to REQUESTS_CA_BUNDLE).
    """
    ca = str(ca_path(inv))
    tok = token(inv)
    try:
        if tok is not None:
            token_id, path = tok
            try:
                secret = path.read_text().strip()
            except OSError:
                return f"no token secret at {path} yet"
            session.headers["Authorization"] = f"PVEAPIToken={token_id}={secret}"
            answer = session.get(f"{_base(inv)}/version", verify=ca, timeout=5)
        else:
            creds = {"username": login_user(inv), "password": password(inv, create=False)}
            answer = session.post(f"{_base(inv)}/access/ticket", data=creds, verify=ca, timeout=5)
            if answer.status_code == 200:
                session.cookies.set("PVEAuthCookie", answer.json()["data"]["ticket"])
    except requests.RequestException as e:
        return f"{type(e).__name__}: {e}"
    except (ValueError, KeyError, TypeError) as e:
        return f"unexpected answer: {type(e).__name__}"
    if answer.status_code != 200:
        return f"HTTP {answer.status_code} {answer.reason}"
    return None


def _ready(inv: Inventory) -> str | None:
    """None if the runbooks' credentials are accepted (TLS verified against the lab CA), else why not."""
    with requests.Session() as session:
        return _login(inv, session)


def _check_storage(inv: Inventory) -> None:
    """The template's storage must exist and hold disk images, or clones will fail later."""
    base = _base(inv)
    try:
        with requests.Session() as s:
            why = _login(inv, s)
            if why is not None:
                raise LabError(f"cannot log in to list the storages: {why}", where=f"proxmox {base}")
            stores = s.get(f"{base}/storage", verify=str(ca_path(inv)), timeout=5).json()["data"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as e:
        raise LabError(f"cannot list the storages: {type(e).__name__}: {e}", where=f"proxmox {base}") from None
    usable = sorted(st["storage"] for st in stores if "images" in str(st.get("content", "")).split(","))
    if inv.proxmox.storage not in usable:
        raise LabError(
            f"the lab's Proxmox has no storage '{inv.proxmox.storage}' for disk images",
            where="proxmox.storage",
            hint=f"use one of: {', '.join(usable)}",
        )


def status(inv: Inventory) -> PartStatus:
    """Is fakepve running and accepting the runbooks' credentials?"""
    host, port = endpoint(inv)
    address = f"https://{host}:{port}"
    proc = common.load_state(common.lab_settings(inv).state_dir).get(KEY)
    if proc is None:
        return PartStatus("proxmox", "fakepve", address, "missing", "not started")
    if not common.is_running(proc):
        return PartStatus("proxmox", "fakepve", address, "down", f"pid {proc.pid} is not running")
    try:
        why = _ready(inv)
    except LabError as e:
        return PartStatus("proxmox", "fakepve", address, "down", e.message)
    if why is not None:
        return PartStatus("proxmox", "fakepve", address, "down", f"pid {proc.pid}: {why}")
    tok = token(inv)
    auth = f"token {tok[0]}" if tok else f"password of {login_user(inv)}"
    detail = f"pid {proc.pid}, {len(inv.nodes)} nodes, {auth}, TLS verified"
    return PartStatus("proxmox", "fakepve", address, "up", detail)


def stop(inv: Inventory, progress: Callable[[str], None]) -> None:
    """Stop the fakepve this lab started (if its pid still runs the recorded command)."""
    state_dir = common.lab_settings(inv).state_dir
    proc = common.load_state(state_dir).get(KEY)
    if proc is not None and common.stop(proc):
        progress(f"proxmox: stopped fakepve (pid {proc.pid})")
