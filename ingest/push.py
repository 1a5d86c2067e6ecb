"""``archive push``: one recording or transcript to a running archive over HTTP.

Made for the post-call script of a PBX or a chat platform's export hook, so its exit code says
what to do next (the codes of ``sysexits.h``):

- 0: archived, or already archived (a retry of the same upload); the item id alone on stdout;
- 1: refused (bad metadata, not audio, a different upload under the same external id, the token
  refused): retrying the same thing will not help;
- 2: bad arguments, found before anything was sent (a missing file, no token, a bad ``--pci``);
- 75 (``EX_TEMPFAIL``): not archived now (the archive is unreachable, overloaded or a
  dependency is down): keep the file and try again later.

The token comes from ``--token-file`` or ``ARCHIVE_TOKEN``, never from the command line (where
``ps`` shows it), and is never printed. Messages name only what the user gave that is no personal
data: the external id, the item id, paths and option values; never numbers, names or text.
Required fields are checked by the archive, not here: its answer lists every bad field.
"""

import argparse
import json
import math
import mimetypes
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp.payload import BufferedReaderPayload, Payload
from yarl import URL

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a spool keeps the file and retries
DEFAULT_URL = "http://127.0.0.1:8080"
METADATA_HEADER = "X-Archive-Metadata"
RETRY_LATER = frozenset({429, 500, 502, 503, 504, 507})
REFUSED_INPUT = frozenset({400, 413, 415, 422})
MAX_ANSWER = 1024 * 1024  # an answer larger than this is cut (a proxy's error page, say)
QUOTED_TEXT = 200

# Options that only make sense for one kind, as (option, metadata field).
_RECORDING_ONLY = (("direction", "direction"), ("caller", "caller_number"),
                   ("called", "called_number"), ("agent_extension", "agent_extension"),
                   ("queue", "queue"), ("pci", "pci_redactions"))
_COMMON = (("external_id", "external_id"), ("started_at", "started_at"),
           ("ended_at", "ended_at"), ("agent", "agent_id"), ("service", "service"))
_CUSTOMER = (("customer_name", "name"), ("customer_email", "email"), ("postcode", "postcode"))


