"""docs/integrations.md is executable: every ``sh`` example runs against a live ``archive serve``.

The page is parsed into fenced blocks under their headings. Each untitled ```` ```sh ```` block is
run with ``bash -euo pipefail`` in a fresh folder holding ``call.wav`` and every titled file of
the page (```` ```json title="chat.json" ```` is written to ``chat.json``), with
``$ARCHIVE_URL``, ``$ARCHIVE_TOKEN`` (an ingest token) and ``$S3_ENDPOINT_URL`` (moto) set and
the importers pointed at the server's own data folder. Its effect is then checked through the
API (the item exists, with the fields the example sent). Titled ``sh`` blocks are scripts: the
Asterisk ones are run as the page's MixMonitor line runs them. The FreeSWITCH dialplan is
expanded as FreeSWITCH would expand it, and its ``record_session`` URL gets the PUT that
mod_http_cache makes (libcurl, credentials in the URL). The field reference tables are compared
with the parsers' own field sets, the error table with the OpenAPI document, and every relative
link must resolve. So an example that drifts from the code fails here, named by its heading.
"""

import csv
import io
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ingest import legacy, transcripts
from ingest.metadata import CUSTOMER_FIELDS, RECORDING_FIELDS, TRANSCRIPT_FIELDS
from tests.helpers import run_archive
from tests.ingest import media
from tests.servers import archive_serve, stop
from web.openapi import document

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "integrations.md"
TENANT = "camden"
BLOCK_TIMEOUT = 90  # seconds; an importer or push starts a Python process and ffmpeg
BIN = str(Path(sys.executable).parent)
S3_BUCKET_URL = re.compile(r"^s3://([^/\s]+)/(\S+)$")

# -- the page --------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(\S*)(.*)$")
_TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class Block:
    """One fenced block: the heading it sits under, its language, its title (a file name)."""

    heading: str
    level: int
    lang: str
    title: str | None
    code: str
    line: int
    id: str = ""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    heading, level = "", 0
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            start = i + 1
            i += 1
            while i < len(lines) and lines[i] != "```":
                i += 1
            if i >= len(lines):
                raise AssertionError(f"docs/integrations.md line {start}: fence never closed")
            title = _TITLE.search(fence.group(2))
            blocks.append(Block(heading, level, fence.group(1), title.group(1) if title else None,
                                "\n".join(lines[start:i]) + "\n", start))
        elif line.startswith("#"):
            marks, _, name = line.partition(" ")
            heading, level = name.strip(), len(marks)
        i += 1
    counts: dict[str, int] = {}
    named = []
    for b in blocks:
        base = slug(b.heading) + ("" if b.lang == "sh" else f"-{b.lang or 'text'}")
        counts[base] = counts.get(base, 0) + 1
        named.append(replace(b, id=base if counts[base] == 1 else f"{base}-{counts[base]}"))
    return named


@cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@cache
def blocks() -> tuple[Block, ...]:
    return tuple(parse_blocks(doc_text()))


def shell_examples() -> list[Block]:
    """The ```sh blocks an integrator types: run as they are."""
    return [b for b in blocks() if b.lang == "sh" and b.title is None]


def scripts() -> dict[str, Block]:
    """The ```sh blocks that are files (titled): scripts a PBX runs."""
    return {b.title: b for b in blocks() if b.lang == "sh" and b.title is not None}


def files() -> dict[str, Block]:
    """Every titled block that is not a script: written beside each example."""
    titled = [b for b in blocks() if b.title is not None and b.lang != "sh"]
    names = [b.title for b in titled]
    assert len(names) == len(set(names)), f"two blocks are titled the same: {names}"
    return {b.title: b for b in titled if b.title is not None}


def in_section(heading: str, lang: str, needle: str = "") -> Block:
    found = [b for b in blocks() if slug(b.heading) == heading and b.lang == lang
             and needle in b.code]
    assert found, f"no ```{lang} block holding {needle!r} under '{heading}'"
    return found[0]


def table(heading: str) -> list[dict[str, str]]:
    """The first Markdown table under ``### heading``, as rows keyed by column name."""
    text = doc_text()
    at = re.search(rf"^#+ {re.escape(heading)}\s*$", text, re.M)
    assert at, f"no heading {heading!r}"
    rows = []
    for line in text[at.end():].splitlines():
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table under {heading!r}"
    head, body = rows[0], rows[2:]
    return [dict(zip(head, row, strict=True)) for row in body]


