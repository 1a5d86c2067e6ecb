"""Settings: defaults, TOML file, environment, flags; bad values are named."""

from pathlib import Path

import pytest

from archive.errors import ConfigurationError
from archive.settings import Settings, load_settings, reference_markdown


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(environ={"ARCHIVE_DATA_DIR": str(tmp_path)})
    assert s.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'archive.db'}"
    assert s.resolved_store_url == f"file://{tmp_path / 'store'}"
    assert s.resolved_keyring_path == tmp_path / "keyring.json"
    assert (s.host, s.port) == ("127.0.0.1", 8080)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "archive.toml"
    cfg.write_text('port = 9000\nhost = "0.0.0.0"\nauto_migrate = false\n'
                   'store_url = "s3://calls/camden"\n')
    s = load_settings(cfg, environ={"ARCHIVE_PORT": "9100"}, overrides={"host": "127.0.0.2"})
    assert (s.port, s.host, s.auto_migrate) == (9100, "127.0.0.2", False)
    assert s.resolved_store_url == "s3://calls/camden"
    s = load_settings(environ={"ARCHIVE_CONFIG": str(cfg)})
    assert s.port == 9000


def test_postgres_urls_get_the_async_driver() -> None:
    s = Settings(database_url="postgresql://u:p@db:5432/archive")
    assert s.resolved_database_url == "postgresql+asyncpg://u:p@db:5432/archive"


@pytest.mark.parametrize(("text", "message"), [
    ("port = 'eighty'", "setting port"),
    ("prot = 80", "unknown setting 'prot'"),
    ("auto_migrate = 'perhaps'", "setting auto_migrate"),
    ("keyring = 'vault'", "setting keyring"),
    ("port = [", "not valid TOML"),
])
def test_bad_file_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(cfg, environ={})


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigurationError, match="ARCHIVE_PORT"):
        load_settings(environ={"ARCHIVE_PORT": "x"})


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_configuration_doc_is_generated_from_the_settings() -> None:
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run 'python -m archive.settings > "
        "docs/configuration.md'")
