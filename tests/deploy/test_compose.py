"""The deployment files, read as an operator's tools would read them: docker-compose.yml (with
.env.example as its .env), the Dockerfile, .dockerignore, deploy/nginx.conf. No image is built
and no container started here (tests/deploy/test_cluster.py runs the same shape as processes);
`docker compose config` runs when the docker client has the compose plugin."""

import ast
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any, cast
from urllib.parse import urlparse

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from archive.errors import ConfigurationError
from archive.settings import ENV_PREFIX, Settings, load_settings
from web import pages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SETTINGS = {f.name for f in fields(Settings)}
ARCHIVE_SERVICES = ("migrate", "api", "worker")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY\b|_KEY_ID\b")

# -- reading the files as compose and docker do ---------------------------------------------------

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariableError(Exception):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string with the variables of an .env file."""
    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["bare"]
        op, arg = m["op"] or "", m["arg"] or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise MissingVariableError(f"{name}: {arg}")
        if op.endswith("-") and unset:
            return arg
        return value or ""
    return _VARIABLE.sub(one, text)


def references(text: str) -> Iterator[re.Match[str]]:
    for m in _VARIABLE.finditer(text):
        if not m["escaped"]:
            yield m


def strings(node: object) -> Iterator[str]:
    """Every string value (not key) of a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=VALUE: {line!r}"
            env[name.strip()] = value.strip()
    return env


def compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text()))


def service(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], compose()["services"][name])