def code_names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- the live archive ------------------------------------------------------------------------

@dataclass
class Live:
    base: str
    token: str = field(repr=False)  # ingest: what the examples use
    admin: str = field(repr=False)  # for checking what they did
    data_dir: Path
    audio: bytes = field(repr=False)
    moto: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHIVE_", "AWS_"))}
        env.update({
            "ARCHIVE_URL": self.base, "ARCHIVE_TOKEN": self.token,
            "ARCHIVE_DATA_DIR": str(self.data_dir), "S3_ENDPOINT_URL": self.moto,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-2", "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            **self.extra_env,
        })
        return env

    def items(self, channel: str) -> dict[str, dict[str, Any]]:
        """Active items of the channel, by external id (seen through the API, as staff would)."""
        url = f"{self.base}/v1/items?channel={channel}&limit=500"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.admin}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            found = json.load(answer)["items"]
        return {item["external_id"]: item for item in found}

    def item(self, external_id: str, channel: str = "call") -> dict[str, Any]:
        items = self.items(channel)
        assert external_id in items, (
            f"no {channel} {external_id!r} in the archive; it has {sorted(items)}")
        return items[external_id]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("integrations") / "var"
    log = data_dir.parent / "serve.log"
    proc, base, token = archive_serve(data_dir, TENANT, role="ingest", stderr=log)
    try:
        made = run_archive(["tokens", "create", "--role", "admin", "--tenant", TENANT],
                           data_dir)
        assert made.returncode == 0, made.stderr
        yield Live(base, token, made.stdout.strip(), data_dir, media.wav(2.0))
    finally:
        stop(proc)


def workdir(live: Live, where: Path) -> Path:
    """A folder as an integrator has it: call.wav and every file the page shows."""
    (where / "call.wav").write_bytes(live.audio)
    for name, block in files().items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
    return where


def run_sh(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False)


# -- what each example must have done --------------------------------------------------------

Prepare = Callable[[Live, Path, pytest.FixtureRequest], None]
Verify = Callable[[Live, Path, str], None]


def _nothing(live: Live, where: Path, request: pytest.FixtureRequest) -> None:
    pass


def _token_made(live: Live, where: Path, out: str) -> None:
    assert re.fullmatch(r"arc_\S+\n", out), "the token alone on stdout"
    listed = run_archive(["tokens", "list", "--tenant", TENANT], live.data_dir)
    assert "\tingest\tactive\tFreeSWITCH pbx1" in listed.stdout


def _whoami(live: Live, where: Path, out: str) -> None:
    assert json.loads(out)["role"] == "ingest"


def _sample_answer() -> dict[str, Any]:
    sample: dict[str, Any] = json.loads(in_section("multipart-post", "json", '"id"').code)
    return sample


def _multipart(live: Live, where: Path, out: str) -> None:
    item = live.item("pbx1-20261123-0001")
    assert item["caller_number"] == "+442079460001"
    assert item["called_number"] == "+442079460999"
    assert (item["agent_id"], item["service"], item["tags"]) == (
        "agent-17", "council-tax", ["arrears"])
    assert item["media"]["pci_silenced"] == [[95.5, 140.0]]
    answer = json.loads(out)
    assert answer["id"] == item["id"]
    sample = _sample_answer()  # the answer the page shows has the real answer's shape
    assert set(sample) == set(answer)
    assert set(sample["media"]) == set(answer["media"])
    same = ("caller_number", "called_number", "external_id", "started_at", "ended_at",
            "channel", "status", "tags")
    assert {k: sample[k] for k in same} == {k: answer[k] for k in same}
    media_facts = ("type", "format", "codec", "received_type", "stored_as", "pci_silenced")
    assert {k: sample["media"][k] for k in media_facts} == {
        k: answer["media"][k] for k in media_facts}


def _put_query(live: Live, where: Path, out: str) -> None:
    item = live.item("pbx1-20261123-0002")
    assert item["caller_number"] == "+447700900123"
    assert item["tags"] == ["council-tax", "complaint"]
    assert item["direction"] == "inbound"
    assert item["started_at"] == "2026-11-23T09:05:00+00:00"


def _put_header(live: Live, where: Path, out: str) -> None:
    item = live.item("pbx1-20261123-0003")
    assert (item["caller_number"], item["agent_id"]) == ("+442079460003", "agent-4")


def _put_retry(live: Live, where: Path, out: str) -> None:
    assert out.split() == ["201", "200"]
    live.item("pbx1-20261123-0004")


