"""Hardening of the staff pages and of secrets: every HTML page carries a strict
Content-Security-Policy, nosniff and a referrer policy; no template has inline script, inline
style or event-handler attributes (which that policy would block anyway); tokens and session
cookies reach the database only as their SHA-256; failed sign-ins are rate limited per client
address and per username (web/ratelimit.py). Runs on SQLite and PostgreSQL."""

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientSession, CookieJar, TCPConnector, web
from pytest_aiohttp import AiohttpClient
from sqlalchemy import event, text

from archive.clock import ManualClock
from archive.models import Role
from archive.settings import Settings
from archive.tokens import Principal, authenticate, create_token, ensure_tenant, hash_secret
from archive.users import create_user, start_session
from tests.conftest import START, Client
from web.app import create_app
from web.keys import DATABASE
from web.pages import CSP, PAGES, TEMPLATES
from web.pages.session import COOKIE
from web.ratelimit import MAX_FAILURES, SIGNIN_LIMITER, WINDOW, SignInLimiter

TENANT = "camden"
PASSWORD = "correct horse battery staple 42"
PARAM = re.compile(r"{(\w+)}")


def _app(settings: Settings, clock: ManualClock) -> web.Application:
    return create_app(settings, clock=clock)


@pytest.fixture
async def pages(settings: Settings, clock: ManualClock, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(_app(settings, clock))


async def _token(client: Client, role: Role) -> tuple[Principal, str]:
    async with client.app[DATABASE].session() as session:
        await ensure_tenant(session, TENANT, START)
        token, secret = await create_token(session, tenant=TENANT, role=role, now=START)
        await session.commit()
    return Principal(token.id, TENANT, role), secret


async def _signed_in(client: Client, role: Role) -> dict[str, str]:
    who, _ = await _token(client, role)
    async with client.app[DATABASE].session() as session:
        secret, _ = await start_session(session, who, START)
        await session.commit()
    return {"Cookie": f"{COOKIE}={secret}"}


# Security headers.

def _directives(policy: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            found[words[0].lower()] = words[1:]
    return found


def check_headers(headers: Any, where: str) -> None:
    policy = _directives(headers.get("Content-Security-Policy", ""))
    assert policy, f"{where}: no Content-Security-Policy"
    for directive in ("script-src", "style-src", "default-src"):
        sources = policy.get(directive, policy.get("default-src", []))
        assert sources, f"{where}: no {directive}"
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"} & {
            s.lower() for s in sources}, f"{where}: {directive} {sources}"
    assert policy.get("frame-ancestors") == ["'none'"], where
    assert policy.get("base-uri") == ["'none'"], where
    assert policy.get("form-action") == ["'self'"], where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Referrer-Policy") in {"no-referrer", "same-origin",
                                              "strict-origin"}, where


def test_the_policy_allows_no_inline_script_or_style() -> None:
    check_headers({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "same-origin"}, "web.pages.CSP")


async def test_every_html_page_carries_the_security_headers(pages: Client) -> None:
    """Every page a signed-in administrator can open (made-up ids give the HTML error page),
    the sign-in form, a failed sign-in and an unguarded 404 page."""
    admin = await _signed_in(pages, Role.ADMIN)
    made_up = {"item_id": str(uuid.uuid4()), "hold_id": str(uuid.uuid4()),
               "export_id": str(uuid.uuid4()), "sample_id": str(uuid.uuid4())}
    seen = 0
    for method, path, _, name in PAGES:
        if method != "GET":
            continue
        url = PARAM.sub(lambda m: made_up[m.group(1)], path)
        r = await pages.get(url, headers=admin, allow_redirects=False)
        await r.read()
        assert r.status < 500, name
        if r.content_type == "text/html":
            check_headers(r.headers, f"{name} ({r.status})")
            seen += 1
    r = await pages.post("/signin", data={"signin_token": "x", "token": "arc_x"})
    assert r.status == 400 and r.content_type == "text/html"
    check_headers(r.headers, "failed sign-in")
    seen += 1
    assert seen >= 15, seen


