"""The lab's VMs: each one its own host, reached over SSH like a real VM.

Every VM of the inventory (Docker hosts and the K3s VM) is a process tree in its
own mount and UTS namespace (``unshare``), booted by ``vm-init.sh``:

- its files: overlays on ``/etc``, ``/usr/local``, ``/opt``, ``/srv``, ``/var/lib``,
  ``/root``, ``/home`` and ``/dev``, so what a runbook writes there lands in the VM's
  folder of the lab's state dir (``vms/<vm>/fs/...``) and nowhere else on the machine;
  a private ``/run``; its hostname is the VM's name;
- its own Docker Engine (``dockerd`` with its own data-root, exec-root, pid file and
  socket, a default bridge and address pool of its own), which ``docker`` on the VM
  talks to at the usual ``/var/run/docker.sock``;
- device stand-ins for devices its services need that this machine lacks (``/dev/dri``);
- ``systemctl`` answered by the lab (``systemctl.sh``; the VM runs no systemd), and
  enabled units started at boot;
- the lab's NAS share at ``/srv/nas`` (one folder of the state dir, the same on every VM, as a
  homelab mounts its NAS on every VM: the backups' restic repository lives there);
- what cloud-init would install from its ``packages:`` (:data:`PACKAGE_UNITS`):
  ``prometheus-node-exporter`` as an enabled unit on the VM's address, ``restic``
  (this machine's binary);
- its OpenSSH server on ``vm.address:ssh.port`` with its own ed25519 host key.

Files: the client key at ``ssh.private_key`` (a ``file:`` reference) and its
``.pub`` at ``ssh.public_key``; ``known_hosts`` at ``ssh.known_hosts`` (the
lab's entries are replaced, other lines kept); and under ``state_dir``:

    ssh/authorized_keys             the client key, for every endpoint
    vms/<vm>/sshd_config            the endpoint's configuration
    vms/<vm>/ssh_host_ed25519_key   its host key (and .pub)
    vms/<vm>/log                    the VM's boot and sshd output
    vms/<vm>/dockerd.log, .pid      its engine's output and pid
    vms/<vm>/docker.sock            a second socket of its engine, for the lab itself
    vms/<vm>/docker/                the engine's data-root
    vms/<vm>/fs/<path>              what the VM wrote under <path>
    nas/                            the NAS share every VM mounts at /srv/nas
"""

from __future__ import annotations

import getpass
import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import paramiko
import requests

from homelab_lab import common
from homelab_lab.common import PartStatus, Proc
from homelab_lab.errors import LabError
from homelab_lib import clients
from homelab_lib.core.errors import HomelabError
from homelab_lib.hosts.ssh import connect, known_hosts_pattern, run_command
from homelab_lib.inventory.model import Inventory, Vm

SSHD = "/usr/sbin/sshd"
INIT = Path(__file__).with_name("vm-init.sh")
SYSTEMCTL = Path(__file__).with_name("systemctl.sh")  # the VMs run no systemd: the lab answers systemctl
KEY_PREFIX = "vm/"
ENGINE_PREFIX = "dockerd/"
DOCKER_VERSION = "docker version --format '{{.Server.Version}}'"
START_TIMEOUT_S = 60.0
ENGINE_STOP_S = 30.0
SOCKET_MAX = 100  # a unix socket path must fit in sun_path (108 bytes)
# Devices a service may ask for that this machine lacks: the VM gets stand-in nodes.
DEVICE_STANDINS = {"/dev/dri": [("/dev/dri/card0", 226, 0), ("/dev/dri/renderD128", 226, 128)]}

DockerClient = Any  # docker.DockerClient: the docker SDK has no type hints


def key_paths(inv: Inventory) -> tuple[Path, Path]:
    """(private key, public key) paths of the lab's client key."""
    ref = inv.ssh.private_key
    if ref.kind != "file":
        raise LabError(
            f"ssh.private_key is {ref}; the lab writes its client key to a file",
            where="ssh.private_key",
            hint="give a file: reference, e.g. file:../.lab/ssh/id_ed25519",
        )
    private = ref.path
    return private, inv.ssh.public_key or private.with_name(private.name + ".pub")


def host_pattern(inv: Inventory, vm: Vm) -> str:
    """How known_hosts names the endpoint: ``[addr]:port``, or the bare address on port 22."""
    return known_hosts_pattern(vm.address, inv.ssh.port)


