"""The authorization matrix: every route of the API (``web.routes.ENDPOINTS``) and every staff
page (``web.pages.PAGES``) x every role x own/other tenant x no, malformed, expired or revoked
credentials, checked against the one table that says who may do what.

- No credentials, or bad ones -> 401 on the API, a redirect to /signin on a page.
- A role the route table does not list -> 403.
- A role it lists -> neither 401 nor 403 (made-up ids and empty bodies give 404 or 400), and
  never a 500.
- Another tenant's id -> the same answer as an id that does not exist (never 200 or 403,
  which would tell that it exists), and the other tenant's data is left as it was.
- Public routes (``roles`` None) answer without a token.

The routes are iterated from the tables, not listed here: a new route is covered as soon as it
is added, and one with a path parameter this module does not know fails
``test_every_path_parameter_is_known``. Runs on SQLite and PostgreSQL (``client`` fixture).
"""

import inspect
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from archive.models import Channel, Role
from archive.service import Actor
from archive.tokens import Principal, create_token, ensure_tenant, revoke
from archive.users import start_session
from storage.base import iter_bytes
from tests.conftest import START, Client
from web.endpoint import Endpoint
from web.keys import ARCHIVE, DATABASE
from web.pages import PAGES
from web.pages.render import MENU
from web.pages.session import COOKIE, PageHandler
from web.routes import ENDPOINTS

OWN, OTHER = "camden", "barnet"
PARAM = re.compile(r"{(\w+)}")
FORM = {"name": "Council tax calls", "criteria": [
    {"key": "greeting", "label": "Greets and identifies", "weight": 1, "max_score": 5}]}
THEIR_FORM = "Barnet housing calls"  # a form of the other tenant only
REASON = "Authorization matrix: checking that tenants are kept apart"

# Path parameters that name an object looked up within the caller's tenant (its kind), and
# those that do not (their made-up value): an external id is the caller's own name space (a
# PUT with another tenant's external id makes the caller's own item), a form version is
# looked up under the form's name.
ID_PARAMS = {"item_id": "item", "hold_id": "hold", "export_id": "export",
             "sample_id": "sample", "name": "form"}
PLAIN_PARAMS = {"external_id": "matrix-upload", "version": "1"}

# Bodies that get a change past its validation to the lookup of the id in the path, so that
# the other-tenant check reaches it (a route without one is sent an empty body; the check
# still compares the answer with a missing id's).
BODIES: dict[str, Any] = {
    "rectify_item": {"reason": REASON, "fields": {"agent_id": "x1"}},
    "erase_item": {"reason": REASON},
    "anonymise_item": {"reason": REASON},
    "post_hold_items": {"item_ids": []},  # filled with the other tenant's item
    "post_release": {"reason": REASON},
    "post_review": {"form": FORM["name"], "scores": {"greeting": 3}},
    "put_my_review": {"form": FORM["name"], "scores": {"greeting": 3}},
}

