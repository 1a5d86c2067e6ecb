"""The quality pages: samples of calls to review, a call reviewed with the form beside its
player, and the figures per agent with a chart.

They call the domain code of the API (``archive.sampling``, ``archive.reviews``, the API's own
call check) and leave the same audit events: ``sample.draw``, ``sample.list``, ``sample.view``,
``item.view``, ``review.history``, ``review.create``, ``review.edit`` and ``quality.summary``.
Quality monitors review how a call was handled, not who made it: these pages show no caller
number, name, email or postcode, to any role.
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from archive import reviews, sampling
from archive.errors import ArchiveError, BadRequestError, NotFoundError
from archive.ids import parse_uuid
from archive.models import Form, Item, Role
from archive.search import parse_query
from archive.service import Actor
from web.keys import CLOCK, DATABASE, principal
from web.pages.render import MONITORS, error_page, form_value, render
from web.pages.session import PageRoute, page
from web.views.items import record
from web.views.quality import review_call, summarise

_IN_CHUNK = 500
SUMMARY_DAYS = 30

# -- helpers -----------------------------------------------------------------------------------


def _number(text: str) -> Any:
    """A typed number as JSON would carry it; anything else is passed on as typed, for the
    domain's check to name."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _errors(exc: ArchiveError, where: Mapping[str, tuple[str, str]]) -> list[dict[str, str]]:
    """An error's fields: ``id`` of the input (without the ``f-`` prefix; "" for none), the
    field's ``label`` and the ``message`` for the message beside the input, and the error
    summary's ``text`` and ``href``."""
    if not exc.errors:
        return [{"id": "", "label": "", "message": exc.detail, "text": exc.detail, "href": ""}]
    listed = []
    for e in exc.errors:
        base = e.field.split("[")[0]
        input_id, label = where.get(e.field) or where.get(base) or ("", e.field)
        listed.append({"id": input_id, "label": label, "message": e.message,
                       "text": f"{label}: {e.message}" if label else e.message,
                       "href": f"#f-{input_id}" if input_id else ""})
    return listed