def vm_dir(inv: Inventory, vm_name: str) -> Path:
    """The VM's folder in the lab's state dir (everything the VM writes lands under it)."""
    return common.lab_settings(inv).state_dir / "vms" / vm_name


def engine_socket(inv: Inventory, vm_name: str) -> Path:
    """The lab's own socket of a VM's Docker Engine."""
    return vm_dir(inv, vm_name) / "docker.sock"


def bridge_name(inv: Inventory, vm_name: str) -> str:
    """The Linux bridge of a VM's engine (interface names have at most 15 characters)."""
    state_dir = common.lab_settings(inv).state_dir
    return "hl" + hashlib.sha256(f"{state_dir}/{vm_name}".encode()).hexdigest()[:10]


def _octet(vm: Vm) -> int:
    return int(vm.address.rsplit(".", 1)[1])


def bridge_subnet(vm: Vm) -> str:
    """The subnet of the engine's default bridge: 10.199.<last octet of the VM's address>.0/24."""
    return f"10.199.{_octet(vm)}.0/24"


def bridge_address(vm: Vm) -> str:
    """The engine bridge's gateway address (.1 of :func:`bridge_subnet`)."""
    return f"10.199.{_octet(vm)}.1/24"


def pool_subnet(vm: Vm) -> str:
    """The /16 the engine's networks are cut from, distinct from every other VM's."""
    octet = _octet(vm)
    return f"10.{octet if octet != 199 else 198}.0.0/16"


def address_pool(vm: Vm) -> str:
    """The engine's ``--default-address-pool``: /24 networks of :func:`pool_subnet`."""
    return f"base={pool_subnet(vm)},size=24"


def device_standins(inv: Inventory, vm: Vm) -> list[str]:
    """``PATH:c:MAJOR:MINOR`` for each device the VM's services need and this machine lacks."""
    wanted = sorted({d for services in vm.stacks.values() for name in services for d in inv.services[name].devices})
    out = []
    for device in wanted:
        if Path(device).exists():
            continue
        nodes = DEVICE_STANDINS.get(device, [(device, 1, 3)])  # unknown: a node that acts as /dev/null
        out += [f"{path}:c:{major}:{minor}" for path, major, minor in nodes]
    return out


#: What cloud-init's ``packages:`` would install on a VM, as the lab provides it: a unit file
#: (enabled, so it starts at the VM's boot) or nothing (the binary is this machine's, under /usr).
#: The lab's exporters listen on the VM's address only, as every lab server binds loopback.
PACKAGE_UNITS: dict[str, Callable[[Vm], str]] = {
    "prometheus-node-exporter": lambda vm: (
        "[Unit]\nDescription=Prometheus exporter for machine metrics (the lab's stand-in for the Debian package)\n\n"
        "[Service]\nType=simple\n"
        f"ExecStart=/usr/bin/prometheus-node-exporter --web.listen-address={vm.address}:9100\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    "restic": lambda vm: "",
}


def package_units(vm: Vm) -> dict[str, str]:
    """The unit files the VM's packages bring (name -> text); packages the lab does not know are skipped."""
    return {f"{p}.service": text for p in vm.packages if p in PACKAGE_UNITS and (text := PACKAGE_UNITS[p](vm))}


def _fresh_dotfiles(inv: Inventory, vm: Vm) -> None:
    """root's shell start-up files as a fresh Debian VM has them (/etc/skel), over this machine's.

    The VM's /root is an overlay of this machine's (for the Docker CLI's plugins under ~/.docker), but
    this machine's ~/.bashrc may run anything (pyenv's ``rehash`` takes a lock: concurrent SSH sessions
    on one VM then wait on each other for a minute).
    """
    home = vm_dir(inv, vm.name) / "fs" / "root"
    home.mkdir(parents=True, exist_ok=True)
    for name in (".bashrc", ".profile", ".bash_logout"):
        skel = Path("/etc/skel") / name
        if skel.exists():
            (home / name).write_bytes(skel.read_bytes())
        else:
            (home / name).write_text("")


def _install_packages(inv: Inventory, vm: Vm) -> None:
    units = vm_dir(inv, vm.name) / "fs" / "etc" / "systemd" / "system"
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for name, text in package_units(vm).items():
        (units / name).write_text(text)
        link = wants / name
        if not link.is_symlink():
            link.symlink_to(f"/etc/systemd/system/{name}")


def check(inv: Inventory) -> None:
    """Raise LabError if the VMs cannot work: non-loopback addresses, a user sshd cannot serve, not root."""
    for vm in inv.vms:
        common.require_loopback(vm.address, f"VM {vm.name} (ip {vm.ip})")
        if len(str(engine_socket(inv, vm.name))) > SOCKET_MAX:
            raise LabError(
                f"VM {vm.name}'s engine socket path is too long for a unix socket: {engine_socket(inv, vm.name)}",
                where="lab.state_dir",
                hint="give lab.state_dir a shorter path",
            )
    user = inv.ssh.user
    if os.geteuid() != 0:
        raise LabError(
            "the lab's VMs need root: each is a mount namespace with its own Docker Engine",
            where=f"user {getpass.getuser()}",
            hint="run the lab as root (sudo homelab lab up), e.g. in a throwaway VM or container",
        )
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise LabError(
            f"ssh.user '{user}' is not a user of this machine", where="ssh.user", hint="use root, or your own user"
        ) from None
    for tool in ("unshare", "dockerd", "ip"):
        if shutil.which(tool) is None:
            raise LabError(
                f"{tool} is not installed", where="lab VMs", hint="apt-get install util-linux docker.io iproute2"
            )


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed", where=what, hint="apt-get install openssh-client") from None
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}", where=what)
    return done.stdout


