"""The pod's and container's security settings: user and groups, devices, host namespaces, capabilities.

``user``/``group_add`` become runAsUser/runAsGroup/supplementalGroups (numeric ids only);
``devices`` a hostPath with privileged (flagged); ``pid``/``ipc: host`` hostPID/hostIPC;
``cap_add``/``cap_drop``, ``privileged``, ``read_only`` and ``security_opt`` the container's
securityContext; ``sysctls`` the pod's (unsafe ones flagged: :data:`SAFE_SYSCTLS` are the safe set).
"""

from __future__ import annotations

from typing import Any

from homelab_lib.convert.model import Build, handles, pair_list

SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


@handles("user")
def _user(b: Build, value: Any) -> None:
    user, _, group = str(value).partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        b.note(
            "user",
            "not mapped",
            f"user {value} is a name: Kubernetes takes numeric ids only (runAsUser/runAsGroup); "
            "look the ids up in the image (id -u NAME) and give them as user: UID:GID",
        )
        return
    sc = b.security()
    sc["runAsUser"] = int(user)
    if group:
        sc["runAsGroup"] = int(group)
    b.note("user", "mapped", f"securityContext runAsUser {user}" + (f", runAsGroup {group}" if group else ""))


@handles("group_add")
def _groups(b: Build, value: Any) -> None:
    ids = [int(g) for g in value if str(g).isdigit()]
    names = [str(g) for g in value if not str(g).isdigit()]
    if ids:
        b.pod_security()["supplementalGroups"] = ids
        b.note("group_add", "mapped", f"pod supplementalGroups {ids}")
    if names:
        b.note("group_add", "not mapped", f"groups by name {names}: Kubernetes takes numeric group ids only")


@handles("devices")
def _devices(b: Build, value: Any) -> None:
    for i, entry in enumerate(value or []):
        if isinstance(entry, dict):
            source, target = str(entry.get("source")), str(entry.get("target") or entry.get("source"))
        else:
            parts = str(entry).split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
        name = b.volume_name(f"dev-{source.strip('/').replace('/', '-')}")
        b.pod_volumes.append({"name": name, "hostPath": {"path": source}})
        b.mounts.append({"name": name, "mountPath": target})
        b.security()["privileged"] = True
        b.note(
            f"devices[{i}]",
            "approximated",
            f"hostPath {source} mounted at {target}, with privileged: true (the device cgroup allows it only then); "
            "FLAGGED: a device plugin (Intel GPU, USB) is the narrower way; the pod must run on the node with it",
        )


@handles("pid")
def _pid(b: Build, value: Any) -> None:
    if str(value) == "host":
        b.pod["hostPID"] = True
        b.note("pid", "mapped", "hostPID: true (sees the K3s node's processes)")
    else:
        b.note(
            "pid",
            "not mapped",
            f"pid {value}: sharing another container's processes is one pod's shareProcessNamespace",
        )


@handles("ipc")
def _ipc(b: Build, value: Any) -> None:
    if str(value) == "host":
        b.pod["hostIPC"] = True
        b.note("ipc", "mapped", "hostIPC: true")
    else:
        b.note("ipc", "not mapped", f"ipc {value}: containers of one pod share IPC; other modes have no counterpart")


@handles("cap_add", "cap_drop")
def _caps(b: Build, _value: Any) -> None:
    for key, field_ in (("cap_add", "add"), ("cap_drop", "drop")):
        caps = [str(c).upper().removeprefix("CAP_") for c in b.svc.get(key) or []]
        if caps:
            b.security().setdefault("capabilities", {})[field_] = caps
            b.note(key, "mapped", f"securityContext.capabilities.{field_} {caps}")


@handles("privileged")
def _privileged(b: Build, value: Any) -> None:
    if value:
        b.security()["privileged"] = True
        b.note("privileged", "approximated", "privileged: true; FLAGGED: full access to the K3s node")
    else:
        b.note("privileged", "mapped", "not privileged")


@handles("read_only")
def _read_only(b: Build, value: Any) -> None:
    b.security()["readOnlyRootFilesystem"] = bool(value)
    b.note("read_only", "mapped", f"readOnlyRootFilesystem {bool(value)}")


@handles("security_opt")
def _security_opt(b: Build, value: Any) -> None:
    for i, opt in enumerate(value or []):
        text = str(opt).replace("=", ":")
        key = f"security_opt[{i}]"
        if text in ("no-new-privileges", "no-new-privileges:true"):
            b.security()["allowPrivilegeEscalation"] = False
            b.note(key, "mapped", "allowPrivilegeEscalation: false")
        elif text == "seccomp:unconfined":
            b.security()["seccompProfile"] = {"type": "Unconfined"}
            b.note(key, "mapped", "seccompProfile Unconfined")
        elif text == "apparmor:unconfined":
            b.security()["appArmorProfile"] = {"type": "Unconfined"}
            b.note(key, "mapped", "appArmorProfile Unconfined")
        else:
            b.note(key, "not mapped", f"{opt} has no securityContext counterpart here")


@handles("sysctls")
def _sysctls(b: Build, value: Any) -> None:
    for k, v in pair_list(value):
        key = f"sysctls.{k}"
        if b.svc.get("network_mode") == "host" and k.startswith("net."):
            b.note(key, "not mapped", "a net.* sysctl cannot be set on a pod that uses the node's network")
            continue
        b.pod_security().setdefault("sysctls", []).append({"name": k, "value": v or ""})
        if k in SAFE_SYSCTLS:
            b.note(key, "mapped", "pod securityContext.sysctls (a safe sysctl)")
        else:
            b.note(
                key,
                "approximated",
                "pod securityContext.sysctls: an unsafe sysctl, refused unless the kubelet allows it "
                "(K3s: kubelet-arg allowed-unsafe-sysctls)",
            )


__all__ = ["SAFE_SYSCTLS"]
