"""`homelab convert` finds a password written in a command, a healthcheck or a label, and never leaves it there.

Each form of the issue (``redis-cli -a X``, ``mysqldump -pX``, ``--requirepass X``, ``--password=X``,
``PGPASSWORD=X cmd``, a credential in a label) is converted here: the value ends in the Secret
``<name>-env`` only, the program reads it back (``$(VAR)`` in the container's command and args, which
Kubernetes expands; ``${VAR}`` in a shell probe; the variable a program reads by itself), and what cannot
be moved so is refused at its line with the fix. The value is in no other object, no report line, no
redacted YAML, no error, no output of the command.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from homelab_lib.cli import main
from homelab_lib.convert import Conversion, convert_compose, parse_compose
from homelab_lib.core.errors import ConvertError

SECRET = "pw-0xC0FFEE-inline"


def convert(text: str) -> Conversion:
    return convert_compose(parse_compose(text))[0]


def container(conv: Conversion) -> dict[str, Any]:
    c: dict[str, Any] = conv.object("Deployment")["spec"]["template"]["spec"]["containers"][0]
    return c


def env_secret(conv: Conversion) -> dict[str, str]:
    data = conv.object("Secret", f"{conv.k8s_name}-env")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def from_secret(conv: Conversion, name: str) -> bool:
    """The container's variable name comes from the Secret <name>-env, key name."""
    ref = {"secretKeyRef": {"name": f"{conv.k8s_name}-env", "key": name}}
    return {"name": name, "valueFrom": ref} in container(conv).get("env", [])


def assert_only_in_the_secret(conv: Conversion) -> None:
    shown = [json.dumps(o) for o in conv.objects if o["kind"] != "Secret"]
    assert not [text for text in shown if SECRET in text]
    assert SECRET not in conv.yaml(redact=True)
    assert SECRET not in conv.markdown()
    assert SECRET not in conv.report_frame().to_string()
    assert SECRET not in repr(conv)
    assert SECRET in env_secret(conv).values()


def compose(service: str) -> str:
    return "services:\n  app:\n" + "".join(f"    {line}\n" for line in service.strip("\n").splitlines())


# ------------------------------------------------------------------ command and entrypoint: $(VAR)


@pytest.mark.parametrize(
    ("command", "expected", "name"),
    [
        (f"redis-server --requirepass {SECRET}", ["redis-server", "--requirepass", "$(REQUIREPASS)"], "REQUIREPASS"),
        (f"[app, --password={SECRET}, --port=80]", ["app", "--password=$(PASSWORD)", "--port=80"], "PASSWORD"),
        (f"redis-cli -h cache -a {SECRET} ping", ["redis-cli", "-h", "cache", "-a", "$(REDISCLI_AUTH)", "ping"],
         "REDISCLI_AUTH"),
        (f"[sh, -c, 'mysqldump -u root -p{SECRET} app > /dump/app.sql']",
         ["sh", "-c", "mysqldump -u root -p$(MYSQL_PWD) app > /dump/app.sql"], "MYSQL_PWD"),
        (f"[sh, -c, 'PGPASSWORD={SECRET} pg_dump -h db app > /dump/app.sql']",
         ["sh", "-c", "PGPASSWORD=$(PGPASSWORD) pg_dump -h db app > /dump/app.sql"], "PGPASSWORD"),
    ],
)  # fmt: skip
def test_a_secret_in_the_command_is_read_from_the_secret_as_a_variable(
    command: str, expected: list[str], name: str
) -> None:
    conv = convert(compose(f"image: app:1\ncommand: {command}"))
    assert container(conv)["args"] == expected
    assert from_secret(conv, name)
    assert env_secret(conv)[name] == SECRET
    assert_only_in_the_secret(conv)
    (line,) = [r for r in conv.report if f"key {name}" in r.detail]
    assert (line.key, line.status, line.line) == ("command", "mapped", 4)


