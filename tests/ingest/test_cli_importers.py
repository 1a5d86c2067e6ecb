"""The importer commands as a PBX's operator runs them: real processes, real files."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.ingest import media

ARCHIVE = str(Path(sys.executable).with_name("archive"))


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARCHIVE, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_spool_and_import_commands(tmp_path: Path) -> None:
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var")}
    made = _run(["tenants", "create", "camden", "--media-policy", "opus"], env)
    assert made.returncode == 0, made.stderr
    assert "opus" in _run(["tenants", "list"], env).stdout

    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "call-1.wav").write_bytes(media.wav(1.0))
    (spool / "call-1.json").write_text(json.dumps({"started_at": "2026-11-23T09:00:00Z"}))
    (spool / "bad.wav").write_bytes(media.not_audio())
    (spool / "bad.json").write_text(json.dumps({"started_at": "2026-11-23T09:00:00Z"}))
    for path in spool.iterdir():  # old enough to have settled
        os.utime(path, (1, 1))
    out = _run(["ingest", "spool", str(spool), "--tenant", "camden", "--once",
                "--settle", "0"], env)
    assert out.returncode == 0, out.stderr
    assert "archived=1" in out.stdout and "failed=1" in out.stdout
    assert (spool / "done" / "call-1.json").exists()
    assert not (spool / "call-1.wav").exists()
    error = json.loads((spool / "failed" / "bad.error.json").read_text())
    assert error["status"] == 415

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "old.wav").write_bytes(media.wav(0.5))
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "external_id", "started_at", "caller_number"])
        writer.writerow(["old.wav", "legacy-1", "2011-03-01T10:00:00Z", "01632 960001"])
        writer.writerow(["../escape.wav", "legacy-2", "2011-03-01T10:00:00Z", ""])
    out = _run(["import", str(legacy), "--manifest", str(manifest), "--tenant", "camden"],
               env)
    assert out.returncode == 1  # one bad row
    assert "archived=1" in out.stdout and "row 3" in out.stdout
    assert "100" in out.stderr  # the progress bar reached the end
    again = _run(["import", str(legacy), "--manifest", str(manifest), "--tenant", "camden"],
                 env)
    assert "skipped=1" in again.stdout
