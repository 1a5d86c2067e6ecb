"""Structured logs (issue 8): one JSON object a line, request fields on request lines, and no
personal data anywhere, even at DEBUG.

The formatter tests run in this process. The acceptance test drives real processes: an
``archive serve`` takes calls (three ways, with numbers in several notations) and chats (JSON
and plain text, with names, emails, postcodes and message text), answers searches by each of
them, plays and exports; ``archive purge`` destroys the calls; a second ``archive serve``
whose lifecycle worker runs every second destroys the chats after a policy change. Every
line any of them wrote to stderr must parse as JSON and must not contain any of that data.
"""

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archive import logs
from archive.errors import ConfigurationError
from tests.helpers import run_archive
from tests.ingest import media
from tests.servers import archive_serve, stop

TENANT = "camden"

# -- the formatters -----------------------------------------------------------------------------


def _record(logger: str = "archive.test", msg: str = "hello %s", args: tuple[Any, ...] = ("x",),
            exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            _fail_with("07700 900123 belongs to Ann Example")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def _fail_with(message: str) -> None:
    try:
        int("not a number: Ann Example")
    except ValueError as inner:
        raise ValueError(message) from inner


def test_json_line_carries_the_fields_and_an_exception_without_its_message() -> None:
    line = logs.JsonFormatter().format(_record(exc=True, request_id="r1", tenant="camden",
                                               route="list_items", method="GET", status=500,
                                               duration_ms=1.5, unrelated="dropped"))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["time"].endswith("Z") and datetime.fromisoformat(doc["time"]).tzinfo == UTC
    assert {k: doc[k] for k in ("level", "logger", "message", "request_id", "tenant", "route",
                                "method", "status", "duration_ms")} == {
        "level": "WARNING", "logger": "archive.test", "message": "hello x", "request_id": "r1",
        "tenant": "camden", "route": "list_items", "method": "GET", "status": 500,
        "duration_ms": 1.5}
    assert "unrelated" not in doc
    exc = doc["exception"]
    assert exc["type"] == "ValueError" and exc["cause"] == "ValueError"
    assert exc["frames"][-1]["function"] == "_fail_with"
    assert exc["frames"][-1]["file"] == __file__ and exc["frames"][-1]["line"] > 0
    assert "07700" not in line and "Ann" not in line


def test_json_keeps_non_ascii_text_as_it_is() -> None:
    # Escaped as \\u00e1 a leaked name would slip past a grep for it; written as is it cannot.
    doc_line = logs.JsonFormatter().format(_record(msg="tenant %s", args=("Dún Laoghaire",)))
    assert "Dún Laoghaire" in doc_line


def test_text_line_is_readable_and_also_drops_the_exception_message() -> None:
    text = logs.TextFormatter().format(_record(exc=True, request_id="r1", status=201))
    first, *rest = text.splitlines()
    assert " WARNING archive.test hello x [request_id=r1 status=201]" in first
    assert rest[0].strip() == "ValueError (from ValueError), innermost frame last:"
    assert rest[-1].strip().endswith(" in _fail_with")
    assert "07700" not in text and "Ann" not in text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``configure`` changes the process's root logger: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
def test_configure_holds_value_logging_libraries_at_warning_even_at_debug() -> None:
    out = io.StringIO()
    logs.configure("debug", "json", out)
    logging.getLogger("lifecycle.test").debug("ours at %s", "DEBUG")
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT ... [ 'Ann Example' ]")
    logging.getLogger("aiosqlite").debug("executing ('07700 900123',)")
    logging.getLogger("botocore.endpoint").debug("Authorization: AWS4-HMAC-SHA256 ...")
    logging.getLogger("sqlalchemy.pool").warning("a warning still shows")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["logger"], d["message"]) for d in lines] == [
        ("lifecycle.test", "ours at DEBUG"), ("sqlalchemy.pool", "a warning still shows")]
    # Twice is harmless: one handler, not two.
    logs.configure("INFO", "text", out)
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.usefixtures("restore_logging")
def test_configure_refuses_an_unknown_format_or_level() -> None:
    with pytest.raises(ConfigurationError, match="log_format"):
        logs.configure("INFO", "yaml", io.StringIO())
    with pytest.raises(ConfigurationError, match="log_level"):
        logs.configure("LOUD", "json", io.StringIO())