def _keygen(path: Path, comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], f"key {path}")


def ensure_keys(inv: Inventory) -> str:
    """Make the client key if missing, write its public half; returns the public key line."""
    private, public = key_paths(inv)
    if not private.exists():
        _keygen(private, f"homelab-lab@{inv.name}")
    derived = _run(["ssh-keygen", "-y", "-f", str(private)], f"key {private}").split()[:2]
    line = " ".join([*derived, f"homelab-lab@{inv.name}"]) + "\n"
    if not public.exists() or public.read_text() != line:
        public.parent.mkdir(parents=True, exist_ok=True)
        public.write_text(line)
    return line


def sshd_config(inv: Inventory, vm: Vm) -> str:
    """The sshd_config of one VM's endpoint (read inside the VM, where /run is its own)."""
    folder = vm_dir(inv, vm.name)
    keys = common.lab_settings(inv).state_dir / "ssh" / "authorized_keys"
    return "\n".join(
        [
            f"# The SSH endpoint of VM {vm.name} in the rehearsal lab '{inv.name}' (generated by homelab_lab)",
            f"ListenAddress {vm.address}:{inv.ssh.port}",
            f'HostKey "{folder / "ssh_host_ed25519_key"}"',
            "PidFile /run/sshd.pid",
            f'AuthorizedKeysFile "{keys}"',
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"AllowUsers {inv.ssh.user}",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _write_known_hosts(inv: Inventory, entries: dict[str, str]) -> None:
    """Replace the lines of these host patterns in known_hosts (others are kept); empty values remove."""
    path = inv.ssh.known_hosts
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split(" ", 1)[0] not in entries]
    kept += [f"{pattern} {key}" for pattern, key in entries.items() if key]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text("".join(line + "\n" for line in kept))


# ---------------------------------------------------------------- the bridge of a VM's engine


def _bridge_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _ensure_bridge(inv: Inventory, vm: Vm) -> None:
    name = bridge_name(inv, vm.name)
    if _bridge_exists(name):
        return
    where = f"VM {vm.name} bridge {name}"
    _run(["ip", "link", "add", "name", name, "type", "bridge"], where)
    _run(["ip", "addr", "add", bridge_address(vm), "dev", name], where)
    _run(["ip", "link", "set", name, "up"], where)


def _forward_rules(inv: Inventory, vm: Vm) -> list[list[str]]:
    """iptables rules that let a VM engine's containers talk on each of its networks, as an engine's own do.

    The VMs' engines run with ``--iptables=false`` (several engines must not fight over
    Docker's chains), while the machine's own engine sets the FORWARD policy to DROP;
    bridged traffic inside one of the VM's networks is accepted, traffic between two of
    its networks stays dropped, as Docker isolates networks on a real VM.
    """
    comment = f"homelab-lab {bridge_name(inv, vm.name)}"
    return [
        ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "-s", net, "-d", net,
         "-m", "comment", "--comment", comment, "-j", "ACCEPT"]
        for net in (pool_subnet(vm), bridge_subnet(vm))
    ]  # fmt: skip


