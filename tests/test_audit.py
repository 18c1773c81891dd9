"""Anchoring the audit archive: the chain head kept elsewhere, HEAD signed with an SSH key, repair after a crash."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from homelab_lib.cli import main
from homelab_lib.core.errors import AuditError
from homelab_lib.runs.archive import Archive, Record
from homelab_lib.runs.runner import run_notebook
from tests.test_runner import write_nb


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "rt"))
    return tmp_path / "archive"


def runs(tmp_path: Path, archive: Path, n: int, params: Path | None = None) -> list[Path]:
    nb = write_nb(tmp_path / "step.ipynb", "print('step')")
    files = [params] if params else []
    out = []
    for _ in range(n):
        result = run_notebook(nb, param_files=files, archive_dir=archive, progress_bar=False)
        assert result.archived is not None
        out.append(result.archived)
    return out


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def head_of(capsys: pytest.CaptureFixture[str], archive: Path) -> str:
    code, out, _ = cli(capsys, "audit", "head", "--archive", str(archive))
    assert code == 0
    return out.strip()


def lines(archive: Path) -> list[bytes]:
    return (archive / "index.jsonl").read_bytes().splitlines(keepends=True)


def rewrite(archive: Path, records: list[bytes]) -> None:
    """What someone who can write the archive can do: rechain and reseal the records, rewrite HEAD to match."""
    prev = "0" * 64
    out = []
    for raw in records:
        rec = Record(**{**json.loads(raw), "prev": prev}).sealed()
        line = rec.line()
        out.append(line)
        prev = hashlib.sha256(line).hexdigest()
    (archive / "index.jsonl").write_bytes(b"".join(out))
    (archive / "HEAD").write_text(f"{prev} {len(out)}\n")


def test_audit_head_prints_the_chain_head(tmp_path: Path, archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs(tmp_path, archive, 2)
    head = head_of(capsys, archive)
    last = lines(archive)[-1]
    assert head == f"{hashlib.sha256(last).hexdigest()} 2"
    assert (archive / "HEAD").read_text().strip() == head


def test_a_cut_tail_with_head_rewritten_shows_against_an_anchored_head(
    tmp_path: Path, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = runs(tmp_path, archive, 3)
    anchored = head_of(capsys, archive)  # the copy the operator keeps elsewhere
    rewrite(archive, lines(archive)[:2])  # the last run's record cut, HEAD rewritten to match
    made[2].unlink()
    code, _, _ = cli(capsys, "audit", "verify", "--archive", str(archive))
    assert code == 0, "without an anchor a consistent rewrite passes (the README says so)"
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "--head", anchored)
    assert code == 1
    assert "the anchored head record 3 (" in err
    assert "is not in the chain, and the index has 2 record(s): 1 record(s) are missing: records 3-3 were cut" in err
    colon = anchored.replace(" ", ":")
    assert cli(capsys, "audit", "verify", "--archive", str(archive), "--head", colon)[0] == 1


def test_a_rewritten_chain_names_where_it_diverges_from_the_anchor(
    tmp_path: Path, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs(tmp_path, archive, 3)
    first = f"{hashlib.sha256(lines(archive)[0]).hexdigest()} 1"
    second = f"{hashlib.sha256(lines(archive)[1]).hexdigest()} 2"
    anchored = head_of(capsys, archive)
    records = lines(archive)
    edited = json.loads(records[1])
    edited["status"] = "failed"  # history changed, then the chain rebuilt over it
    rewrite(archive, [records[0], json.dumps(edited).encode() + b"\n", records[2]])
    assert cli(capsys, "audit", "verify", "--archive", str(archive))[0] == 0
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "--head", anchored)
    assert code == 1
    assert "index.jsonl:3: the anchored head record 3 (" in err
    assert "record 3 (run " in err
    assert "the chain diverges from the anchored copy at or before record 3" in err
    assert "at or before record 2" in cli(capsys, "audit", "verify", "--archive", str(archive), "--head", second)[2]
    code, out, _ = cli(capsys, "audit", "verify", "--archive", str(archive), "--head", first)
    assert code == 0  # record 1 is as anchored
    assert "the anchored head record 1 (" in out


def test_head_mismatch_says_what_differs(tmp_path: Path, archive: Path) -> None:
    runs(tmp_path, archive, 2)
    last = hashlib.sha256(lines(archive)[-1]).hexdigest()
    (archive / "HEAD").write_text(f"{'ab' * 32} 5\n")
    (problem,) = Archive(archive).verify()
    assert "the index ends at record 2 but HEAD says 5" in problem
    assert f"expected record 5 ({'ab' * 6}...), found the index ending at record 2 ({last[:12]}...)" in problem
    assert "3 record(s) missing" in problem
    (archive / "HEAD").write_text(f"{'cd' * 32} 2\n")
    (problem,) = Archive(archive).verify()
    assert f"expected record 2 to hash to {'cd' * 6}..., found {last[:12]}..." in problem


def test_a_crash_between_index_append_and_head_write_is_repaired(
    tmp_path: Path, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs(tmp_path, archive, 1)
    before = (archive / "HEAD").read_text()
    runs(tmp_path, archive, 1)
    (archive / "HEAD").write_text(before)  # as if the run stopped after appending its record
    (problem,) = Archive(archive).verify()
    assert "HEAD is one record behind the index: record 2 (run " in problem
    assert "this is not tampering" in problem
    assert "homelab audit repair" in problem
    code, out, _ = cli(capsys, "audit", "repair", "--archive", str(archive))
    assert code == 0
    assert f"HEAD said {before.strip()}; it now says " in out
    assert Archive(archive).verify() == []

    (archive / "HEAD").write_text(before)  # behind again: this time the next run repairs it
    runs(tmp_path, archive, 1)
    assert Archive(archive).verify() == []


def test_first_run_that_stopped_before_head_is_repairable(tmp_path: Path, archive: Path) -> None:
    runs(tmp_path, archive, 1)
    (archive / "HEAD").unlink()
    assert "one record behind" in Archive(archive).verify()[0]
    assert "it now says" in Archive(archive).repair()
    assert Archive(archive).verify() == []


def test_a_head_that_does_not_match_stops_the_next_run_until_accepted(
    tmp_path: Path, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs(tmp_path, archive, 3)
    records = lines(archive)
    (archive / "index.jsonl").write_bytes(b"".join(records[:2]))  # cut, HEAD left as it was
    with pytest.raises(AuditError, match="HEAD does not match its index, so nothing was run"):
        runs(tmp_path, archive, 1)
    assert len(lines(archive)) == 2  # nothing run, nothing recorded over the evidence
    code, _, err = cli(capsys, "audit", "repair", "--archive", str(archive))
    assert code == 1
    assert "--accept" in err
    code, out, _ = cli(capsys, "audit", "repair", "--archive", str(archive), "--accept")
    assert code == 0
    assert "accepted: " in out
    assert "1 record(s) missing" in out  # what was accepted is said
    runs(tmp_path, archive, 1)
    assert not [p for p in Archive(archive).verify() if "HEAD" in p]


# ---------------------------------------------------------------- signing with ssh-keygen -Y


@pytest.fixture
def signer(tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op", "-f", str(keys / "op")], check=True)
    public = (keys / "op.pub").read_text().split()
    (tmp_path / "allowed_signers").write_text(f"operator@homelab {public[0]} {public[1]}\n")
    return {
        "signing_key": f"file:{keys / 'op'}",
        "allowed_signers": "allowed_signers",  # relative to the parameter file
        "identity": "operator@homelab",
        "witness": "state/witness.json",  # the signer's own note (default: under $XDG_STATE_HOME)
    }


@pytest.fixture
def signed_params(make_params: Callable[..., Path], signer: dict[str, str]) -> Path:
    """A parameter file whose audit: section signs with the operator's key."""
    return make_params(audit=signer)


