"""The lab's Proxmox VE: fakepve in its own process, over HTTPS with a lab CA.

fakepve is run as a separate program (``python -m fakepve``), never imported.
Its nodes exist through the guests it is given: one cloud-init template per
node of the inventory, all named ``proxmox.template``, vmids counting up from
``proxmox.template_vmid``. Files, under ``state_dir/pve``:

    password        the root@pam password (mode 600), unless proxmox.password names another place
    ca.pem, ca.key  the lab CA (key mode 600); clients verify against ca.pem
    cert.pem, key.pem   the server certificate for the endpoint's IP, signed by the CA
    guests.json     what fakepve serves
    log             fakepve's output
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homelab_lib.errors import LabError
from homelab_lib.inventory.model import Inventory
from homelab_lib.lab import common
from homelab_lib.lab.common import PartStatus, Proc
from homelab_lib.secrets import Redactor, UnresolvedSecret

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
    """fakepve's guests file: one stopped cloud-init template VM per node."""
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
    return {"guests": out}


def _mac(vmid: int) -> str:
    """A stable MAC in Proxmox's BC:24:11 prefix."""
    return f"BC:24:11:{(vmid >> 16) & 0xFF:02X}:{(vmid >> 8) & 0xFF:02X}:{vmid & 0xFF:02X}"


# ---------------------------------------------------------------- secrets and certificates


def password(inv: Inventory, *, create: bool = True) -> str:
    """The password fakepve is started with; generated (mode 600) when proxmox.password is a missing file."""
    ref = inv.proxmox.password
    if ref is None:
        raise LabError(
            "proxmox.password is not set; the lab's Proxmox uses password login",
            where="proxmox.password",
            hint=f"add `password: file:{pve_dir(inv) / 'password'}` under proxmox:",
        )
    if create and ref.kind == "file" and not ref.path.exists():
        common.write_private(ref.path, secrets.token_urlsafe(24) + "\n")
    try:
        return ref.reveal()
    except UnresolvedSecret as e:
        raise LabError(e.message, where="proxmox.password", hint=e.hint) from None


def _ensure_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
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


def _issue_server_cert(folder: Path, host: str) -> tuple[Path, Path]:
    """Sign a fresh server certificate for host (an IP SAN) with the lab CA; returns (cert, key) paths."""
    ca_key, ca_cert = _ensure_ca(folder)
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
    return [
        sys.executable, "-m", "fakepve", str(folder / "guests.json"),
        "--host", host, "--port", str(port),
        "--time-scale", repr(common.lab_settings(inv).pve_time_scale),
        "--cert", str(folder / "cert.pem"), "--key", str(folder / "key.pem"),
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
    """Start fakepve, or reuse the one running with the same inputs and answering.

    Returns:
        True if a fresh process was started (then :func:`wait` for it), False if reused.
    """
    host, port = endpoint(inv)
    _check_ca_file(inv)
    state_dir = common.lab_settings(inv).state_dir
    folder = pve_dir(inv)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = password(inv)
    argv = _argv(inv)
    body = json.dumps(guests(inv), indent=2, sort_keys=True) + "\n"
    # Not the interpreter's path: `python` and `python3` of one venv start the same fakepve.
    inputs = common.digest(*argv[1:], body, inv.proxmox.user)
    old = common.load_state(state_dir).get(KEY)
    if old is not None and old.inputs == inputs and common.is_running(old) and _ticket(inv, secret) is None:
        progress(f"proxmox: fakepve already answering at https://{host}:{port} (pid {old.pid})")
        return False
    if old is not None and common.stop(old):
        progress(f"proxmox: stopped the previous fakepve (pid {old.pid}): it did not answer, or its inputs changed")
    _ensure_ca(folder)
    _issue_server_cert(folder, host)
    (folder / "guests.json").write_text(body)
    env = dict(os.environ, PVE_USER=inv.proxmox.user, PVE_PASS=secret)
    pid = common.spawn(argv, folder / "log", env=env)
    common.record(state_dir, KEY, Proc(pid, argv, inputs))
    progress(f"proxmox: started fakepve at https://{host}:{port} with {len(inv.nodes)} nodes (pid {pid})")
    return True


def wait(inv: Inventory, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until fakepve issues a ticket over TLS verified against the lab CA, and has the storage."""
    state_dir = common.lab_settings(inv).state_dir
    proc = common.load_state(state_dir).get(KEY)
    secret = password(inv)
    log = pve_dir(inv) / "log"
    where = f"proxmox {inv.proxmox.endpoint}"
    redactor = Redactor([secret])

    def ready() -> str | None:
        if not common.is_running(proc):
            raise LabError(
                f"fakepve exited while starting\n--- {log} (tail) ---\n{redactor.redact(common.log_tail(log))}",
                where=where,
                hint="is the address and port free (another lab, a real service)? is fakepve installed "
                "(pip install '.[lab]')?",
            )
        return _ticket(inv, secret)

    common.wait_until("fakepve to issue a ticket", ready, timeout, where, log=log, redact=redactor.redact)
    _check_storage(inv, secret)


def _ticket(inv: Inventory, secret: str) -> str | None:
    """None if a login ticket is issued (TLS verified against the lab CA), else why not."""
    host, port = endpoint(inv)
    try:
        answer = requests.post(
            f"https://{host}:{port}/api2/json/access/ticket",
            data={"username": inv.proxmox.user, "password": secret},
            verify=str(ca_path(inv)),
            timeout=5,
        )
    except requests.RequestException as e:
        return f"{type(e).__name__}: {e}"
    if answer.status_code != 200:
        return f"HTTP {answer.status_code} {answer.reason}"
    return None


def _check_storage(inv: Inventory, secret: str) -> None:
    """The template's storage must exist and hold disk images, or clones will fail later."""
    host, port = endpoint(inv)
    base = f"https://{host}:{port}/api2/json"
    ca = str(ca_path(inv))  # per request: a Session's verify loses to REQUESTS_CA_BUNDLE
    try:
        with requests.Session() as s:
            creds = {"username": inv.proxmox.user, "password": secret}
            login = s.post(f"{base}/access/ticket", data=creds, verify=ca, timeout=5)
            s.cookies.set("PVEAuthCookie", login.json()["data"]["ticket"])
            stores = s.get(f"{base}/storage", verify=ca, timeout=5).json()["data"]
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
    """Is fakepve running and issuing tickets?"""
    host, port = endpoint(inv)
    address = f"https://{host}:{port}"
    proc = common.load_state(common.lab_settings(inv).state_dir).get(KEY)
    if proc is None:
        return PartStatus("proxmox", "fakepve", address, "missing", "not started")
    if not common.is_running(proc):
        return PartStatus("proxmox", "fakepve", address, "down", f"pid {proc.pid} is not running")
    try:
        secret = password(inv, create=False)
    except LabError as e:
        return PartStatus("proxmox", "fakepve", address, "down", e.message)
    why = _ticket(inv, secret)
    if why is not None:
        return PartStatus("proxmox", "fakepve", address, "down", f"pid {proc.pid}: {why}")
    return PartStatus("proxmox", "fakepve", address, "up", f"pid {proc.pid}, {len(inv.nodes)} nodes, TLS verified")


def stop(inv: Inventory, progress: Callable[[str], None]) -> None:
    """Stop the fakepve this lab started (if its pid still runs the recorded command)."""
    state_dir = common.lab_settings(inv).state_dir
    proc = common.load_state(state_dir).get(KEY)
    if proc is not None and common.stop(proc):
        progress(f"proxmox: stopped fakepve (pid {proc.pid})")
