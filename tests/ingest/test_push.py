"""``archive push`` as a PBX's post-call script runs it: the real command against a real
``archive serve`` (and, for the answers a proxy or an overloaded archive gives, a tiny stub
server), checking exit codes, what lands on stdout, the messages, and what the item records."""

import json
import os
import re
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.helpers import ARCHIVE_EXE
from tests.ingest import media
from tests.servers import archive_serve, free_port, stop

STARTED = "2026-11-23T09:15:00Z"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$")


@dataclass
class Served:
    base: str
    token: str  # ingest
    reader: str  # complaints: reads items, may not push
    folder: Path  # the script's working folder, with a.wav and b.wav


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("push-archive")
    proc, base, token = archive_serve(data / "var", "camden")
    try:
        env = {**os.environ, "ARCHIVE_DATA_DIR": str(data / "var")}
        reader = subprocess.run(
            [ARCHIVE_EXE, "tokens", "create", "--role", "complaints", "--tenant", "camden"],
            env=env, check=True, capture_output=True, text=True).stdout.strip()
        folder = data / "pbx"
        folder.mkdir()
        (folder / "a.wav").write_bytes(media.wav(2.0))
        (folder / "b.wav").write_bytes(media.wav(3.0))
        yield Served(base, token, reader, folder)
    finally:
        stop(proc)