def test_each_run_signs_head_and_verify_checks_it(
    tmp_path: Path,
    archive: Path,
    make_params: Callable[..., Path],
    signer: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = make_params(audit=signer)
    made = runs(tmp_path, archive, 3, params)
    assert (archive / "HEAD.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    allowed = str(tmp_path / "allowed_signers")
    done = subprocess.run(  # the signature is ssh-keygen's own: anyone can check it with ssh-keygen
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            allowed,
            "-I",
            "operator@homelab",
            "-n",
            "homelab-audit",
            "-s",
            "HEAD.sig",
        ],
        cwd=archive,
        input=(archive / "HEAD").read_bytes(),
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    code, out, _ = cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))
    assert code == 0
    assert "HEAD signed by operator@homelab" in out

    rewrite(archive, lines(archive)[:2])  # a cut tail with HEAD rewritten: the signature no longer fits
    made[2].unlink()
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))
    assert code == 1
    assert "HEAD's signature does not verify for operator@homelab" in err
    (archive / "HEAD.sig").unlink()
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))
    assert code == 1
    assert "HEAD is not signed" in err

    code, _, err = cli(capsys, "audit", "repair", "--archive", str(archive), "-f", str(params))
    assert code == 1  # with a signing key nothing is repaired without --accept
    assert "nothing is repaired without --accept" in err
    code, out, _ = cli(capsys, "audit", "repair", "--archive", str(archive), "-f", str(params), "--accept")
    assert code == 0  # the operator, with the key, signs the end they accept
    assert "accepted: " in out
    assert cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))[0] == 0