def environment(name: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A service's environment, interpolated with .env.example (or ``env``)."""
    raw = service(name).get("environment", {})
    assert isinstance(raw, dict), f"{name}: environment must be a mapping"
    values = parse_env_file(ENV_EXAMPLE) if env is None else env
    return {key: interpolate(str(value), values) for key, value in raw.items()}


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def dockerfile() -> list[tuple[int, str, str]]:
    """The Dockerfile as (stage, INSTRUCTION, arguments), continuation lines joined."""
    out: list[tuple[int, str, str]] = []
    stage, pending = -1, ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line, pending = pending + raw, ""
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stage += 1
        out.append((stage, instruction.upper(), " ".join(args.split())))
    return out


def dockerfile_env() -> dict[str, str]:
    """The ENV of the final stage: what every container of the image starts with."""
    steps = dockerfile()
    last = steps[-1][0]
    env: dict[str, str] = {}
    for stage, instruction, args in steps:
        if stage == last and instruction == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern that
    matches the path or one of its parent folders decides; ``!`` lets it back in."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    parts = PurePosixPath(path).parts
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = _glob_regex(raw.removeprefix("!").strip("/"))
        if any(rx.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


# -- services, start order, health ----------------------------------------------------------------

def test_the_services_of_the_production_shape() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "minio", "minio-init", "migrate", "api", "worker",
                             "proxy"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["migrate"]["command"] == ["archive", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"  # once, not in a loop
    assert services["minio-init"]["restart"] == "no"
    assert services["worker"]["command"] == ["archive", "worker"]
    # One image runs every part of the archive.
    assert {services[s]["image"] for s in ARCHIVE_SERVICES} == {"${IMAGE:-council-archive:latest}"}
    assert all(services[s]["build"] == "." for s in ARCHIVE_SERVICES)


def test_two_api_replicas_without_a_worker_inside_and_without_migrating() -> None:
    api = service("api")
    assert api["deploy"]["replicas"] == 2
    assert api["command"] == ["archive", "serve", "--no-worker"]
    # Replicas cannot share a host port or a container name: the proxy publishes the port.
    assert "ports" not in api and "container_name" not in api
    assert "8080" in api["expose"]
    assert service("proxy")["ports"] == ["${HTTP_BIND:-127.0.0.1}:${HTTP_PORT:-8080}:8080"]
    for name in ("api", "worker"):
        assert load_settings(environ={**dockerfile_env(), **environment(name)}).auto_migrate \
            is False, f"{name} must leave migrations to the migrate job"


def test_healthchecks() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])  # index, store, keys
    assert "/healthz" in " ".join(services["proxy"]["healthcheck"]["test"])
    for name in ("postgres", "minio", "api", "proxy"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
        assert duration_seconds(check["interval"]) <= 10 and check["retries"] >= 3


def test_start_order() -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in service(name)["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("minio-init") == {"minio": "service_healthy"}
    for name in ("api", "worker"):
        assert conditions(name) == {
            "postgres": "service_healthy", "minio": "service_healthy",
            "migrate": "service_completed_successfully",
            "minio-init": "service_completed_successfully"}, name
    assert conditions("proxy") == {"api": "service_healthy"}


def test_sigterm_has_time_to_finish_uploads_before_docker_kills() -> None:
    for name in ("api", "worker"):
        timeout = load_settings(environ={**dockerfile_env(), **environment(name)}).shutdown_timeout
        grace = duration_seconds(service(name)["stop_grace_period"])
        # After shutdown_timeout, a request cut off has up to 10 s to roll back (web/shutdown.py),
        # then the worker's batch and the connections close: Docker must not kill before.
        assert grace >= timeout + 20, f"{name}: stop_grace_period {grace}s, shutdown {timeout}s"


# -- variables and settings -----------------------------------------------------------------------

def test_every_archive_variable_is_a_setting() -> None:
    used: dict[str, str] = {}
    for name, spec in compose()["services"].items():
        for key in spec.get("environment", {}):
            used[key] = f"environment of {name}"
    for text in strings(compose()):
        for m in references(text):
            used[m["braced"] or m["bare"]] = f"${{}} in {COMPOSE.name}"
    for key in parse_env_file(ENV_EXAMPLE):
        used[key] = ENV_EXAMPLE.name
    for key in dockerfile_env():
        used[key] = "ENV in the Dockerfile"
    unknown = {k: where for k, where in used.items()
               if k.startswith(ENV_PREFIX) and k.removeprefix(ENV_PREFIX).lower() not in SETTINGS}
    assert not unknown, f"ARCHIVE_* variables that archive/settings.py does not know: {unknown}"
    assert len([k for k in used if k.startswith(ENV_PREFIX)]) >= 10  # the check saw them


def test_every_compose_variable_is_in_env_example_and_every_entry_is_used() -> None:
    referenced = {m["braced"] or m["bare"] for text in strings(compose())
                  for m in references(text)}
    defined = set(parse_env_file(ENV_EXAMPLE))
    assert referenced - defined == set(), "used by docker-compose.yml, missing in .env.example"
    assert defined - referenced == set(), "in .env.example, but docker-compose.yml ignores it"


def test_compose_refuses_to_start_without_its_secrets() -> None:
    for text in strings(compose()):
        for m in references(text):
            name = m["braced"] or m["bare"]
            if SECRET_NAME.search(name):
                assert m["op"] == ":?", f"{name} must be required (${{{name}:?...}})"
    env = parse_env_file(ENV_EXAMPLE)
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(MissingVariableError, match="POSTGRES_PASSWORD"):
        environment("api", env)


def test_the_configuration_each_archive_service_gets() -> None:
    env_file = parse_env_file(ENV_EXAMPLE)
    image_env = dockerfile_env()
    init_env = environment("minio-init")
    keys_mount = {v.split(":")[1] for v in service("api")["volumes"] if v.startswith("keys:")}
    for name in ("api", "worker"):
        env = environment(name)
        settings = load_settings(environ={**image_env, **env})
        url = urlparse(settings.database_url)
        assert settings.resolved_database_url.startswith("postgresql+asyncpg://")
        assert (url.hostname, url.username, url.password, url.path) == (
            "postgres", "archive", env_file["POSTGRES_PASSWORD"], "/archive")
        store = urlparse(settings.store_url)
        assert store.scheme == "s3" and store.netloc == init_env["BUCKET"] == env_file["BUCKET"]
        assert settings.s3_endpoint_url == "http://minio:9000"
        # The store's credentials are the MinIO user that minio-init creates.
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            init_env["STORE_ACCESS_KEY"], init_env["STORE_SECRET_KEY"])
        # Every process wraps and signs with the same keys: the shared volume.
        assert settings.keyring == "local" and settings.signing_key_file is not None
        assert {str(settings.resolved_keyring_path.parent),
                str(settings.signing_key_file.parent)} == keys_mount
        assert service(name)["volumes"] == service("api")["volumes"]
        assert settings.log_format == "json"
        assert settings.host == "0.0.0.0" and settings.port == 8080
    assert load_settings(environ={**image_env, **environment("api")}).metrics_port > 0
    # The migration job needs the index only: no store credentials, no key material.
    migrate = environment("migrate")
    assert load_settings(environ={**image_env, **migrate}).database_url.startswith("postgresql")
    assert not {k for k in migrate if k.startswith("AWS_")} and service("migrate")["volumes"] == []
    assert environment("postgres")["POSTGRES_PASSWORD"] == env_file["POSTGRES_PASSWORD"]


def test_a_bad_value_in_env_stops_the_service_at_start() -> None:
    env = {**parse_env_file(ENV_EXAMPLE), "ARCHIVE_RETENTION_DAYS": "call=forever"}
    with pytest.raises(ConfigurationError, match="retention"):
        load_settings(environ={**dockerfile_env(), **environment("worker", env)})


# -- secrets ------------------------------------------------------------------------------------

def test_no_secret_is_committed() -> None:
    for name, spec in compose()["services"].items():
        for key, value in spec.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"{name}: {key} must come from .env"
    for key, value in parse_env_file(ENV_EXAMPLE).items():
        if SECRET_NAME.search(key) and key != "STORE_ACCESS_KEY":
            assert value.startswith("change-me"), f".env.example: {key} must be a placeholder"


def test_env_is_ignored_by_git_and_kept_out_of_the_image() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git work tree: cannot ask git what it ignores")
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".env"], check=False)
    assert ignored.returncode == 0, ".env (the deployment's secrets) must be git-ignored"
    example = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".env.example"],
                             check=False)
    assert example.returncode == 1, ".env.example must stay committed"
    for path in (".env", "var/keyring.json", ".venv/bin/python", ".git/config",
                 "web/node_modules/govuk-frontend/package.json", "archive/__pycache__/x.pyc",
                 "tests/conftest.py"):
        assert dockerignored(path), f"{path} must not be sent to the docker build"
    for path in ("pyproject.toml", "README.md", "archive/cli.py", "web/templates/base.html",
                 "web/package-lock.json", "storage/s3.py", "ingest/audio.py",
                 "lifecycle/purge.py"):
        assert not dockerignored(path), f"the Dockerfile copies {path}"