def push(served: Served, *args: str, token: str | None = None, url: str | None = None,
         **env: str) -> subprocess.CompletedProcess[str]:
    """``archive push ARGS`` run from the PBX folder with ``ARCHIVE_URL``/``ARCHIVE_TOKEN``
    (and no other ``ARCHIVE_*`` setting of this process); the token is never in its output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    clean.update({"ARCHIVE_URL": url or served.base,
                  "ARCHIVE_TOKEN": served.token if token is None else token, **env})
    done = subprocess.run([ARCHIVE_EXE, "push", *args], env=clean, cwd=served.folder,
                          capture_output=True, text=True, timeout=120, check=False)
    secret = clean["ARCHIVE_TOKEN"]
    assert not secret or secret not in done.stdout + done.stderr
    return done


def get_json(served: Served, path: str) -> Any:
    request = urllib.request.Request(served.base + path,
                                     headers={"Authorization": f"Bearer {served.reader}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def item_of(served: Served, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    assert UUID.match(done.stdout), done.stdout  # the id alone: scripts capture it
    item: dict[str, Any] = get_json(served, f"/v1/items/{done.stdout.strip()}")
    return item


# -- recordings --------------------------------------------------------------------------------

def test_a_recording_is_archived_once_and_a_retry_gets_the_same_item(served: Served) -> None:
    (served.folder / "call-1.json").write_text(json.dumps(
        {"agent_extension": "2001", "service": "overridden below", "direction": "outbound"}))
    args = ("a.wav", "--external-id", "call-1", "--started-at", STARTED,
            "--ended-at", "2026-11-23T09:17:00Z", "--metadata", "call-1.json",
            "--direction", "inbound", "--caller", "020 7946 0018", "--called", "01632 960 001",
            "--agent", "agent-7", "--service", "council-tax", "--queue", "billing")
    first = push(served, *args)
    item = item_of(served, first)
    item_id = first.stdout.strip()
    assert first.stderr == f"archive: archived call call-1 as item {item_id}\n"
    assert "7946" not in first.stderr  # no phone numbers in messages
    assert item["channel"] == "call"
    assert item["external_id"] == "call-1"
    assert item["started_at"] == "2026-11-23T09:15:00+00:00"
    assert item["ended_at"] == "2026-11-23T09:17:00+00:00"
    assert item["caller_number"] == "+442079460018"  # national notation became E.164
    assert item["called_number"] == "+441632960001"
    assert item["direction"] == "inbound"  # the option beat the metadata file
    assert item["agent_extension"] == "2001"  # the metadata file's field stays
    assert (item["agent_id"], item["service"], item["queue"]) == (
        "agent-7", "council-tax", "billing")
    assert item["media"]["size"] == (served.folder / "a.wav").stat().st_size

    again = push(served, *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == item_id
    assert again.stderr == (f"archive: call call-1 was already archived as item {item_id} "
                            "(nothing changed)\n")

    other = push(served, "b.wav", *args[1:])
    assert other.returncode == 1
    assert other.stdout == ""
    assert other.stderr == ("archive: not archived: a different recording is already archived "
                            "under external id call-1 (409)\n")


def test_pci_ranges_tags_and_a_token_file_reach_the_item(served: Served) -> None:
    (served.folder / "token").write_text(served.token + "\n")
    done = push(served, "a.wav", "--external-id", "call-pci", "--started-at", STARTED,
                "--pci", "0.5-1", "--pci", "1.25-1.75", "--tag", "card-payment", "--tag",
                "complaint", "--special-category", "--token-file", "token", token="")
    item = item_of(served, done)
    assert item["media"]["pci_silenced"] == [[0.5, 1.0], [1.25, 1.75]]
    assert item["tags"] == ["card-payment", "complaint"]
    assert item["special_category"] is True


def test_a_large_recording_is_streamed_not_read_into_memory(served: Served) -> None:
    size = 48 * 1024 * 1024
    big = served.folder / "big.wav"
    with big.open("wb") as f:  # 50 MiB of 8 kHz mono 16-bit PCM
        f.write(b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
                + b"data" + struct.pack("<I", size))
        chunk = bytes(range(256)) * 4096
        for _ in range(size // len(chunk)):
            f.write(chunk)

    def peak_rss_mib(name: str, external_id: str) -> float:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
        env = {**clean, "ARCHIVE_URL": served.base, "ARCHIVE_TOKEN": served.token}
        proc = subprocess.Popen(
            [ARCHIVE_EXE, "push", name, "--external-id", external_id, "--started-at", STARTED],
            env=env, cwd=served.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this one child
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return usage.ru_maxrss / 1024  # KiB on Linux

    small = peak_rss_mib("a.wav", "call-small")
    large = peak_rss_mib("big.wav", "call-big")
    assert large - small < 16, f"peak RSS {small:.0f} MiB for 2 s, {large:.0f} MiB for 48 MiB"


# -- transcripts -------------------------------------------------------------------------------

MESSAGES = [
    {"at": "2026-11-23T09:15:05Z", "from": "customer", "name": "Siân", "text": "Bin missed"},
    {"at": "2026-11-23T09:15:40Z", "from": "agent", "name": "Alex", "text": "Sorry, booked."},
]


def test_a_json_transcript_document_with_options_over_it(served: Served) -> None:
    document = {"external_id": "chat-1", "started_at": STARTED, "service": "waste",
                "customer": {"name": "Siân Llŷr", "email": "old@example.org"},
                "messages": MESSAGES}
    (served.folder / "chat-1.json").write_text(json.dumps(document))
    done = push(served, "--transcript", "chat-1.json", "--customer-email", "Sian@Example.ORG",
                "--postcode", "sw1a1aa", "--tag", "waste")
    item = item_of(served, done)
    assert done.stderr == f"archive: archived chat chat-1 as item {done.stdout.strip()}\n"
    assert item["channel"] == "chat"
    assert item["service"] == "waste"
    assert item["tags"] == ["waste"]
    assert item["customer"] == {"name": "Siân Llŷr", "email": "sian@example.org",
                                "postcode": "SW1A 1AA"}
    stored = get_json(served, f"/v1/items/{item['id']}/media")
    assert [m["text"] for m in stored["messages"]] == [m["text"] for m in MESSAGES]


def test_a_bare_messages_list_even_without_the_json_suffix(served: Served) -> None:
    (served.folder / "chat-2.export").write_text(json.dumps(MESSAGES))
    (served.folder / "chat-2.meta").write_text(json.dumps(
        {"external_id": "replaced", "service": "housing", "customer": {"postcode": "EC1A1BB"}}))
    done = push(served, "--transcript", "chat-2.export", "--metadata", "chat-2.meta",
                "--external-id", "chat-2", "--started-at", STARTED, "--agent", "agent-9",
                "--customer-name", "Ffion")
    item = item_of(served, done)
    assert item["external_id"] == "chat-2"
    assert item["service"] == "housing"
    assert item["customer"] == {"name": "Ffion", "email": None, "postcode": "EC1A 1BB"}
    assert item["agent_id"] == "agent-9"
    assert item["customer"]["name"] == "Ffion"
    stored = get_json(served, f"/v1/items/{item['id']}/media")
    assert len(stored["messages"]) == 2


def test_a_plain_text_transcript_with_customer_options(served: Served) -> None:
    (served.folder / "chat-3.txt").write_text(
        "[09:15] Customer (Siân): Is my council tax paid?\n"
        "[09:16] Agent (Alex): Yes, in full.\n", encoding="utf-8")
    done = push(served, "--transcript", "chat-3.txt", "--external-id", "chat-3",
                "--started-at", STARTED, "--customer-name", "Siân Llŷr",
                "--customer-email", "sian@example.org", "--postcode", "CF10 1AA",
                "--service", "council-tax")
    item = item_of(served, done)
    assert item["customer"] == {"name": "Siân Llŷr", "email": "sian@example.org",
                                "postcode": "CF10 1AA"}
    assert item["service"] == "council-tax"
    stored = get_json(served, f"/v1/items/{item['id']}/media")
    assert [(m["from"], m["name"]) for m in stored["messages"]] == [
        ("customer", "Siân"), ("agent", "Alex")]
    assert stored["messages"][0]["at"].startswith("2026-11-23T09:15:00")  # GMT in November

    again = push(served, "--transcript", "chat-3.txt", "--external-id", "chat-3",
                 "--started-at", STARTED, "--customer-name", "Siân Llŷr",
                 "--customer-email", "sian@example.org", "--postcode", "CF10 1AA",
                 "--service", "council-tax")
    assert again.stdout == done.stdout
    assert "chat chat-3 was already archived" in again.stderr

    (served.folder / "chat-3b.txt").write_text("[09:15] Customer: something else\n")
    other = push(served, "--transcript", "chat-3b.txt", "--external-id", "chat-3",
                 "--started-at", STARTED)
    assert (other.returncode, other.stdout) == (1, "")
    assert other.stderr == ("archive: not archived: a different transcript is already archived "
                            "under external id chat-3 (409)\n")


# -- refusals by the archive -------------------------------------------------------------------

def test_the_archive_refuses_a_bad_token_a_reader_bad_metadata_and_not_audio(
        served: Served) -> None:
    call = ("a.wav", "--external-id", "call-x", "--started-at", STARTED)

    bad = push(served, *call, token="not-a-real-token")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == ("archive: the archive did not accept the token (401): the token is "
                          "unknown, expired or revoked\n")

    reader = push(served, *call, token=served.reader)
    assert reader.returncode == 1
    assert reader.stderr.startswith("archive: the token's role may not push to the archive "
                                    "(403): role 'complaints' may not")

    missing = push(served, "a.wav", "--external-id", "call-x", "--caller", "07700 900123")
    assert missing.returncode == 1
    assert missing.stderr == ("archive: not archived (400 Bad request): the metadata has "
                              "errors\n  started_at: is required\n")

    (served.folder / "notes.wav").write_bytes(media.not_audio())
    junk = push(served, "notes.wav", "--external-id", "call-y", "--started-at", STARTED)
    assert junk.returncode == 1
    assert junk.stderr.startswith("archive: not archived (415 Unsupported media type): the "
                                  "upload is not audio")

    text = served.folder / "chat-bad.txt"
    text.write_text("[09:15] Customer: hello\n")
    bad_chat = push(served, "--transcript", text.name, "--external-id", "chat-bad",
                    "--started-at", STARTED, "--customer-email", "not-an-email")
    assert bad_chat.returncode == 1
    assert "\n  customer.email: is not an email address\n" in bad_chat.stderr
    assert "not-an-email" not in bad_chat.stderr


# -- refused before sending --------------------------------------------------------------------

@pytest.mark.parametrize(("args", "env", "message"), [
    (("a.wav", "--external-id", "c"), {"ARCHIVE_TOKEN": ""},
     "archive: no token: set ARCHIVE_TOKEN or pass --token-file FILE (an ingest token, from "
     "'archive tokens create --role ingest')\n"),
    (("a.wav", "--token-file", "no-such-token"), {},
     "archive: cannot read --token-file no-such-token: No such file or directory\n"),
    (("a.wav", "--pci", "12.5to31"), {},
     "archive: --pci '12.5to31' is not a range of seconds like 12.5-31\n"),
    (("missing.wav", "--external-id", "c"), {},
     "archive: cannot read recording missing.wav: No such file or directory\n"),
    (("a.wav", "--transcript", "chat.json"), {},
     "archive: give a recording FILE or --transcript FILE, not both\n"),
    ((), {}, "archive: nothing to push: give a recording FILE, or --transcript FILE\n"),
    (("a.wav", "--metadata", "a.wav"), {},
     "archive: --metadata a.wav is not UTF-8 text\n"),
    (("--transcript", "a.wav", "--caller", "01632 960001"), {},
     "archive: --caller: for recordings only\n"),
    (("a.wav", "--postcode", "SW1A 1AA"), {}, "archive: --postcode: for transcripts only\n"),
    (("a.wav",), {"ARCHIVE_URL": "ftp://archive"},
     "archive: ARCHIVE_URL 'ftp://archive' is not an http(s) URL such as "
     "http://127.0.0.1:8080\n"),
], ids=["no-token", "no-token-file", "bad-pci", "no-file", "both", "neither", "bad-metadata",
        "caller-on-chat", "postcode-on-call", "bad-url"])
def test_bad_arguments_exit_2_before_anything_is_sent(
        served: Served, args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    done = push(served, *args, **env)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)


# -- try again later ---------------------------------------------------------------------------

class _Stub(BaseHTTPRequestHandler):
    """Answers as an overloaded archive or a proxy in front of it would, by path prefix."""

    answers: ClassVar[dict[str, tuple[int, str, bytes, dict[str, str]]]] = {
        "json503": (503, "application/problem+json", json.dumps(
            {"type": "about:blank", "title": "Service unavailable", "status": 503,
             "detail": "the index is unavailable; try again"}).encode(), {}),
        "html502": (502, "text/html", b"<html><head><title>502 Bad Gateway</title>"
                    b"<style>body{width:35em}</style></head><body><h1>502 Bad Gateway</h1>"
                    b"<hr><center>nginx</center></body></html>" + b" " * 5000, {}),
        "busy429": (429, "application/problem+json", json.dumps(
            {"title": "Too many requests", "status": 429, "detail": "slow down"}).encode(),
            {"Retry-After": "30"}),
        "text404": (404, "text/plain", b"no such route " + b"x" * 400, {}),
    }
    seen: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append((dict(self.headers), body))
        kind = self.path.split("/")[1]
        if kind == "hangup":
            self.close_connection = True
            return
        if kind == "slow":
            time.sleep(3)
        status, content_type, body, headers = self.answers.get(
            kind, (200, "text/plain", b"ok", {}))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow answer finds its client gone: expected, and not worth a traceback


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    server = _StubServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("where", "code", "message"), [
    ("json503", 75, "archive: not archived now, try again later: the archive answered 503 "
                    "Service unavailable: the index is unavailable; try again\n"),
    ("html502", 75, "archive: not archived now, try again later: the archive answered 502 Bad "
                    "Gateway: 502 Bad Gateway 502 Bad Gateway nginx\n"),
    ("busy429", 75, "archive: not archived now, try again later: the archive answered 429 Too "
                    "many requests: slow down (it asks to wait 30 s)\n"),
    ("text404", 1, "archive: not archived: the archive answered 404 Not Found: no such route "
                   + "x" * 186 + "...\n"),
    ("hangup", 75, "archive: not archived now, try again later: the archive at {url} closed "
                   "the connection before answering\n"),
    ("slow", 75, "archive: not archived now, try again later: the archive at {url} did not "
                 "answer within 0.5 seconds\n"),
])
def test_unavailable_or_proxied_answers(served: Served, stub: str, where: str, code: int,
                                        message: str) -> None:
    url = f"{stub}/{where}/"  # a prefix, as behind a reverse proxy
    done = push(served, "a.wav", "--external-id", "call-z", "--started-at", STARTED,
                "--timeout", "0.5", url=url)
    assert (done.returncode, done.stdout, done.stderr) == (code, "", message.format(url=url))
    headers, body = _Stub.seen[-1]
    assert headers["Authorization"] == f"Bearer {served.token}"
    assert headers["Content-Type"].startswith("multipart/form-data")
    assert len(body) > (served.folder / "a.wav").stat().st_size
    assert b'name="metadata"' in body
    assert b'name="audio"; filename="recording.wav"' in body
    assert b"a.wav" not in body  # the local file name may hold a phone number


def test_a_plain_text_transcript_is_sent_with_an_ascii_metadata_header(
        served: Served, stub: str) -> None:
    (served.folder / "07700900123.txt").write_text("[09:15] Customer: hello\n")
    done = push(served, "--transcript", "07700900123.txt", "--external-id", "chat-z",
                "--started-at", STARTED, "--customer-name", "Siân", url=f"{stub}/json503")
    assert done.returncode == 75, done.stderr
    headers, body = _Stub.seen[-1]
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert json.loads(headers["X-Archive-Metadata"]) == {
        "external_id": "chat-z", "started_at": STARTED, "customer": {"name": "Siân"}}
    assert headers["X-Archive-Metadata"].isascii()
    assert "07700900123" not in json.dumps(headers)  # no Content-Disposition with the name
    assert body == b"[09:15] Customer: hello\n"


def test_an_archive_that_is_not_running_means_try_again_later(served: Served) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = push(served, "a.wav", "--external-id", "call-z", "--started-at", STARTED, url=url)
    assert (done.returncode, done.stdout) == (75, "")
    assert done.stderr == (f"archive: not archived now, try again later: cannot connect to "
                           f"the archive at {url}: connection refused\n")