def test_another_identity_does_not_verify(
    tmp_path: Path, archive: Path, make_params: Callable[..., Path], signer: dict[str, str]
) -> None:
    runs(tmp_path, archive, 1, make_params(audit=signer))
    other = make_params("other.yaml", audit={**signer, "identity": "someone-else@homelab"})
    from homelab_lib.inventory import load_inventory
    from homelab_lib.runs.signing import signing_of

    record, head = Archive(archive, signing_of(load_inventory(other).audit)).verify()
    assert "record 1 (run " in record
    assert "its signature does not verify for someone-else@homelab" in record
    assert "HEAD's signature does not verify for someone-else@homelab" in head


def test_a_key_that_cannot_sign_is_a_clear_error(
    tmp_path: Path, archive: Path, make_params: Callable[..., Path], signer: dict[str, str]
) -> None:
    locked = tmp_path / "keys" / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)], check=True)
    params = make_params(audit={**signer, "signing_key": f"file:{locked}"})
    with pytest.raises(AuditError) as e:
        runs(tmp_path, archive, 1, params)  # fails, never prompts for the passphrase
    assert "ssh-keygen could not sign record 1 with file:" in str(e.value)
    assert "without passphrase" in e.value.hint
    assert Archive(archive).records()[0].status == "ok"  # the run itself is recorded


def test_audit_section_is_validated(make_params: Callable[..., Path], signer: dict[str, str]) -> None:
    from homelab_lib.core.errors import ConfigError
    from homelab_lib.inventory import load_inventory

    with pytest.raises(ConfigError, match="allowed_signers needs identity"):
        load_inventory(make_params(audit={"allowed_signers": "allowed_signers"}))
    key_text = Path(signer["signing_key"].removeprefix("file:")).read_text()  # made by ssh-keygen just now
    with pytest.raises(ConfigError) as e:
        load_inventory(make_params(audit={**signer, "signing_key": key_text}))  # the key pasted in, not referenced
    assert "audit.signing_key" in str(e.value)
    assert "PRIVATE KEY" not in str(e.value)
    assert key_text.splitlines()[1] not in str(e.value)


