"""The ``archive`` command as operators and their scripts use it: real processes."""

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import sqlalchemy as sa

from archive.db import Database
from archive.models import AuditEvent
from tests.servers import free_port, stop, wait_http

ARCHIVE = str(Path(sys.executable).with_name("archive"))
TOKEN = re.compile(r"^arc_[A-Za-z0-9_-]{43}$")


def run(args: list[str], env: dict[str, str], check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ARCHIVE, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"archive {args} failed: {proc.stderr}")
    return proc


def _env(tmp_path: Path, db_url: str) -> dict[str, str]:
    return {**os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var"),
            "ARCHIVE_DATABASE_URL": db_url}


def test_tokens_create_prints_the_token_alone(tmp_path: Path, db_url: str) -> None:
    env = _env(tmp_path, db_url)
    out = run(["tokens", "create", "--role", "complaints", "--tenant", "camden"], env)
    assert TOKEN.match(out.stdout.strip()), out.stdout
    assert out.stdout.count("\n") == 1
    assert "created tenant camden" in out.stderr
    listed = run(["tokens", "list", "--tenant", "camden"], env).stdout
    assert "complaints" in listed and out.stdout.strip() not in listed
    bad = run(["tokens", "create", "--role", "root", "--tenant", "camden"], env, check=False)
    assert bad.returncode == 2 and "role" in bad.stderr and bad.stdout == ""


def test_data_dir_flag_and_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    run(["--data-dir", str(tmp_path / "a"), "tokens", "create", "--role", "admin",
         "--tenant", "t1"], env)
    run(["tokens", "create", "--role", "admin", "--tenant", "t2", "--data-dir",
         str(tmp_path / "b")], env)
    assert (tmp_path / "a" / "archive.db").exists()
    assert (tmp_path / "b" / "archive.db").exists()
    assert (tmp_path / "a" / "archive.db").stat().st_mode & 0o077 == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "c"}"\n')
    run(["--config", str(cfg), "tenants", "create", "t3"], env)
    assert (tmp_path / "c" / "archive.db").exists()
    bad = run(["--config", str(tmp_path / "missing.toml"), "tenants", "list"], env,
              check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


async def test_audit_verify_exit_status(tmp_path: Path, db_url: str) -> None:
    env = _env(tmp_path, db_url)
    for role in ("admin", "ingest"):
        run(["tokens", "create", "--role", role, "--tenant", "camden"], env)
    ok = run(["audit", "verify"], env)
    assert "camden: 2 event(s), chain intact" in ok.stdout
    db = Database(db_url)
    try:
        async with db.session() as session:
            await session.exec(sa.update(AuditEvent).values(role="auditor"))
            await session.commit()
    finally:
        await db.close()
    broken = run(["audit", "verify"], env, check=False)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout


def test_keys_rotate(tmp_path: Path) -> None:
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var")}
    first = run(["keys", "rotate", "--tenant", "camden"], env).stdout
    second = run(["keys", "rotate", "--tenant", "camden"], env).stdout
    assert "local:camden:1" in first and "local:camden:2" in second
    resumed = run(["keys", "rotate", "--tenant", "camden", "--resume"], env).stdout
    assert "local:camden:2" in resumed and "re-wrapped 0" in resumed
    assert (tmp_path / "var" / "keyring.json").stat().st_mode & 0o777 == 0o600


def test_serve_prints_an_admin_token_on_first_start(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var")}
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([ARCHIVE, "serve", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        log.seek(0)
        [secret] = re.findall(r"arc_[A-Za-z0-9_-]{43}", log.read())
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/whoami",
                                     headers={"Authorization": f"Bearer {secret}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert b'"role": "admin"' in r.read()
    finally:
        stop(proc)
    # A second start prints no new token.
    proc = subprocess.Popen([ARCHIVE, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    finally:
        stop(proc)
    assert proc.stdout is not None
    assert "arc_" not in proc.stdout.read().decode()
