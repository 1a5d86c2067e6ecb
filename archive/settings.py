"""The one settings object, read once at start.

Sources, later ones winning: the defaults below, a TOML file (``--config`` or
``ARCHIVE_CONFIG``), ``ARCHIVE_<NAME>`` environment variables, then command-line flags. Each field's
``doc`` is its reference text (docs/configuration.md is generated from it). The embedded defaults
put everything under ``data_dir`` (``./var``): a SQLite index, an encrypted folder store and a
local keyring file.
"""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from archive.errors import ConfigurationError
from archive.retention import Windows

ENV_PREFIX = "ARCHIVE_"


def _doc(text: str) -> Any:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; see each field's ``doc``."""

    data_dir: Path = field(default=Path("var"), metadata=_doc(
        "Folder for embedded state: the SQLite index, the local store and keyring."))
    database_url: str = field(default="", metadata=_doc(
        "SQLAlchemy URL of the index, e.g. postgresql://user:pw@host/db. "
        "Empty: SQLite at DATA_DIR/archive.db."))
    store_url: str = field(default="", metadata=_doc(
        "Where encrypted objects go: file:///path or s3://bucket/prefix. "
        "Empty: file://DATA_DIR/store."))
    s3_endpoint_url: str = field(default="", metadata=_doc(
        "S3 API endpoint for s3:// stores (MinIO, or empty for AWS)."))
    s3_region: str = field(default="eu-west-2", metadata=_doc("Region of the S3 bucket."))
    keyring: str = field(default="local", metadata=_doc(
        "Key-encryption key provider: 'local' (a keyring file) or 'kms' (AWS KMS)."))
    keyring_path: Path | None = field(default=None, metadata=_doc(
        "Local keyring file (mode 0600, created on first run). Empty: DATA_DIR/keyring.json."))
    kms_endpoint_url: str = field(default="", metadata=_doc(
        "KMS API endpoint (empty for AWS)."))
    kms_region: str = field(default="eu-west-2", metadata=_doc("Region of the KMS keys."))
    kms_alias_prefix: str = field(default="archive", metadata=_doc(
        "KMS aliases are alias/PREFIX-TENANT."))
    signing_key_file: Path | None = field(default=None, metadata=_doc(
        "Ed25519 private key (PEM, mode 0600, created on first use) that signs evidence "
        "bundles. Empty: DATA_DIR/signing-key.pem."))
    host: str = field(default="127.0.0.1", metadata=_doc("Address the HTTP server binds."))
    port: int = field(default=8080, metadata=_doc("Port the HTTP server binds."))
    segment_size: int = field(default=64 * 1024, metadata=_doc(
        "Plaintext bytes per encrypted segment; a range read decrypts whole segments."))
    max_upload_bytes: int = field(default=4 * 1024**3, metadata=_doc(
        "Largest recording upload accepted, in bytes; larger ones get 413."))
    max_transcript_bytes: int = field(default=16 * 1024**2, metadata=_doc(
        "Largest transcript (JSON or text) accepted, in bytes; larger ones get 413."))
    ffmpeg: str = field(default="", metadata=_doc(
        "Path of the ffmpeg binary. Empty: 'ffmpeg' on PATH, else the one in the "
        "imageio-ffmpeg wheel."))
    transcode_concurrency: int = field(default=0, metadata=_doc(
        "How many ffmpeg processes may run at once. 0: one per CPU core."))
    default_tenant: str = field(default="default", metadata=_doc(
        "Tenant given the first admin token on an empty index."))
    auto_migrate: bool = field(default=True, metadata=_doc(
        "Apply index migrations when the service starts (turn off when a separate "
        "migration job runs them)."))
    retention_days: str = field(default="", metadata=_doc(
        "Retention windows fixed by this file, in days from the end of a contact: "
        "comma-separated CHANNEL=DAYS (every tenant) or TENANT.CHANNEL=DAYS, e.g. "
        "'call=365,chat=730,camden.call=30'. A window set here is copied into the tenant's "
        "versioned policy at start and cannot be changed through the API. Unset windows: "
        "the policy set through the API, else calls 365 days and chats 730."))
    worker: bool = field(default=True, metadata=_doc(
        "Run the lifecycle worker (purge, sweep) inside 'archive serve' (the --no-worker flag "
        "turns it off; run 'archive worker' processes instead)."))
    purge_interval: int = field(default=300, metadata=_doc(
        "Seconds between lifecycle passes of a worker."))
    purge_batch_size: int = field(default=500, metadata=_doc(
        "Items a purge claims and destroys per transaction."))
    sweep_interval: int = field(default=3600, metadata=_doc(
        "Seconds between sweeps (pending items, orphan objects) of a worker."))
    sweep_grace: int = field(default=3600, metadata=_doc(
        "Seconds a pending item or an object without an item is left alone before the "
        "sweeper removes it (uploads in progress must not be swept)."))
    log_level: str = field(default="INFO", metadata=_doc("Log level: DEBUG, INFO, WARNING..."))
    log_format: str = field(default="json", metadata=_doc(
        "'json': one JSON object a line (request id, tenant, route, status, duration; never "
        "personal data), or 'text' for reading at a terminal."))
    metrics_token: str = field(default="", metadata=_doc(
        "Bearer token that may read GET /metrics (Prometheus) on the service's port. Empty: "
        "/metrics is not served there (use metrics_port)."))
    metrics_port: int = field(default=0, metadata=_doc(
        "A separate port serving only GET /metrics without a token, bound to 'host' (keep it "
        "off the public network). 0: none."))
    trust_forwarded_for: bool = field(default=False, metadata=_doc(
        "Take a client's address from the last entry of X-Forwarded-For, which your own proxy "
        "adds (docker-compose.yml's nginx does): the sign-in rate limit then counts each "
        "client, not the proxy. Leave false when clients reach the service directly, since "
        "any client can write that header."))
    keepalive_timeout: int = field(default=15, metadata=_doc(
        "Seconds a connection may sit idle, or take to send a request's headers, before it is "
        "closed: slow or silent clients (slowloris) cannot hold connections open."))
    shutdown_timeout: int = field(default=30, metadata=_doc(
        "Seconds SIGTERM waits for requests in flight (uploads) to finish before they are "
        "cut off and rolled back; the worker stops between items."))

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL, with the embedded default and driver filled in."""
        url = self.database_url or f"sqlite:///{self.data_dir.resolve() / 'archive.db'}"
        for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                              ("postgres://", "postgresql+asyncpg://"),
                              ("sqlite://", "sqlite+aiosqlite://")):
            if url.startswith(plain):
                return driver + url[len(plain):]
        return url

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"file://{self.data_dir.resolve() / 'store'}"

    @property
    def retention_windows(self) -> Windows:
        return Windows.parse(self.retention_days)

    @property
    def resolved_keyring_path(self) -> Path:
        return self.keyring_path or self.data_dir / "keyring.json"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, kind: Any, raw: object) -> object:
    """Turn a TOML or environment value into the field's type, or say which setting is bad."""
    text = str(raw).strip()
    if kind in (Path, Path | None):
        return Path(text) if text else None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigurationError(f"setting {name}: expected true or false")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if text.lstrip("-").isdigit():
            return int(text)
        raise ConfigurationError(f"setting {name}: expected a whole number")
    return text


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read the settings from the file, the environment and ``overrides`` (CLI flags)."""
    env = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, object] = {}
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG")
                           else None)
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
        for key, raw in doc.items():
            if key not in known:
                raise ConfigurationError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, known[key].type, raw)
    for name, f in known.items():
        raw_env = env.get(ENV_PREFIX + name.upper())
        if raw_env is not None and raw_env != "":
            values[name] = _coerce(ENV_PREFIX + name.upper(), f.type, raw_env)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = replace(Settings(), **values)  # type: ignore[arg-type]
    if settings.keyring not in {"local", "kms"}:
        raise ConfigurationError("setting keyring: expected 'local' or 'kms'")
    settings.retention_windows  # noqa: B018  (refuse a bad value at start, not at first use)
    for name in ("purge_interval", "purge_batch_size", "sweep_interval"):
        if getattr(settings, name) < 1:
            raise ConfigurationError(f"setting {name}: must be at least 1")
    if settings.sweep_grace < 0:
        raise ConfigurationError("setting sweep_grace: must not be negative")
    return settings


def reference_markdown() -> str:
    """The settings reference (docs/configuration.md), generated from the fields' ``doc``."""
    lines = [
        "# Configuration",
        "",
        "Generated from `archive/settings.py` by `python -m archive.settings`; a test fails when",
        "this file and the code differ. Sources, later ones winning: defaults, the TOML file",
        "(`--config FILE` or `ARCHIVE_CONFIG`; top-level keys named as in the first column),",
        "`ARCHIVE_<NAME>` environment variables, then command-line flags (`--data-dir`,",
        "`--host`, `--port`).",
        "",
        "| setting | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for f in fields(Settings):
        default = f"`{f.default}`" if f.default not in (None, "") else "(empty)"
        lines.append(f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | {default} | "
                     f"{f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")  # noqa: T201  (the generator's output is the document)
