"""Check rendered files with Prometheus's own tools before anything is copied: promtool and amtool.

:func:`check` writes the files (secrets included) into a private temporary folder, runs
``promtool check config`` (which also checks every rule file it loads and the files it names)
and ``promtool check rules``, and ``amtool check-config`` when amtool is installed; the folder is
removed after. :func:`run_rule_tests` runs the shipped unit tests (``promtool test rules``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from homelab_lib.core.errors import MonitoringConfigRejected, MonitoringError
from homelab_lib.core.secrets import Redactor
from homelab_lib.monitoring.render import MAIN_FILE, RULES_DIR, Rendered

TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ToolRun:
    """One checker's run: the command (as words), whether it passed, what it printed."""

    command: tuple[str, ...]
    ok: bool
    output: str


def tool(name: str) -> str:
    """The path of a Prometheus tool on this machine.

    Raises:
        MonitoringError: it is not installed.
    """
    found = shutil.which(name)
    if not found:
        raise MonitoringError(
            f"{name} is not installed on this machine (it checks the rendered files before they are copied)",
            where="this machine",
            hint="apt-get install prometheus (promtool) prometheus-alertmanager (amtool)",
        )
    return found


def _run(args: Sequence[str], cwd: Path, redactor: Redactor | None = None) -> ToolRun:
    try:
        done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise MonitoringError(f"{Path(args[0]).name} did not finish in {TIMEOUT_S:g}s", where=str(cwd)) from e
    output = (done.stdout + done.stderr).replace(str(cwd) + "/", "")
    if redactor:  # a checker may quote a value it rejects (Go's url.Parse does): never a secret's
        output = redactor.redact(output)
    return ToolRun((Path(args[0]).name, *args[1:]), done.returncode == 0, output)


def check(rendered: Rendered) -> list[ToolRun]:
    """Check every file with promtool (and amtool when present); raise on the first rejection.

    Returns:
        The runs, all passed.

    Raises:
        MonitoringConfigRejected: a checker rejected a file (its output, with paths relative to the folder).
        MonitoringError: promtool is not installed.
    """
    promtool = tool("promtool")
    amtool = shutil.which("amtool")
    runs = []
    with tempfile.TemporaryDirectory(prefix="homelab-monitoring-") as tmp:
        root = Path(tmp)
        root.chmod(0o700)
        rendered.write(root, with_secrets=True)
        redactor = Redactor()
        for f in rendered.files:
            for _placeholder, ref in f.secrets:
                redactor.add(ref.reveal())
        prom = root / "prometheus"
        if (prom / MAIN_FILE["prometheus"]).exists():
            runs.append(_run([promtool, "check", "config", MAIN_FILE["prometheus"]], prom, redactor))
            rules = sorted(str(p.relative_to(prom)) for p in (prom / "rules").glob("*.yml"))
            if rules:
                runs.append(_run([promtool, "check", "rules", *rules], prom, redactor))
        am = root / "alertmanager" / MAIN_FILE["alertmanager"]
        if am.exists() and amtool:
            runs.append(_run([amtool, "check-config", am.name], am.parent, redactor))
        for r in runs:
            if not r.ok:
                raise MonitoringConfigRejected(
                    f"`{' '.join(r.command)}` rejected the rendered files; nothing was copied:",
                    output=r.output,
                    where=rendered.homelab,
                    hint="fix the inventory (or the shipped rules) and render again",
                )
    return runs


def run_rule_tests(tests_dir: Path | None = None) -> ToolRun:
    """Run the shipped rule unit tests (``promtool test rules rules/tests/*.yml``)."""
    folder = tests_dir or RULES_DIR / "tests"
    files = sorted(p.name for p in folder.glob("*.yml"))
    return _run([tool("promtool"), "test", "rules", *files], folder)