def _iptables(args: list[str]) -> bool:
    if shutil.which("iptables") is None:
        return False
    return subprocess.run(["iptables", "-w", *args], capture_output=True, check=False, timeout=30).returncode == 0


def _ensure_forwarding(inv: Inventory, vm: Vm) -> None:
    for rule in _forward_rules(inv, vm):
        if not _iptables(["-C", *rule]):
            _iptables(["-I", *rule])


def _remove_network(inv: Inventory, vm_name: str) -> None:
    """Remove a VM's bridge and its forwarding rules (found by their comment, so a VM gone from the inventory too)."""
    name = bridge_name(inv, vm_name)
    if _bridge_exists(name):
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False, timeout=30)
    if shutil.which("iptables") is None:
        return
    listed = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        if line.startswith("-A FORWARD ") and f'"homelab-lab {name}"' in line:
            _iptables(["-D", *shlex.split(line)[1:]])


# ---------------------------------------------------------------- boot and stop


def _env(inv: Inventory, vm: Vm) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "VM_NAME": vm.name,
        "VM_DIR": str(vm_dir(inv, vm.name)),
        "SSHD_CONFIG": str(vm_dir(inv, vm.name) / "sshd_config"),
        "VM_ENGINE": "1",
        "VM_BRIDGE": bridge_name(inv, vm.name),
        "VM_POOL": address_pool(vm),
        "VM_DEVICES": " ".join(device_standins(inv, vm)),
        "VM_NAS": str(nas_dir(inv)),
    }


def nas_dir(inv: Inventory) -> Path:
    """The lab's NAS share: one folder every VM mounts at /srv/nas (where lab.yaml's restic repository is)."""
    return common.lab_settings(inv).state_dir / "nas"


def _argv(inv: Inventory, vm: Vm) -> list[str]:
    """How a VM boots: vm-init.sh in new mount and UTS namespaces; it ends by exec'ing sshd."""
    return ["unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", str(INIT), vm.name]


def _sshd_argv(inv: Inventory, vm: Vm) -> list[str]:
    """What the booted VM's pid runs (vm-init.sh execs it): the record that ``is_running`` checks."""
    return [SSHD, "-D", "-e", "-f", str(vm_dir(inv, vm.name) / "sshd_config")]


def _namespace(pid: int) -> str | None:
    """The mount namespace a process lives in (``mnt:[inode]``), or None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _stop_namespace(namespace: str, keep: set[int]) -> list[int]:
    """SIGTERM, then SIGKILL, every process in a VM's mount namespace (its services: K3s, ...) but those kept."""
    found = [
        int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and _namespace(int(p)) == namespace
    ]
    for pid in found:
        argv = common.cmdline(pid)
        if argv is not None:
            common.stop(common.Proc(pid, argv, ""))
    return found


def _stop_vm(inv: Inventory, vm_name: str, progress: Callable[[str], None] | None = None) -> None:
    """Stop a VM: its engine first (its containers stop with it), its services, its sshd, then its network."""
    state_dir = common.lab_settings(inv).state_dir
    procs = common.load_state(state_dir)
    engine = procs.get(ENGINE_PREFIX + vm_name)
    if engine is None:  # a VM that died before its engine was recorded: its pid file still tells
        engine = _engine_proc(inv, vm_name)
    init = procs.get(KEY_PREFIX + vm_name)
    namespaces = {ns for p in (init, engine) if p is not None and (ns := _namespace(p.pid)) is not None}
    if engine is not None and common.stop(engine, timeout=ENGINE_STOP_S) and progress:
        progress(f"vm: stopped the Docker Engine of {vm_name} (pid {engine.pid})")
    for ns in namespaces - {_namespace(os.getpid())}:
        stopped = _stop_namespace(ns, keep={init.pid} if init is not None else set())
        if stopped and progress:
            progress(f"vm: stopped {len(stopped)} service process(es) of {vm_name}")
    if init is not None and common.stop(init) and progress:
        progress(f"vm: stopped {vm_name} (sshd pid {init.pid})")
    common.record(state_dir, ENGINE_PREFIX + vm_name, None)
    common.record(state_dir, KEY_PREFIX + vm_name, None)
    _remove_network(inv, vm_name)


