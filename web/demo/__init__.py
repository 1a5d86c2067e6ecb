"""``archive demo``: a tenant full of realistic, fictional data, for trying the archive out.

It lives in ``web`` because it acts as every user at once (telephony, webchat, complaints staff,
an administrator, quality monitors) and so needs ``ingest``, ``lifecycle`` and ``archive``
together (web/demo/seed.py has the steps). It refuses a tenant that already holds items, so it
never mixes demonstration data into a real tenant's.

Its output on stdout is the point of the command: what was made, a demo token for each role,
and the address to sign in at. Progress goes to stderr.
"""

import argparse
import os
import sys
import time
from typing import TextIO

import sqlalchemy as sa
from sqlmodel import select

from archive import audit, tokens
from archive.backends import open_archive
from archive.models import Channel, Item, Role
from archive.service import Actor, Archive
from archive.settings import Settings
from ingest.audio import find_ffmpeg
from ingest.service import Ingestor
from lifecycle.preview import preview
from web.demo import seed
from web.demo.audio import DemoAudioError, choose_renderer
from web.demo.content import (
    CASE_1,
    COUNCIL,
    MAX_CONTACTS,
    MIN_CALLS,
    MIN_CHATS,
    plan_calls,
    plan_chats,
)

SETUP = Actor("demo:setup", "admin")
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}  # noqa: S104  (names the wildcard, binds nothing)


def _err(message: str) -> None:
    print(f"archive demo: {message}", file=sys.stderr, flush=True)  # noqa: T201


def sign_in_url(settings: Settings) -> str:
    """Where to open the staff pages: the bound address, or this machine for a wildcard."""
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/signin"


def _check_args(args: argparse.Namespace) -> str | None:
    if not MIN_CALLS <= args.calls <= MAX_CONTACTS:
        return f"--calls must be from {MIN_CALLS} to {MAX_CONTACTS}"
    if not MIN_CHATS <= args.chats <= MAX_CONTACTS:
        return f"--chats must be from {MIN_CHATS} to {MAX_CONTACTS}"
    return None


async def _refusal(archive: Archive, tenant: str) -> str | None:
    """Why the demo cannot seed ``tenant``, if it cannot."""
    async with archive.db.reader() as session:
        count = (await session.exec(select(sa.func.count()).select_from(Item)
                                    .where(Item.tenant == tenant))).one()
    if count:
        return (f"tenant {tenant!r} already has {count} item(s); the demo only seeds a tenant "
                "with none. Use --tenant another (e.g. --tenant demo2).")
    fixed = [c.value for c in Channel if archive.windows.fixed_for(tenant, c)]
    if fixed:
        return (f"the settings file fixes the {' and '.join(fixed)} retention window of "
                f"{tenant!r} (retention_days); the demo sets them itself. Use another tenant.")
    return None


async def _tokens(archive: Archive, tenant: str) -> dict[Role, str]:
    """A token of each role, named "demo <role>" (audited as ``token.create``)."""
    now = archive.clock.now()
    made: dict[Role, str] = {}
    async with archive.db.session() as session:
        for role in Role:
            token, secret = await tokens.create_token(session, tenant=tenant, role=role,
                                                      now=now, name=f"demo {role.value}")
            await audit.append(session, tenant=tenant, at=now, actor=SETUP.name,
                               role=SETUP.role, action="token.create",
                               detail={"token_id": str(token.id), "role": role.value})
            made[role] = secret
        await session.commit()
    return made


async def run_demo(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Seed ``args.tenant``; 0 when done, 1 when refused or failed, 2 for bad arguments."""
    out = out or sys.stdout
    problem = _check_args(args)
    if problem:
        _err(problem)
        return 2
    started = time.monotonic()
    tenant = args.tenant
    async with open_archive(settings) as archive:
        refusal = await _refusal(archive, tenant)
        if refusal:
            _err(refusal)
            return 1
        now = archive.clock.now()
        async with archive.db.session() as session:
            await tokens.ensure_tenant(session, tenant, now, COUNCIL)
            await session.commit()
        jobs = os.cpu_count() or 2
        renderer = choose_renderer(settings.ffmpeg or find_ffmpeg(), tones=args.tones,
                                   jobs=jobs)
        _err(f"seeding tenant {tenant!r}: {args.calls} calls ({renderer.name}), "
             f"{args.chats} chats")
        ingestor = Ingestor.from_settings(archive, settings)
        try:
            calls = await seed.ingest_calls(ingestor, renderer, tenant,
                                            plan_calls(args.calls, now), batch=2 * jobs,
                                            progress=_err)
        except DemoAudioError as exc:
            _err(f"could not make the demo's audio: {exc}")
            return 1
        chats = await seed.ingest_chats(ingestor, tenant, plan_chats(args.chats, now))
        placed = await seed.place_holds(archive, tenant, calls, chats)
        await seed.set_windows(archive, tenant)
        drawn, reviewed = await seed.quality(archive, tenant, archive.clock.now())
        export, size = await seed.evidence_bundle(archive, settings, tenant)
        made = await _tokens(archive, tenant)
        now = archive.clock.now()
        rows = await preview(archive.db, until=now, now=now, tenant=tenant)
    overdue = sum(r.overdue for r in rows)
    kept = sum(r.kept_by_holds for r in rows)
    w = out.write
    w(f"Demo tenant '{tenant}' ({COUNCIL}) is ready "
      f"({time.monotonic() - started:.0f} s, audio by {renderer.name}).\n")
    w(f"  calls:   {len(calls)} ({sum(c.channels == 2 for c in calls)} stereo, "
      f"{sum(c.pci for c in calls)} with card details silenced, "
      f"{sum(c.plan.special_category for c in calls)} special category)\n")
    w(f"  chats:   {len(chats)} ({sum(cards > 0 for _, _, cards in chats)} with a card number "
      "removed)\n")
    w(f"  holds:   {len(placed)} ("
      + ", ".join(f"{p.hold.case_ref} on {p.item_count} items" for p in placed) + ")\n")
    w(f"  quality: a sample of {len(drawn.calls)} calls, {reviewed} reviews\n")
    w(f"  exports: 1 evidence bundle of {CASE_1} ({len(export.item_ids)} items, "
      f"{size:,} bytes)\n")
    w(f"  overdue: {overdue + kept} item(s) past their retention window: {overdue} not held, "
      f"{kept} kept by legal holds\n\n")
    w(f"The worker's next purge pass ('archive serve' or 'archive worker') will destroy the "
      f"{overdue} overdue item(s) that are not held.\n\n")
    w(f"Demo tokens for tenant '{tenant}' (demonstration only; revoke them with "
      "'archive tokens revoke ID'):\n")
    for role, secret in made.items():
        w(f"  {role.value:<11} {secret}\n")
    w(f"\nOpen {sign_in_url(settings)} (start the archive with 'archive serve') and sign in "
      "with one of these tokens.\n")
    out.flush()
    return 0