def _templates() -> Iterator[tuple[str, str]]:
    for path in sorted(TEMPLATES.glob("*.html")):
        yield path.name, path.read_text()


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    names = []
    for name, source in _templates():
        names.append(name)
        for match in re.finditer(r"<script\b([^>]*)>(.*?)</script\s*>", source, re.S | re.I):
            assert "src=" in match.group(1), f"{name}: a <script> without src"
            assert not match.group(2).strip(), f"{name}: an inline script body"
        assert not re.search(r"<style\b", source, re.I), f"{name}: a <style> block"
        assert not re.search(r"\sstyle\s*=", source, re.I), f"{name}: a style= attribute"
        assert not re.search(r"\son[a-z]+\s*=", source, re.I), f"{name}: an on*= handler"
        assert "javascript:" not in source.lower(), f"{name}: a javascript: URL"
    assert "base.html" in names and len(names) > 10


# Tokens and session cookies.

async def test_tokens_and_sessions_reach_the_database_only_as_their_sha256(
        pages: Client) -> None:
    """A token is stored as its SHA-256 and looked up by the SHA-256 of what is presented:
    the database (whose comparison is not constant-time) never sees a secret or a guess, only
    digests, so a timing difference tells an attacker about the hash of their guess, which
    they cannot steer toward the hash of a real token."""
    db = pages.app[DATABASE]
    who, secret = await _token(pages, Role.COMPLAINTS)
    async with db.reader() as session:
        stored = (await session.exec(text(  # type: ignore[call-overload]
            "SELECT secret_hash FROM tokens WHERE tenant = :t"), params={"t": TENANT})).all()
    assert [row[0] for row in stored] == [hashlib.sha256(secret.encode()).hexdigest()]

    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append(f"{statement} {parameters!r}")

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        near_miss = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        async with db.reader() as session:
            assert await authenticate(session, near_miss, START) is None
            assert await authenticate(session, secret, START) == who
        r = await pages.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        assert r.status == 200
        cookie = await _signed_in(pages, Role.ADMIN)
        r = await pages.get("/account", headers=cookie, allow_redirects=False)
        assert r.status == 200
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    log = "\n".join(sent)
    cookie_secret = cookie["Cookie"].split("=", 1)[1]
    for value in (secret, near_miss, cookie_secret):
        assert value not in log
    for value in (secret, near_miss, cookie_secret):
        assert hash_secret(value) in log


# The sign-in rate limit.

def test_the_limiter_counts_failures_per_key_within_the_window() -> None:
    limiter = SignInLimiter()
    here, there = limiter.keys("192.0.2.1", "Alice "), limiter.keys("192.0.2.2")
    assert here == ["addr:192.0.2.1", "user:alice"]
    for n in range(MAX_FAILURES):
        assert limiter.retry_after(here, START + timedelta(seconds=n)) is None
        limiter.failed(here, START + timedelta(seconds=n))
    assert limiter.retry_after(here, START + timedelta(seconds=10)) == 15 * 60 - 10
    assert limiter.retry_after(limiter.keys("192.0.2.9", "alice"), START) is not None
    assert limiter.retry_after(there, START) is None
    limiter.failed(there, START)
    limiter.succeeded(there)  # clears only its own address
    assert limiter.retry_after(here, START + timedelta(seconds=10)) is not None
    # The oldest failure leaves the window: one more try.
    assert limiter.retry_after(here, START + WINDOW) is None
    assert limiter.retry_after(here, START + WINDOW + timedelta(seconds=1)) is None


def test_the_limiter_stays_bounded_in_memory() -> None:
    limiter = SignInLimiter(max_keys=100)
    for n in range(1000):
        limiter.failed(limiter.keys(f"198.51.100.{n}"), START)
    assert len(limiter) == 100


def _form_token(page: str) -> str:
    found = re.search(r'name="signin_token" value="([^"]+)"', page)
    assert found, "no sign-in form"
    return found.group(1)


async def _try(http: ClientSession, base: str, **fields: str) -> tuple[int, str, Any]:
    """One sign-in from a browser that is not signed in (a success signs it in)."""
    http.cookie_jar.clear()
    form = await http.get(f"{base}/signin")
    token = _form_token(await form.text())
    r = await http.post(f"{base}/signin", data={"signin_token": token, **fields},
                        allow_redirects=False)
    return r.status, await r.text(), r.headers