# Credentials that must never pass: (label, headers).
BAD_HEADERS: list[tuple[str, dict[str, str]]] = [
    ("no token", {}),
    ("empty bearer", {"Authorization": "Bearer "}),
    ("basic scheme", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
    ("unknown token", {"Authorization": "Bearer arc_" + "A" * 43}),
    ("no prefix", {"Authorization": "Bearer " + "A" * 47}),
    ("oversized", {"Authorization": "Bearer arc_" + "A" * 5000}),
    ("bogus session cookie", {"Cookie": f"{COOKIE}=not-a-session"}),
]


@dataclass
class World:
    """Tokens of every role in both tenants, bad tokens, and one object of each kind in the
    other tenant (with made-up ids of the same kinds)."""

    tokens: dict[tuple[str, Role], str] = field(default_factory=dict)
    principals: dict[tuple[str, Role], Principal] = field(default_factory=dict)
    expired: str = ""
    revoked: str = ""
    revoked_principal: Principal | None = None
    other: dict[str, str] = field(default_factory=dict)  # kind -> the other tenant's id
    missing: dict[str, str] = field(default_factory=dict)  # kind -> an id nobody has

    def bearer(self, role: Role, tenant: str = OWN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[tenant, role]}"}


def path_of(path: str, values: Mapping[str, str]) -> str:
    return PARAM.sub(lambda m: values[m.group(1)], path)


def params_of(path: str) -> list[str]:
    return PARAM.findall(path)


def values_for(ids: Mapping[str, str]) -> dict[str, str]:
    return {**PLAIN_PARAMS, **{param: ids[kind] for param, kind in ID_PARAMS.items()}}


def page_roles(handler: PageHandler) -> tuple[bool, frozenset[Role] | None]:
    """Whether a page is guarded by ``@page`` and the roles its guard allows (``None``: any
    signed-in role). Read from the guard's closure (web/pages/session.py ``page``)."""
    if not hasattr(handler, "__wrapped__"):
        return False, None
    allowed = inspect.getclosurevars(handler).nonlocals["allowed"]
    assert allowed is None or isinstance(allowed, frozenset), handler
    return True, allowed


async def answer(client: Client, method: str, path: str, headers: Mapping[str, str], *,
                 body: Any = None, data: Mapping[str, str] | None = None
                 ) -> tuple[int, dict[str, Any], str]:
    """Status, problem body (``{}`` if not JSON) and raw text of one request, redirects not
    followed and no cookie of an earlier answer sent."""
    client.session.cookie_jar.clear()
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs["json"] = body
    if data is not None:
        kwargs["data"] = data
    r = await client.request(method, path, headers=dict(headers), allow_redirects=False,
                             **kwargs)
    text = (await r.read()).decode(errors="replace")
    try:
        problem = json.loads(text)
    except ValueError:
        problem = {}
    if r.status in {301, 302, 303}:
        problem = {"location": r.headers.get("Location", "")}
    return r.status, problem if isinstance(problem, dict) else {}, text


async def seed(client: Client) -> World:
    world = World()
    db, archive = client.app[DATABASE], client.app[ARCHIVE]
    async with db.session() as session:
        for tenant in (OWN, OTHER):
            await ensure_tenant(session, tenant, START)
            for role in Role:
                token, secret = await create_token(session, tenant=tenant, role=role, now=START)
                world.tokens[tenant, role] = secret
                world.principals[tenant, role] = Principal(token.id, tenant, role)
        _, world.expired = await create_token(
            session, tenant=OWN, role=Role.ADMIN, now=START - timedelta(days=2),
            expires_at=START - timedelta(seconds=1))
        gone, world.revoked = await create_token(session, tenant=OWN, role=Role.ADMIN,
                                                 now=START)
        await revoke(session, gone.id, START)
        world.revoked_principal = Principal(gone.id, OWN, Role.ADMIN)
        await session.commit()

    item = await archive.put(tenant=OTHER, channel=Channel.CALL, external_id="other-call-1",
                             started_at=START - timedelta(days=1), media_type="audio/wav",
                             chunks=iter_bytes(b"RIFF...."), actor=Actor("t", "ingest"),
                             fields={"agent_id": "a1", "caller_number": "+447700900123"})
    admin, quality = world.bearer(Role.ADMIN, OTHER), world.bearer(Role.QUALITY, OTHER)

    async def made(method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        r = await client.request(method, path, headers=headers, json=body)
        got = await r.json()
        assert r.status == 201, (path, got)
        return got

    hold = await made("POST", "/v1/holds", admin, {
        "case_ref": "OTHER-1", "reason": REASON, "item_ids": [str(item.id)]})
    export = await made("POST", "/v1/exports", admin, {
        "item_ids": [str(item.id)], "purpose": "Ombudsman case"})
    sample = await made("POST", "/v1/samples", quality, {
        "from": (START - timedelta(days=7)).isoformat(), "to": START.isoformat(), "size": 1})
    await made("POST", "/v1/forms", admin, FORM)
    await made("POST", "/v1/forms", admin, {**FORM, "name": THEIR_FORM})  # theirs alone
    await made("POST", "/v1/forms", world.bearer(Role.ADMIN), FORM)  # so bodies are valid
    await made("POST", f"/v1/items/{item.id}/reviews", quality,
               {"form": FORM["name"], "scores": {"greeting": 5}})
    world.other = {"item": str(item.id), "hold": hold["id"], "export": export["id"],
                   "sample": sample["id"], "form": THEIR_FORM}
    world.missing = {"item": str(uuid.uuid4()), "hold": str(uuid.uuid4()),
                     "export": str(uuid.uuid4()), "sample": str(uuid.uuid4()),
                     "form": "No such form"}
    return world


def protected() -> list[tuple[Endpoint, frozenset[Role]]]:
    return [(e, e.roles) for e in ENDPOINTS if e.roles is not None]


def test_every_path_parameter_is_known() -> None:
    """A new route whose path names something this module cannot fill in fails here, so it
    is never silently left out of the matrix."""
    known = set(ID_PARAMS) | set(PLAIN_PARAMS)
    unknown = {(path, p) for path in [e.path for e in ENDPOINTS] + [p[1] for p in PAGES]
               for p in params_of(path) if p not in known}
    assert not unknown, f"add these parameters to ID_PARAMS or PLAIN_PARAMS: {unknown}"
    assert set(BODIES) <= {e.name for e in ENDPOINTS}, "BODIES names a route that is gone"


async def test_bad_credentials_get_401_on_every_protected_route(client: Client) -> None:
    world = await seed(client)
    bad = [*BAD_HEADERS, ("expired token", {"Authorization": f"Bearer {world.expired}"}),
           ("revoked token", {"Authorization": f"Bearer {world.revoked}"}),
           ("token in lower case scheme, revoked", {"Authorization": f"bearer {world.revoked}"})]
    values = values_for(world.missing)
    wrong: list[tuple[Any, ...]] = []
    for e in ENDPOINTS:
        for label, headers in bad:
            status, problem, _ = await answer(client, e.method, path_of(e.path, values), headers)
            if e.roles is None:
                if status >= 400:
                    wrong.append((e.name, label, status, "public route refused"))
            elif status != 401 or problem.get("status") != 401:
                wrong.append((e.name, label, status, problem.get("detail")))
    assert not wrong, wrong


async def test_public_routes_answer_without_a_token(client: Client) -> None:
    for e in ENDPOINTS:
        if e.roles is None:
            status, _, _ = await answer(client, e.method, e.path, {})
            assert status == 200, e.name


async def test_each_role_may_do_exactly_what_the_route_table_says(client: Client) -> None:
    world = await seed(client)
    values = values_for(world.missing)
    wrong: list[tuple[Any, ...]] = []
    for e, roles in protected():
        for role in Role:
            status, problem, _ = await answer(client, e.method, path_of(e.path, values),
                                              world.bearer(role))
            if role not in roles and status != 403:
                wrong.append((e.name, role.value, status, "expected 403"))
            elif role in roles and (status in {401, 403} or status >= 500):
                wrong.append((e.name, role.value, status, problem.get("detail")))
    assert not wrong, wrong


def _comparable(problem: Mapping[str, Any], ids: Mapping[str, str]) -> tuple[Any, ...]:
    detail = str(problem.get("detail", ""))
    for value in ids.values():
        detail = detail.replace(value, "<id>")
    fields = sorted(str(e.get("field")) for e in problem.get("errors", []))
    return problem.get("status"), problem.get("title"), detail, fields


async def test_another_tenants_ids_answer_exactly_like_missing_ones(client: Client) -> None:
    world = await seed(client)
    other, missing = values_for(world.other), values_for(world.missing)
    wrong: list[tuple[Any, ...]] = []
    checked = 0
    for e, roles in protected():
        if not set(params_of(e.path)) & set(ID_PARAMS):
            continue
        for role in sorted(roles):
            answers = []
            for ids, values in ((world.other, other), (world.missing, missing)):
                body = BODIES.get(e.name)
                if e.name == "post_hold_items":
                    body = {"item_ids": [ids["item"]]}
                status, problem, _ = await answer(client, e.method, path_of(e.path, values),
                                                  world.bearer(role), body=body)
                answers.append((status, _comparable(problem, ids)))
            checked += 1
            (theirs, their_problem), (nobody, nobody_problem) = answers
            if theirs != nobody or their_problem != nobody_problem:
                wrong.append((e.name, role.value, answers))
            elif theirs < 400 or theirs == 403:
                wrong.append((e.name, role.value, theirs, "another tenant's id was served"))
            elif e.method == "GET" and theirs != 404:
                wrong.append((e.name, role.value, theirs, "expected 404"))
    assert checked > 20 and not wrong, wrong
    # Nothing of the other tenant changed under all those calls.
    admin = world.bearer(Role.ADMIN, OTHER)
    item = await (await client.get(f"/v1/items/{world.other['item']}", headers=admin)).json()
    assert item["status"] == "active" and item["agent_id"] == "a1", item
    hold = await (await client.get(f"/v1/holds/{world.other['hold']}", headers=admin)).json()
    assert hold.get("released_at") is None, hold
    r = await client.get(f"/v1/items/{world.other['item']}/reviews",
                         headers=world.bearer(Role.QUALITY, OTHER))
    assert len((await r.json())["reviews"]) == 1


async def test_lists_never_show_another_tenants_objects(client: Client) -> None:
    world = await seed(client)
    theirs = [v for k, v in world.other.items() if k != "form"] + ["OTHER-1", "other-call-1"]
    wrong: list[tuple[Any, ...]] = []
    for e, roles in protected():
        if e.method != "GET" or params_of(e.path):
            continue
        for role in sorted(roles):
            status, _, text = await answer(client, e.method, e.path, world.bearer(role))
            leaked = [v for v in theirs if v in text]
            if status >= 500 or leaked:
                wrong.append((e.name, role.value, status, leaked))
    assert not wrong, wrong


# The staff pages.

async def _session_cookie(client: Client, who: Principal, *, at: Any = START
                          ) -> tuple[dict[str, str], str]:
    async with client.app[DATABASE].session() as session:
        secret, row = await start_session(session, who, at)
        await session.commit()
    return {"Cookie": f"{COOKIE}={secret}"}, row.csrf


def _to_signin(status: int, problem: Mapping[str, Any]) -> bool:
    return status == 302 and str(problem.get("location", "")).startswith("/signin?next=")


def test_every_page_is_guarded_or_known_to_be_public() -> None:
    public = {name for _, _, handler, name in PAGES if not page_roles(handler)[0]}
    assert public == {"page_signin_form", "page_signin"}, public


def test_the_menu_offers_each_role_the_pages_its_guard_allows() -> None:
    gets = {path: handler for method, path, handler, _ in PAGES if method == "GET"}
    for label, path, roles in MENU:
        assert page_roles(gets[path]) == (True, roles), label


async def test_each_role_opens_exactly_the_pages_its_guard_allows(client: Client) -> None:
    world = await seed(client)
    values = values_for(world.missing)
    assert world.revoked_principal is not None
    expired = (await _session_cookie(client, world.principals[OWN, Role.ADMIN],
                                     at=START - timedelta(hours=9)))[0]
    revoked = (await _session_cookie(client, world.revoked_principal))[0]
    bad = [*BAD_HEADERS, ("expired session", expired), ("revoked token's session", revoked)]
    wrong: list[tuple[Any, ...]] = []
    for method, path, handler, name in PAGES:
        guarded, roles = page_roles(handler)
        url = path_of(path, values)
        if not guarded:
            status, _, _ = await answer(client, method, url, {})
            if status >= 500 or status in {401, 403}:
                wrong.append((name, "public", status))
            continue
        for label, headers in bad:
            status, problem, _ = await answer(client, method, url, headers)
            if not _to_signin(status, problem):
                wrong.append((name, label, status, "expected a redirect to /signin"))
        for role in Role:
            # A fresh session for each: signing out ends the one it is given.
            headers, csrf = await _session_cookie(client, world.principals[OWN, role])
            data = {"csrf_token": csrf} if method == "POST" else None
            status, problem, _ = await answer(client, method, url, headers, data=data)
            allowed = roles is None or role in roles
            if not allowed and status != 403:
                wrong.append((name, role.value, status, "expected 403"))
            elif allowed and (status in {401, 403} or status >= 500
                              or _to_signin(status, problem)):
                wrong.append((name, role.value, status, problem))
    assert not wrong, wrong


async def test_pages_answer_another_tenants_ids_like_missing_ones(client: Client) -> None:
    world = await seed(client)
    other, missing = values_for(world.other), values_for(world.missing)
    wrong: list[tuple[Any, ...]] = []
    for method, path, handler, name in PAGES:
        guarded, roles = page_roles(handler)
        if not guarded or not set(params_of(path)) & set(ID_PARAMS):
            continue
        for role in sorted(roles or frozenset(Role)):
            statuses = []
            for values in (other, missing):
                headers, csrf = await _session_cookie(client, world.principals[OWN, role])
                data = {"csrf_token": csrf, "reason": REASON} if method == "POST" else None
                status, _, text = await answer(client, method, path_of(path, values),
                                               headers, data=data)
                statuses.append(status)
                if "OTHER-1" in text or "other-call-1" in text:
                    wrong.append((name, role.value, "shows the other tenant's data"))
            if statuses[0] != statuses[1] or statuses[0] < 400 or statuses[0] == 403:
                wrong.append((name, role.value, statuses))
    assert not wrong, wrong