def _chat_json(live: Live, where: Path, out: str) -> None:
    item = live.item("webchat-88123", "chat")
    assert item["customer"] == {"name": "Ann Example", "email": "ann.example@example.com",
                                "postcode": "NW1 2AB"}
    assert json.loads(out)["id"] == item["id"]


def _chat_text(live: Live, where: Path, out: str) -> None:
    item = live.item("webchat-88124", "chat")
    assert (item["service"], item["customer"]["name"]) == ("waste", "Ben")


def _push_recording(live: Live, where: Path, out: str) -> None:
    item = live.item("pbx1-20261123-0006")
    assert out.strip() == item["id"]
    assert (item["caller_number"], item["agent_id"], item["service"], item["tags"]) == (
        "+442079460006", "agent-3", "housing", ["repairs"])


def _push_transcripts(live: Live, where: Path, out: str) -> None:
    chats = live.items("chat")
    assert out.split() == [chats["webchat-88123-copy"]["id"], chats["webchat-88125"]["id"]]
    assert chats["webchat-88125"]["customer"]["postcode"] == "N1 9GU"


def _spool(live: Live, where: Path, out: str) -> None:
    item = live.item("pbx1-20261123-0007")
    receipt = json.loads((where / "spool" / "done" / "pbx1-20261123-0007.receipt.json")
                         .read_text())
    assert receipt["item_id"] == item["id"]
    assert "archived=1" in out
    assert not (where / "spool" / "pbx1-20261123-0007.wav").exists()  # the plaintext is gone
    assert (item["direction"], item["called_number"]) == ("outbound", "+447700900456")


def _s3_prepare(live: Live, where: Path, request: pytest.FixtureRequest) -> None:
    """Drop what the page's layout shows into moto's bucket, as the PBX would."""
    import boto3  # noqa: PLC0415 -- only this example needs it

    live.moto = request.getfixturevalue("moto_endpoint")
    layout = in_section("s3-drop-bucket", "text", "s3://").code.split()
    s3 = boto3.client("s3", endpoint_url=live.moto, region_name="eu-west-2",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for url in layout:
        match = S3_BUCKET_URL.match(url)
        assert match, f"not an s3:// object: {url}"
        bucket, key = match.groups()
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
                "LocationConstraint": "eu-west-2"})
        name = key.rsplit("/", 1)[-1]
        body = live.audio if name.endswith(".wav") else (where / name).read_bytes()
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def _s3(live: Live, where: Path, out: str) -> None:
    item = live.item("pbx1-20261123-0008")
    assert item["caller_number"] == "+442079460008" and "archived=1" in out


