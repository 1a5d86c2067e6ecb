"""Unicode edge cases in names and external ids, path traversal in external ids and spool file
names, and oversized JSON bodies, against a real ``archive serve`` and a real spool importer."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ingest import media
from tests.servers import archive_serve, stop

TENANT = "camden"
ARCHIVE_EXE = str(Path(sys.executable).with_name("archive"))
MAX_TRANSCRIPT = 64 * 1024
STARTED = "2026-11-23T09:00:00Z"
MESSAGES = [{"at": "2026-11-23T09:00:01Z", "from": "customer", "text": "hello"}]
# The store's object keys: {tenant}/{channel}/{yyyy}/{mm}/{dd}/{item_id}, never a caller's text.
OBJECT_KEY = re.compile(r"store/objects/camden/(call|chat)/\d{4}/\d{2}/\d{2}/[0-9a-f-]{36}(\.\w+)?")


@dataclass(frozen=True)
class Served:
    base: str
    data: Path
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("names")
    proc, base, ingest = archive_serve(
        data, TENANT, stderr=data / "serve.log",
        extra_env={"ARCHIVE_MAX_TRANSCRIPT_BYTES": str(MAX_TRANSCRIPT)})
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data)}
    try:
        tokens = {"ingest": ingest, **{role: subprocess.run(
            [ARCHIVE_EXE, "tokens", "create", "--role", role, "--tenant", TENANT],
            env=env, check=True, capture_output=True, text=True).stdout.strip()
            for role in ("complaints", "admin")}}
        yield Served(base, data, tokens)
    finally:
        stop(proc)


def _call(served: Served, method: str, path: str, body: bytes | None = None, *,
          role: str = "ingest", headers: dict[str, str] | None = None,
          ) -> tuple[int, str, dict[str, Any]]:
    request = urllib.request.Request(served.base + path, data=body, method=method, headers={
        "Authorization": f"Bearer {served.tokens[role]}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            kind = answer.headers.get("Content-Type", "")
            raw = answer.read()
            return answer.status, kind, json.loads(raw) if "json" in kind else {}
    except urllib.error.HTTPError as refused:
        raw = refused.read()
        return refused.code, refused.headers.get("Content-Type", ""), (
            json.loads(raw) if raw and "json" in refused.headers.get("Content-Type", "") else {})


def _transcript(served: Served, external_id: str, name: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"external_id": external_id, "started_at": STARTED,
                       "customer": {"name": name}, "messages": MESSAGES}).encode()
    status, _, answer = _call(served, "POST", "/v1/transcripts", body,
                              headers={"Content-Type": "application/json"})
    return status, answer


def _problem_names(answer: dict[str, Any], field: str) -> bool:
    return any(e["field"] == field for e in answer.get("errors", []))


def _stored_files(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in (data / "store").rglob("*") if p.is_file())


# -- unicode -------------------------------------------------------------------------------

KEPT = {
    "combining": "Zoe\u0308 Nguye\u0302\u0303n",       # decomposed accents, kept as sent
    "emoji": "Ann \U0001f4de\U0001f600",
    "cjk-and-arabic": "\u674e\u96f7 \u0645\u062d\u0645\u062f",
    "at-the-limit": "x" * 200,
}
REFUSED = {
    "rtl-override": "\u202eevil.exe",  # a format character: it would spoof what staff read
    "rtl-mark": "Ann\u200f",
    "nul": "Ann\x00Smith",
    "newline": "Ann\nSmith",
    "one-too-long": "x" * 201,
    "very-long": "\U0001f4de" * 1000,
}


@pytest.mark.parametrize("case", sorted(KEPT))
def test_unicode_names_and_ids_are_kept_exactly(served: Served, case: str) -> None:
    value = KEPT[case]
    status, item = _transcript(served, value, value)
    assert status == 201, item
    assert item["external_id"] == value
    status, _, read = _call(served, "GET", f"/v1/items/{item['id']}", role="complaints")
    assert status == 200
    assert read["external_id"] == value and read["customer"]["name"] == value


# Emoji built with format characters (Cf): a zero-width joiner, or tag characters for the flags
# of England, Scotland and Wales. Chat platforms pass display names like these through.
FORMAT_EMOJI = {
    "zwj-family": "Ann \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "flag-of-wales": "Dai \U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f",
}


@pytest.mark.parametrize("case", sorted(FORMAT_EMOJI))
def test_emoji_made_with_format_characters_are_kept(served: Served, case: str) -> None:
    value = FORMAT_EMOJI[case]
    status, item = _transcript(served, f"format-{case}", value)
    assert status == 201, item
    status, _, read = _call(served, "GET", f"/v1/items/{item['id']}", role="complaints")
    assert read["customer"]["name"] == value


@pytest.mark.parametrize("field", ["external_id", "customer.name"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_unicode_in_names_and_ids_is_a_bad_request(
        served: Served, case: str, field: str) -> None:
    value = REFUSED[case]
    ext, name = (value, "Ann") if field == "external_id" else (f"refused-{case}", value)
    status, answer = _transcript(served, ext, name)
    assert status == 400, answer
    assert _problem_names(answer, field), answer


# -- path traversal ------------------------------------------------------------------------

TRAVERSALS = ["../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/passwd", "%2e%2e%2fpasswd",
              "....//....//etc", "camden/call/2026/11/23/x", "..", "."]


@pytest.mark.parametrize("external_id", TRAVERSALS)
def test_traversal_in_an_external_id_is_only_an_id(served: Served, external_id: str) -> None:
    """An external id is opaque: it is stored as sent and never becomes part of a path."""
    status, item = _transcript(served, external_id, "Ann")
    assert status == 201, item
    assert item["external_id"] == external_id
    stray = [f for f in _stored_files(served.data)
             if not OBJECT_KEY.fullmatch(f) and not f.startswith("store/tmp/")]
    assert stray == []
    assert list((served.data / "store").glob("**/passwd")) == []


@pytest.mark.parametrize("path_id", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fpasswd",
                                     "%2E%2E", "a%00b", "..%5C..%5Cwin.ini"])
def test_traversal_in_the_put_path_is_an_id_or_refused(served: Served, path_id: str) -> None:
    """PUT /v1/recordings/{external_id} with an encoded traversal: stored as an opaque id
    (201, the decoded text), refused (400/404/405), but never a file outside the store."""
    meta = json.dumps({"started_at": STARTED})
    status, _, item = _call(served, "PUT", f"/v1/recordings/{path_id}", media.wav(0.5),
                            headers={"X-Archive-Metadata": meta, "Content-Type": "audio/wav"})
    assert status in {201, 400, 404, 405}, (status, item)
    if status == 201:
        assert item["external_id"] == urllib.parse.unquote(path_id)
    stray = [f for f in _stored_files(served.data)
             if not OBJECT_KEY.fullmatch(f) and not f.startswith("store/tmp/")]
    assert stray == []


def test_hostile_spool_file_names(tmp_path: Path) -> None:
    """The spool importer meets names that look like options, traversal, hidden files, control
    characters, RTL overrides, non-UTF-8 bytes and symlinks out of the folder: each pair is
    archived or failed aside, nothing outside the spool is touched, and it never crashes."""
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var")}
    subprocess.run([ARCHIVE_EXE, "tenants", "create", TENANT], env=env, check=True,
                   capture_output=True, timeout=60)
    spool = tmp_path / "spool"
    spool.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.wav"
    secret.write_bytes(media.wav(0.5))
    meta = json.dumps({"started_at": STARTED}).encode()
    archived = ["-rf", "--help", "a..b", "x.y.z", "emoji\U0001f4de", "x" * 200]
    # Stems that are not valid external ids (the default id is the stem): failed aside.
    refused = ["evil\u202egnp", "tab\there"]
    for stem in archived + refused:
        (spool / f"{stem}.wav").write_bytes(media.wav(0.5))
        (spool / f"{stem}.json").write_bytes(meta)
    # Never taken: hidden, partial, and names that are symlinks out of the folder.
    for hidden in (".hidden", "..", "..x"):  # "..wav": a stem of "."
        (spool / f"{hidden}.wav").write_bytes(media.wav(0.5))
        (spool / f"{hidden}.json").write_bytes(meta)
    (spool / "link.wav").symlink_to(secret)
    (spool / "link.json").symlink_to(outside / "meta.json")
    (outside / "meta.json").write_bytes(meta)
    # A name that is not UTF-8 (a PBX on a Latin-1 locale), and a newline in a name.
    raw = os.fsencode(str(spool)) + b"/caf\xe9"
    Path(os.fsdecode(raw + b".wav")).write_bytes(media.wav(0.5))
    Path(os.fsdecode(raw + b".json")).write_bytes(meta)
    (spool / "new\nline.wav").write_bytes(media.wav(0.5))
    (spool / "new\nline.json").write_bytes(meta)
    for path in spool.iterdir():
        os.utime(path, (1, 1), follow_symlinks=False)

    out = subprocess.run([ARCHIVE_EXE, "ingest", "spool", str(spool), "--tenant", TENANT,
                          "--once", "--settle", "0"], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    # Everything outside the spool is as it was.
    assert secret.read_bytes() == media.wav(0.5)
    assert sorted(p.name for p in outside.iterdir()) == ["meta.json", "secret.wav"]
    # Hidden files and symlinks are left alone.
    hidden_names = {f"{h}.{e}" for h in (".hidden", "..", "..x") for e in ("wav", "json")}
    assert all((spool / name).exists() for name in hidden_names)
    assert (spool / "link.wav").is_symlink()
    # Every other pair was settled one way or the other: nothing of it is left in the folder.
    left = sorted(p.name for p in spool.iterdir()
                  if p.name not in {"done", "failed", ".claimed", "link.wav", "link.json",
                                    *hidden_names})
    assert left == [], left
    settled = re.search(r"archived=(\d+) already_archived=\d+ failed=(\d+)", out.stdout)
    assert settled is not None, out.stdout
    # The non-UTF-8 and newline names carry characters an external id may not hold either.
    assert (int(settled[1]), int(settled[2])) == (len(archived), len(refused) + 2), out.stdout
    for stem in refused:
        error = json.loads((spool / "failed" / f"{stem}.error.json").read_text())
        assert error["status"] == 400
    with sqlite3.connect(tmp_path / "var" / "archive.db") as db:
        ids = {row[0] for row in db.execute("SELECT external_id FROM items")}
    assert set(archived) <= ids


# -- oversized JSON --------------------------------------------------------------------------

def test_an_oversized_transcript_is_413(served: Served) -> None:
    body = json.dumps({"external_id": "big", "started_at": STARTED, "messages": [
        {"at": "2026-11-23T09:00:01Z", "from": "customer", "text": "x" * (MAX_TRANSCRIPT + 1)}
    ]}).encode()
    status, content_type, problem = _call(served, "POST", "/v1/transcripts", body,
                                          headers={"Content-Type": "application/json"})
    assert status == 413, problem
    assert content_type.split(";", maxsplit=1)[0] == "application/problem+json"


def test_an_oversized_json_body_elsewhere_is_413(served: Served) -> None:
    """POST /v1/holds reads its JSON body whole: a 4 MiB body must be refused, not read."""
    body = json.dumps({"case_reference": "C-1", "reason": "x" * (4 * 1024 * 1024)}).encode()
    status, content_type, problem = _call(served, "POST", "/v1/holds", body, role="complaints",
                                          headers={"Content-Type": "application/json"})
    assert status == 413, problem
    assert content_type.split(";", maxsplit=1)[0] == "application/problem+json"
    assert problem["status"] == 413


def test_an_oversized_metadata_part_is_413(served: Served) -> None:
    boundary = "b0undary"
    meta = json.dumps({"external_id": "m", "started_at": STARTED, "agent_id": "x" * 70_000})
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
            f"Content-Type: application/json\r\n\r\n{meta}\r\n--{boundary}--\r\n").encode()
    status, content_type, problem = _call(
        served, "POST", "/v1/recordings", form,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 413, problem
    assert content_type.split(";", maxsplit=1)[0] == "application/problem+json"


def test_an_oversized_metadata_header_is_refused(served: Served) -> None:
    """X-Archive-Metadata over aiohttp's 8,190-byte field limit: a 4xx, never a 5xx."""
    meta = json.dumps({"started_at": STARTED, "agent_id": "x" * 20_000})
    status, _, _ = _call(served, "PUT", "/v1/recordings/hdr", media.wav(0.5),
                         headers={"X-Archive-Metadata": meta, "Content-Type": "audio/wav"})
    assert 400 <= status < 500


# -- a hostile Range header ---------------------------------------------------------------

def test_a_range_header_with_a_huge_number_is_not_a_server_error(served: Served) -> None:
    meta = json.dumps({"started_at": STARTED})
    status, _, item = _call(served, "PUT", "/v1/recordings/range-target", media.wav(0.5),
                            headers={"X-Archive-Metadata": meta, "Content-Type": "audio/wav"})
    assert status in {200, 201}, item
    status, _, _ = _call(served, "GET", f"/v1/items/{item['id']}/media", role="complaints",
                         headers={"Range": "bytes=0-" + "9" * 5000})
    assert status in {200, 206, 416}