class PushError(Exception):
    """A message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _say(message: str) -> None:
    sys.stderr.write(f"archive: {message}\n")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


# -- where, and with which token -------------------------------------------------------------

def archive_url(args: argparse.Namespace, environ: Mapping[str, str]) -> URL:
    """``--url``, else ``ARCHIVE_URL``, else the local default; an http(s) URL with a host."""
    raw = args.url or environ.get("ARCHIVE_URL") or DEFAULT_URL
    where = "--url" if args.url else "ARCHIVE_URL" if environ.get("ARCHIVE_URL") else "the URL"
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        raise PushError(f"{where} {raw!r} is not a URL") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise PushError(f"{where} {raw!r} is not an http(s) URL such as {DEFAULT_URL}")
    if url.user is not None or url.password is not None:
        raise PushError(f"{where} must not hold a user name or password: the token is the "
                        "credential")
    return url


def endpoint(base: URL, path: str) -> URL:
    """``path`` under ``base``, which may carry a prefix (a reverse proxy's ``/archive/``)."""
    return base.with_path(base.path.rstrip("/") + path, encoded=False).with_query(None)


def read_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The first line of ``--token-file``, else ``ARCHIVE_TOKEN``."""
    if args.token_file is not None:
        token_file: Path = args.token_file
        try:
            with token_file.open(encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as exc:
            raise PushError(f"cannot read --token-file {args.token_file}: "
                            f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise PushError(f"--token-file {args.token_file} is not a text file") from None
        if not token:
            raise PushError(f"--token-file {args.token_file} is empty")
    else:
        token = environ.get("ARCHIVE_TOKEN", "").strip()
        if not token:
            raise PushError("no token: set ARCHIVE_TOKEN or pass --token-file FILE (an ingest "
                            "token, from 'archive tokens create --role ingest')")
    if not all("!" <= ch <= "~" for ch in token):  # a header value; never echo the token
        raise PushError("the token holds spaces or characters a token never has: "
                        "check ARCHIVE_TOKEN or --token-file")
    return token


# -- what to send ----------------------------------------------------------------------------

def pci_range(value: str) -> dict[str, float]:
    """``"12.5-31"`` as ``{"start": 12.5, "end": 31.0}``; the archive checks the rest."""
    start, dash, end = value.strip().partition("-")
    try:
        bounds = (float(start), float(end))
    except ValueError:
        bounds = (math.nan, math.nan)
    if not dash or not all(math.isfinite(b) for b in bounds):
        raise PushError(f"--pci {value!r} is not a range of seconds like 12.5-31")
    return {"start": bounds[0], "end": bounds[1]}


def _json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise PushError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PushError(f"{what} {path} is not UTF-8 text") from None
    except ValueError as exc:
        raise PushError(f"{what} {path} is not valid JSON: {exc}") from None


def base_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON object of ``--metadata``, or an empty one."""
    if args.metadata is None:
        return {}
    value = _json_file(args.metadata, "--metadata")
    if not isinstance(value, dict):
        raise PushError(f"--metadata {args.metadata} must hold a JSON object")
    return value


def _refuse_options(args: argparse.Namespace, names: tuple[str, ...], kind: str) -> None:
    given = [_option(n) for n in names if getattr(args, n) not in (None, False)]
    if given:
        raise PushError(f"{', '.join(given)}: for {kind} only")


def apply_options(args: argparse.Namespace, data: dict[str, Any], *, recording: bool
                  ) -> dict[str, Any]:
    """``data`` with the fields the options give put over it."""
    out = dict(data)
    pairs = _COMMON + (_RECORDING_ONLY if recording else ())
    for option, field in pairs:
        value = getattr(args, option)
        if value is None:
            continue
        out[field] = [pci_range(v) for v in value] if option == "pci" else value
    if args.tag:
        out["tags"] = list(args.tag)
    if args.special_category:
        out["special_category"] = True
    if not recording and any(getattr(args, o) is not None for o, _ in _CUSTOMER):
        customer = out.get("customer")
        merged = dict(customer) if isinstance(customer, dict) else {}
        merged.update({f: getattr(args, o) for o, f in _CUSTOMER if getattr(args, o) is not None})
        out["customer"] = merged
    return out


@dataclass
class Upload:
    """One request to make: where, what, and how to name the contact in messages."""

    path: str
    kind: str  # "call" or "chat"
    external_id: str | None
    data: Any
    headers: dict[str, str]


def _open(path: Path, what: str) -> IO[bytes]:
    if path.is_dir():
        raise PushError(f"{what} {path} is a folder, not a file")
    try:
        return path.open("rb")
    except OSError as exc:
        raise PushError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _external_id(data: Mapping[str, Any]) -> str | None:
    value = data.get("external_id")
    return value if isinstance(value, str) else None


def recording_upload(args: argparse.Namespace, file: IO[bytes]) -> Upload:
    """``multipart/form-data``: the ``metadata`` part, then the ``audio`` part streamed from
    ``file``."""
    _refuse_options(args, tuple(o for o, _ in _CUSTOMER), "transcripts")
    metadata = apply_options(args, base_metadata(args), recording=True)
    form = aiohttp.MultipartWriter("form-data")
    part = form.append_json(metadata)
    part.set_content_disposition("form-data", name="metadata")
    suffix = Path(args.file).suffix.lower()
    content_type = mimetypes.guess_type(f"x{suffix}")[0] or "application/octet-stream"
    part = form.append_payload(_file_payload(file, content_type))
    part.set_content_disposition("form-data", name="audio", filename=f"recording{suffix}")
    return Upload("/v1/recordings", "call", _external_id(metadata), form, {})


def _file_payload(file: IO[bytes], content_type: str) -> Payload:
    """``file`` streamed in small chunks with its size known (a ``Content-Length``, not
    chunked), and without its local name, which may hold a phone number."""
    return BufferedReaderPayload(file, filename=None, content_type=content_type)


def _looks_like_json(file: IO[bytes]) -> bool:
    """A JSON object or list (``[{`` or ``[]``), not a plain-text export (whose lines start
    ``[09:15]``)."""
    head = file.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
    file.seek(0)
    return head[:1] == b"{" or (head[:1] == b"[" and head[1:].lstrip()[:1] in {b"{", b"]"})


def transcript_upload(args: argparse.Namespace, file: IO[bytes]) -> Upload:
    """A ``.json`` file (or one that is a JSON object or list) as the ``POST /v1/transcripts``
    document (a list is its ``messages``): the document's fields, then ``--metadata``, then
    the options. Anything else is a plain-text export, streamed as ``text/plain`` with the
    metadata in ``X-Archive-Metadata`` (JSON escaped to ASCII, as a header must be)."""
    path: Path = args.transcript
    _refuse_options(args, tuple(o for o, _ in _RECORDING_ONLY), "recordings")
    is_json = path.suffix.lower() == ".json" or _looks_like_json(file)
    if is_json:
        try:
            document = json.loads(file.read())
        except UnicodeDecodeError:
            raise PushError(f"--transcript {path} is not UTF-8 text") from None
        except ValueError as exc:
            if path.suffix.lower() == ".json":
                raise PushError(f"--transcript {path} is not valid JSON: {exc}") from None
            file.seek(0)
            is_json = False
    if is_json:
        if isinstance(document, list):
            document = {"messages": document}
        if not isinstance(document, dict):
            raise PushError(f"--transcript {path} must hold a JSON object (the transcript) "
                            "or a list (its messages)")
        merged = apply_options(args, {**document, **base_metadata(args)}, recording=False)
        body = json.dumps(merged, ensure_ascii=False).encode()
        return Upload("/v1/transcripts", "chat", _external_id(merged), body,
                      {"Content-Type": "application/json"})
    metadata = apply_options(args, base_metadata(args), recording=False)
    headers = {METADATA_HEADER: json.dumps(metadata, separators=(",", ":"))}
    return Upload("/v1/transcripts", "chat", _external_id(metadata),
                  _file_payload(file, "text/plain; charset=utf-8"), headers)


# -- the answer ------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    reason: str
    body: bytes
    retry_after: str | None = None

    def problem(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def title(self) -> str:
        """The problem document's title, else the HTTP reason phrase."""
        title = (self.problem() or {}).get("title")
        return title if isinstance(title, str) and title else self.reason

    def detail(self) -> str:
        """The problem document's detail, else the text of the body (tags dropped, whitespace
        folded, cut to 200 characters): a proxy's HTML error page still reads as words."""
        detail = (self.problem() or {}).get("detail")
        if isinstance(detail, str):
            return detail
        text = self.body.decode("utf-8", errors="replace")
        text = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", text, flags=re.S | re.I)
        text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
        return text[:QUOTED_TEXT] + "..." if len(text) > QUOTED_TEXT else text

    def summary(self) -> str:
        """``STATUS TITLE: DETAIL`` (or without the detail when there is none)."""
        detail = self.detail()
        return f"{self.status} {self.title()}" + (f": {detail}" if detail else "")

    def field_lines(self) -> str:
        problem = self.problem() or {}
        errors = problem.get("errors")
        if not isinstance(errors, list):
            return ""
        return "".join(f"\n  {e.get('field')}: {e.get('message')}"
                       for e in errors if isinstance(e, dict))


def report(answer: Answer, upload: Upload) -> int:
    """Tell the user what the answer means; return the exit code."""
    if answer.status in {200, 201}:
        return _stored(answer, upload)
    code, message = _refusal(answer, upload)
    _say(message)
    return code


def _stored(answer: Answer, upload: Upload) -> int:
    """Stored now (201) or before (200): the item id alone on stdout, for scripts."""
    item = answer.problem() or {}
    item_id = item.get("id")
    if not isinstance(item_id, str):
        _say(f"not archived? the archive answered {answer.summary()}")
        return EXIT_REFUSED
    sys.stdout.write(f"{item_id}\n")
    eid = item.get("external_id", upload.external_id)
    if answer.status == 201:
        _say(f"archived {upload.kind} {eid} as item {item_id}")
    else:
        _say(f"{upload.kind} {eid} was already archived as item {item_id} (nothing changed)")
    return EXIT_OK


def _refusal(answer: Answer, upload: Upload) -> tuple[int, str]:
    """The exit code and message for an answer that is not success."""
    status = answer.status
    if status == 409 and "different content" in answer.detail():
        what = "recording" if upload.kind == "call" else "transcript"
        message = (f"not archived: a different {what} is already archived under external id "
                   f"{upload.external_id} (409)")
    elif status in REFUSED_INPUT:
        detail = answer.detail()
        message = (f"not archived ({status} {answer.title()})" + (f": {detail}" if detail else "")
                   + answer.field_lines())
    elif status == 401:
        message = f"the archive did not accept the token (401): {answer.detail()}"
    elif status == 403:
        message = f"the token's role may not push to the archive (403): {answer.detail()}"
    elif status in RETRY_LATER:
        after = f" (it asks to wait {answer.retry_after} s)" if answer.retry_after else ""
        return EXIT_TEMPFAIL, ("not archived now, try again later: the archive answered "
                               f"{answer.summary()}{after}")
    else:
        message = f"not archived: the archive answered {answer.summary()}"
    return EXIT_REFUSED, message


# -- sending ---------------------------------------------------------------------------------

async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) >= MAX_ANSWER:
            break
    return bytes(body[:MAX_ANSWER])


def _connection_problem(exc: BaseException, url: URL, wait: float) -> str:
    """Why the archive could not be reached, in words (no exception reprs)."""
    if isinstance(exc, TimeoutError):
        return f"the archive at {url} did not answer within {wait:g} seconds"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"the archive at {url} closed the connection before answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        why = ("connection refused" if isinstance(error, ConnectionRefusedError)
               else error.strerror or str(error) or type(error).__name__)
        return f"cannot connect to the archive at {url}: {why}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"the connection to the archive at {url} failed: {exc.strerror}"
    return f"the connection to the archive at {url} failed ({type(exc).__name__})"