def test_the_cli_refuses_a_bad_log_format_and_writes_text_when_asked(tmp_path: Path) -> None:
    bad = run_archive(["worker", "--once"], tmp_path / "var", {"ARCHIVE_LOG_FORMAT": "xml"})
    assert bad.returncode == 2
    assert "setting log_format: expected 'json' or 'text'" in bad.stderr
    done = run_archive(["worker", "--once"], tmp_path / "var",
                       {"ARCHIVE_LOG_FORMAT": "text", "ARCHIVE_LOG_LEVEL": "INFO"})
    assert done.returncode == 0, done.stderr
    sweep = [line for line in done.stderr.splitlines() if " INFO lifecycle.sweep sweep: " in line]
    assert sweep, done.stderr
    with pytest.raises(ValueError):  # it is not JSON
        json.loads(sweep[0])


# -- the acceptance test: a full run at DEBUG --------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
LONG_AGO = NOW - timedelta(days=10)

# Every notation pushed or searched for, their E.164 forms and national significant numbers.
CALLS = [  # (external id, how it is pushed, caller, called)
    ("call-1", "put-header", "07700 900123", "01632 960001"),
    ("call-2", "multipart", "+44 7700 900124", "+44 (0)1632 960002"),
    ("call-3", "put-query", "0044 7700 900125", "01632960003"),
]
E164 = ["+447700900123", "+447700900124", "+447700900125", "+441632960001", "+441632960002",
        "+441632960003", "+447700900126", "+447700900127"]
SEARCHED_NUMBERS = ["07700900123", "+44-7700-900124", "(07700) 900 125", "+441632960001",
                    "0044 1632 960002"]
NAMES = ["Siobhán Ó Dálaigh", "Ann Example", "Priya Natarajan", "Tomasz Wiśniewski"]
EMAILS = ["siobhan.odalaigh@example.org", "Ann.Example@Example.NET"]
BAD_POSTCODE = "Hawthorn Way"  # not a postcode: 400
POSTCODES = ["SW1A 1AA", "SW1A1AA", "sw1a 1aa", "N1 9GU", "N19GU"]
TEXTS = ["my green bin on Rowan Crescent was missed", "I live at 12 Hawthorn Way",
         "ring me back on 07700 900127", "Sorry to hear that about the bin"]
CHAT_JSON: dict[str, Any] = {
    "external_id": "chat-1", "started_at": LONG_AGO.isoformat(),
    "ended_at": (LONG_AGO + timedelta(minutes=5)).isoformat(), "agent_id": "agent-7",
    "service": "waste",
    "customer": {"name": NAMES[0], "email": EMAILS[0], "postcode": POSTCODES[0]},
    "messages": [
        {"at": (LONG_AGO + timedelta(seconds=5)).isoformat(), "from": "customer",
         "name": "Siobhán", "text": f"Hello, {TEXTS[0]}; {TEXTS[2]}"},
        {"at": (LONG_AGO + timedelta(seconds=50)).isoformat(), "from": "agent",
         "name": NAMES[2], "text": TEXTS[3]},
    ],
}
CHAT_TEXT_META = {"external_id": "chat-2", "started_at": LONG_AGO.isoformat(),
                  "customer": {"name": NAMES[1], "email": EMAILS[1], "postcode": POSTCODES[3]}}
CHAT_TEXT = (f"[{LONG_AGO:%Y-%m-%d %H:%M}Z] Customer ({NAMES[1]}): {TEXTS[1]}\n"
             f"[{LONG_AGO:%Y-%m-%d %H:%M}Z] Agent ({NAMES[3]}): Thank you\n")


def personal_data() -> list[str]:
    numbers = [n for _, _, a, b in CALLS for n in (a, b)]
    national = [e[3:] for e in E164] + ["0" + e[3:] for e in E164]
    return [*numbers, *E164, *national, *SEARCHED_NUMBERS, "07700 900126", *NAMES,
            "Siobhán", *EMAILS, BAD_POSTCODE, *POSTCODES, *TEXTS]


def _meta(external_id: str, caller: str, called: str) -> dict[str, str]:
    return {"external_id": external_id, "started_at": LONG_AGO.isoformat(),
            "ended_at": (LONG_AGO + timedelta(seconds=2)).isoformat(),
            "caller_number": caller, "called_number": called, "direction": "inbound"}


