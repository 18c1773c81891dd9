"""Hashes that cover a secret are keyed with the homelab's own random key, so no reader can test guesses.

Whoever reads a plan, a container's labels or an object's annotations has everything that went into a
hash but the secret. If the hash is a plain sha256, or an HMAC keyed with public names, they recompute
it for each guess offline until it matches. Each test below does just that with the true secret as the
"guess", as an attacker would with the right one, and finds no match; a rotated secret still changes
the hash. The key itself: 32 random bytes (64 hex digits) made once beside the parameters, mode 0600, exclusive; an
existing key others may read is refused, naming the file and the fix.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homelab_lib import compose, monitoring
from homelab_lib.core.errors import HashKeyUnsafe, UnresolvedSecret
from homelab_lib.core.hashkey import KEY_FILE, load_key
from homelab_lib.hosts.labels import HASH_LABEL
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.k3s import services
from homelab_lib.kube.objects import CONFIG_HASH, KubeObject
from homelab_lib.monitoring.runbook import MonitoringAdapter

PG = "pg-password-0x51ab"
GITLAB = "gitlab-root-pw-0x77"
TOKEN = "k3s-bearer-token-0x1e"


def sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture
def inv(make_params: Callable[..., Path], tmp_path: Path) -> Inventory:
    """example.yaml with postgres' password, GitLab's root password and the K3s scrape token in files."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "pg").write_text(PG + "\n")
    (secrets / "gitlab").write_text(GITLAB + "\n")
    (secrets / "token").write_text(TOKEN + "\n")
    (secrets / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")

    def edit(d: dict[str, Any]) -> None:
        d["services"] = {"postgres": {"secrets": {"postgres_password": {"ref": "file:secrets/pg"}}}}
        d["k3s"]["gitlab_root_password"] = "file:secrets/gitlab"
        d["monitoring"]["k3s"] = {"token": "file:secrets/token", "ca_file": "secrets/ca.pem"}

    return load_inventory(make_params(edit=edit))


def guesses(value: str) -> set[str]:
    """What a reader could compute from a guess of a secret with no key: sha256 of it (with and without the
    newline a file ends with), as 12- and 16-character prefixes too."""
    full = {sha(value), sha(value + "\n")}
    return full | {h[:16] for h in full} | {h[:12] for h in full}


# ------------------------------------------------------------------ the key


def test_the_key_is_made_once_beside_the_parameters_0600_and_exclusive(inv: Inventory) -> None:
    folder = inv.source_files[0].parent
    assert not (folder / KEY_FILE).exists()  # nothing hashed a secret yet
    key = inv.hash_key()
    path = folder / KEY_FILE
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key.hex()  # 64 hex digits
    assert inv.hash_key() == key == load_key(folder)  # made once, then read


def test_the_key_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_key(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_a_key_others_may_read_is_refused_naming_the_file_and_the_fix(inv: Inventory) -> None:
    path = inv.source_files[0].parent / KEY_FILE
    inv.hash_key()
    path.chmod(0o644)
    with pytest.raises(HashKeyUnsafe) as e:
        inv.hash_key()
    assert e.value.where == str(path)
    assert "mode 0644" in e.value.message
    assert f"chmod 600 {path}" in e.value.hint
    with pytest.raises(HashKeyUnsafe):  # and nothing that hashes a secret runs past it
        compose.render(inv)
    path.chmod(0o600)
    assert len(inv.hash_key()) == 32


def test_a_planted_link_or_a_short_file_is_never_used_as_the_key(tmp_path: Path) -> None:
    planted = tmp_path / "known"
    planted.write_text("ab" * 32)
    planted.chmod(0o644)
    (tmp_path / KEY_FILE).symlink_to(planted)
    with pytest.raises(HashKeyUnsafe, match="mode 0644"):  # followed for reading, and refused: others read it
        load_key(tmp_path)
    assert planted.read_text() == "ab" * 32  # never written through the link
    (tmp_path / KEY_FILE).unlink()
    (tmp_path / KEY_FILE).write_bytes(b"short")
    (tmp_path / KEY_FILE).chmod(0o600)
    with pytest.raises(HashKeyUnsafe, match="5 bytes"):
        load_key(tmp_path)


# ------------------------------------------------------------------ Compose: the config-hash label


def _postgres(inv: Inventory) -> dict[str, Any]:
    (db,) = [p for p in compose.render(inv) if p.stack == "databases"]
    definition: dict[str, Any] = db.document()["services"]["postgres"]
    return definition


def test_the_compose_config_hash_cannot_be_recomputed_from_a_guess(inv: Inventory) -> None:
    definition = _postgres(inv)
    label = definition["labels"][HASH_LABEL]
    # what the label's reader has: the whole definition but the hash, and a guess (here the right one)
    public = copy.deepcopy(definition)
    del public["labels"][HASH_LABEL]
    names = f"homelab-secret:{inv.name}:postgres:postgres_password".encode()
    for digest in (hmac.new(names, PG.encode(), hashlib.sha256).hexdigest()[:16], sha(PG)[:16]):
        attempt = {**public, "secrets": {"postgres_password": digest}}
        assert sha(canonical(attempt))[:16] != label
    assert not any(g in json.dumps(definition) for g in guesses(PG))


def test_a_rotated_secret_still_changes_the_compose_config_hash(inv: Inventory, tmp_path: Path) -> None:
    before = _postgres(inv)["labels"][HASH_LABEL]
    (tmp_path / "secrets" / "pg").write_text("rotated-pg-password\n")
    assert _postgres(inv)["labels"][HASH_LABEL] != before


# ------------------------------------------------------------------ K3s: secrets-hash, a Secret's hash, the table


def _gitlab(inv: Inventory) -> tuple[KubeObject, KubeObject, str]:
    made = services.desired_services(inv, only=["gitlab"])
    (secret,) = [o for o in made.objects if o["kind"] == "Secret"]
    (sts,) = [o for o in made.objects if o["kind"] == "StatefulSet"]
    return secret, sts, made.table().to_string()


def test_k3s_hashes_of_a_secret_cannot_be_recomputed_from_a_guess(inv: Inventory) -> None:
    secret, sts, table = _gitlab(inv)
    data = {"password": base64.b64encode(GITLAB.encode()).decode()}
    # the pod template's secrets-hash, as the old code made it: a plain hash of the Secret it reads
    unsealed = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gitlab-root", "namespace": "gitlab"},
                "type": "Opaque", "data": data}  # fmt: skip
    rolled = sts["spec"]["template"]["metadata"]["annotations"]["homelab.io/secrets-hash"]
    assert sha(canonical({"secrets": [unsealed]}))[:16] != rolled
    # the Secret's own config hash: everything on it is public but its data
    attempt = copy.deepcopy(secret)
    del attempt["metadata"]["annotations"][CONFIG_HASH]
    attempt["data"] = data
    assert sha(canonical(attempt)) != secret["metadata"]["annotations"][CONFIG_HASH]
    assert sha(canonical(attempt))[:12] not in table  # the plan table shows 12 characters of each hash
    assert not any(g in json.dumps([sts, table]) for g in guesses(GITLAB))


def test_a_rotated_secret_still_changes_the_k3s_hashes(inv: Inventory, tmp_path: Path) -> None:
    secret, sts, _ = _gitlab(inv)
    (tmp_path / "secrets" / "gitlab").write_text("rotated-gitlab-pw\n")
    secret2, sts2, _ = _gitlab(inv)
    assert secret2["metadata"]["annotations"][CONFIG_HASH] != secret["metadata"]["annotations"][CONFIG_HASH]
    assert sts2["metadata"]["annotations"][CONFIG_HASH] != sts["metadata"]["annotations"][CONFIG_HASH]
    annotation = "homelab.io/secrets-hash"
    assert (
        sts2["spec"]["template"]["metadata"]["annotations"][annotation]
        != (sts["spec"]["template"]["metadata"]["annotations"][annotation])
    )


# ------------------------------------------------------------------ monitoring: the plan's hash of the token file


def test_the_monitoring_plan_hashes_the_token_file_keyed(inv: Inventory, tmp_path: Path) -> None:
    adapter = MonitoringAdapter(inv)
    desired = adapter.desired()
    token = desired.rendered.file("prometheus/secrets/k3s_token")
    assert token.content() == (TOKEN + "\n").encode()
    assert token.sha256 not in guesses(TOKEN)
    plan = adapter.plan(desired, {})  # nothing on the VMs yet: every file is created, its hash shown
    shown = json.dumps(plan.document())
    assert token.sha256[:12] in shown
    assert not any(g in shown for g in guesses(TOKEN))
    (tmp_path / "secrets" / "token").write_text("rotated-token\n")
    assert monitoring.render(inv).file("prometheus/secrets/k3s_token").sha256 != token.sha256


def test_nothing_a_reader_sees_is_a_plain_or_public_keyed_hash_of_any_resolved_secret(inv: Inventory) -> None:
    """Every secret the inventory resolves, against everything runbooks 02, 04 and 07 show or apply: the Compose
    files with their labels, the K3s objects with their annotations and the plan table, 07's plan."""
    values = []
    for _, ref in inv.secrets():
        try:
            values.append(ref.reveal())
        except UnresolvedSecret:
            continue
    assert {PG, GITLAB, TOKEN} <= set(values)
    public_keys = [f"homelab-secret:{inv.name}:{s.service}:{s.name}".encode()
                   for p in compose.render(inv) for s in p.secrets]  # fmt: skip
    made = services.desired_services(inv, only=["gitlab"])
    adapter = MonitoringAdapter(inv)
    desired = adapter.desired()
    seen = json.dumps(
        [[p.text for p in compose.render(inv)], list(made.objects), made.table().to_string(),
         adapter.plan(desired, {}).document()]
    )  # fmt: skip
    for value in values:
        keyed_publicly = {hmac.new(k, value.encode(), hashlib.sha256).hexdigest()[:16] for k in public_keys}
        assert not [g for g in guesses(value) | keyed_publicly if g in seen]
