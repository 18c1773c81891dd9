"""`homelab schedule`: systemd units checked by systemd's own analyzer, the crontab line run by a shell."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from homelab_lib.core.errors import ConfigError, NotFound, ScheduleError
from homelab_lib.schedule import systemd as sched
from tests.test_runner import write_nb

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd; .ci/sysdeps.sh installs it)"
)


def verify_units(*units: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify`` with a private runtime folder (a container has no user session).

    The user manager that verify starts needs $XDG_RUNTIME_DIR; a fresh folder of mode 700 is enough.
    """
    assert ANALYZE is not None
    runtime = tmp / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    done = subprocess.run(
        [ANALYZE, "--user", "verify", *map(str, units)], capture_output=True, text=True, env=env, timeout=120
    )
    if "Failed to initialize manager" in done.stderr:  # the analyzer could not start, whatever the units say
        pytest.skip(f"systemd-analyze --user verify cannot run here: {done.stderr.strip()}")
    return done


def homelab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    ("spec", "calendar", "cron"),
    [
        ("daily", "daily", "0 0 * * *"),
        ("hourly", "hourly", "0 * * * *"),
        ("*-*-* 02:00:00", "*-*-* 02:00:00", "0 2 * * *"),
        ("15m", "*-*-* *:00/15:00", "*/15 * * * *"),
        ("6h", "*-*-* 00/6:00:00", "0 */6 * * *"),
        ("1d", "daily", "0 0 * * *"),
        ("Mon *-*-* 03:30:00", "Mon *-*-* 03:30:00", ""),
    ],
)
def test_every_as_calendar_and_cron(spec: str, calendar: str, cron: str) -> None:
    every = sched.parse_every(spec)
    assert (every.on_calendar, every.interval, every.cron) == (calendar, "", cron)
    if ANALYZE:  # systemd reads the calendar as meant: the normalized form it prints
        done = subprocess.run([ANALYZE, "calendar", calendar], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Next elapse:" in done.stdout


def test_shorthand_minutes_fire_every_quarter_hour() -> None:
    if not ANALYZE:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    every = sched.parse_every("15m")
    done = subprocess.run(
        [ANALYZE, "calendar", "--iterations=5", every.on_calendar], capture_output=True, text=True, timeout=60
    )
    minutes = [line.split()[-2].split(":")[1] for line in done.stdout.splitlines() if "Iter." in line or "Next" in line]
    assert {int(m) % 15 for m in minutes} == {0}, done.stdout


@pytest.mark.parametrize(("spec", "interval"), [("45m", "45min"), ("5h", "5h"), ("90m", "1h 30min"), ("2d", "2d")])
def test_interval_that_no_calendar_says(spec: str, interval: str) -> None:
    every = sched.parse_every(spec)
    assert (every.on_calendar, every.interval, every.cron) == ("", interval, "")


@pytest.mark.parametrize("spec", ["", "0m", "daily\nExecStart=/bin/sh", "every tuesday-ish"])
def test_bad_every_is_refused(spec: str) -> None:
    if spec == "every tuesday-ish" and not ANALYZE:
        pytest.skip("only systemd-analyze calendar can reject a calendar expression")
    with pytest.raises(ConfigError) as e:
        sched.parse_every(spec)
    assert "--every" in str(e.value)


@needs_analyze
@pytest.mark.parametrize("spec", ["daily", "*-*-* 02:00:00", "15m", "6h", "45m"])
def test_written_units_verify(tmp_path: Path, repo: Path, spec: str) -> None:
    params = repo / "parameters" / "lab.yaml"
    planned = sched.plan_schedule(
        repo / "notebooks" / "00_inventory.ipynb",
        sched.parse_every(spec),
        param_files=[params],
        parameters={"confirm": False, "label": 'it is "50%" $HOME'},
        unit_dir=tmp_path / "units",
    )
    sched.write_schedule(planned, delay="10min")
    assert planned.service.name == "homelab-00_inventory.service"
    done = verify_units(planned.service, planned.timer, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ignoring" not in done.stderr, done.stderr
    assert "Unknown" not in done.stderr, done.stderr

    service, timer = planned.service.read_text(), planned.timer.read_text()
    exe = Path(sys.executable).absolute().parent / "homelab"
    assert f"ExecStart={exe} run {repo}/notebooks/00_inventory.ipynb -f {params} " in service
    assert f"--archive {repo}/archive" in service
    assert f"WorkingDirectory={repo}\n" in service
    assert "Persistent=true\n" in timer
    assert "RandomizedDelaySec=10min\n" in timer
    if planned.every.on_calendar:
        assert f"OnCalendar={planned.every.on_calendar}\n" in timer
    else:
        assert "OnUnitActiveSec=45min\n" in timer
        assert "OnBootSec=45min\n" in timer
    # what systemd would run is what was asked for: the unit read back gives the same argv
    [found] = sched.list_schedules(tmp_path / "units")
    assert found.command == planned.command
    assert found.command[found.command.index("label") + 1] == 'it is "50%" $HOME'


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path, repo: Path) -> None:
    """The analyzer is a real check here: the same units with a relative ExecStart and a bad calendar fail."""
    planned = sched.plan_schedule(
        repo / "notebooks" / "00_inventory.ipynb", sched.parse_every("daily"), unit_dir=tmp_path / "units"
    )
    sched.write_schedule(planned)
    service = planned.service.read_text()
    planned.service.write_text(service.replace(f"ExecStart={planned.command[0]}", "ExecStart=bin/x"))
    planned.timer.write_text(planned.timer.read_text().replace("OnCalendar=daily", "OnCalendar=someday"))
    done = verify_units(planned.service, planned.timer, tmp=tmp_path)
    assert done.returncode != 0
    assert "bin/x" in done.stderr
    assert "someday" in done.stderr


def test_crontab_line_runs_the_notebook(tmp_path: Path) -> None:
    """The crontab line, as cron hands it to sh (``\\%`` back to ``%``), runs the notebook into the archive."""
    (tmp_path / "nb").mkdir()
    nb = write_nb(tmp_path / "nb" / "hello.ipynb", "print(label)", "import os; print(os.environ['HOMELAB_SCHED_T'])")
    env_file = tmp_path / "env"
    env_file.write_text("HOMELAB_SCHED_T='from the env file'\n")  # quoted: systemd and sh both read it
    (tmp_path / "pyproject.toml").write_text("")  # the repository the schedule runs in
    planned = sched.plan_schedule(
        nb,
        sched.parse_every("*-*-* 04:05:00"),
        parameters={"label": "100% it's ok"},
        archive_dir=tmp_path / "arch",
        unit_dir=tmp_path / "units",
        homelab=Path(sys.executable).absolute().parent / "homelab",
        env_file=env_file,
    )
    assert planned.workdir == tmp_path
    fields, _, command = planned.crontab.partition(" set -a && ")
    assert fields == "5 4 * * *"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    done = subprocess.run(
        ["sh", "-c", "set -a && " + command.replace("\\%", "%")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "100% it's ok" in done.stdout  # --log-output: the cell's output reaches the journal (here stdout)
    assert "from the env file" in done.stdout
    [record] = [json.loads(line) for line in (tmp_path / "arch" / "index.jsonl").read_text().splitlines()]
    assert record["status"] == "ok"
    assert record["parameters"]["label"] == "100% it's ok"


def test_cli_list_remove(tmp_path: Path, repo: Path) -> None:
    units = tmp_path / "units"
    nb = str(repo / "notebooks" / "00_inventory.ipynb")
    made = homelab("schedule", nb, "--every", "6h", "--name", "check", "--unit-dir", str(units), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "0 */6 * * * cd " in made.stdout
    assert "systemctl --user enable --now homelab-00_inventory-check.timer" in (made.stdout)
    odd = homelab("schedule", nb, "--every", "45m", "--unit-dir", str(units), cwd=tmp_path)
    assert "cron cannot say 'every 45m'" in odd.stdout
    (units / "homelab-mine.timer").write_text("[Timer]\nOnCalendar=daily\n")  # not ours: never listed or removed

    listed = homelab("schedule", "--list", "--unit-dir", str(units), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "homelab-00_inventory-check: every 6h (*-*-* 00/6:00:00)" in listed.stdout
    assert "homelab-00_inventory: every 45m (OnUnitActiveSec=45min)" in listed.stdout
    assert "homelab-mine" not in listed.stdout
    assert "2 schedule(s)" in listed.stdout

    gone = homelab("schedule", "--remove", "00_inventory-check", "--unit-dir", str(units), cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert sorted(p.name for p in units.iterdir()) == [
        "homelab-00_inventory.service",
        "homelab-00_inventory.timer",
        "homelab-mine.timer",
    ]
    again = homelab("schedule", "--remove", "mine", "--unit-dir", str(units), cwd=tmp_path)
    assert again.returncode == 1
    assert "homelab-00_inventory" in again.stderr  # names the schedules there are


def test_foreign_unit_is_not_overwritten(tmp_path: Path, repo: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "homelab-00_inventory.timer").write_text("[Timer]\nOnCalendar=weekly\n")
    planned = sched.plan_schedule(repo / "notebooks" / "00_inventory.ipynb", sched.parse_every("daily"), unit_dir=units)
    with pytest.raises(ScheduleError) as e:
        sched.write_schedule(planned)
    assert "homelab-00_inventory.timer" in str(e.value)
    assert (units / "homelab-00_inventory.timer").read_text() == "[Timer]\nOnCalendar=weekly\n"
    with pytest.raises(NotFound):
        sched.remove_schedule("00_inventory", units)


def test_literal_secret_parameter_is_refused(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(ConfigError) as e:
        sched.plan_schedule(
            repo / "notebooks" / "00_inventory.ipynb",
            sched.parse_every("daily"),
            parameters={"api_token": "s3cr3t-value"},
            unit_dir=tmp_path,
        )
    assert "api_token" in str(e.value)
    assert "s3cr3t-value" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_unit_name_is_systemd_safe() -> None:
    assert sched.unit_name(Path("notebooks/05 migrate service.ipynb"), "pg@night") == (
        "homelab-05-migrate-service-pg-night"
    )
    assert shlex.split(sched._exec_line(["/a b/homelab", "x%y"]).replace("%%", "%")) == ["/a b/homelab", "x%y"]


@needs_analyze
def test_env_file_for_env_references(tmp_path: Path, make_params: Callable[..., Path]) -> None:
    """Parameters with env: references: the note names them; --env-file becomes EnvironmentFile=."""
    params = make_params(alerts={"webhook": "env:HOMELAB_ALERT_URL"})
    nb = write_nb(tmp_path / "hello.ipynb", "print(1)")
    units = tmp_path / "units"
    bare = homelab("schedule", str(nb), "--every", "daily", "-f", str(params), "--unit-dir", str(units), cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert "note: the parameters read HOMELAB_ALERT_URL" in bare.stdout
    assert "--env-file" in bare.stdout

    env_file = tmp_path / "my env"
    env_file.write_text("HOMELAB_ALERT_URL=http://127.0.4.9/x\n")
    env_file.chmod(0o600)
    args = ("schedule", str(nb), "--every", "daily", "-f", str(params), "--env-file", str(env_file))
    done = homelab(*args, "--unit-dir", str(units), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stdout
    [found] = sched.list_schedules(units)
    assert found.env_file == env_file
    assert f'EnvironmentFile="{env_file}"\n' in found.service.read_text()
    verified = verify_units(found.service, found.timer, tmp=tmp_path)
    assert verified.returncode == 0, verified.stderr

    missing = homelab(*args[:-1], str(tmp_path / "nope"), "--unit-dir", str(units), cwd=tmp_path)
    assert missing.returncode == 2
    assert "--env-file" in missing.stderr
