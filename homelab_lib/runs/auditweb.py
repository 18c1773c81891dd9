"""The audit archive as a static web site: ``homelab audit report -o DIR``.

Pages::

    DIR/index.html               the chain's verify result, runs and failures over time, every runbook, every run
    DIR/runbooks/<stem>.html     one runbook: its chart and its runs
    DIR/runs/<run>.html          one run: its record, its plan, the run it applies (or the runs applying it),
                                 and the executed notebook (nbconvert's HTMLExporter)

Charts are matplotlib figures inlined as SVG (ids salted deterministically, no date), so a page
rendered twice from the same archive is the same bytes. Pages need no network: the CDN scripts
nbconvert's template links (require.js, MathJax, Mermaid) are left out.

Re-running updates only what changed: a run's page is keyed by its record (the archived
notebook's sha256 and the record's seal), the runs that approve it, the archived file's size and
mtime (a removed or altered notebook shows) and this module's page version, kept in
``DIR/.report-state.json``; a run page whose key is unchanged and whose file is there is skipped
without running nbconvert. The index and runbook pages are rendered (cheap) and written only when
their bytes differ. :func:`write_report` returns what it wrote, skipped and removed.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from homelab_lib.core.contract import recorded_plans
from homelab_lib.core.errors import AuditError
from homelab_lib.runs.archive import Archive, Record

PAGE_VERSION = "1"
STATE = ".report-state.json"
CDN_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>\s*', re.I)
CDN_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->\s*", re.S)
CDN_MODULE = re.compile(r'<script type="module">(?:(?!</script>).)*?https?://cdn(?:(?!</script>).)*?</script>\s*', re.S)
SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; font-size: .92em; }
th { background: #f3f3f3; }
.ok { color: #176f2c; } .failed, .leak { color: #b00020; font-weight: bold; }
.verify { padding: .7em 1em; border-radius: .3em; margin-bottom: 1em; }
.verify.good { background: #e6f4ea; border: 1px solid #8bc99b; }
.verify.bad { background: #fde7e9; border: 1px solid #e38d97; }
a { color: #1a55b0; text-decoration: underline; }
code { font-size: .9em; }
nav { margin-bottom: 1em; }
"""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` did.

    Attributes:
        out: the report's folder.
        written: pages written this time (new or changed), relative to ``out``.
        skipped: pages left as they were (unchanged).
        problems: what ``Archive.verify`` found (empty: the chain holds).
        removed: pages of runs the index no longer has, removed.
    """

    out: Path
    written: tuple[str, ...]
    skipped: tuple[str, ...]
    problems: tuple[str, ...]
    removed: tuple[str, ...] = ()

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def page_name(text: str) -> str:
    """A file name for a run id or a notebook stem."""
    return SAFE.sub("_", text) or "_"


def run_page(record: Record) -> str:
    """The run's page, relative to the report's folder."""
    return f"runs/{page_name(record.run)}.html"


def runbook_of(record: Record) -> str:
    """The runbook a run ran: its notebook's stem."""
    return Path(record.notebook).stem


def runbook_page(stem: str) -> str:
    return f"runbooks/{page_name(stem)}.html"


def runs_figure(records: Sequence[Record], *, figsize: tuple[float, float] = (8.0, 2.6), title: str = "") -> Figure:
    """Runs and failures per day, as stacked bars (ok, failed or leak).

    Args:
        records: the runs.
        figsize: the figure's size in inches.
        title: the chart's title.
    """
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    days: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        days[r.start[:10]][("ok" if r.status == "ok" else "failed")] += 1
    labels = sorted(days)
    ok = [days[d]["ok"] for d in labels]
    bad = [days[d]["failed"] for d in labels]
    xs = list(range(len(labels)))
    ax.bar(xs, ok, width=0.6, color="#4c9a5f", label="ok")
    ax.bar(xs, bad, width=0.6, bottom=ok, color="#c8414f", label="failed")
    ax.set_xlim(-0.75, max(len(xs), 3) - 0.25)
    ax.set_xticks(xs, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylabel("runs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or f"runs and failures per day ({len(records)} runs)")
    fig.tight_layout()
    return fig


def svg_of(fig: Figure) -> str:
    """A figure as inline SVG: no date, ids salted by a constant, so the same data gives the same bytes."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "homelab-audit", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _page(title: str, body: str, *, up: str = "") -> str:
    nav = f'<nav><a href="{up}index.html">all runs</a></nav>' if up else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{nav}"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _verify_block(problems: Sequence[str], count: int) -> str:
    if not problems:
        return (
            f'<div class="verify good" id="verify"><b>audit verify: ok</b>: {count} runs, every notebook and '
            "record intact (the hash chain holds from the first record to HEAD)</div>"
        )
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    return (
        f'<div class="verify bad" id="verify"><b>audit verify: FAILED</b> ({len(problems)} problem(s); the first '
        f"is the first break): <ul>{items}</ul></div>"
    )


def _runs_table(records: Sequence[Record], prefix: str) -> str:
    rows = []
    for r in reversed(records):
        status = html.escape(r.status)
        plan = f"<code>{html.escape(r.plan_hash[:12])}</code>" if r.plan_hash else "-"
        applies = (
            f'<a class="approves" href="{prefix}{run_page_id(r.approves)}">{html.escape(r.approves)}</a>'
            if r.approves
            else "-"
        )
        error = html.escape(r.error.splitlines()[0][:100]) if r.error else ""
        rows.append(
            f'<tr><td><a class="run" href="{prefix}{run_page(r)}">{html.escape(r.run)}</a></td>'
            f'<td><a href="{prefix}{runbook_page(runbook_of(r))}">{html.escape(runbook_of(r))}</a></td>'
            f"<td>{html.escape(r.homelab or '-')}</td><td>{html.escape(r.start)}</td>"
            f'<td class="{status}">{status}</td><td>{plan}</td><td>{applies}</td><td>{error}</td></tr>'
        )
    return (
        "<table><tr><th>run</th><th>runbook</th><th>homelab</th><th>start (UTC)</th><th>status</th>"
        "<th>plan</th><th>applies the plan of</th><th>error</th></tr>" + "".join(rows) + "</table>"
    )


def run_page_id(run: str) -> str:
    return f"runs/{page_name(run)}.html"


def index_html(records: Sequence[Record], problems: Sequence[str], *, figsize: tuple[float, float]) -> str:
    """The index page: verify result, chart, runbooks, every run (newest first)."""
    by_book: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_book[runbook_of(r)].append(r)
    books = "".join(
        f'<tr><td><a class="runbook" href="{runbook_page(stem)}">{html.escape(stem)}</a></td><td>{len(rs)}</td>'
        f"<td>{sum(r.status != 'ok' for r in rs)}</td><td>{html.escape(rs[-1].start)}</td></tr>"
        for stem, rs in sorted(by_book.items())
    )
    body = (
        _verify_block(problems, len(records))
        + (svg_of(runs_figure(records, figsize=figsize)) if records else "<p>No runs archived yet.</p>")
        + "<h2>Runbooks</h2><table><tr><th>runbook</th><th>runs</th><th>failed</th><th>last run</th></tr>"
        + books
        + "</table><h2>Runs</h2>"
        + _runs_table(records, "")
    )
    return _page("homelab audit archive", body)


def runbook_html(stem: str, records: Sequence[Record], *, figsize: tuple[float, float]) -> str:
    """One runbook's page: its chart and its runs."""
    body = svg_of(runs_figure(records, figsize=figsize, title=f"{stem}: runs and failures per day"))
    return _page(f"runbook {stem}", body + _runs_table(records, "../"), up="../")


def _plan_html(record: Record) -> str:
    plans = recorded_plans(record.plan)
    if len(plans) == 1:
        return _one_plan_html(record.plan_hash, next(iter(plans.values())), "Plan")
    head = f'<h2 id="plan">Plans <code>{html.escape(record.plan_hash)}</code></h2>'
    return head + "".join(
        _one_plan_html(str(plan.get("sha256", "")), plan, f"Plan of {adapter}") for adapter, plan in plans.items()
    )


def _one_plan_html(sha256: str, plan: Mapping[str, Any], title: str) -> str:
    rows = []
    for c in plan.get("changes", []):
        fields = "; ".join(f"{n}: {old!r} -> {new!r}" for n, old, new in c.get("fields", []))
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    c.get("action"),
                    c.get("kind"),
                    c.get("target"),
                    c.get("where") or "-",
                    fields or c.get("reason") or "",
                )
            )
            + "</tr>"
        )
    return (
        f'<h2 id="plan">{html.escape(title)} <code>{html.escape(sha256)}</code></h2>'
        f"<p>{html.escape(str(plan.get('summary', '')))}</p>"
        "<table><tr><th>action</th><th>kind</th><th>target</th><th>where</th><th>detail</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _record_html(record: Record, approvers: Sequence[Record]) -> str:
    rows = [
        ("runbook", f'<a href="../{runbook_page(runbook_of(record))}">{html.escape(record.notebook)}</a>'),
        ("status", f'<span class="{html.escape(record.status)}">{html.escape(record.status)}</span>'),
        ("homelab", html.escape(record.homelab or "-")),
        ("start (UTC)", html.escape(record.start)),
        ("duration", f"{record.duration_s:.1f} s"),
        ("by", html.escape(f"{record.user}@{record.host}")),
        ("parameter files", html.escape(", ".join(record.parameter_files) or "-")),
        ("parameters", f"<code>{html.escape(json.dumps(record.parameters, sort_keys=True))}</code>"),
        ("notebook sha256", f"<code>{html.escape(record.sha256 or '-')}</code>"),
    ]
    if record.failed_cell is not None or record.error:
        rows.append(("failed cell", html.escape(str(record.failed_cell if record.failed_cell is not None else "-"))))
        rows.append(("error", f"<pre>{html.escape(record.error)}</pre>"))
    if record.approves:
        rows.append(
            (
                "applies the plan of",
                f'<a class="approves" href="{page_name(record.approves)}.html">{html.escape(record.approves)}</a>',
            )
        )
    if approvers:
        links = ", ".join(
            f'<a class="approved-by" href="{page_name(a.run)}.html">{html.escape(a.run)}</a> ({html.escape(a.status)})'
            for a in approvers
        )
        rows.append(("its plan applied by", links))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="record">{table}</table>' + (_plan_html(record) if record.plan else "")


def notebook_html(path: Path) -> str:
    """The executed notebook as a full HTML page (nbconvert's HTMLExporter, lab template), without CDN scripts."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
    exporter = HTMLExporter(template_name="lab")  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(nb)
    body = CDN_MODULE.sub("", CDN_MATHJAX.sub("", body))
    return CDN_SCRIPT.sub("", body)


def run_html(archive: Archive, record: Record, approvers: Sequence[Record]) -> str:
    """One run's page: its record and plan above the executed notebook."""
    header = (
        '<div class="homelab-record" style="font-family: system-ui, sans-serif; margin: 1em 2em;">'
        f"<style>{CSS.replace('body {', '.homelab-record {')}</style>"
        '<nav><a href="../index.html">all runs</a></nav>'
        f"<h1>run {html.escape(record.run)}</h1>{_record_html(record, approvers)}</div>"
    )
    if not record.archived:
        note = "<p>No notebook is archived for this run" + (
            " (a secret value appeared in it: it was not kept).</p>" if record.status == "leak" else ".</p>"
        )
        return _page(f"run {record.run}", header + note)
    try:
        page = notebook_html(archive.root / record.archived)
    except (OSError, ValueError) as e:  # removed or altered past reading: the verify result at the top says so
        note = f'<p class="failed">The archived notebook cannot be shown: {html.escape(str(e))}</p>'
        return _page(f"run {record.run}", header + note)
    title = f"<title>run {html.escape(record.run)}</title>"
    page = re.sub(r"<title>.*?</title>", lambda _: title, page, count=1, flags=re.S)
    opened = re.search(r"<body[^>]*>", page)
    if opened is None:
        return _page(f"run {record.run}", header + page)
    return page[: opened.end()] + "\n" + header + page[opened.end() :]


def _key(archive: Archive, record: Record, approvers: Sequence[Record]) -> str:
    """What a run's page is made from: the record (the notebook's sha256, the seal), the runs applying its plan,
    and the archived file as it is now (there, its size and mtime: a removed or altered notebook shows)."""
    try:
        info = (archive.root / record.archived).stat() if record.archived else None
        on_disk: tuple[int, int] | None = (info.st_size, info.st_mtime_ns) if info else None
    except OSError:
        on_disk = None
    data = {
        "version": PAGE_VERSION,
        "record": record.fields(),
        "approvers": [(a.run, a.status) for a in approvers],
        "file": on_disk,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def write_report(archive: Archive, out: str | Path, *, figsize: tuple[float, float] = (8.0, 2.6)) -> ReportResult:
    """Render the archive to static HTML in ``out``; only what changed since the last report is written.

    Args:
        archive: the archive (its signing settings decide whether HEAD.sig is checked).
        out: the report's folder (made if missing).
        figsize: the charts' size in inches.

    Returns:
        What was written and skipped, and the chain's verify problems (also shown at the top of the index).

    Raises:
        AuditError: the archive has no index to report on, or out is inside the archive.
    """
    root = Path(out).resolve()
    if not archive.index.is_file():
        raise AuditError(
            "no runs to report: the archive has no index.jsonl",
            where=str(archive.root),
            hint="give the archive folder `homelab run --archive` wrote to (--archive DIR)",
        )
    if root == archive.root.resolve() or archive.root.resolve() in root.parents:
        raise AuditError(
            "the report folder is inside the archive",
            where=str(root),
            hint="write the report elsewhere (-o report/): the archive holds only runs and their index",
        )
    records = archive.records()
    problems = tuple(archive.verify())
    state_path = root / STATE
    try:
        state: dict[str, str] = json.loads(state_path.read_text()) if state_path.is_file() else {}
    except ValueError:
        state = {}
    approvers: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.approves:
            approvers[r.approves].append(r)
    written: list[str] = []
    skipped: list[str] = []
    new_state: dict[str, str] = {}
    for r in records:
        rel = run_page(r)
        key = _key(archive, r, approvers.get(r.run, []))
        new_state[rel] = key
        if state.get(rel) == key and (root / rel).is_file():
            skipped.append(rel)
            continue
        (written if _write_if_changed(root / rel, run_html(archive, r, approvers.get(r.run, []))) else skipped).append(
            rel
        )
    by_book: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_book[runbook_of(r)].append(r)
    pages = {runbook_page(stem): runbook_html(stem, rs, figsize=figsize) for stem, rs in sorted(by_book.items())}
    pages["index.html"] = index_html(records, problems, figsize=figsize)
    for rel, text in pages.items():
        (written if _write_if_changed(root / rel, text) else skipped).append(rel)
    removed: list[str] = []
    for rel in sorted(set(state) - set(new_state)):  # runs no longer in the index: their pages go too
        page = root / rel
        if page.is_file() and page.parent.name == "runs":
            page.unlink()
            removed.append(rel)
    _write_if_changed(state_path, json.dumps(new_state, indent=1, sort_keys=True) + "\n")
    return ReportResult(root, tuple(written), tuple(skipped), problems, tuple(removed))


__all__ = [
    "ReportResult",
    "index_html",
    "notebook_html",
    "page_name",
    "run_html",
    "run_page",
    "runbook_html",
    "runs_figure",
    "svg_of",
    "write_report",
]