class Session:
    """One ``archive serve``'s API, remembering every request id it answered with."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.request_ids: set[str] = set()

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        async with self.http.request(method, path, **kwargs) as r:
            body = await r.read()
            assert r.status == expect, (method, path, r.status, body[:500])
            if "X-Request-Id" in r.headers:
                self.request_ids.add(r.headers["X-Request-Id"])
            if r.content_type.endswith("json"):
                return json.loads(body)
            return body


async def _push_and_read(api: Session, wav: bytes) -> list[str]:
    """Phase 1: every way in, every search, a play and exports; the ids of the items."""
    ids = []
    for external_id, how, caller, called in CALLS:
        meta = _meta(external_id, caller, called)
        if how == "put-header":
            item = await api.call("PUT", f"/v1/recordings/{external_id}", 201, data=wav,
                                  headers={"X-Archive-Metadata": json.dumps(meta)})
        elif how == "put-query":
            item = await api.call("PUT", f"/v1/recordings/{external_id}", 201, data=wav,
                                  params=meta)
        else:
            form = aiohttp.FormData()
            form.add_field("metadata", json.dumps(meta), content_type="application/json")
            form.add_field("audio", wav, filename="call.wav", content_type="audio/wav")
            item = await api.call("POST", "/v1/recordings", 201, data=form)
        ids.append(item["id"])
    # The same call again (idempotent), a bad number, and bytes that are not audio.
    await api.call("PUT", "/v1/recordings/call-1", 200, data=wav,
                   headers={"X-Archive-Metadata": json.dumps(_meta("call-1", *CALLS[0][2:]))})
    await api.call("PUT", "/v1/recordings/call-x", 400, data=wav, headers={
        "X-Archive-Metadata": json.dumps(_meta("call-x", "07700 9001234567", "07700 900126"))})
    await api.call("PUT", "/v1/recordings/call-y", 415, data=b"Dear Ann Example, " * 500,
                   headers={"X-Archive-Metadata": json.dumps(
                       _meta("call-y", "07700 900126", "01632 960001"))})
    chat = await api.call("POST", "/v1/transcripts", 201, json=CHAT_JSON)
    ids.append(chat["id"])
    chat = await api.call("POST", "/v1/transcripts", 201, data=CHAT_TEXT.encode(), headers={
        "Content-Type": "text/plain; charset=utf-8",
        "X-Archive-Metadata": json.dumps(CHAT_TEXT_META)})
    ids.append(chat["id"])

    searches = [{"caller_number": n} for n in SEARCHED_NUMBERS] + [
        {"name": NAMES[0]}, {"name": NAMES[1].upper()}, {"email": EMAILS[0]},
        {"email": EMAILS[1]}, {"postcode": POSTCODES[2]}, {"postcode": POSTCODES[4]}]
    for params in searches:
        found = await api.call("GET", "/v1/items", 200, params=params)
        assert len(found["items"]) == 1, (params, found)
    await api.call("GET", "/v1/items", 400, params={"postcode": BAD_POSTCODE})
    await api.call("GET", f"/v1/items/{ids[0]}", 200)
    assert (await api.call("GET", f"/v1/items/{ids[0]}/media", 200))[:4] == b"RIFF"
    export = await api.call("POST", "/v1/exports", 201,
                            json={"item_ids": ids, "purpose": "complaint review"})
    assert (await api.call("GET", export["download"], 200))[:2] == b"PK"
    export = await api.call("POST", "/v1/exports", 201, json={
        "query": {"email": EMAILS[0]}, "purpose": "subject access"})
    assert export["item_count"] == 1
    assert (await api.call("GET", export["download"], 200))[:2] == b"PK"
    return ids


async def _wait_purged(api: Session, ids: list[str], seconds: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        states = [(await api.call("GET", f"/v1/items/{i}", 200))["status"] for i in ids]
        if all(s == "purged" for s in states):
            return
        assert asyncio.get_running_loop().time() < deadline, states
        await asyncio.sleep(0.5)


async def _stop(proc: Any) -> int:
    await asyncio.to_thread(stop, proc, 60)
    code: int = proc.returncode
    return code


def key_material(data_dir: Path) -> list[str]:
    """The secret strings of the keyring file and the lines of the signing key's PEM."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 32:
            found.append(value)

    walk(json.loads((data_dir / "keyring.json").read_text()))
    pem = (data_dir / "signing-key.pem").read_text().splitlines()
    found += [line for line in pem if line and not line.startswith("-----")]
    assert found, "no key material found to look for"
    return found


def check_lines(source: str, text: str, secrets: list[str]) -> list[dict[str, Any]]:
    """Every line of ``text`` is one JSON object with the base fields and none of ``secrets``
    (compared without case, as written and as JSON would escape it)."""
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            doc = json.loads(line)
        except ValueError:
            pytest.fail(f"{source} line {n} is not JSON: {line[:300]!r}")
        assert isinstance(doc, dict), (source, n, line)
        assert {"time", "level", "logger", "message"} <= doc.keys(), (source, n, line)
        folded = line.casefold()
        for secret in secrets:
            for form in (secret, json.dumps(secret)[1:-1]):
                assert form.casefold() not in folded, (
                    f"{source} line {n} holds personal data {secret!r}: {line[:500]}")
        docs.append(doc)
    return docs