def test_a_secret_in_the_entrypoint_reuses_the_variable_that_already_carries_it() -> None:
    conv = convert(
        compose(f"""
image: mariadb:11
environment:
  MARIADB_ROOT_PASSWORD: {SECRET}
entrypoint: [sh, -c, 'mysqldump -u root -p{SECRET} --all-databases > /backup.sql']
""")
    )
    assert container(conv)["command"] == ["sh", "-c", "mysqldump -u root -p$(MARIADB_ROOT_PASSWORD) --all-databases "
                                          "> /backup.sql"]  # fmt: skip
    assert env_secret(conv) == {"MARIADB_ROOT_PASSWORD": SECRET}
    assert_only_in_the_secret(conv)


def test_a_value_the_configmap_held_moves_to_the_secret_with_it() -> None:
    conv = convert(
        compose(f"""
image: redis:7
environment:
  REDIS_PLAIN: {SECRET}
command: redis-server --requirepass {SECRET}
""")
    )
    assert container(conv)["args"] == ["redis-server", "--requirepass", "$(REDIS_PLAIN)"]
    assert from_secret(conv, "REDIS_PLAIN")
    assert not any(o["kind"] == "ConfigMap" and SECRET in json.dumps(o) for o in conv.objects)
    assert_only_in_the_secret(conv)


def test_a_reference_is_no_secret_and_stays_as_written() -> None:
    conv = convert(compose('image: redis:7\ncommand: redis-server --requirepass "$${REDIS_PASSWORD}"'))
    assert container(conv)["args"] == ["redis-server", "--requirepass", "${REDIS_PASSWORD}"]
    assert not any(o["kind"] == "Secret" for o in conv.objects)


# ------------------------------------------------------------------ healthcheck.test


def probe_command(conv: Conversion) -> list[str]:
    c = container(conv)
    commands = {json.dumps(c[p]["exec"]["command"]) for p in ("readinessProbe", "livenessProbe", "startupProbe")
                if p in c}  # fmt: skip
    assert len(commands) == 1
    found: list[str] = json.loads(commands.pop())
    return found


def test_redis_cli_a_in_a_cmd_probe_becomes_rediscli_auth() -> None:
    conv = convert(
        compose(f"""
image: redis:7
healthcheck:
  test: ["CMD", "redis-cli", "-a", "{SECRET}", "ping"]
  start_period: 10s
""")
    )
    assert probe_command(conv) == ["redis-cli", "ping"]
    assert from_secret(conv, "REDISCLI_AUTH")
    assert_only_in_the_secret(conv)


def test_mysqladmin_p_in_a_cmd_probe_becomes_mysql_pwd() -> None:
    conv = convert(
        compose(f"""
image: mariadb:11
healthcheck:
  test: ["CMD", "mysqladmin", "ping", "-h", "localhost", "-p{SECRET}"]
""")
    )
    assert probe_command(conv) == ["mysqladmin", "ping", "-h", "localhost"]
    assert from_secret(conv, "MYSQL_PWD")
    assert_only_in_the_secret(conv)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        (f'["CMD-SHELL", "PGPASSWORD={SECRET} pg_isready -U app"]', 'PGPASSWORD="${PGPASSWORD}" pg_isready -U app'),
        (f'["CMD-SHELL", "redis-cli -a {SECRET} ping | grep PONG"]',
         'redis-cli -a "${REDISCLI_AUTH}" ping | grep PONG'),
        (f'"mysqladmin ping -u root \\"-p{SECRET}\\""', 'mysqladmin ping -u root "-p${MYSQL_PWD}"'),
        (f'["CMD-SHELL", "check --password={SECRET} --quiet"]', 'check --password="${PASSWORD}" --quiet'),
    ],
)  # fmt: skip
def test_a_secret_in_a_shell_probe_is_read_from_the_containers_environment(test: str, expected: str) -> None:
    conv = convert(compose(f"image: app:1\nhealthcheck:\n  test: {test}"))
    assert probe_command(conv) == ["/bin/sh", "-c", expected]
    assert_only_in_the_secret(conv)


def test_a_cmd_probe_that_runs_a_shell_reads_it_from_the_environment_too() -> None:
    conv = convert(compose(f'image: redis:7\nhealthcheck:\n  test: ["CMD", "sh", "-c", "redis-cli -a {SECRET} ping"]'))
    assert probe_command(conv) == ["sh", "-c", 'redis-cli -a "${REDISCLI_AUTH}" ping']
    assert_only_in_the_secret(conv)