# -- MinIO: the bucket and the archive's user -----------------------------------------------------

def _init_script() -> str:
    command = service("minio-init")["command"]
    assert service("minio-init")["entrypoint"] == ["/bin/sh", "-ec"] and len(command) == 1
    return interpolate(command[0], parse_env_file(ENV_EXAMPLE))


def test_minio_init_makes_a_locked_versioned_bucket() -> None:
    script = _init_script()
    assert "mc mb --ignore-existing --with-lock" in script
    assert "mc version enable" in script
    assert "retention" not in script  # no default retention: it would block the purge
    parsed = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True,
                            check=False)
    assert parsed.returncode == 0, parsed.stderr


# What each call of the S3 store needs from the bucket policy.
S3_ACTIONS = {
    "head_bucket": {"s3:ListBucket"},
    "get_object_lock_configuration": {"s3:GetBucketObjectLockConfiguration"},
    "get_bucket_versioning": {"s3:GetBucketVersioning"},
    "list_objects_v2": {"s3:ListBucket"},
    "list_object_versions": {"s3:ListBucketVersions"},
    "put_object": {"s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "get_object": {"s3:GetObject"},
    "head_object": {"s3:GetObject"},
    "delete_object": {"s3:DeleteObject", "s3:DeleteObjectVersion"},
    "get_object_legal_hold": {"s3:GetObjectLegalHold"},
    "put_object_legal_hold": {"s3:PutObjectLegalHold"},
}


def _store_calls() -> set[str]:
    """The S3 operations S3BlobStore calls (self.client.X(...), get_paginator("X"))."""
    tree = ast.parse((ROOT / "storage" / "s3.py").read_text())
    store = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "S3BlobStore")
    calls: set[str] = set()
    for node in ast.walk(store):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Attribute) and owner.attr == "client":
            if node.func.attr == "get_paginator":
                arg = node.args[0]
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                calls.add(arg.value)
            else:
                calls.add(node.func.attr)
    return calls