def _legacy_prepare(live: Live, where: Path, request: pytest.FixtureRequest) -> None:
    """The old recorder's files, where the manifest says they are."""
    manifest = files()["manifest.csv"].code
    for row in csv.DictReader(io.StringIO(manifest)):
        path = where / "legacy-export" / row["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(live.audio)


def _legacy(live: Live, where: Path, out: str) -> None:
    first, second = live.item("old-rec-0001"), live.item("old-rec-0002")
    assert first["started_at"] == "2025-12-01T09:00:00+00:00"
    assert first["tags"] == ["migrated", "2025"] and first["caller_number"] == "+441632960001"
    assert second["direction"] == "outbound"
    assert "archived=2" in out and "failed=0" in out


@dataclass(frozen=True)
class Check:
    verify: Verify
    prepare: Prepare = _nothing


CHECKS: dict[str, Check] = {
    "tokens": Check(_token_made),
    "tokens-2": Check(_whoami),
    "multipart-post": Check(_multipart),
    "raw-put": Check(_put_query),
    "raw-put-2": Check(_put_header),
    "raw-put-3": Check(_put_retry),
    "transcript-as-json": Check(_chat_json),
    "transcript-as-plain-text": Check(_chat_text),
    "archive-push": Check(_push_recording),
    "archive-push-2": Check(_push_transcripts),
    "spool-folder": Check(_spool),
    "s3-drop-bucket": Check(_s3, _s3_prepare),
    "legacy-import": Check(_legacy, _legacy_prepare),
}
ASTERISK_SCRIPTS = ("archive-push.sh", "archive-push-curl.sh")


@pytest.mark.parametrize("block", shell_examples(), ids=lambda b: b.id)
def test_shell_example(block: Block, live: Live, tmp_path: Path,
                       request: pytest.FixtureRequest) -> None:
    check = CHECKS.get(block.id)
    assert check is not None, (
        f"docs/integrations.md line {block.line} ({block.heading}): a new example; add what "
        f"it must do to CHECKS in {Path(__file__).name}")
    where = workdir(live, tmp_path)
    check.prepare(live, where, request)
    done = run_sh(block.code, where, live.env())
    assert done.returncode == 0, (
        f"the example under '{block.heading}' (docs/integrations.md line {block.line}) "
        f"failed with exit status {done.returncode}:\n{done.stdout}\n{done.stderr}")
    check.verify(live, where, done.stdout)


def test_every_shell_block_is_run() -> None:
    """No ```sh block escapes: each example has a check, each script a test that runs it."""
    every = [b for b in blocks() if b.lang == "sh"]
    assert len(every) == len(shell_examples()) + len(scripts())
    assert {b.id for b in shell_examples()} == set(CHECKS)
    assert set(scripts()) == set(ASTERISK_SCRIPTS)
    # Fences this test does not know would be skipped silently: a typo like ```bash or ```shell.
    assert {b.lang for b in blocks()} <= {"sh", "json", "text", "xml", "ini", "csv"}


# -- FreeSWITCH: the dialplan's record_session, as mod_http_cache uploads it -----------------

_FS_GLOBAL = re.compile(r"\$\$\{(\w+)\}")
CALL_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def innermost(text: str) -> tuple[int, int] | None:
    """Where the last (so innermost) ``${...}`` of ``text`` starts and ends."""
    start = text.rfind("${")
    if start < 0:
        return None
    end = text.find("}", start)
    assert end > 0, f"unclosed ${{ in {text!r}"
    return start, end + 1


def fs_expand(text: str, channel: dict[str, str]) -> str:
    """FreeSWITCH's variable expansion of the functions and variables the page uses."""
    while span := innermost(text):
        inner = text[span[0] + 2:span[1] - 1]
        call = re.fullmatch(r"(\w+)\((.*)\)", inner, re.S)
        if call is None:
            assert inner in channel, f"unknown channel variable ${{{inner}}}"
            value = channel[inner]
        elif call.group(1) == "url_encode":
            value = urllib.parse.quote(call.group(2), safe="")
        elif call.group(1) == "strftime_tz":
            zone, _, fmt = call.group(2).partition(" ")
            value = CALL_AT.astimezone(ZoneInfo(zone)).strftime(fmt)
        else:
            raise AssertionError(f"the test does not know FreeSWITCH's {call.group(1)}()")
        text = text[:span[0]] + value + text[span[1]:]
    return text


def _push_url(vars_xml: Block, live: Live) -> dict[str, str]:
    """The page's ``vars.xml`` globals, with the URL pointed at the live archive and the token."""
    globals_: dict[str, str] = {}
    for line in vars_xml.code.splitlines():
        node = ET.fromstring(line)
        name, _, value = node.attrib["data"].partition("=")
        globals_[name] = value
    push = urllib.parse.urlsplit(globals_["archive_push_url"])
    here = urllib.parse.urlsplit(live.base)
    assert push.username and push.password, "the token must be in the URL's userinfo"
    globals_["archive_push_url"] = (
        f"{here.scheme}://{push.username}:{live.token}@{here.netloc}{push.path}")
    return globals_


def test_freeswitch_record_session_uploads(live: Live, tmp_path: Path) -> None:
    vars_xml = in_section("freeswitch", "xml", "X-PRE-PROCESS")
    dialplan = in_section("freeswitch", "xml", "record_session")
    globals_ = _push_url(vars_xml, live)
    # $${...} are expanded when the XML is loaded; ${...} when each action runs.
    loaded = _FS_GLOBAL.sub(lambda m: globals_[m.group(1)], dialplan.code)
    call_uuid = str(uuid.uuid4())
    channel = {"uuid": call_uuid, "caller_id_number": "+447700900123",
               "destination_number": "2001"}
    url = ""
    for action in ET.fromstring(loaded).iter("action"):
        data = fs_expand(action.attrib["data"], channel)
        if action.attrib["application"] == "set":
            name, _, value = data.partition("=")
            channel[name] = value
        elif action.attrib["application"] == "record_session":
            url = data
    assert url.startswith("http_cache://"), url
    url = url.removeprefix("http_cache://")
    # What mod_http_cache and record_session need of the URL (see the page).
    path, _, query = url.partition("?")
    assert "." not in query, f"a '.' in the query string would be taken as the extension: {query}"
    assert "+" not in url, "a raw '+' decodes as a space (and ' +N' is a time limit)"
    assert path.rsplit("/", 1)[-1].endswith(".wav")
    recording = tmp_path / "recording.wav"
    recording.write_bytes(media.wav(2.0, channels=2))  # RECORD_STEREO=true
    # libcurl's PUT, as http_put() in mod_http_cache makes it: userinfo becomes Basic auth.
    done = subprocess.run(
        ["curl", "-sS", "-T", str(recording), "-H", "Content-Type: audio/x-wav",
         "-A", "freeswitch-http-cache/1.0", "-o", str(tmp_path / "answer.json"),
         "-w", "%{http_code}", url],
        capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False)
    answer = (tmp_path / "answer.json").read_text()
    assert done.stdout == "201", f"{done.stdout} {done.stderr} {answer}"
    item = live.item(f"{call_uuid}.wav")
    assert item["caller_number"] == "+447700900123"
    assert item["started_at"] == "2026-11-23T09:00:00+00:00"
    assert (item["service"], item["direction"], item["media"]["channels"]) == (
        "council-tax", "inbound", 2)


# -- Asterisk: the MixMonitor line runs the page's scripts -----------------------------------

HOSTILE_CALLER = "+447700900123$(touch pwned);touch pwned-too"


def _filter(allowed: str, value: str) -> str:
    ok = set()
    for a, dash, b in re.findall(r"(.)(-)?((?<=-).)?", allowed):
        ok |= {chr(c) for c in range(ord(a), ord(b) + 1)} if dash else {a}
    return "".join(ch for ch in value if ch in ok)


def ast_expand(text: str, variables: dict[str, str]) -> str:
    """Asterisk's substitution of the variables and functions the page uses."""
    while span := innermost(text):
        inner = text[span[0] + 2:span[1] - 1]
        call = re.fullmatch(r"(\w+)\((.*)\)", inner, re.S)
        if call is None:
            assert inner in variables, f"unknown channel variable ${{{inner}}}"
            value = variables[inner]
        else:
            name, args = call.group(1), call.group(2).split(",")
            if name == "STRFTIME":
                epoch, zone, fmt = args[0], args[1], ",".join(args[2:])
                value = datetime.fromtimestamp(int(epoch), ZoneInfo(zone)).strftime(fmt)
            elif name == "FILTER":
                value = _filter(args[0], ",".join(args[1:]))
            elif name == "CALLERID" and args == ["num"]:
                value = HOSTILE_CALLER
            else:
                raise AssertionError(f"the test does not know Asterisk's {name}()")
        text = text[:span[0]] + value + text[span[1]:]
    return text


def mixmonitor_command(unique_id: str) -> str:
    """The command MixMonitor runs when the recording ends, with the variables filled in."""
    variables = {"UNIQUEID": unique_id, "EPOCH": str(int(CALL_AT.timestamp()))}
    command = ""
    for line in in_section("asterisk", "ini", "MixMonitor(").code.splitlines():
        app = re.search(r"n,(\w+)\((.*)\)\s*$", line)
        if app is None:
            continue
        data = ast_expand(app.group(2), variables)
        if app.group(1) == "Set":
            name, _, value = data.partition("=")
            variables[name] = value
        elif app.group(1) == "MixMonitor":
            filename, options, command = data.split(",", 2)
            assert filename == f"{unique_id}.wav" and "b" in options
    assert command, "no MixMonitor line with a command"
    return command


@pytest.mark.parametrize("script", ASTERISK_SCRIPTS)
def test_asterisk_mixmonitor_runs_the_script(live: Live, tmp_path: Path, script: str) -> None:
    unique_id = f"{1795424400 + ASTERISK_SCRIPTS.index(script)}.42"
    where = workdir(live, tmp_path)
    installed = where / script
    installed.write_text(scripts()[script].code)
    installed.chmod(0o755)
    monitor = where / "monitor"
    monitor.mkdir()
    (monitor / f"{unique_id}.wav").write_bytes(live.audio)
    command = (mixmonitor_command(unique_id)
               .replace("/var/spool/asterisk/monitor/", f"{monitor}/")
               .replace("/usr/local/bin/archive-push.sh", str(installed)))
    env = {**live.env(), "ARCHIVE_RETRY_DIR": str(where / "retry"),
           "ARCHIVE_REFUSED_DIR": str(where / "refused")}
    done = subprocess.run(["sh", "-c", command], cwd=where, env=env, capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    item = live.item(unique_id)
    assert item["caller_number"] == "+447700900123"  # FILTER kept the digits and the +
    assert item["started_at"] == "2026-11-23T09:00:00+00:00"
    assert not (monitor / f"{unique_id}.wav").exists(), "an archived recording is deleted"
    assert not list(where.glob("pwned*")), "the caller id reached the shell"


@pytest.mark.parametrize("script", ASTERISK_SCRIPTS)
def test_asterisk_scripts_keep_what_was_not_archived(
    live: Live, tmp_path: Path, script: str,
) -> None:
    """The archive down: the recording waits in the retry folder. Not audio: refused folder."""
    where = workdir(live, tmp_path)
    installed = where / script
    installed.write_text(scripts()[script].code)
    installed.chmod(0o755)
    (where / "down.wav").write_bytes(live.audio)
    (where / "note.wav").write_bytes(media.not_audio())
    env = {**live.env(), "ARCHIVE_RETRY_DIR": str(where / "retry"),
           "ARCHIVE_REFUSED_DIR": str(where / "refused")}
    closed = {**env, "ARCHIVE_URL": "http://127.0.0.1:9"}  # nothing listens on port 9
    for name, call_id, run_env in (("down.wav", "down-1", closed),
                                   ("note.wav", "note-1", env)):
        subprocess.run([str(installed), str(where / name), call_id, "2026-11-23T09:00:00Z"],
                       cwd=where, env=run_env, capture_output=True, text=True,
                       timeout=BLOCK_TIMEOUT, check=False)
    assert (where / "retry" / "down.wav").exists()
    assert (where / "refused" / "note.wav").exists()
    assert "note-1" not in live.items("call")


# -- the reference tables cannot drift from the parsers --------------------------------------

def test_recording_fields_match_the_parser() -> None:
    rows = table("Recording metadata")
    names = [code_names(r["field"])[0] for r in rows]
    assert sorted(names) == sorted(RECORDING_FIELDS)
    required = {code_names(r["field"])[0] for r in rows if r["required"].startswith("yes")}
    assert required == {"external_id", "started_at"}


def test_transcript_fields_match_the_parser() -> None:
    names = {code_names(r["field"])[0] for r in table("Transcript metadata")}
    assert names == TRANSCRIPT_FIELDS | {f"customer.{f}" for f in CUSTOMER_FIELDS} | {"messages"}
    messages = table("Messages")
    # The keys a message may have are private to the parser; this is the one place that reads
    # them, so the table and the parser cannot disagree.
    assert {code_names(r["field"])[0] for r in messages} == transcripts._MESSAGE_KEYS
    assert {code_names(r["field"])[0] for r in messages if r["required"] == "yes"} == {
        "at", "from", "text"}
    senders = next(code_names(r["type"]) for r in messages if r["field"] == "`from`")
    assert set(senders) == set(transcripts.SENDERS)


def test_plain_text_speakers_match_the_parser() -> None:
    documented = {label.lower(): code_names(r["sender"])[0] for r in table("Plain-text transcripts")
                  for label in code_names(r["label"])}
    assert documented == transcripts._LABELS


def test_legacy_columns_match_the_importer() -> None:
    rows = table("Legacy manifest columns")
    assert [code_names(r["column"])[0] for r in rows] == [*legacy.REQUIRED, *legacy.OPTIONAL]
    assert tuple(code_names(r["column"])[0] for r in rows if r["required"] == "yes") == (
        legacy.REQUIRED)


def test_error_table_matches_the_openapi_answers() -> None:
    ops = document()["paths"]
    documented = {
        int(code) for path, method in (("/v1/recordings", "post"),
                                       ("/v1/recordings/{external_id}", "put"),
                                       ("/v1/transcripts", "post"))
        for code in ops[path][method]["responses"]}
    assert {int(r["status"]) for r in table("Answers and errors")} == documented


def test_links_resolve() -> None:
    text = doc_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"https?://", link):
            continue
        target, _, anchor = link.partition("#")
        if target:
            path = (DOC.parent / target).resolve()
            assert path.is_file(), f"{link}: no file {path}"
            if anchor:
                theirs = {slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
                assert anchor in theirs, f"{link}: no heading #{anchor} in {target}"
        else:
            assert anchor in anchors, f"{link}: no heading #{anchor} on this page"