def _today(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


# -- samples -----------------------------------------------------------------------------------

DRAW_FIELDS = ("from", "to", "count", "count_by", "service", "agent_ids", "min_duration",
               "seed")
DRAW_INPUTS: dict[str, tuple[str, str]] = {
    "from": ("from", "From"), "to": ("to", "Before"), "size": ("count", "How many calls"),
    "per_agent": ("count", "How many calls"), "service": ("service", "Service"),
    "agent_ids": ("agent_ids", "Agents"), "min_duration": ("min_duration", "Shortest call"),
    "seed": ("seed", "Seed"), "exclude_reviewed": ("exclude_reviewed", "Leave out"),
    "exclude_held": ("exclude_reviewed", "Leave out"),
}


def _draw_defaults(request: web.Request) -> dict[str, Any]:
    today = _today(request).date()
    return {"from": (today - timedelta(days=SUMMARY_DAYS)).isoformat(),
            "to": (today + timedelta(days=1)).isoformat(), "count": "", "count_by": "per_agent",
            "service": "", "agent_ids": "", "min_duration": "", "seed": "",
            "exclude_reviewed": True, "exclude_held": True}


def _draw_inputs(values: Mapping[str, Any]) -> dict[str, Any]:
    """The page's draw form as the JSON inputs of ``sampling.parse_inputs``."""
    raw: dict[str, Any] = {"from": values["from"], "to": values["to"],
                           "exclude_reviewed": values["exclude_reviewed"],
                           "exclude_held": values["exclude_held"]}
    if values["count"]:
        raw["size" if values["count_by"] == "size" else "per_agent"] = _number(values["count"])
    if values["service"]:
        raw["service"] = values["service"]
    agents = [a.strip() for a in values["agent_ids"].split(",") if a.strip()]
    if agents:
        raw["agent_ids"] = agents
    if values["min_duration"]:
        raw["min_duration"] = _number(values["min_duration"])
    if values["seed"]:
        raw["seed"] = values["seed"]
    return raw


async def _samples(request: web.Request, *, values: Mapping[str, Any],
                   errors: list[dict[str, str]], status: int = 200) -> web.StreamResponse:
    who = principal(request)
    db = request.app[DATABASE]
    cursor = request.query.get("cursor") or None
    try:
        listed = await sampling.list_samples(db, who.tenant, cursor=cursor)
    except BadRequestError as exc:
        return error_page(request, exc)
    await record(request, "sample.list", None, {"count": len(listed.samples)})
    reviewed = await reviews.reviewers_of(db, who.tenant,
                                          [i for s in listed.samples for i in s.item_ids])
    rows = [{"sample": s, "count": len(s.item_ids),
             "reviewed": sum(1 for i in s.item_ids if i in reviewed)} for s in listed.samples]
    return render("quality.html", request, status=status, samples=rows, values=values,
                  errors=errors, next_cursor=listed.next_cursor,
                  saved="saved" in request.query)


@page(MONITORS)
async def samples_page(request: web.Request) -> web.StreamResponse:
    return await _samples(request, values=_draw_defaults(request), errors=[])


@page(MONITORS)
async def draw_sample(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values: dict[str, Any] = {name: form_value(form, name) for name in DRAW_FIELDS}
    values["exclude_reviewed"] = "exclude_reviewed" in form
    values["exclude_held"] = "exclude_held" in form
    who = principal(request)
    try:
        drawn = await sampling.draw(request.app[DATABASE], tenant=who.tenant,
                                    actor=Actor(who.actor, who.role.value),
                                    raw=_draw_inputs(values), now=_today(request))
    except BadRequestError as exc:
        errors = _errors(exc, DRAW_INPUTS)
        if not values["count"]:  # the domain names the API's two fields
            said = "enter how many calls to draw"
            errors = [e if e["id"] != "count" else
                      {**e, "message": said, "text": f"{e['label']}: {said}"} for e in errors]
        return await _samples(request, values=values, errors=errors, status=400)
    raise web.HTTPSeeOther(f"/quality/samples/{drawn.sample.id}")


@page(MONITORS)
async def sample_page(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    db = request.app[DATABASE]
    raw = request.match_info["sample_id"]
    sample_id = parse_uuid(raw)
    if sample_id is None:
        return error_page(request, NotFoundError(f"no sample {raw!r}"))
    try:
        drawn = await sampling.get_sample(db, who.tenant, sample_id)
    except NotFoundError as exc:
        return error_page(request, exc)
    await record(request, "sample.view", None,
                 {"sample_id": str(sample_id), "count": len(drawn.calls)})
    reviewers = await reviews.reviewers_of(db, who.tenant, [str(c.id) for c in drawn.calls])
    calls = [{"call": c, "mine": who.actor in reviewers.get(str(c.id), set()),
              "others": len(reviewers.get(str(c.id), set()) - {who.actor})}
             for c in drawn.calls]
    saved_id = parse_uuid(request.query.get("saved", ""))
    saved = next((c for c in drawn.calls if c.id == saved_id), None)
    return render("quality_sample.html", request, drawn=drawn, calls=calls,
                  reviewed=sum(1 for c in drawn.calls if str(c.id) in reviewers),
                  saved=saved, edited="edited" in request.query)


# -- a review ----------------------------------------------------------------------------------

REVIEW_INPUTS: dict[str, tuple[str, str]] = {
    "form": ("form", "Evaluation form"), "form_id": ("form", "Evaluation form"),
    "scores": ("form", "Scores"), "notes": ("notes", "Comments"),
    "training_need": ("training_need", "Training need"),
}


def _review_inputs(form: Form | None) -> dict[str, tuple[str, str]]:
    where = dict(REVIEW_INPUTS)
    for c in form.criteria if form else []:
        where[f"scores.{c['key']}"] = (f"score-{c['key']}", c["label"])
    return where


def _chosen(forms: list[Form], asked: str | None, mine: reviews.History | None) -> Form | None:
    """The form to score with: the one asked for, else the one of the caller's review, else
    the first (all current versions)."""
    by_name = {f.name: f for f in forms}
    if asked in by_name:
        return by_name[asked]
    if mine is not None and mine.versions[-1][1].name in by_name:
        return by_name[mine.versions[-1][1].name]
    return forms[0] if forms else None


async def _my_review(request: web.Request, item: Item) -> reviews.History | None:
    try:
        return await reviews.my_history(request.app[DATABASE], item.tenant,
                                        principal(request).actor, item.id)
    except NotFoundError:
        return None


def _prefill(form: Form | None, mine: reviews.History | None) -> dict[str, Any]:
    """The caller's answers, to edit: scores of the same form's criteria, notes, need."""
    if mine is None:
        return {"scores": {}, "notes": "", "training_need": False}
    _, scored, scores, _, notes, need, _ = mine.versions[-1]
    same = form is not None and scored.name == form.name
    return {"scores": {k: _shown(v) for k, v in scores.items()} if same else {},
            "notes": notes or "", "training_need": need}


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _sample_of(request: web.Request, form: Mapping[str, Any] | None = None) -> str | None:
    raw = form_value(form, "sample") if form is not None else request.query.get("sample", "")
    found = parse_uuid(raw)
    return str(found) if found else None


async def _review(request: web.Request, item: Item, *, asked_form: str | None,
                  values: dict[str, Any] | None, errors: list[dict[str, str]],
                  status: int = 200) -> web.StreamResponse:
    db = request.app[DATABASE]
    forms = await reviews.current_forms(db, item.tenant)
    mine = await _my_review(request, item)
    chosen = _chosen(forms, asked_form, mine)
    if values is None:  # a first look, not a form sent back with errors
        await record(request, "item.view", item.id, {"page": True})
        if mine is not None:
            await record(request, "review.history", item.id,
                         {"review_id": str(mine.review.id), "versions": len(mine.versions)})
        values = _prefill(chosen, mine)
    return render("quality_review.html", request, status=status, item=item, forms=forms,
                  chosen=chosen, mine=mine, values=values, errors=errors,
                  sample=_sample_of(request), admin=principal(request).role == Role.ADMIN,
                  base=str(request.url.origin()))


@page(MONITORS)
async def review_page(request: web.Request) -> web.StreamResponse:
    try:
        item = await review_call(request)
        reviews.check_reviewable(item)
    except ArchiveError as exc:
        return error_page(request, exc)
    return await _review(request, item, asked_form=request.query.get("form"), values=None,
                         errors=[])


@page(MONITORS)
async def save_review(request: web.Request) -> web.StreamResponse:
    try:
        item = await review_call(request)
        reviews.check_reviewable(item)
    except ArchiveError as exc:
        return error_page(request, exc)
    form = await request.post()
    name = form_value(form, "form")
    typed = {key.removeprefix("score-"): form_value(form, key) for key in form
             if key.startswith("score-")}
    notes = form_value(form, "notes")
    body = {"form": name, "scores": {k: _number(v) for k, v in typed.items() if v},
            "notes": notes or None, "training_need": "training_need" in form}
    who = principal(request)
    db = request.app[DATABASE]
    args: dict[str, Any] = {"tenant": who.tenant, "actor": who.actor, "role": who.role.value,
                            "now": _today(request), "item_id": item.id, "body": body}
    edited = await _my_review(request, item) is not None
    try:
        if edited:
            await reviews.edit_review(db, **args)
        else:
            await reviews.create_review(db, **args)
    except BadRequestError as exc:
        forms = await reviews.current_forms(db, item.tenant)
        chosen = next((f for f in forms if f.name == name), None)
        values = {"scores": typed, "notes": notes, "training_need": body["training_need"]}
        return await _review(request, item, asked_form=name, values=values,
                             errors=_errors(exc, _review_inputs(chosen)), status=400)
    except ArchiveError as exc:
        return error_page(request, exc)
    sample = _sample_of(request, form)
    query = urlencode({"saved": str(item.id), **({"edited": "1"} if edited else {})})
    raise web.HTTPSeeOther(f"/quality/samples/{sample}?{query}" if sample else
                           f"/quality?{query}")


# -- the summary -------------------------------------------------------------------------------

SUMMARY_INPUTS: dict[str, tuple[str, str]] = {
    "from": ("from", "From"), "to": ("to", "Before"), "service": ("service", "Service")}


@page(MONITORS)
async def summary_page(request: web.Request) -> web.StreamResponse:
    today = _today(request).date()
    asked = {"from": request.query.get("from", "").strip() or
             (today - timedelta(days=SUMMARY_DAYS)).isoformat(),
             "to": request.query.get("to", "").strip() or (today + timedelta(days=1)).isoformat(),
             "service": request.query.get("service", "").strip()}
    try:
        query = parse_query(asked)
    except BadRequestError as exc:
        return render("quality_summary.html", request, status=400, asked=asked, result=None,
                      errors=_errors(exc, SUMMARY_INPUTS), rows=[])
    assert query.from_ is not None and query.to is not None
    result = await summarise(request, start=query.from_, end=query.to, service=query.service)
    rows = [{"label": a.agent_id, "values": [round(a.mean_score, 2)]}
            for a in result.agents if a.mean_score is not None]
    return render("quality_summary.html", request, asked=asked, result=result, errors=[],
                  rows=rows)


PAGES: list[PageRoute] = [
    ("GET", "/quality", samples_page, "page_quality"),
    ("POST", "/quality/samples", draw_sample, "page_quality_draw"),
    ("GET", "/quality/samples/{sample_id}", sample_page, "page_quality_sample"),
    ("GET", "/quality/review/{item_id}", review_page, "page_quality_review"),
    ("POST", "/quality/review/{item_id}", save_review, "page_quality_review_save"),
    ("GET", "/quality/summary", summary_page, "page_quality_summary"),
]