def test_the_archive_user_may_do_what_the_store_does_and_no_more() -> None:
    script = _init_script()
    policy_text = re.search(r"<<EOF\n(.*?)\nEOF\n", script, re.DOTALL)
    assert policy_text, "minio-init writes the policy with a heredoc"
    # The shell expands the heredoc with the container's environment.
    container_env = environment("minio-init")
    bucket = container_env["BUCKET"]
    granted: dict[str, set[str]] = {}
    for statement in json.loads(interpolate(policy_text[1], container_env))["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            granted.setdefault(resource, set()).update(statement["Action"])
    assert set(granted) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    calls = _store_calls()
    unmapped = calls - set(S3_ACTIONS)
    assert not unmapped, f"storage/s3.py calls {unmapped}: add them to S3_ACTIONS and the policy"
    needed = {action for call in calls for action in S3_ACTIONS[call]}
    bucket_level = {a for a in needed if a.startswith(("s3:List", "s3:GetBucket"))}
    assert bucket_level <= granted[f"arn:aws:s3:::{bucket}"]
    assert needed - bucket_level <= granted[f"arn:aws:s3:::{bucket}/*"]
    everything = granted[f"arn:aws:s3:::{bucket}"] | granted[f"arn:aws:s3:::{bucket}/*"]
    assert not {a for a in everything if "*" in a or "Bypass" in a
                or (a.startswith("s3:Put") and "Bucket" in a)}, \
        "no wildcards, no bypass, no changes to the bucket's configuration"
    assert "mc admin policy attach local archive-store" in script


# -- the image ------------------------------------------------------------------------------------

def test_the_image() -> None:
    steps = dockerfile()
    last = steps[-1][0]
    froms = [(stage, args) for stage, instruction, args in steps if instruction == "FROM"]
    assert froms[-1][1] == "python:3.11-slim-bookworm"
    final = [(instruction, args) for stage, instruction, args in steps if stage == last]
    runs = " && ".join(args for instruction, args in final if instruction == "RUN")
    assert re.search(r"apt-get install [^&]*\bffmpeg\b", runs), "ffmpeg from Debian"
    users = [args for instruction, args in final if instruction == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}, "runs as a non-root user"
    assert "useradd" in runs and users[-1] in runs
    assert ("CMD", '["archive", "serve"]') in final
    assert dockerfile_env()["ARCHIVE_HOST"] == "0.0.0.0"  # every interface of the container
    # The package from the repo, with its dependencies, by pip.
    all_runs = [args for _, instruction, args in steps if instruction == "RUN"]
    assert any(re.search(r"pip install (\S+ )*/src$", r) for r in all_runs)


def test_the_image_serves_gov_uk_frontend_from_a_node_stage() -> None:
    steps = dockerfile()
    node = next(stage for stage, instruction, args in steps
                if instruction == "FROM" and args.startswith("node:"))
    node_name = next(args.split()[-1] for stage, instruction, args in steps
                     if stage == node and instruction == "FROM")
    node_steps = [(instruction, args) for stage, instruction, args in steps if stage == node]
    assert ("WORKDIR", "/src/web") in node_steps
    assert ("COPY", "web/package.json web/package-lock.json ./") in node_steps
    assert any(i == "RUN" and a.startswith("npm ci") for i, a in node_steps)
    # Copied where web.pages looks for it, relative to the installed package.
    site_packages = "/opt/archive/lib/python3.11/site-packages/"
    served = site_packages + str(pages.GOVUK.relative_to(pages.HERE.parent))
    copies = [args.split() for _, instruction, args in steps
              if instruction == "COPY" and args.startswith(f"--from={node_name} ")]
    destinations = {words[-1].rstrip("/") for words in copies}
    assert destinations == {served, served + "/assets"}
    sources = {PurePosixPath(w).name for words in copies for w in words[1:-1]}
    assert sources == {"govuk-frontend.min.css", "govuk-frontend.min.js", "assets"}
    templates = " ".join(p.read_text() for p in pages.TEMPLATES.glob("*.html"))
    scripts = " ".join(p.read_text() for p in pages.STATIC.glob("*.js"))
    for name in ("/govuk/govuk-frontend.min.css", "/assets/"):
        assert name in templates
    assert "/govuk/govuk-frontend.min.js" in scripts


def test_pip_install_includes_the_pages_templates_and_static_files() -> None:
    """The Dockerfile installs the package with `pip install` (not editable): only what
    pyproject's package-data lists is installed beside the modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"].get("package-data", {}).get("web", [])
    covered = {p for pattern in patterns for p in (ROOT / "web").glob(pattern) if p.is_file()}
    needed = [p for folder in (pages.TEMPLATES, pages.STATIC) for p in folder.rglob("*")
              if p.is_file()]
    missing = sorted(str(p.relative_to(ROOT)) for p in needed if p not in covered)
    assert not missing, ("pyproject.toml [tool.setuptools.package-data] web leaves out "
                         f"{len(missing)} file(s) the pages need, e.g. {missing[:3]}")


def test_the_proxy_streams_and_spools_nothing() -> None:
    mount = "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"
    assert service("proxy")["volumes"] == [mount]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    directives = {" ".join(line.split()).rstrip(";") for line in conf.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")}
    for directive in ("server api:8080 resolve", "client_max_body_size 0",
                      "proxy_request_buffering off", "proxy_buffering off",
                      "proxy_max_temp_file_size 0", "proxy_set_header X-Request-Id $request_id"):
        assert directive in directives
    assert "$request " not in conf and "$request_uri" not in conf and "$args" not in conf


# -- docker compose itself ------------------------------------------------------------------------

def test_docker_compose_config_validates() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                             check=False, timeout=60)
    if version.returncode != 0:
        pytest.skip("the docker client has no compose plugin ('docker compose version': "
                    f"{(version.stderr or version.stdout).strip().splitlines()[0]})")
    checked = subprocess.run(
        [docker, "compose", "--project-directory", str(ROOT), "--env-file", str(ENV_EXAMPLE),
         "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, check=False, timeout=120)
    assert checked.returncode == 0, checked.stderr


def test_the_operations_guide_examples_parse() -> None:
    """Operators paste these: the Prometheus and alert YAML and the log line must be valid."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```(yaml|json)\n(.*?)```", guide, re.DOTALL)
    assert sorted({kind for kind, _ in blocks}) == ["json", "yaml"]
    for kind, text in blocks:
        parsed = yaml.safe_load(text) if kind == "yaml" else json.loads(text)
        assert isinstance(parsed, dict), text
    rules = next(yaml.safe_load(text) for kind, text in blocks
                 if kind == "yaml" and "groups" in text)
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"ArchiveRetentionOverdue", "ArchiveStoreErrors", "ArchiveHttp5xx",
            "ArchiveNotReady"} <= alerts
    for alert in alerts:  # each alert is explained
        assert f"- **{alert}**:" in guide
