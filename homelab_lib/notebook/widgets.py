"""The runbooks' interactive choices in JupyterLab, falling back to the parameters cell everywhere else.

Every runbook calls this module, in the same two places, and builds no widget of its own::

    # after the parameters cell: the choices (params file, scope), the parameters cell's values headless
    ui = widgets.runbook("01_provision_nodes.ipynb", params_file=params_file, only_vms=only_vms,
                         allow_delete=allow_delete)
    params_file, only_vms = ui.params_file, ui.value("only_vms")
    ...
    contract.show_plan(plan)
    ui.confirm(plan)  # the Confirm button under the plan, and a dropdown of archived runs to compare with

**Interactive or not.** :func:`runbook` decides once, when its cell runs: ``interactive=None`` (the
default) asks :func:`homelab_lib.core.progress.interactive`, which looks at the request that runs the
cell. A front end a person uses (JupyterLab, Notebook, VS Code: comm-capable, so widgets show)
sends ``allow_stdin: true``; papermill, nbclient and nbval send false, and ``homelab run`` also sets
``HOMELAB_HEADLESS=1``. So no parameter is needed for papermill or nbval; ``interactive=False`` (or
``True``) forces it, for a front end that misreports. Not interactive, nothing is displayed, every
value is the parameters cell's, and nothing waits for a click: the widgets are never built.

**Choices.** A dropdown of parameter files (those beside the one given, plus it) and, for each
scope parameter the registry knows (:data:`CHOICES`: ``only_vms``, ``stacks``, ``services``), a
multi-select of the names the inventory has; nothing selected is the whole homelab, as in the
parameters cell; a parameter that takes one name (``service``, runbook 05) gets a dropdown. A
change applies to the cells run after it (Run > Run Selected Cell and All Below).

**Confirm applies exactly the plan shown, through the reviewed-plan check, archived.** The button
does not apply anything in the kernel: it starts ``homelab run NOTEBOOK -f PARAMS -p confirm true
-p approved_plan {adapter: sha256}`` (every plan shown so far, this one last) with the
parameters the plan was made with (captured when :meth:`Runbook.confirm` ran) in a child process.
That run computes the plan again and its apply step refuses any other plan
(:class:`~homelab_lib.core.errors.PlanNotApproved`), and re-observes just before changing anything
(:class:`~homelab_lib.core.errors.StalePlan`): the same check as ``--approve``, in the same code.
It takes the homelab's run lock and is archived like any other run (the executed
notebook, its plan and sha256, ``approved_plan`` and ``confirm`` in its parameters, the user). Its
progress lines become progress bars under the button; then the archived run's record and the
outputs of its cells after the plan (the apply result, verify's tables) are shown, or why it was
refused. The button is used once: a new plan needs its cell run again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.core import contract
from homelab_lib.core import progress as progress_mod
from homelab_lib.core.errors import HomelabError, NotFound
from homelab_lib.core.plan import PLAN_MIME, Plan, diff_documents
from homelab_lib.runs.archive import Archive, Record

if TYPE_CHECKING:
    from homelab_lib.inventory import Inventory

PARAMS_ENV = "HOMELAB_PARAMS_FILE"  # set by `homelab jupyter -f PARAMS`: the picker's first choice
ARCHIVE_ENV = "HOMELAB_ARCHIVE"  # set by `homelab jupyter`: where a confirmed run is archived

# ---------------------------------------------------------------- choices: a registry by parameter name

Chooser = Callable[["Inventory"], list[str]]
CHOICES: dict[str, Chooser] = {}
SINGLE: set[str] = set()  # parameters that take one name (a dropdown), not a list


def register_choice(parameter: str, chooser: Chooser, *, many: bool = True) -> None:
    """Offer a choice for a runbook's parameter: chooser lists the names the inventory has.

    Args:
        parameter: the notebook parameter's name.
        chooser: the names to choose from, for an inventory.
        many: a multi-select of names (a list; none chosen: all) or a dropdown of one (a string).
    """
    CHOICES[parameter] = chooser
    (SINGLE.discard if many else SINGLE.add)(parameter)


def _stacks(inv: Inventory) -> list[str]:
    return sorted({name for vm in inv.docker_hosts for name in vm.stacks})


register_choice("only_vms", lambda inv: [vm.name for vm in inv.vms])
register_choice("stacks", _stacks)
register_choice("services", lambda inv: list(inv.k3s.services) if inv.k3s else [])
register_choice(  # runbook 05: the one Compose service to move to K3s
    "service", lambda inv: sorted({s for vm in inv.docker_hosts for ss in vm.stacks.values() for s in ss}), many=False
)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ConfirmedRun:
    """What a click on Confirm did: the run it started, as archived.

    Attributes:
        approved_plan: the plans shown (``{adapter: sha256}``, or one sha256), which the run was allowed to apply.
        exit_code: ``homelab run``'s exit code (0 ok, 1 failed or refused, 2 bad input, 3 lock held).
        record: the run's archive record (None when none was written: bad input, lock held).
        archived: the executed notebook in the archive (None when not kept).
        refused: the plan computed by the run was not the plan shown, or the world moved before apply:
            nothing was changed.
        lines: what the run printed (progress lines, the cells' output, its last line).
        outputs: the archived notebook's outputs after its plan cell (nbformat output dicts).
    """

    approved_plan: str | Mapping[str, str]
    exit_code: int
    record: Record | None
    archived: Path | None
    refused: bool
    lines: tuple[str, ...] = ()
    outputs: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.record is not None and self.record.status == "ok"

    def summary(self) -> str:
        """One line: applied and archived as run X, or refused / failed and why."""
        run = f"run {self.record.run}" if self.record else "no run recorded"
        if self.ok:
            shown = self.approved_plan
            short = shown[:12] if isinstance(shown, str) else ", ".join(h[:12] for h in shown.values())
            return f"applied the plan shown (sha256 {short}): {run}, archived at {self.archived}"
        error = self.record.error.splitlines()[0] if self.record and self.record.error else self._last_line()
        if self.refused:
            return f"REFUSED, nothing was changed: {error} ({run})"
        return f"FAILED: {error} ({run})"

    def _last_line(self) -> str:
        return next((line for line in reversed(self.lines) if line.strip()), f"exit code {self.exit_code}")


# ---------------------------------------------------------------- starting the confirmed run


REFUSALS = ("PlanNotApproved", "StalePlan")


def homelab_command() -> list[str]:
    """How to start ``homelab`` from this kernel: this Python, the package's command line."""
    return [sys.executable, "-m", "homelab_lib.cli"]


def run_command(
    notebook: Path, parameters: Mapping[str, Any], approved_plan: str | Mapping[str, str], archive_dir: Path
) -> list[str]:
    """The ``homelab run`` command a click starts: confirm, the plan shown as the only approved one.

    Args:
        notebook: the runbook (absolute).
        parameters: its parameters as the plan was made (``params_file`` as -f files, the rest as -p).
        approved_plan: the plans shown, ``{adapter: sha256}`` (or one plan's sha256).
        archive_dir: the archive folder.
    """
    cmd = [*homelab_command(), "run", str(notebook), "--archive", str(archive_dir), "--log-output", "-q"]
    files = parameters.get("params_file")
    for f in [files] if isinstance(files, str) else list(files or []):
        cmd += ["-f", str(f)]
    wanted = {**{k: v for k, v in parameters.items() if k != "params_file"}, "confirm": True}
    wanted["approved_plan"] = approved_plan if isinstance(approved_plan, str) else dict(approved_plan)
    for key, value in wanted.items():
        cmd += ["-p", key, json.dumps(value)]  # JSON is YAML: `homelab run -p` reads it back as typed
    return cmd


def start_confirmed_run(
    notebook: Path,
    parameters: Mapping[str, Any],
    approved_plan: str | Mapping[str, str],
    archive_dir: Path,
    on_line: Callable[[str], None] = lambda line: None,
) -> ConfirmedRun:
    """Run the notebook with ``confirm`` and ``approved_plan`` in a child ``homelab run``; read its record back.

    The child takes the run lock, runs the notebook with papermill (headless: progress as lines) and
    archives it; its apply step refuses any plan but approved_plan. This waits for it to end.

    Args:
        notebook: the runbook (absolute).
        parameters: its parameters as the plan was made.
        approved_plan: the plans shown, ``{adapter: sha256}`` (or one plan's sha256).
        archive_dir: the archive folder.
        on_line: called with each line the run prints, as it prints it.
    """
    archive = Archive(archive_dir)
    before = len(archive.records()) if (archive_dir / "index.jsonl").exists() else 0
    env = {**os.environ, "HOMELAB_HEADLESS": "1", "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    with subprocess.Popen(
        run_command(notebook, parameters, approved_plan, archive_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(notebook.parent),
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip("\n"))
            on_line(lines[-1])
        code = child.wait()
    record = _record_of(archive_dir, before, notebook.name, approved_plan)
    archived = archive_dir / record.archived if record is not None and record.archived else None
    refused = record is not None and record.status != "ok" and record.error.startswith(REFUSALS)
    outputs = _outputs_after_plan(archived) if archived is not None and archived.exists() else ()
    return ConfirmedRun(approved_plan, code, record, archived, refused, tuple(lines), outputs)


def _record_of(archive_dir: Path, before: int, notebook: str, approved_plan: str | Mapping[str, str]) -> Record | None:
    """The record the child run appended (after the first `before` records) for this notebook and plan."""
    if not (archive_dir / "index.jsonl").exists():
        return None
    for record in reversed(Archive(archive_dir).records()[before:]):
        if Path(record.notebook).name == notebook and record.parameters.get("approved_plan") == (
            approved_plan if isinstance(approved_plan, str) else dict(approved_plan)
        ):
            return record
    return None


def _outputs_after_plan(path: Path) -> tuple[Mapping[str, Any], ...]:
    """The outputs of an executed notebook's cells after the last one that showed a plan."""
    cells = json.loads(path.read_text()).get("cells", [])
    start = 0
    for i, cell in enumerate(cells):
        if any(PLAN_MIME in (o.get("data") or {}) for o in cell.get("outputs", []) or []):
            start = i + 1
    return tuple(o for cell in cells[start:] for o in cell.get("outputs", []) or [])


# ---------------------------------------------------------------- progress lines -> bars

PROGRESS_LINE = re.compile(r"^\[(?P<task>[^\]]+)\] (?:(?P<count>\d+)/(?P<total>\d+)|(?P<done>done))(?: (?P<note>.*))?$")


def parse_progress(line: str) -> tuple[str, int | None, int | None, str] | None:
    """A :class:`homelab_lib.core.progress.Lines` line as (task, count, total, note); count None for ``done``."""
    m = PROGRESS_LINE.match(line.strip())
    if m is None:
        return None
    if m["done"]:
        return m["task"], None, None, m["note"] or ""
    return m["task"], int(m["count"]), int(m["total"]), m["note"] or ""


# ---------------------------------------------------------------- the widgets


def _append(output: Any, what: str | Mapping[str, Any]) -> None:
    """Add text or a MIME bundle to an Output widget's outputs (as a kernel would; works without one too)."""
    if isinstance(what, str):
        item: dict[str, Any] = {"output_type": "stream", "name": "stdout", "text": what}
    else:
        item = {"output_type": "display_data", "data": dict(what), "metadata": {}}
    output.outputs = (*output.outputs, item)


def _display(*objs: Any, raw: bool = False) -> None:
    from IPython.display import display

    display(*objs, raw=raw)  # type: ignore[no-untyped-call]


class Confirm:
    """The Confirm button under a plan (interactive only), and a dropdown of archived runs to compare with.

    Attributes:
        plan: the plan shown above it.
        parameters: the parameters the plan was made with (what a confirmed run is given).
        result: what the click did (None before a click).
        button, output, runs: the widgets (None when not interactive).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        notebook: Path,
        parameters: Mapping[str, Any],
        archive_dir: Path,
        interactive: bool,
        allow_delete: bool = False,
    ) -> None:
        self.plan = plan
        self.sha256 = plan.sha256
        self.approved = {**contract.shown_plans(), plan.adapter: plan.sha256}  # every plan shown so far: all or none
        self.notebook = notebook
        self.parameters = dict(parameters)
        self.archive_dir = archive_dir
        self.result: ConfirmedRun | None = None
        self.button: Any = None
        self.output: Any = None
        self.runs: Any = None
        self._bars: dict[str, Any] = {}
        if not interactive:
            return
        import ipywidgets

        todo = plan.applicable(allow_delete=allow_delete)
        self.button = ipywidgets.Button(
            description="Confirm: apply this plan" if todo else "Nothing to apply",
            button_style="danger" if todo else "",
            icon="check",
            disabled=not todo,
            tooltip=f"homelab run {notebook.name} with confirm and approved_plan {self.sha256[:12]}",
            layout=ipywidgets.Layout(width="auto"),
        )
        self.button.add_class("homelab-confirm")
        self.note = ipywidgets.HTML(
            f"<small>applies exactly plan <code>{self.sha256[:12]}</code> ({plan.summary()}) in an archived "
            f"<code>homelab run</code>; a plan that differs by then is refused</small>"
        )
        self.bars = ipywidgets.VBox([])
        self.output = ipywidgets.Output()
        self.output.add_class("homelab-confirm-output")
        self.runs = ipywidgets.Dropdown(
            options=[("compare with an archived run...", ""), *archived_runs(archive_dir, notebook.name)],
            value="",
            layout=ipywidgets.Layout(width="auto"),
        )
        self.compared = ipywidgets.Output()
        self.button.on_click(self._clicked)
        self.runs.observe(self._compare, names="value")
        _display(
            ipywidgets.VBox(
                [ipywidgets.HBox([self.button, self.note]), self.bars, self.output, self.runs, self.compared]
            )
        )

    # ------------------------------------------------------------ callbacks

    def _clicked(self, _button: Any = None) -> None:
        if self.result is not None or self.button is None or self.button.disabled:
            return  # used once: a new plan needs its cell run again
        self.button.disabled = True
        self.button.description = f"applying plan {self.sha256[:12]}..."
        try:
            self.result = start_confirmed_run(
                self.notebook, self.parameters, self.approved, self.archive_dir, on_line=self._line
            )
        except (OSError, HomelabError) as e:
            self.button.description = "could not start the run"
            _append(self.output, f"could not start homelab run: {e}\n")
            return
        self.button.description = "applied" if self.result.ok else "refused" if self.result.refused else "failed"
        self.button.button_style = "success" if self.result.ok else "warning"
        self._show(self.result)

    def _line(self, line: str) -> None:
        import ipywidgets

        parsed = parse_progress(line)
        if parsed is None:
            return
        task, count, total, note = parsed
        bar = self._bars.get(task)
        if bar is None:
            bar = ipywidgets.IntProgress(value=0, min=0, max=max(total or 1, 1), description=task[:20])
            label = ipywidgets.Label("")
            self._bars[task] = (bar, label)
            self.bars.children = (*self.bars.children, ipywidgets.HBox([bar, label]))
        else:
            bar, label = bar
        if count is None:
            bar.value, bar.bar_style, label.value = bar.max, "success", note or "done"
        else:
            bar.max, bar.value, label.value = max(total or 1, 1), count, note

    def _show(self, result: ConfirmedRun) -> None:
        import html

        colour = "green" if result.ok else "#b00"
        _append(self.output, {"text/html": f"<p style='color:{colour}'>{html.escape(result.summary())}</p>"})
        if result.record is not None and result.record.error and not result.ok:
            _append(self.output, result.record.error + "\n")
        for out in result.outputs:
            if out.get("output_type") == "stream":
                _append(self.output, "".join(out.get("text", "")))
            elif out.get("output_type") in ("display_data", "execute_result"):
                data = {k: v for k, v in (out.get("data") or {}).items() if k != PLAN_MIME}
                _append(self.output, {k: "".join(v) if isinstance(v, list) else v for k, v in data.items()})
            elif out.get("output_type") == "error":
                _append(self.output, f"{out.get('ename')}: {out.get('evalue')}\n")

    def _compare(self, change: Mapping[str, Any]) -> None:
        self.compared.outputs = ()
        run = change.get("new") or ""
        if run:
            _append(self.compared, compare_text(self.archive_dir, str(run), self.plan) + "\n")

    def _ipython_display_(self) -> None:
        """Shown when made: as a cell's last value it adds nothing (no object repr in headless outputs)."""

    # ------------------------------------------------------------ for tests and scripts

    def click(self) -> ConfirmedRun | None:
        """What a click does (``button.click()`` does the same); returns the run's result."""
        if self.button is not None:
            self.button.click()
        return self.result


def archived_runs(archive_dir: Path, notebook: str) -> list[tuple[str, str]]:
    """(label, run id) of this notebook's archived runs that hold a plan, newest first."""
    if not (archive_dir / "index.jsonl").exists():
        return []
    found = [r for r in Archive(archive_dir).records() if Path(r.notebook).name == notebook and r.plan]
    return [
        (f"{r.run}  {r.status}{'  confirmed' if r.parameters.get('confirm') else '  dry run'}", r.run)
        for r in reversed(found)
    ]


def compare_text(archive_dir: Path, run: str, plan: Plan) -> str:
    """How the plan shown differs from an archived run's plan, one line per change."""
    record = Archive(archive_dir).find(run)
    if not record.plan:
        return f"run {record.run} archived no plan"
    mine = contract.recorded_plans(record.plan).get(plan.adapter)
    if mine is None:
        return f"run {record.run} archived no plan of the {plan.adapter} adapter"
    old = {k: v for k, v in mine.items() if k != "sha256"}
    lines = diff_documents(old, plan.document())
    if not lines:
        return f"the same plan as run {record.run} (sha256 {plan.sha256[:12]})"
    return f"the plan shown, against run {record.run}:\n" + "\n".join(f"  {line}" for line in lines)


class Runbook:
    """One runbook's choices: widgets in JupyterLab, the parameters cell's values everywhere else.

    Attributes:
        notebook: the runbook's path (absolute).
        interactive: whether widgets are shown and Confirm offered.
        archive_dir: where a confirmed run is archived.
    """

    def __init__(
        self,
        notebook: str | Path,
        *,
        params_file: str | Sequence[str],
        parameters: Mapping[str, Any],
        archive_dir: str | Path | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.notebook = Path(notebook).resolve()
        self.interactive = progress_mod.interactive() if interactive is None else interactive
        self.archive_dir = Path(
            archive_dir or os.environ.get(ARCHIVE_ENV) or self.notebook.parent.parent / "archive"
        ).resolve()
        self._params_file: str | list[str] = params_file if isinstance(params_file, str) else list(params_file)
        self._parameters = dict(parameters)
        self.picker: Any = None
        self.selects: dict[str, Any] = {}
        if self.interactive:
            self._build()

    # ------------------------------------------------------------ values

    @property
    def params_file(self) -> str | list[str]:
        """The parameter file(s): the picker's choice (absolute) interactively, else the parameter's value."""
        if self.picker is not None and self.picker.value:
            return str(self.picker.value)
        return self._params_file

    def value(self, name: str) -> Any:
        """A parameter's value: a multi-select's choice interactively (a list), else the parameters cell's."""
        select = self.selects.get(name)
        if select is not None:
            return select.value if name in SINGLE else list(select.value)
        if name not in self._parameters:
            raise NotFound(
                name,
                what="parameter given to widgets.runbook()",
                known=list(self._parameters),
                where=self.notebook.name,
                hint=f"pass it: widgets.runbook(..., {name}={name})",
            )
        return self._parameters[name]

    def parameters(self) -> dict[str, Any]:
        """The runbook's parameters as chosen now: what a confirmed run is given."""
        files = self.params_file
        absolute: str | list[str] = (
            self._absolute(files) if isinstance(files, str) else [self._absolute(f) for f in files]
        )
        return {"params_file": absolute, **{k: self.value(k) for k in self._parameters}}

    def _absolute(self, path: str) -> str:
        return str((self.notebook.parent / path).resolve())

    # ------------------------------------------------------------ the widgets

    def _files(self) -> list[str]:
        given = [self._params_file] if isinstance(self._params_file, str) else list(self._params_file)
        first = [self._absolute(f) for f in given[:1]]
        env = os.environ.get(PARAMS_ENV)
        folders = {Path(f).parent for f in first}
        found = sorted(str(p) for folder in folders for p in folder.glob("*.yaml"))
        return list(dict.fromkeys([*([env] if env else []), *first, *found]))

    def _build(self) -> None:
        import ipywidgets

        given = self._params_file
        rows: list[Any] = []
        if isinstance(given, str):  # layered lists stay as the parameters cell says
            files = self._files()
            self.picker = ipywidgets.Dropdown(
                options=[(os.path.relpath(f, self.notebook.parent), f) for f in files],
                value=files[0],
                description="params file",
                layout=ipywidgets.Layout(width="auto"),
            )
            self.picker.observe(lambda _change: self._refresh(), names="value")
            rows.append(self.picker)
        for name in self._parameters:
            if name in SINGLE:
                one = str(self._parameters[name] or "")
                self.selects[name] = ipywidgets.Dropdown(description=name, options=[one], value=one)
                rows.append(self.selects[name])
            elif name in CHOICES:
                chosen = [str(v) for v in self._parameters[name] or []]
                self.selects[name] = ipywidgets.SelectMultiple(description=name, options=chosen, value=chosen)
                rows.append(self.selects[name])
        self.status = ipywidgets.HTML("")
        rows.append(self.status)
        self._refresh()
        _display(ipywidgets.VBox(rows))

    def _refresh(self) -> None:
        """Fill each multi-select with the names of the chosen parameter file's inventory."""
        from homelab_lib.inventory import load_inventory

        files = self.params_file
        try:
            inv = load_inventory([files] if isinstance(files, str) else files)
        except HomelabError as e:
            self.status.value = f"<small style='color:#b00'>{e}</small>"
            return
        self.status.value = (
            f"<small>homelab <b>{inv.name}</b>: nothing selected is all of it; after a change, "
            "run the cells below again (Run &gt; Run Selected Cell and All Below)</small>"
        )
        for name, select in self.selects.items():
            names = CHOICES[name](inv)
            if name in SINGLE:
                was = select.value
                select.options = ["", *names]  # "": none chosen yet
                select.value = was if was in names else ""
                continue
            kept = [v for v in select.value if v in names]  # new options clear the selection: keep what still is
            select.options = names
            select.value = kept

    def confirm(self, plan: Plan) -> Confirm:
        """The Confirm button under the plan shown (interactive only; otherwise nothing is shown).

        The parameters are captured now: the confirmed run is made from what this plan was made from.
        """
        allow_delete = bool(self._parameters.get("allow_delete", False))
        return Confirm(
            plan,
            notebook=self.notebook,
            parameters=self.parameters(),
            archive_dir=self.archive_dir,
            interactive=self.interactive,
            allow_delete=allow_delete,
        )

    def progress(self) -> progress_mod.Progress:
        """Progress for work done in the kernel: bars interactively, lines headless."""
        return progress_mod.Widgets() if self.interactive else progress_mod.Lines()

    def __iter__(self) -> Iterator[Any]:
        """``params_file, only_vms = ui``: the params file, then each other parameter in order given."""
        yield self.params_file
        for name in self._parameters:
            yield self.value(name)


def runbook(
    notebook: str | Path,
    *,
    params_file: str | Sequence[str],
    archive_dir: str | Path | None = None,
    interactive: bool | None = None,
    **parameters: Any,
) -> Runbook:
    """The runbook's choices: show them in JupyterLab; anywhere else, take the parameters cell's values.

    Args:
        notebook: the runbook's file name, relative to the kernel's folder (the notebook's own).
        params_file: the ``params_file`` parameter.
        archive_dir: where a confirmed run is archived (default ``$HOMELAB_ARCHIVE``, else the
            ``archive/`` beside the notebook's folder, as ``homelab run`` from the repository).
        interactive: None to decide from the request running the cell (see the module's docstring).
        **parameters: the notebook's other parameters a confirmed run is given (scope, ``allow_delete``,
            ...); those :data:`CHOICES` knows get a multi-select (a dropdown for :data:`SINGLE` ones).
            ``confirm`` and ``approved_plan`` are the button's business and are left out.
    """
    given = {k: v for k, v in parameters.items() if k not in ("confirm", "approved_plan")}
    return Runbook(
        notebook, params_file=params_file, parameters=given, archive_dir=archive_dir, interactive=interactive
    )


__all__ = [
    "ARCHIVE_ENV",
    "CHOICES",
    "PARAMS_ENV",
    "SINGLE",
    "Confirm",
    "ConfirmedRun",
    "Runbook",
    "archived_runs",
    "compare_text",
    "parse_progress",
    "register_choice",
    "run_command",
    "runbook",
    "start_confirmed_run",
]