@pytest.mark.parametrize(
    ("test", "words"),
    [
        (f'["CMD", "curl", "-fsS", "--password", "{SECRET}", "http://localhost/health"]', "to curl cannot stay"),
        (f"[\"CMD-SHELL\", \"mysql -u root '-p{SECRET}' -e 'select 1'\"]", "is quoted or written so"),
    ],
)
def test_a_probe_secret_no_variable_can_carry_is_refused_at_its_line(test: str, words: str) -> None:
    text = compose(f"image: app:1\nhealthcheck:\n  test: {test}")
    with pytest.raises(ConvertError) as e:
        convert(text)
    (problem,) = e.value.problems
    assert (problem.line, problem.path) == (5, "services.app.healthcheck.test")
    assert words in problem.message
    assert '"$$NAME"' in problem.message  # the fix
    assert SECRET not in str(e.value)


# ------------------------------------------------------------------ labels, annotations: refused


@pytest.mark.parametrize(
    ("service", "line", "path"),
    [
        (f"labels:\n  com.example.db-password: {SECRET}", 5, "services.app.labels.com.example.db-password"),
        (f'labels:\n  - "com.example.note=ok"\n  - "com.example.dsn=postgres://app:{SECRET}@db/app"', 6,
         "services.app.labels.com.example.dsn"),
        (f"annotations:\n  example.org/api-key: {SECRET}", 5, "services.app.annotations.example.org/api-key"),
        (f"deploy:\n  labels:\n    com.example.token: {SECRET}", 6, "services.app.deploy.labels.com.example.token"),
    ],
)  # fmt: skip
def test_a_secret_in_a_label_is_refused_at_its_line(service: str, line: int, path: str) -> None:
    with pytest.raises(ConvertError) as e:
        convert(compose(f"image: app:1\n{service}"))
    (problem,) = e.value.problems
    assert (problem.line, problem.path) == (line, path)
    assert "it would be an annotation" in problem.message
    assert "environment:" in problem.message  # the fix
    assert SECRET not in str(e.value)


def test_a_moved_secret_written_elsewhere_too_is_refused() -> None:
    """A label named like nothing secret that holds the command's password: found by the last check."""
    with pytest.raises(ConvertError) as e:
        convert(compose(f"image: redis:7\ncommand: redis-server --requirepass {SECRET}\nlabels:\n  note: {SECRET}"))
    (problem,) = e.value.problems
    assert (problem.line, problem.path) == (2, "services.app")
    assert "Deployment app" in problem.message
    assert SECRET not in str(e.value)


def test_labels_that_hold_no_secret_stay_annotations() -> None:
    conv = convert(
        compose("""
image: app:1
labels:
  org.opencontainers.image.authors: me
  com.example.token-file: /run/secrets/token
  com.example.password: $${FROM_ENV}
""")
    )
    annotations = conv.object("Deployment")["metadata"]["annotations"]
    assert annotations["org.opencontainers.image.authors"] == "me"
    assert annotations["com.example.token-file"] == "/run/secrets/token"


# ------------------------------------------------------------------ the command line tool


def test_homelab_convert_writes_and_prints_no_inline_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "compose.yaml"
    source.write_text(
        compose(f"""
image: redis:7
command: redis-server --requirepass {SECRET}
healthcheck:
  test: ["CMD", "redis-cli", "-a", "{SECRET}", "ping"]
""")
    )
    assert main(["convert", str(source), "-o", str(tmp_path / "out")]) == 0
    manifests = (tmp_path / "out" / "app.yaml").read_text()
    assert manifests.count(base64.b64encode(SECRET.encode()).decode()) == 2  # REQUIREPASS and REDISCLI_AUTH
    assert SECRET not in manifests
    assert SECRET not in (tmp_path / "out" / "report.md").read_text()
    assert SECRET not in "".join(capsys.readouterr())
    source.write_text(compose(f"image: app:1\nlabels:\n  com.example.password: {SECRET}"))
    assert main(["convert", str(source), "-o", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "compose.yaml:5: services.app.labels.com.example.password" in err
    assert SECRET not in err