async def test_no_personal_data_reaches_the_logs_of_a_full_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {"ARCHIVE_LOG_LEVEL": "DEBUG", "ARCHIVE_LOG_FORMAT": "json",
           "ARCHIVE_RETENTION_DAYS": "call=1", "ARCHIVE_PURGE_INTERVAL": "1"}
    # None of this process's settings leaks in (an empty value is no value).
    clean = {k: "" for k in os.environ if k.startswith("ARCHIVE_") and k != "ARCHIVE_DATA_DIR"}
    wav = await asyncio.to_thread(media.wav, 2.0)
    first_log, second_log = tmp_path / "serve-1.log", tmp_path / "serve-2.log"

    # 1. Push, search, play, export (no worker: nothing is purged under the test).
    proc, base, secret = await asyncio.to_thread(
        archive_serve, data_dir, TENANT, role="admin", extra_env={**clean, **env},
        stderr=first_log)
    try:
        async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {secret}"},
                                         raise_for_status=False) as http:
            first = Session(http)
            ids = await _push_and_read(first, wav)
    finally:
        code = await _stop(proc)
    assert code == 0
    tokens = [secret]
    calls, chats = ids[:3], ids[3:]

    # 2. The calls have expired (a 1-day window, ten days ago): the CLI destroys them.
    purged = run_archive(["purge"], data_dir, env)
    assert purged.returncode == 0, purged.stderr
    assert "purge: 3 item(s) destroyed" in purged.stdout

    # 3. A served worker (every second) destroys the chats once their window is shortened.
    proc, base, secret = await asyncio.to_thread(
        archive_serve, data_dir, TENANT, role="admin", extra_env={**clean, **env}, worker=True,
        stderr=second_log)
    try:
        async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {secret}"},
                                         raise_for_status=False) as http:
            second = Session(http)
            plan = await second.call("PUT", "/v1/policies", 200,
                                     json={"channel": "chat", "days": 1})
            await second.call("PUT", "/v1/policies", 200, json={
                "channel": "chat", "days": 1, "confirm": plan["confirm"]})
            await _wait_purged(second, calls + chats)
            found = await second.call("GET", "/v1/items", 200, params={"email": EMAILS[0]})
            assert found["items"] == []
    finally:
        code = await _stop(proc)
    assert code == 0
    once = run_archive(["worker", "--once"], data_dir, env)
    assert once.returncode == 0, once.stderr

    # Nor do the tokens used, nor any key material (the keyring's KEKs, the signing key).
    tokens.append(secret)
    secrets = personal_data() + tokens + key_material(data_dir)
    logged = {"serve-1": check_lines("serve-1", first_log.read_text(), secrets),
              "purge": check_lines("purge", purged.stderr, secrets),
              "serve-2": check_lines("serve-2", second_log.read_text(), secrets),
              "worker": check_lines("worker", once.stderr, secrets)}

    # Request lines: the fields, the tenant once authenticated, and the ids clients were given.
    for name, api in (("serve-1", first), ("serve-2", second)):
        access = [d for d in logged[name] if d["logger"] == "archive.access"]
        assert len(access) >= 10
        for doc in access:
            assert {"request_id", "route", "method", "status", "duration_ms"} <= doc.keys(), doc
            assert isinstance(doc["status"], int) and isinstance(doc["duration_ms"], float)
            if doc["route"] != "healthz":
                assert doc["tenant"] == TENANT, doc
        assert api.request_ids <= {d["request_id"] for d in access}
    routes = {d["route"] for d in logged["serve-1"] if d["logger"] == "archive.access"}
    assert {"put_recording", "post_recording", "post_transcript", "list_items", "get_item",
            "get_item_media", "post_export", "get_bundle"} <= routes
    statuses = {d["status"] for d in logged["serve-1"] if d["logger"] == "archive.access"}
    assert {200, 201, 400, 415} <= statuses
    # DEBUG was on, and the lifecycle logged its work in both processes that did it.
    assert any(d["level"] == "DEBUG" for d in logged["serve-1"])
    assert any(d["logger"] == "lifecycle.purge" for d in logged["purge"])
    assert any(d["logger"] == "lifecycle.purge" for d in logged["serve-2"])