def test_a_record_appended_without_the_key_stays_detected_after_the_next_run(
    tmp_path: Path, archive: Path, signed_params: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = signed_params
    runs(tmp_path, archive, 2, params)
    before = lines(archive)
    fields = {k: v for k, v in json.loads(before[-1]).items() if k != "sig"}
    fields.update(run="20991231T000000Z-step", error="", prev=hashlib.sha256(before[-1]).hexdigest())
    forged = Record(**fields).sealed().line()  # chained and sealed like any record: only the key is missing
    with (archive / "index.jsonl").open("ab") as f:
        f.write(forged)  # HEAD left one record behind, as a run that stopped would leave it

    with pytest.raises(AuditError, match="not as the signing key left it, so nothing was run") as e:
        runs(tmp_path, archive, 1, params)  # the next run neither repairs HEAD nor signs over the record
    assert "record 3 (run 20991231T000000Z-step) is not signed" in str(e.value)
    assert "--accept" in e.value.hint
    assert len(lines(archive)) == 3
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))
    assert code == 1
    assert "record 3 (run 20991231T000000Z-step) is not signed" in err

    (archive / "HEAD").write_text(f"{hashlib.sha256(forged).hexdigest()} 3\n")  # HEAD made to match: the same
    with pytest.raises(AuditError, match="record 3 \\(run 20991231T000000Z-step\\) is not signed"):
        runs(tmp_path, archive, 1, params)
    code, _, err = cli(capsys, "audit", "repair", "--archive", str(archive), "-f", str(params))
    assert code == 1  # not without --accept
    assert "nothing is repaired without --accept" in err

    code, out, _ = cli(capsys, "audit", "repair", "--archive", str(archive), "-f", str(params), "--accept")
    assert code == 0  # the operator looked, and accepts the archive's end as it is
    assert "record 3 (run 20991231T000000Z-step) is not signed" in out  # what was accepted is said
    runs(tmp_path, archive, 1, params)  # the next run signs its own record and HEAD, not the forged record
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))
    assert code == 1
    problems = [line for line in err.splitlines() if not line.startswith("audit verify: FAILED")]
    assert len(problems) == 1, err
    assert "index.jsonl:3: record 3 (run 20991231T000000Z-step) is not signed" in problems[0]
    assert json.loads(lines(archive)[3])["sig"]  # record 4, the operator's run, is signed
    assert "signed: no" in cli(capsys, "audit", "show", "#3", "--archive", str(archive))[1]
    assert "signed: yes" in cli(capsys, "audit", "show", "#4", "--archive", str(archive))[1]


def test_an_archive_rolled_back_to_an_older_copy_is_reported(
    tmp_path: Path, archive: Path, signed_params: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = signed_params
    runs(tmp_path, archive, 2, params)
    older = tmp_path / "older"
    shutil.copytree(archive, older)  # a copy someone kept, with its own HEAD, HEAD.sig and signed records
    runs(tmp_path, archive, 1, params)
    shutil.rmtree(archive)
    shutil.copytree(older, archive)  # ... put back: the third run is gone, every signature still valid

    assert cli(capsys, "audit", "verify", "--archive", str(archive))[0] == 0  # nothing to compare it with
    code, _, err = cli(capsys, "audit", "verify", "--archive", str(archive), "-f", str(params))
    assert code == 1
    assert f"the signer's witness ({tmp_path / 'state' / 'witness.json'}) says this machine signed record 3" in err
    assert "the index ends at record 2: the archive was rolled back to an older copy" in err
    assert "signature does not verify" not in err  # the copy is genuine; only its age gives it away
    with pytest.raises(AuditError, match="rolled back to an older copy"):
        runs(tmp_path, archive, 1, params)  # and no run is signed onto it
    assert len(lines(archive)) == 2
    assert oct((tmp_path / "state" / "witness.json").stat().st_mode & 0o777) == "0o600"
