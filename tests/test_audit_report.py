"""`homelab audit report`: the archive as static HTML, opened in headless Chromium (Debian's, via Playwright).

The archive is made by real runs (papermill, small notebooks, no lab): a dry run that shows a plan,
a run that applies it with ``--approve``, a failing run, plain runs on other days. Screenshots go to
``test-artifacts/audit-report/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from homelab_lib.cli import main
from homelab_lib.core.errors import AuditError, NotebookFailed
from homelab_lib.runs.archive import Archive, Record
from homelab_lib.runs.auditweb import run_page, runbook_page, write_report
from homelab_lib.runs.runner import run_notebook
from tests.test_runner import fixed_clock, write_nb

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "audit-report"

PLAN_NB = [
    "from homelab_lib.core import contract\nfrom homelab_lib.core.plan import Action, Change, Plan\n"
    "plan = Plan.of([Change('vm', 'web-1', Action.CREATE, where='node1', reason='not on node1')], adapter='test')\n"
    "contract.show_plan(plan)",
    "if approved_plan:\n    print('applying the approved plan', approved_plan['test'][:12])",
]


def plan_notebook(path: Path) -> Path:
    params = "params_file = None\nconfirm = False\napproved_plan = None"
    cells = [new_code_cell(params, metadata={"tags": ["parameters"]}), *(new_code_cell(s) for s in PLAN_NB)]
    nb = new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    )
    nbformat.write(nb, str(path))
    return path


def run(nb: Path, archive: Path, locks: Path, when: str, **kw: object) -> Record:
    try:
        done = run_notebook(nb, archive_dir=archive, lock_dir=locks, clock=fixed_clock(when), progress_bar=False, **kw)  # type: ignore[arg-type]
        return done.record
    except NotebookFailed:
        return Archive(archive).records()[-1]


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, list[Record]]:
    """An archive of six real runs over three days: a dry run and its approved apply, a failure, plain runs."""
    archive, locks = tmp_path / "archive", tmp_path / "locks"
    hello = write_nb(tmp_path / "hello.ipynb", "print('hello from the archive')")
    fails = write_nb(tmp_path / "breaks.ipynb", "raise RuntimeError('the disk is full')")
    plan = plan_notebook(tmp_path / "provision.ipynb")
    records = [
        run(hello, archive, locks, "2026-11-23T08:00:00"),
        run(fails, archive, locks, "2026-11-23T09:00:00"),
        run(plan, archive, locks, "2026-11-24T10:00:00"),
    ]
    records.append(run(plan, archive, locks, "2026-11-24T10:30:00", approve=records[2].run))
    records.append(run(fails, archive, locks, "2026-11-25T07:00:00"))
    records.append(run(hello, archive, locks, "2026-11-25T08:00:00"))
    assert [r.status for r in records] == ["ok", "failed", "ok", "ok", "failed", "ok"]
    assert records[3].approves == records[2].run
    return archive, records


def test_report_writes_every_page_then_only_what_changed(tmp_path: Path, archived: tuple[Path, list[Record]]) -> None:
    archive, records = archived
    out = tmp_path / "report"
    first = write_report(Archive(archive), out)
    pages = {run_page(r) for r in records} | {runbook_page(s) for s in ("hello", "breaks", "provision")}
    assert set(first.written) == pages | {"index.html"}
    assert first.skipped == ()
    assert first.problems == ()
    index = (out / "index.html").read_text()
    assert "audit verify: ok" in index
    assert index.index('id="verify"') < index.index("<svg")  # the verify result is at the top, the chart below
    for r in records:
        assert f'href="{run_page(r)}"' in index
    applied = (out / run_page(records[3])).read_text()
    assert f'href="{records[2].run}.html"' in applied  # the run it applies links to the reviewed dry run
    assert records[3].plan_hash in applied
    reviewed = (out / run_page(records[2])).read_text()
    assert f'class="approved-by" href="{records[3].run}.html"' in reviewed
    assert "jp-Notebook" in reviewed  # nbconvert's lab template rendered the notebook
    assert "https://cdnjs" not in reviewed  # pages work offline
    failed = (out / run_page(records[1])).read_text()
    assert "the disk is full" in failed

    mtimes = {p: (out / p).stat().st_mtime_ns for p in first.written}
    again = write_report(Archive(archive), out)
    assert again.written == ()
    assert set(again.skipped) == set(first.written)
    assert {p: (out / p).stat().st_mtime_ns for p in first.written} == mtimes  # nothing touched

    # one more run: its page, its runbook's page and the index; nothing else
    hello = write_nb(tmp_path / "hello.ipynb", "print('hello from the archive')")
    new = run(hello, archive, tmp_path / "locks", "2026-11-26T08:00:00")
    third = write_report(Archive(archive), out)
    assert set(third.written) == {run_page(new), runbook_page("hello"), "index.html"}
    # a later approve of an old dry run changes that dry run's page (its "applied by" links)
    plan = plan_notebook(tmp_path / "provision.ipynb")
    late = run(plan, archive, tmp_path / "locks", "2026-11-26T09:00:00", approve=records[2].run)
    fourth = write_report(Archive(archive), out)
    assert set(fourth.written) == {run_page(late), run_page(records[2]), runbook_page("provision"), "index.html"}


def test_a_tampered_archive_shows_failed_at_the_top(tmp_path: Path, archived: tuple[Path, list[Record]]) -> None:
    archive, records = archived
    target = archive / records[0].archived
    nb = json.loads(target.read_text())
    nb["cells"][1]["outputs"] = []
    target.write_text(json.dumps(nb))
    out = tmp_path / "report"
    assert main(["audit", "report", "--archive", str(archive), "-o", str(out)]) == 1
    index = (out / "index.html").read_text()
    assert "audit verify: FAILED" in index
    assert records[0].run in index.split("</div>")[0]  # the problem names the altered run, in the top block
    # a notebook removed from the archive: its page says so, the report is still written
    (archive / records[1].archived).unlink()
    assert main(["audit", "report", "--archive", str(archive), "-o", str(out)]) == 1
    assert "The archived notebook cannot be shown" in (out / run_page(records[1])).read_text()
    # a record cut from the index: its page goes, and the index says the chain is broken
    lines = (archive / "index.jsonl").read_bytes().splitlines(keepends=True)
    (archive / "index.jsonl").write_bytes(b"".join(lines[:-1]))
    cut = write_report(Archive(archive), out)
    assert cut.removed == (run_page(records[-1]),)
    assert not (out / run_page(records[-1])).exists()
    assert cut.problems


def test_the_report_refuses_an_archive_without_runs_and_a_folder_inside_it(tmp_path: Path) -> None:
    with pytest.raises(AuditError) as e:
        write_report(Archive(tmp_path / "none"), tmp_path / "report")
    assert e.value.hint
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.jsonl").write_text("")
    with pytest.raises(AuditError, match="inside the archive"):
        write_report(Archive(tmp_path / "a"), tmp_path / "a" / "report")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_index_links_every_run_and_each_link_opens_in_chromium(
    tmp_path: Path, archived: tuple[Path, list[Record]], capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import sync_playwright

    archive, records = archived
    out = tmp_path / "report"
    assert main(["audit", "report", "--archive", str(archive), "-o", str(out)]) == 0
    assert "page(s) written" in capsys.readouterr().out
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "index.html").as_uri())
            assert "audit verify: ok" in page.locator("#verify").inner_text()
            assert page.locator("svg").count() == 1
            page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)
            links = page.locator("a.run")
            hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
            assert sorted(h or "" for h in hrefs) == sorted(run_page(r) for r in records)  # every run, once
            by_run = {r.run: r for r in records}
            for i in range(links.count()):
                link = page.locator("a.run").nth(i)
                run_id = link.inner_text()
                link.click()
                page.wait_for_load_state()
                assert page.url.endswith(run_page(by_run[run_id]))
                assert page.title() == f"run {run_id}"
                assert by_run[run_id].status in page.locator("table.record").inner_text()
                if by_run[run_id].archived:
                    assert page.locator(".jp-Cell").count() >= 2  # the executed notebook's cells
                    assert "JupyterLab Light" not in page.locator("body").inner_text()  # the page whole, not cut
                page.screenshot(path=str(ARTIFACTS / f"{run_id}.png"), full_page=True)
                page.go_back()
            # the approve link on the applying run opens the reviewed dry run
            page.goto((out / run_page(records[3])).as_uri())
            page.locator("a.approves").click()
            page.wait_for_load_state()
            assert page.title() == f"run {records[2].run}"
            assert re.search(r"applied by", page.locator("table.record").inner_text())
            # each runbook page opens and links its runs
            page.goto((out / "index.html").as_uri())
            books = page.locator("a.runbook")
            for i in range(books.count()):
                page.locator("a.runbook").nth(i).click()
                page.wait_for_load_state()
                assert page.locator("svg").count() == 1
                assert page.locator("a.run").count() >= 1
                page.screenshot(path=str(ARTIFACTS / f"runbook-{i}.png"), full_page=True)
                page.go_back()
            assert errors == []
        finally:
            browser.close()
    assert len(list(ARTIFACTS.glob("*.png"))) == len(records) + 1 + 3
