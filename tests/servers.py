"""Real servers for tests: started as processes on 127.0.0.1 and stopped by PID."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 20.0, proc: "subprocess.Popen[Any] | None" = None) -> None:
    """Wait until ``url`` answers any HTTP status, or fail with what the process said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not answer within {timeout}s")


def stop(proc: "subprocess.Popen[Any]", timeout: float = 10.0) -> None:
    """Stop a server by PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Run moto's standalone server (S3, KMS, ... over real HTTP); yield its endpoint URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    log = (log_dir / f"moto-{port}.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc=proc)
        yield url
    finally:
        stop(proc)
        log.close()


def archive_serve(
    data_dir: Path, tenant: str, media_policy: str | None = None, *, role: str = "ingest",
    extra_env: dict[str, str] | None = None, worker: bool = False,
    stderr: Path | None = None,
) -> tuple["subprocess.Popen[bytes]", str, str]:
    """A real ``archive serve`` over ``data_dir`` with a ``role`` token for ``tenant`` (keeping
    call audio as ``media_policy`` when given; ``extra_env`` adds settings such as
    ``ARCHIVE_DATABASE_URL``): its process, base URL and token. Its lifecycle worker runs only
    when ``worker`` is true, so that a test's items are never purged under it. Its stderr (the
    logs) is appended to the file ``stderr`` when given, else discarded."""
    archive = str(Path(sys.executable).with_name("archive"))
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir), **(extra_env or {})}
    if media_policy is not None:
        subprocess.run([archive, "tenants", "create", tenant, "--media-policy", media_policy],
                       env=env, check=True, capture_output=True)
    secret = subprocess.run([archive, "tokens", "create", "--role", role, "--tenant", tenant],
                            env=env, check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    flags = [] if worker else ["--no-worker"]
    if stderr is None:
        proc = subprocess.Popen([archive, "serve", "--port", str(port), *flags], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        with stderr.open("ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([archive, "serve", "--port", str(port), *flags], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", proc=proc)
    return proc, base, secret