def _engine_proc(inv: Inventory, vm_name: str) -> Proc | None:
    """The VM's dockerd from its pid file, if that pid runs a dockerd of this VM."""
    try:
        pid = int((vm_dir(inv, vm_name) / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    argv = common.cmdline(pid)
    if not argv or Path(argv[0]).name != "dockerd" or f"/homelab-lab-{vm_name}" not in argv:
        return None
    return Proc(pid, argv, "")


def start(inv: Inventory, progress: Callable[[str], None]) -> list[Vm]:
    """Boot every VM, reusing those running with the same inputs and answering.

    Returns:
        The VMs booted afresh (then :func:`wait` for them).
    """
    check(inv)
    if not Path(SSHD).exists():
        raise LabError(f"{SSHD} is not installed", where="ssh", hint="apt-get install openssh-server")
    state_dir = common.lab_settings(inv).state_dir
    public = ensure_keys(inv)
    keys = state_dir / "ssh" / "authorized_keys"
    keys.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys.write_text(public)

    # VMs no longer in the inventory
    names = {vm.name for vm in inv.vms}
    for key in list(common.load_state(state_dir)):
        if key.startswith(KEY_PREFIX) and key[len(KEY_PREFIX) :] not in names:
            _stop_vm(inv, key[len(KEY_PREFIX) :], progress)

    host_keys: dict[str, str] = {}
    for vm in inv.vms:
        host_key = vm_dir(inv, vm.name) / "ssh_host_ed25519_key"
        if not host_key.exists():
            _keygen(host_key, f"{vm.name}@{inv.name}")
        host_keys[vm.name] = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    _write_known_hosts(inv, {host_pattern(inv, vm): host_keys[vm.name] for vm in inv.vms})

    fresh = []
    for vm in inv.vms:
        folder = vm_dir(inv, vm.name)
        config = sshd_config(inv, vm)
        argv = _argv(inv, vm)
        env = _env(inv, vm)
        units = package_units(vm)
        inputs = common.digest(
            config,
            host_keys[vm.name],
            INIT.read_text(),
            SYSTEMCTL.read_text(),
            "dotfiles: /etc/skel",  # root's start-up files are a fresh VM's (_fresh_dotfiles)
            *sorted(f"{k}={v}" for k, v in env.items()),
            *sorted(f"{k}:{v}" for k, v in units.items()),
        )
        old = common.load_state(state_dir).get(KEY_PREFIX + vm.name)
        if old is not None and old.inputs == inputs and common.is_running(old) and _try(inv, vm) is None:
            _ensure_forwarding(inv, vm)  # the machine's engine may have restarted and reset its chains
            progress(f"vm: {vm.name} already answering at {vm.address}:{inv.ssh.port} (pid {old.pid})")
            continue
        _stop_vm(inv, vm.name)
        (folder / "sshd_config").write_text(config)
        systemctl = folder / "fs" / "usr" / "local" / "bin" / "systemctl"
        systemctl.parent.mkdir(parents=True, exist_ok=True)
        systemctl.write_bytes(SYSTEMCTL.read_bytes())
        systemctl.chmod(0o755)
        _install_packages(inv, vm)
        _fresh_dotfiles(inv, vm)
        nas_dir(inv).mkdir(parents=True, exist_ok=True)
        _ensure_bridge(inv, vm)
        _ensure_forwarding(inv, vm)
        pid = common.spawn(argv, folder / "log", env=env)
        common.record(state_dir, KEY_PREFIX + vm.name, Proc(pid, _sshd_argv(inv, vm), inputs))
        progress(f"vm: booted {vm.name} at {vm.address}:{inv.ssh.port} (pid {pid}; its own mounts and engine)")
        fresh.append(vm)
    return fresh


def probe(inv: Inventory, vm: Vm, timeout: float = 10.0) -> str:
    """Log in to a VM's endpoint (host key checked against known_hosts) and run ``docker version``.

    Returns:
        The Docker Engine's version as the VM sees it.

    Raises:
        HostKeyRejected, SshError: the handshake or login failed.
        LabError: docker failed on the VM.
    """
    client = connect(clients.ssh_target(inv, vm.name, timeout=timeout))
    try:
        done = run_command(client, DOCKER_VERSION, timeout=timeout, where=f"VM {vm.name}")
        if not done.ok:
            raise LabError(
                f"`docker version` failed over SSH (exit {done.exit_code}): {done.stderr.strip()}",
                where=f"VM {vm.name}",
                hint="is the VM's Docker Engine running? see its dockerd.log in the VM's folder",
            )
        return done.stdout.strip()
    finally:
        client.close()


def _try(inv: Inventory, vm: Vm) -> str | None:
    """None if the endpoint answers (probe succeeds), else why not."""
    try:
        probe(inv, vm, timeout=5.0)
    except (HomelabError, paramiko.SSHException, OSError, EOFError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def wait(inv: Inventory, vms: list[Vm], timeout: float = START_TIMEOUT_S) -> None:
    """Wait until each VM's endpoint accepts an SSH login and its engine answers; record the engine."""
    state_dir = common.lab_settings(inv).state_dir
    procs = common.load_state(state_dir)
    for vm in vms:
        proc = procs.get(KEY_PREFIX + vm.name)
        log = vm_dir(inv, vm.name) / "log"
        where = f"VM {vm.name} ssh {vm.address}:{inv.ssh.port}"

        def ready(vm: Vm = vm, proc: Proc | None = proc, log: Path = log, where: str = where) -> str | None:
            if proc is None or not common.is_alive(proc.pid):  # booting: its argv changes until sshd runs
                raise LabError(
                    f"the VM exited while booting\n--- {log} (tail) ---\n{common.log_tail(log)}",
                    where=where,
                    hint="is the address and port free (another lab, another sshd)? are you root?",
                )
            return _try(inv, vm)

        common.wait_until(
            "the VM to accept a login and its engine to answer",
            ready,
            timeout,
            where,
            log=vm_dir(inv, vm.name) / "dockerd.log",
        )
        engine = _engine_proc(inv, vm.name)
        if engine is not None:
            common.record(state_dir, ENGINE_PREFIX + vm.name, engine)


def engine(inv: Inventory, vm: Vm) -> DockerClient:
    """A docker SDK client of a VM's own engine (through the lab's socket), after a ping.

    Raises:
        LabError: the engine does not answer.
    """
    sock = engine_socket(inv, vm.name)
    try:
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise LabError(
            f"the Docker Engine of VM {vm.name} does not answer ({e})",
            where=f"VM {vm.name} ({sock})",
            hint=f"see {vm_dir(inv, vm.name) / 'dockerd.log'}; `homelab lab up` boots the VM again",
        ) from None
    return client


def status(inv: Inventory) -> list[PartStatus]:
    """One status per VM: is it booted, and does a login run docker against its own engine?"""
    procs = common.load_state(common.lab_settings(inv).state_dir)
    out = []
    for vm in inv.vms:
        address = f"{vm.address}:{inv.ssh.port}"
        proc = procs.get(KEY_PREFIX + vm.name)
        if proc is None:
            out.append(PartStatus("vm", vm.name, address, "missing", "not booted"))
        elif not common.is_running(proc):
            out.append(PartStatus("vm", vm.name, address, "down", f"pid {proc.pid} is not running"))
        else:
            try:
                version = probe(inv, vm, timeout=5.0)
            except (HomelabError, paramiko.SSHException, OSError, EOFError) as e:
                out.append(PartStatus("vm", vm.name, address, "down", f"pid {proc.pid}: {type(e).__name__}: {e}"))
            else:
                out.append(PartStatus("vm", vm.name, address, "up", f"pid {proc.pid}, its own docker {version}"))
    return out


def stop(inv: Inventory, progress: Callable[[str], None]) -> None:
    """Stop every VM this lab booted; drop the lab's known_hosts lines if that file is kept elsewhere."""
    state_dir = common.lab_settings(inv).state_dir
    booted = {k[len(KEY_PREFIX) :] for k in common.load_state(state_dir) if k.startswith(KEY_PREFIX)}
    for name in sorted(booted | {vm.name for vm in inv.vms}):
        _stop_vm(inv, name, progress)
    known = inv.ssh.known_hosts
    if known.exists() and not known.is_relative_to(state_dir):
        _write_known_hosts(inv, {host_pattern(inv, vm): "" for vm in inv.vms})
