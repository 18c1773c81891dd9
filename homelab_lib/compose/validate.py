"""Check rendered projects before anything is deployed: the Compose schema, then ``docker compose config``.

Two independent checks, both offline and local to the machine that runs the runbooks:

- the **Compose Specification schema** (JSON Schema, as vendored by the
  ``check-jsonschema`` package from compose-spec), checked with ``jsonschema``:
  finds unknown keys and wrong types with the key path;
- **``docker compose config``** run by the real Compose v2 binary: finds what the
  schema cannot (a ``depends_on`` of a missing service, a bad port or duration),
  exactly as Compose on the host would read the file.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from homelab_lib.compose.render import COMPOSE_FILE, Project
from homelab_lib.core.errors import ComposeInvalid

SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
SCHEMA_FILE = "compose-spec.json"
CONFIG_TIMEOUT_S = 60.0


@functools.cache
def _validator() -> Any:
    import jsonschema  # type: ignore[import-untyped]  # here: its import is slow, and only a check needs it

    text = (importlib.resources.files(SCHEMA_PACKAGE) / SCHEMA_FILE).read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(document: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Every way the document breaks the Compose Specification schema: (key path, JSON path, message)."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [(tuple(e.absolute_path), e.json_path, e.message) for e in errors]


def schema_problems(document: Any) -> list[str]:
    """Every way the document breaks the Compose Specification schema, as ``path: message`` lines."""
    return [f"{path}: {message}" for _loc, path, message in schema_errors(document)]


def config_problem(project: Project, compose: Sequence[str], timeout: float = CONFIG_TIMEOUT_S) -> str | None:
    """Run ``compose config -q`` on the project's text in a private folder; its complaint, or None.

    Args:
        project: the rendered project.
        compose: the argv that runs Compose v2 here (the standalone binary, or ``docker compose``).
        timeout: seconds before giving up.
    """
    with tempfile.TemporaryDirectory(prefix="homelab-compose-") as tmp:
        path = Path(tmp) / COMPOSE_FILE
        path.write_text(project.text)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp}  # nothing of ours leaks into interpolation
        try:
            done = subprocess.run(
                [*compose, "-p", project.name, "-f", str(path), "config", "-q"],
                capture_output=True,
                text=True,
                cwd=tmp,
                env=env,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return f"{compose[0]} is not installed here (install the Compose v2 plugin: make compose-plugin)"
        except subprocess.TimeoutExpired:
            return f"`compose config` did not answer in {timeout:g}s"
    if done.returncode != 0:
        return (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").replace(tmp, ".")
    return None


def problems(project: Project, compose: Sequence[str]) -> list[str]:
    """Both checks of one project: schema problems, then Compose's own complaint."""
    try:
        document = yaml.safe_load(project.text)
    except yaml.YAMLError as e:
        return [f"not YAML: {e}"]
    found = schema_problems(document)
    complaint = config_problem(project, compose)
    if complaint:
        found.append(f"docker compose config: {complaint}")
    return found


def validate(projects: Sequence[Project], compose: Sequence[str], *, workers: int = 4) -> None:
    """Validate every project; nothing is deployed unless all pass.

    Args:
        projects: the rendered projects.
        compose: the argv that runs Compose v2 on this machine (see :func:`homelab_lib.clients.local_compose`).
        workers: projects checked at once.

    Raises:
        ComposeInvalid: naming each rejected project (host, stack) and each problem.
    """
    _validator()  # load the schema once, before the threads
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda p: problems(p, compose), projects))
    bad = [(p, found) for p, found in zip(projects, results, strict=True) if found]
    if bad:
        lines = [f"{p.host}/{p.stack} ({p.name}): {line}" for p, found in bad for line in found]
        raise ComposeInvalid(
            f"{len(bad)} rendered project(s) rejected; nothing was deployed:\n  " + "\n  ".join(lines),
            where=", ".join(f"{p.host}/{p.stack}" for p, _ in bad),
            hint="fix the service definitions in the parameters (or the catalog) and run again",
        )
