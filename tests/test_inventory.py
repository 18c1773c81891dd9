"""The inventory: loading, validation with file:line, capacity, secrets by reference."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from homelab_lib.core.errors import ConfigError, SecretError
from homelab_lib.inventory import load_inventory, node_loads
from homelab_lib.notebook.report import capacity_figure, nodes_table, stacks_table


def only_problem(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_inventory(path, check_secrets=True)
    assert len(e.value.problems) == 1, e.value
    return str(e.value.problems[0])


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def test_example_describes_the_four_node_homelab(repo: Path) -> None:
    inv = load_inventory(repo / "parameters" / "example.yaml")
    assert [n.name for n in inv.nodes] == ["drowzee", "sleepy", "hypno", "nappy"]
    placed = {(row.host, row.service) for row in stacks_table(inv).itertuples()}
    assert ("docker-drowzee", "plex") in placed
    assert {("docker-sleepy", s) for s in ("sonarr", "radarr", "prowlarr", "bazarr")} <= placed
    assert ("docker-hypno", "prometheus") in placed
    assert inv.k3s is not None
    assert inv.vm(inv.k3s.vm).node == "nappy"
    assert inv.k3s.services == ["gitlab", "harbor", "devenv"]


def test_lab_parameters_load(repo: Path) -> None:
    inv = load_inventory(repo / "parameters" / "lab.yaml")
    assert inv.profile == "lab"
    assert inv.lab is not None
    assert all(vm.ip.ip.is_loopback for vm in inv.vms)


def test_valid_file_loads_with_secrets_resolving(make_params: Callable[..., Path]) -> None:
    inv = load_inventory(make_params(), check_secrets=True)
    assert inv.proxmox.token_secret is not None
    assert inv.proxmox.token_secret.reveal() == "pve-token-value-1f2e3d4c"
    assert "pve-token-value" not in repr(inv)


def test_wrong_type_names_file_line_and_key(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][1].__setitem__("cores", "four"))
    msg = only_problem(path)
    assert msg.startswith(f"{path}:{line_of(path, 'cores: four')}: vms[1].cores: ")
    assert "valid integer" in msg


def test_unknown_key_suggests_the_right_one(make_params: Callable[..., Path]) -> None:
    def edit(d: dict) -> None:
        d["nodes"][2]["memroy_gib"] = 64

    path = make_params(edit=edit)
    with pytest.raises(ConfigError) as e:
        load_inventory(path)
    text = str(e.value)
    assert f"{path}:{line_of(path, 'memroy_gib')}: nodes[2].memroy_gib: unknown key 'memroy_gib'" in text
    assert "did you mean 'memory_gib'" in text


def test_top_level_unknown_key(make_params: Callable[..., Path]) -> None:
    path = make_params(proxmoxx={"endpoint": "https://x:8006"})
    msg = only_problem(path)
    assert f":{line_of(path, 'proxmoxx')}: proxmoxx: unknown key" in msg
    assert "did you mean 'proxmox'" in msg


def test_missing_secret_is_located(make_params: Callable[..., Path], clean_env: None) -> None:
    path = make_params(edit=lambda d: d["proxmox"].__setitem__("token_secret", "env:PVE_TOKEN_NOT_SET"))
    with pytest.raises(SecretError) as e:
        load_inventory(path, check_secrets=True)
    msg = str(e.value.problems[0])
    assert msg.startswith(f"{path}:{line_of(path, 'PVE_TOKEN_NOT_SET')}: proxmox.token_secret: ")
    assert "PVE_TOKEN_NOT_SET is not set" in msg


def test_missing_secret_file_is_located(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["ssh"].__setitem__("private_key", "file:secrets/nope"))
    with pytest.raises(SecretError) as e:
        load_inventory(path, check_secrets=True)
    assert "ssh.private_key" in str(e.value)
    assert "cannot be read" in str(e.value)


def test_literal_secret_is_refused(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["proxmox"].__setitem__("token_secret", "s3cr3t-literal"))
    msg = only_problem(path)
    assert "proxmox.token_secret" in msg
    assert "must be a reference" in msg
    assert "s3cr3t-literal" not in msg


@pytest.mark.parametrize(
    ("where", "edit"),
    [
        ("proxmox.token_secret", lambda d: d["proxmox"].__setitem__("token_secret", "env:hunter2-pasted-value")),
        ("proxmox.token_secret", lambda d: d["proxmox"].__setitem__("token_secret", 424242424242)),
        (
            "services.postgres.secrets.postgres_password.ref",
            lambda d: d["services"]["postgres"]["secrets"]["postgres_password"].__setitem__("ref", "pg-s3cr3t-value"),
        ),
        (
            "services.postgres.secrets.postgres_password.ref",
            lambda d: d["services"]["postgres"]["secrets"]["postgres_password"].__setitem__(
                "ref", "env:pg-s3cr3t-value"
            ),
        ),
        (
            "services.postgres.secrets.postgres_password",
            lambda d: d["services"]["postgres"]["secrets"].__setitem__("postgres_password", "pg-s3cr3t-value"),
        ),
        (
            "services.postgres.secrets.postgres_password.required",
            lambda d: d["services"]["postgres"]["secrets"]["postgres_password"].__setitem__(
                "required", "pg-s3cr3t-value"
            ),
        ),
        ("backups.restic_password", lambda d: d["backups"].__setitem__("restic_password", ["424242424242"])),
    ],
)
def test_no_value_under_a_secret_path_is_echoed(
    make_params: Callable[..., Path], where: str, edit: Callable[[dict], None]
) -> None:
    path = make_params(edit=edit)
    msg = only_problem(path)
    assert f": {where}: " in msg
    for value in ("hunter2", "pg-s3cr3t", "424242424242"):
        assert value not in msg
    assert "(got" not in msg


def test_unknown_key_under_a_service_secret_lists_the_allowed_keys(make_params: Callable[..., Path]) -> None:
    path = make_params(
        edit=lambda d: d["services"]["postgres"]["secrets"]["postgres_password"].__setitem__("reff", "env:X")
    )
    msg = only_problem(path)
    assert "unknown key 'reff'; did you mean 'ref'? (allowed here: ref, env, required)" in msg


def test_relative_secret_files_are_relative_to_their_parameter_file(
    make_params: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_params()
    monkeypatch.chdir("/")
    inv = load_inventory(path, check_secrets=True)
    assert inv.ssh.private_key.path == tmp_path / "secrets" / "id_ed25519"
    assert str(inv.ssh.private_key) == "file:secrets/id_ed25519"


def test_over_capacity(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][0].__setitem__("memory_mib", 65536))
    msg = only_problem(path)
    assert f":{line_of(path, 'name: drowzee')}: nodes[0].memory_gib: node drowzee is over capacity" in msg
    assert "65536 MiB" in msg


def test_over_capacity_cores_respects_overcommit(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][0].__setitem__("cores", 17))
    assert "its VMs ask 17 cores, it may give 16 (8 x overcommit 2)" in only_problem(path)
    ok = make_params("ok.yaml", edit=lambda d: d["vms"][0].__setitem__("cores", 16))
    assert node_loads(load_inventory(ok))[0].cores == 16


def test_duplicate_vmid_names_both_places(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][2].__setitem__("vmid", 110))
    msg = only_problem(path)
    assert f"{path}:{line_of(path, 'vmid: 110')}" in msg  # the first one is named as "also at"
    assert "vms[2].vmid: duplicate vmid '110'" in msg


def test_duplicate_ip(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][1].__setitem__("ip", "192.168.1.21/24"))
    assert "vms[1].ip: duplicate IP address '192.168.1.21'" in only_problem(path)


def test_ip_without_prefix(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][1].__setitem__("ip", "192.168.1.77"))
    assert "write it as 192.168.1.77/24" in only_problem(path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnodes:\n  - name: a\n    cores: [1, 2\n  - name: b\n")
    msg = only_problem(path)
    assert msg.startswith(f"{path}:")
    assert "YAML syntax error" in msg
    line = int(msg.split(":")[1])
    assert 4 <= line <= 5


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\nname: y\n")
    msg = only_problem(path)
    assert ":2:" in msg
    assert "duplicate" in msg.lower()


def test_a_duplicate_key_names_both_lines_and_prints_no_value(make_params: Callable[..., Path]) -> None:
    path = make_params()
    good = path.read_text()
    secret = "hunter2-pasted-secret-value"  # a value where a reference belongs: never echoed
    again = f"services:\n  postgres:\n    secrets:\n      postgres_password:\n        ref: {secret}\n"
    path.write_text(good + again)  # `services:` a second time, at the end
    first = 1 + next(n for n, line in enumerate(good.splitlines()) if line.startswith("services:"))
    second = len(good.splitlines()) + 1
    msg = only_problem(path)
    shown = str(path)
    assert msg.startswith(f"{shown}:{second}: services: duplicate key 'services': ")
    assert f"first at {shown}:{first}, again at {shown}:{second}" in msg
    assert "merge the two into one 'services:' or remove one" in msg
    assert secret not in msg
    assert "postgres" not in msg  # nor any other value of either mapping
    assert "with value" not in msg

    nested = good.replace("  token_secret: ", "  token_secret: env:NOT_THIS_ONE\n  token_secret: ", 1)
    path.write_text(nested)  # a key twice inside a section
    msg = only_problem(path)
    assert "proxmox.token_secret: duplicate key 'token_secret': first at " in msg
    assert "NOT_THIS_ONE" not in msg
    assert "secrets/pve-token" not in msg


def test_unknown_service_suggests(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][1]["stacks"]["arr"].__setitem__(0, "sonar"))
    msg = only_problem(path)
    assert "vms[1].stacks.arr[0]: unknown service 'sonar'; did you mean 'sonarr'?" in msg


def test_service_placed_twice(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["vms"][0]["stacks"]["media"].append("sonarr"))
    assert "service 'sonarr' is placed twice" in only_problem(path)


def test_per_host_services_may_repeat(make_params: Callable[..., Path]) -> None:
    inv = load_inventory(make_params())
    hosts = [vm.name for vm in inv.docker_hosts if "node-exporter" in vm.stacks.get("exporters", [])]
    assert len(hosts) == 3


def test_k3s_only_service_in_compose_is_refused(make_params: Callable[..., Path]) -> None:
    def edit(d: dict) -> None:
        d["vms"][0]["stacks"]["media"].append("harbor")
        d["k3s"]["services"].remove("harbor")

    msg = only_problem(make_params(edit=edit))
    assert "harbor" in msg
    assert "place it on k3s" in msg


def test_user_defined_service_and_catalog_override(make_params: Callable[..., Path]) -> None:
    def edit(d: dict) -> None:
        d["services"] = {
            "mealie": {
                "image": "ghcr.io/mealie-recipes/mealie:v2.4.1",
                "ports": [{"container": 9000}],
                "health": "/api/app/about",
            },
            "plex": {"image": "lscr.io/linuxserver/plex:1.41.4"},
        }
        d["vms"][0]["stacks"]["media"].append("mealie")

    inv = load_inventory(make_params(edit=edit))
    assert inv.services["mealie"].ports[0].container == 9000
    assert inv.services["plex"].image.endswith(":1.41.4")
    assert inv.services["plex"].health == "/identity"  # other fields from the catalog


def test_unpinned_image_is_refused_at_its_line(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d.__setitem__("services", {"plex": {"image": "lscr.io/linuxserver/plex:latest"}}))
    msg = only_problem(path)
    assert f"{path}:" in msg
    assert "services.plex.image" in msg
    assert "not pinned" in msg


def test_layered_files_override_top_level_keys(make_params: Callable[..., Path], tmp_path: Path) -> None:
    base = make_params()
    site = tmp_path / "site.yaml"
    site.write_text("overcommit:\n  cores: 3.0\n  memory: 1.0\n")
    inv = load_inventory([base, site])
    assert inv.overcommit.cores == 3.0
    bad = tmp_path / "bad-site.yaml"
    bad.write_text("overcommit:\n  cores: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_inventory([base, bad])
    assert str(e.value.problems[0]).startswith(f"{bad}:2: overcommit.cores")


def test_many_problems_are_all_reported_in_file_order(make_params: Callable[..., Path]) -> None:
    def edit(d: dict) -> None:
        d["vms"][0]["cores"] = "x"
        d["vms"][3]["disk_gib"] = -1
        d["nodes"][0]["flavour"] = "vanilla"

    with pytest.raises(ConfigError) as e:
        load_inventory(make_params(edit=edit))
    lines = [p.line for p in e.value.problems]
    assert len(lines) == 3
    assert lines == sorted(lines)


def test_nodes_table_and_capacity_figure(repo: Path) -> None:
    inv = load_inventory(repo / "parameters" / "example.yaml")
    table = nodes_table(inv)
    assert list(table["node"]) == ["drowzee", "sleepy", "hypno", "nappy"]
    assert table.loc[table["node"] == "nappy", "memory allocated GiB"].item() == 48.0
    fig = capacity_figure(inv, figsize=(6, 3))
    assert [ax.get_title() for ax in fig.axes] == ["Memory per node (GiB)", "Cores per node (overcommit 2x)"]
    assert fig.get_size_inches().tolist() == [6.0, 3.0]


def test_lab_ssh_user_defaults_to_whoever_runs_the_lab(repo: Path) -> None:
    import getpass

    inv = load_inventory(repo / "parameters" / "lab.yaml")
    assert inv.ssh.user == getpass.getuser()
    real = load_inventory(repo / "parameters" / "example.yaml")
    assert real.ssh.user == "debian"


def test_unknown_k3s_service_is_located_at_its_line(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["k3s"]["services"].__setitem__(1, "harbr"))
    msg = only_problem(path)
    assert msg.startswith(f"{path}:")
    assert "k3s.services[1]: unknown service 'harbr'; did you mean 'harbor'?" in msg


def test_compose_only_service_on_k3s_without_any_stacks(make_params: Callable[..., Path]) -> None:
    def edit(d: dict) -> None:
        for vm in d["vms"]:
            vm.pop("stacks", None)
        d["k3s"]["services"].append("plex")

    msg = only_problem(make_params(edit=edit))
    assert "k3s.services[3]: service 'plex' cannot run on K3s" in msg


def test_an_install_url_with_shell_in_it_is_refused_at_its_line(make_params: Callable[..., Path]) -> None:
    pwned = Path("/tmp") / f"pwned-{uuid.uuid4().hex[:8]}"  # short: the value stays on its key's line
    for url in (f"https://x/'$(touch${{IFS}}{pwned})'", f"https://x/'$(touch {pwned})'"):  # with a space, too
        path = make_params(edit=lambda d, url=url: d["k3s"].__setitem__("install_url", url))
        msg = only_problem(path)
        assert msg.startswith(f"{path}:{line_of(path, 'install_url: https://x/')}: k3s.install_url: ")
        assert "would be read by the VM's shell" in msg
    assert not pwned.exists()


def test_a_real_homelab_installs_k3s_over_https_and_checks_an_airgap_script(
    make_params: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_params(edit=lambda d: d["k3s"].__setitem__("install_url", "http://get.k3s.io/"))
    msg = only_problem(path)
    assert msg.startswith(f"{path}:{line_of(path, 'http://get.k3s.io/')}: k3s.install_url: ")
    assert "give an https:// URL" in msg
    (tmp_path / "k3s").write_bytes(b"binary")
    (tmp_path / "install.sh").write_text("#!/bin/sh\n")
    airgap = {"binary": "k3s", "sha256": "a" * 64, "install_script": "install.sh"}
    path = make_params(edit=lambda d: d["k3s"].__setitem__("airgap", airgap))
    msg = only_problem(path)
    assert msg.startswith(f"{path}:{line_of(path, 'airgap:')}: k3s.airgap: ")
    assert "give k3s.install_sha256" in msg

    def pinned(d: dict) -> None:
        d["k3s"]["airgap"] = airgap
        d["k3s"]["install_sha256"] = "b" * 64

    assert load_inventory(make_params(edit=pinned)).k3s.install_sha256 == "b" * 64  # type: ignore[union-attr]


def test_the_k3s_scrape_of_a_real_homelab_needs_the_cluster_ca(
    make_params: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "k3s-token").write_text("k3s-metrics-token\n")
    path = make_params(edit=lambda d: d["monitoring"].__setitem__("k3s", {"token": "file:secrets/k3s-token"}))
    msg = only_problem(path)
    assert msg.startswith(f"{path}:{line_of(path, 'file:secrets/k3s-token') - 1}: monitoring.k3s.ca_file: ")
    assert "give ca_file" in msg
    assert "insecure_skip_verify" in msg

    def with_ca(d: dict) -> None:
        d["monitoring"]["k3s"] = {"token": "file:secrets/k3s-token", "ca_file": "secrets/k3s-ca.pem"}

    assert load_inventory(make_params(edit=with_ca)).monitoring.k3s.ca_file is not None  # type: ignore[union-attr]


def test_the_scheduled_runs_image_of_a_real_homelab_is_named_by_digest(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=lambda d: d["k3s"].__setitem__("run_image", "registry.example.org/runbooks:2.0"))
    msg = only_problem(path)
    assert msg.startswith(f"{path}:{line_of(path, 'registry.example.org/runbooks:2.0')}: k3s.run_image: ")
    assert "name it by digest" in msg
    digest = "registry.home.arpa/homelab-runbooks:1.0@sha256:" + "c" * 64
    assert load_inventory(make_params(edit=lambda d: d["k3s"].__setitem__("run_image", digest))).k3s.run_image == digest  # type: ignore[union-attr]