async def test_failed_sign_ins_are_limited_per_address_and_username(
        pages: Client, clock: ManualClock) -> None:
    _, token = await _token(pages, Role.COMPLAINTS)
    async with pages.app[DATABASE].session() as session:
        await create_user(session, tenant=TENANT, username="alice", role=Role.COMPLAINTS,
                          password=PASSWORD, now=START)
        await create_user(session, tenant=TENANT, username="bob", role=Role.COMPLAINTS,
                          password=PASSWORD, now=START)
        await session.commit()
    base = str(pages.make_url("")).rstrip("/")
    # Two real client addresses: the server listens on 127.0.0.1 and sees each as remote.
    first = ClientSession(cookie_jar=CookieJar(unsafe=True),
                          connector=TCPConnector(local_addr=("127.0.0.1", 0)))
    second = ClientSession(cookie_jar=CookieJar(unsafe=True),
                           connector=TCPConnector(local_addr=("127.0.0.2", 0)))
    async with first, second:
        for _ in range(MAX_FAILURES):
            status, _, _ = await _try(first, base, username="alice", password="wrong")
            assert status == 401
        status, page, headers = await _try(first, base, username="alice", password=PASSWORD)
        assert status == 429, "the right password is not even checked while blocked"
        assert "Too many failed sign-ins" in page and "15 minutes" in page
        assert int(headers["Retry-After"]) == 15 * 60
        check_headers(headers, "the 429 page")
        # The same address with a token, and with another username: still blocked.
        assert (await _try(first, base, token=token))[0] == 429
        assert (await _try(first, base, username="bob", password=PASSWORD))[0] == 429
        # Another address: alice is blocked (her username is), bob is not, and a token works.
        assert (await _try(second, base, username="alice", password=PASSWORD))[0] == 429
        assert (await _try(second, base, username="bob", password=PASSWORD))[0] == 302
        assert (await _try(second, base, token=token))[0] == 302
        # That success did not clear the first address's failures.
        assert (await _try(first, base, token=token))[0] == 429
        clock.advance(timedelta(minutes=14))
        status, _, headers = await _try(first, base, token=token)
        assert status == 429 and int(headers["Retry-After"]) == 60
        clock.advance(timedelta(minutes=1))
        assert (await _try(first, base, username="alice", password=PASSWORD))[0] == 302


async def test_token_sign_ins_are_limited_per_address(pages: Client) -> None:
    _, token = await _token(pages, Role.COMPLAINTS)
    for _ in range(MAX_FAILURES):
        form = await pages.get("/signin")
        r = await pages.post("/signin", data={"signin_token": _form_token(await form.text()),
                                              "token": "arc_" + "x" * 43})
        assert r.status == 401
    form = await pages.get("/signin")
    r = await pages.post("/signin", data={"signin_token": _form_token(await form.text()),
                                          "token": token}, allow_redirects=False)
    assert r.status == 429 and "Retry-After" in r.headers


def test_create_app_gives_the_app_its_sign_in_limiter(settings: Settings) -> None:
    assert SIGNIN_LIMITER in create_app(settings)


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarded_for_counts_only_behind_a_trusted_proxy(
        settings: Settings, clock: ManualClock, aiohttp_client: AiohttpClient,
        trusted: bool) -> None:
    """Behind the operator's proxy (``trust_forwarded_for``) each client is counted by the
    address the proxy adds last, so one person's typos do not lock out everyone behind it;
    without the setting the header is ignored, so a client cannot claim a fresh address."""
    app = _app(replace(settings, trust_forwarded_for=trusted), clock)
    pages = await aiohttp_client(app)
    base = str(pages.make_url("")).rstrip("/")
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        for n in range(MAX_FAILURES):
            # The client writes an address of its own first; the proxy appends the real one.
            http.headers["X-Forwarded-For"] = f"10.9.9.{n}, 192.0.2.10"
            assert (await _try(http, base, token="arc_wrong"))[0] == 401
        http.headers["X-Forwarded-For"] = "192.0.2.11"  # another client behind the proxy
        other = (await _try(http, base, token="arc_wrong"))[0]
        http.headers["X-Forwarded-For"] = "10.9.9.99, 192.0.2.10"  # the first one again
        again = (await _try(http, base, token="arc_wrong"))[0]
    if trusted:
        assert (other, again) == (401, 429)
    else:  # the header is ignored: every attempt is the same TCP peer
        assert (other, again) == (429, 429)