async def send(base: URL, token: str, upload: Upload, wait: float) -> Answer:
    """Make the request; connection failures and timeouts become ``EX_TEMPFAIL``."""
    url = endpoint(base, upload.path)
    headers = {**upload.headers, "Authorization": f"Bearer {token}",
               "Accept": "application/json, application/problem+json"}
    limits = aiohttp.ClientTimeout(total=None, sock_connect=wait, sock_read=wait)
    try:
        async with aiohttp.ClientSession(timeout=limits) as http, http.post(
                url, data=upload.data, headers=headers) as response:
            return Answer(response.status, response.reason or "", await _read_capped(response),
                          response.headers.get("Retry-After"))
    except aiohttp.InvalidURL:
        raise PushError(f"{base} is not a URL the archive can be reached at") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reason = _connection_problem(exc, base, wait)
        raise PushError(f"not archived now, try again later: {reason}", EXIT_TEMPFAIL) from None


async def run_push(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """``archive push``: the exit code (0 archived, 1 refused, 2 bad arguments, 75 retry)."""
    env = os.environ if environ is None else environ
    try:
        return await _push(args, env)
    except PushError as exc:
        _say(exc.message)
        return exc.code


async def _push(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.file is not None and args.transcript is not None:
        raise PushError("give a recording FILE or --transcript FILE, not both")
    if args.file is None and args.transcript is None:
        raise PushError("nothing to push: give a recording FILE, or --transcript FILE")
    if not args.timeout > 0:
        raise PushError(f"--timeout {args.timeout:g} must be a positive number of seconds")
    base = archive_url(args, env)
    token = read_token(args, env)
    if args.file is not None:
        with _open(args.file, "recording") as file:
            upload = recording_upload(args, file)
            return report(await send(base, token, upload, args.timeout), upload)
    with _open(args.transcript, "--transcript") as file:
        upload = transcript_upload(args, file)
        return report(await send(base, token, upload, args.timeout), upload)
