"""The ``archive`` command: the operator's handle, and the one composition root.

Every command takes ``--data-dir`` and ``--config``. Output meant for scripts goes to stdout
alone (``tokens create`` prints just the token); messages go to stderr. Commands that need
``web``, ``ingest`` or ``lifecycle`` import them inside the command, so ``archive`` itself never
depends on them at import time.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from archive import audit, logs, tokens
from archive.backends import open_archive
from archive.clock import SystemClock
from archive.db import Database
from archive.errors import ArchiveError
from archive.models import Role, Tenant
from archive.service import Actor
from archive.settings import Settings, load_settings
from storage.errors import StorageError

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
CLI_ACTOR = Actor("cli", "admin")
log = logging.getLogger(__name__)


def _err(message: str) -> None:
    print(f"archive: {message}", file=sys.stderr)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings.resolved_database_url)
    try:
        if settings.auto_migrate:
            await db.upgrade()
        yield db
    finally:
        await db.close()


async def bootstrap_admin(db: Database, settings: Settings) -> str | None:
    """On an index with no tokens at all, create the default tenant and an admin token."""
    now = SystemClock().now()
    async with db.session() as session:
        if await tokens.list_tokens(session):
            return None
        await tokens.ensure_tenant(session, settings.default_tenant, now)
        _, secret = await tokens.create_token(session, tenant=settings.default_tenant,
                                              role=Role.ADMIN, now=now, name="first admin")
        await session.commit()
    return secret


# -- commands ---------------------------------------------------------------------------------

async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from web.app import AccessLogger, access_log, create_app
    from web.metrics import start_metrics_site, stop_metrics_site
    from web.shutdown import CUT_GRACE, drain

    async with _database(settings) as db:
        secret = await bootstrap_admin(db, settings)
    if secret:
        print(f"First start: an admin token for tenant '{settings.default_tenant}' "
              "(shown once; keep it safe):", flush=True)
        print(f"  {secret}", flush=True)
        print("More tokens: archive tokens create --role ROLE --tenant TENANT", flush=True)
    app = create_app(settings, worker=settings.worker and not args.no_worker)
    # On SIGTERM (or SIGINT) the drain stops listening (new connections are refused), tells
    # the lifecycle worker to stop after its batch, lets requests in flight (uploads) finish
    # for up to shutdown_timeout, then cuts off the rest (Archive.writer rolls an upload
    # back); the runner's cleanup then closes idle connections and the app's resources.
    runner = web.AppRunner(app, access_log_class=AccessLogger, access_log=access_log,
                           shutdown_timeout=CUT_GRACE,
                           keepalive_timeout=float(settings.keepalive_timeout))
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    print(f"Archive listening on http://{settings.host}:{settings.port}", flush=True)
    try:
        await start_metrics_site(app, settings)
        await _until_signalled(lambda stop: stop.wait())
        await drain(runner, settings.shutdown_timeout)
    finally:
        await stop_metrics_site(app)
        await runner.cleanup()
    log.info("stopped")
    return 0


async def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.resolved_database_url)
    try:
        await db.upgrade()
        print(await db.current_revision())
    finally:
        await db.close()
    return 0


async def cmd_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as db, db.session() as session:
        created = await tokens.ensure_tenant(session, args.tenant, SystemClock().now(),
                                             args.name or "")
        tenant = await session.get(Tenant, args.tenant)
        assert tenant is not None
        if args.media_policy:
            tenant.media_policy = args.media_policy
            session.add(tenant)
        await session.commit()
    _err(f"created tenant {args.tenant}" if created else f"tenant {args.tenant} exists")
    if args.media_policy:
        _err(f"tenant {args.tenant} keeps call audio as: {args.media_policy}")
    return 0


async def cmd_tenants_list(args: argparse.Namespace, settings: Settings) -> int:
    from sqlmodel import select

    async with _database(settings) as db, db.session() as session:
        for t in (await session.exec(select(Tenant).order_by(Tenant.id))).all():
            print(f"{t.id}\t{t.media_policy}\t{t.name}")
    return 0


async def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    role = tokens.parse_role(args.role)
    now = SystemClock().now()
    expires = now + timedelta(days=args.expires_days) if args.expires_days else None
    async with _database(settings) as db, db.session() as session:
        if await tokens.ensure_tenant(session, args.tenant, now):
            _err(f"created tenant {args.tenant}")
        token, secret = await tokens.create_token(session, tenant=args.tenant, role=role,
                                                  now=now, name=args.name or "",
                                                  expires_at=expires)
        await audit.append(session, tenant=args.tenant, at=now, actor=CLI_ACTOR.name,
                           role=CLI_ACTOR.role, action="token.create",
                           detail={"token_id": str(token.id), "role": role.value})
        await session.commit()
    print(secret)
    return 0


async def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as db, db.session() as session:
        for t in await tokens.list_tokens(session, args.tenant):
            state = "revoked" if t.revoked_at else (
                f"expires {t.expires_at:%Y-%m-%d}" if t.expires_at else "active")
            print(f"{t.id}\t{t.tenant}\t{t.role}\t{state}\t{t.name}")
    return 0


async def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    try:
        token_id = uuid.UUID(args.token_id)
    except ValueError:
        _err(f"not a token id: {args.token_id!r} (see 'archive tokens list')")
        return 2
    now = SystemClock().now()
    async with _database(settings) as db, db.session() as session:
        token = await tokens.revoke(session, token_id, now)
        await audit.append(session, tenant=token.tenant, at=now, actor=CLI_ACTOR.name,
                           role=CLI_ACTOR.role, action="token.revoke",
                           detail={"token_id": str(token.id)})
        await session.commit()
    _err(f"revoked token {token_id}")
    return 0


async def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from archive.users import create_user

    role = tokens.parse_role(args.role)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password (12 characters or more): ")
        if getpass.getpass("Again: ") != password:
            _err("the passwords differ; nothing changed")
            return 2
    now = SystemClock().now()
    async with _database(settings) as db, db.session() as session:
        user = await create_user(session, tenant=args.tenant, username=args.username,
                                 role=role, password=password, now=now)
        await audit.append(session, tenant=args.tenant, at=now, actor=CLI_ACTOR.name,
                           role=CLI_ACTOR.role, action="user.create",
                           detail={"user_id": str(user.id), "role": role.value})
        await session.commit()
    _err(f"created user {user.username} ({role.value}) of tenant {args.tenant}: sign in at /signin")
    return 0


async def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    async with open_archive(settings) as archive:
        if args.resume:
            count = await archive.rewrap_keys(args.tenant, CLI_ACTOR)
            kek_id = await archive.keys.current_kek_id(args.tenant)
        else:
            kek_id, count = await archive.rotate_keys(args.tenant, CLI_ACTOR)
    print(f"tenant {args.tenant}: current key {kek_id}; re-wrapped {count} data key(s)")
    return 0


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as db, db.session() as session:
        reports = await audit.verify(session, args.tenant)
    broken = False
    for r in reports:
        print(f"{r.tenant}: {r.events} event(s), " + ("chain intact" if r.ok else "BROKEN"))
        for p in r.problems:
            print(f"  - {p}")
        broken |= not r.ok
    return 1 if broken else 0


def _public_key_arg(value: str) -> bytes:
    """``--public-key``: the key in base64, or a file holding it (base64 or PEM)."""
    from archive import signing

    source = Path(value)
    if len(value) < 4096 and source.is_file():
        value = source.read_text(errors="replace")
    return signing.parse_public_key(value)


async def cmd_verify_bundle(args: argparse.Namespace, settings: Settings) -> int:
    from archive import exports

    key: bytes | None = None
    if args.public_key:
        try:
            key = _public_key_arg(args.public_key)
        except (ValueError, OSError) as exc:
            _err(f"--public-key: {exc}")
            return 2
    report = await asyncio.to_thread(exports.check_bundle, args.bundle, key)
    if report.key_from_bundle:
        _err("warning: checked with the public key inside the bundle, which shows only that "
             "the bundle is intact; to prove who made it, pass --public-key with the key "
             "obtained independently (GET /v1/signing-key)")
    if report.problems:
        print(f"bundle NOT verified: {len(report.problems)} problem(s)")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    print(f"bundle verified: {report.files} files, signed by key {report.key_id}")
    return 0


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[object]]) -> object:
    """Run an importer until it ends or SIGTERM/SIGINT asks it to stop between files."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def cmd_ingest_spool(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.runtime import open_ingestor
    from ingest.spool import run_spool

    async with open_ingestor(settings) as ingestor:
        report = await _until_signalled(lambda stop: run_spool(
            ingestor, args.folder, tenant=args.tenant, once=args.once, interval=args.interval,
            settle=args.settle, keep_audio=args.keep_audio, stop=stop))
    print(report)
    return 0


async def cmd_ingest_s3(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.runtime import open_ingestor
    from ingest.s3drop import run_s3_drop

    async with open_ingestor(settings) as ingestor:
        report = await _until_signalled(lambda stop: run_s3_drop(
            ingestor, args.url, tenant=args.tenant,
            endpoint_url=args.endpoint_url or settings.s3_endpoint_url or None,
            region=args.region or settings.s3_region, once=args.once,
            interval=args.interval, after=args.after, stop=stop))
    print(report)
    return 0


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.legacy import ImportReport, run_import
    from ingest.runtime import open_ingestor

    async with open_ingestor(settings) as ingestor:
        report = await _until_signalled(lambda stop: run_import(
            ingestor, args.folder, args.manifest, tenant=args.tenant,
            checkpoint=args.checkpoint or args.manifest.with_name(
                args.manifest.name + ".checkpoint.json"),
            progress=sys.stderr, concurrency=args.concurrency,
            stop=stop))
    assert isinstance(report, ImportReport)
    print(report)
    for row in report.failed:
        print(f"  row {row.row}: {row.reason}")
    return 1 if report.failed else 0


async def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.push import run_push

    return await run_push(args)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from web.demo import run_demo

    return await run_demo(args, settings)


# -- lifecycle ----------------------------------------------------------------------------------

async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from lifecycle.policies import sync_settings_policies
    from lifecycle.worker import Worker
    from web.metrics import Metrics, Scrape, instrument, serve_metrics

    async with open_archive(settings) as archive:
        await sync_settings_policies(archive)
        worker = Worker(archive, settings)
        metrics_site = None
        if settings.metrics_port > 0:  # the purge counter and the index gauges of a worker
            metrics = Metrics()
            instrument(archive, metrics)
            metrics_site = await serve_metrics(Scrape(metrics, archive.db, archive.clock),
                                               settings.host, settings.metrics_port)
        try:
            # SIGTERM or SIGINT: the batch in hand is finished (its transaction committed and
            # its objects deleted), then the worker exits 0; the next pass does the rest.
            if args.once:
                print(await _until_signalled(worker.run_once))
            else:
                await _until_signalled(worker.run)
        finally:
            if metrics_site is not None:
                await metrics_site.cleanup()
    return 0


def _date_arg(value: str) -> Any:
    from archive.search import parse_query

    try:
        return parse_query({"from": value}).from_
    except ArchiveError:
        raise argparse.ArgumentTypeError(
            f"not a date or ISO 8601 timestamp with offset: {value!r}") from None


async def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from lifecycle.preview import format_preview, preview
    from lifecycle.purge import purge_pass

    async with open_archive(settings) as archive:
        now = archive.clock.now()
        if args.dry_run:
            rows = await preview(archive.db, until=args.until or now, now=now,
                                 tenant=args.tenant)
            print(format_preview(rows, args.until or now), end="")
            return 0
        if args.until or args.tenant:
            _err("--until and --tenant apply to --dry-run only")
            return 2
        print(await purge_pass(archive, batch_size=settings.purge_batch_size))
    return 0


async def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from lifecycle.sweep import sweep

    async with open_archive(settings) as archive:
        report = await sweep(archive, grace=timedelta(seconds=settings.sweep_grace))
    print(report)
    return 1 if report.missing else 0


async def cmd_scrub(args: argparse.Namespace, settings: Settings) -> int:
    from lifecycle.scrub import scrub

    async with open_archive(settings) as archive:
        report = await scrub(archive, sample=args.sample)
    print(report)
    return 0 if report.ok else 1


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from lifecycle.reconcile import reconcile

    async with open_archive(settings) as archive:
        print(await reconcile(archive, verify=args.verify))
    return 0


async def cmd_policies_list(args: argparse.Namespace, settings: Settings) -> int:
    from lifecycle.policies import format_policies, list_policies

    async with open_archive(settings) as archive:
        print(format_policies(await list_policies(archive, args.tenant)), end="")
    return 0


async def cmd_policies_set(args: argparse.Namespace, settings: Settings) -> int:
    from archive.models import Channel
    from lifecycle.policies import apply_change, plan_change

    async with open_archive(settings) as archive:
        plan = await plan_change(archive, args.tenant, Channel(args.channel), args.days)
        print(plan)
        if not args.yes:
            _err("nothing changed: run again with --yes to apply")
            return 0
        print(await apply_change(archive, tenant=args.tenant, channel=Channel(args.channel),
                                 days=args.days, actor=CLI_ACTOR, source="cli",
                                 reason=args.reason, confirm=plan.confirm))
    return 0


# -- parsing ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    def options(default: object) -> argparse.ArgumentParser:
        # Accepted before and after the command; a subcommand's default must not overwrite a
        # value given before it, hence SUPPRESS there.
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("--data-dir", type=Path, default=default,
                       help="embedded state folder (env ARCHIVE_DATA_DIR; default ./var)")
        p.add_argument("--config", type=Path, default=default,
                       help="TOML settings file (env ARCHIVE_CONFIG)")
        return p

    common = options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="archive", parents=[options(None)],
                                     description="Call recording and webchat archive.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Command, help_text: str, parent: Any = sub
            ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    _admin_commands(sub, add)
    _ingest_commands(sub, add)
    _lifecycle_commands(sub, add)
    _first_hour_commands(add)
    return parser


Adder = Callable[..., argparse.ArgumentParser]


def _admin_commands(sub: Any, add: Adder) -> None:

    serve = add("serve", cmd_serve, "run the HTTP service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-worker", action="store_true",
                       help="do not run the lifecycle worker in this process")

    db = sub.add_parser("db", help="index database").add_subparsers(dest="db", required=True)
    add("upgrade", cmd_db_upgrade, "apply index migrations", db)

    ten = sub.add_parser("tenants", help="tenants").add_subparsers(dest="tenants",
                                                                   required=True)
    p = add("create", cmd_tenants_create,
            "create a tenant, or change its settings if it exists", ten)
    p.add_argument("tenant")
    p.add_argument("--name")
    p.add_argument("--media-policy", choices=["original", "opus", "both"],
                   help="keep call audio as received (default), as Ogg/Opus, or both")
    add("list", cmd_tenants_list, "list tenants", ten)

    tok = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens",
                                                                     required=True)
    p = add("create", cmd_tokens_create,
            "create a token and print it (alone, once) on stdout", tok)
    p.add_argument("--role", required=True, help=", ".join(r.value for r in Role))
    p.add_argument("--tenant", required=True, help="created if it does not exist")
    p.add_argument("--name", help="a label, e.g. the system that uses it")
    p.add_argument("--expires-days", type=int)
    p = add("list", cmd_tokens_list, "list tokens (never their secrets)", tok)
    p.add_argument("--tenant")
    p = add("revoke", cmd_tokens_revoke, "revoke a token by id", tok)
    p.add_argument("token_id")

    usr = sub.add_parser("users", help="people who sign in to the staff pages").add_subparsers(
        dest="users", required=True)
    p = add("create", cmd_users_create,
            "create a user with a password for the staff pages (asked for, or one line on "
            "stdin with --password-stdin)", usr)
    p.add_argument("username")
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", required=True, help=", ".join(r.value for r in Role))
    p.add_argument("--password-stdin", action="store_true")

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(dest="keys",
                                                                         required=True)
    p = add("rotate", cmd_keys_rotate,
            "make a new key-encryption key current and re-wrap the tenant's data keys", keys)
    p.add_argument("--tenant", required=True)
    p.add_argument("--resume", action="store_true",
                   help="only finish re-wrapping after an interrupted rotation")

    aud = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit", required=True)
    p = add("verify", cmd_audit_verify, "verify the audit hash chains; exit 1 if broken", aud)
    p.add_argument("--tenant")

    p = add("verify-bundle", cmd_verify_bundle,
            "check an evidence bundle's signature and every file's hash; exit 1 if not intact")
    p.add_argument("bundle", type=Path, metavar="FILE.zip")
    p.add_argument("--public-key", metavar="BASE64_OR_FILE",
                   help="the archive's public key (base64, or a file holding it or a PEM "
                        "public key), obtained independently of the bundle")


def _ingest_commands(sub: Any, add: Adder) -> None:
    ing = sub.add_parser("ingest", help="importers for systems that write files").add_subparsers(
        dest="ingest", required=True)
    p = add("spool", cmd_ingest_spool,
            "archive NAME.wav + NAME.json pairs dropped in a folder (see README.md)",
            ing)
    p.add_argument("folder", type=Path)
    p.add_argument("--tenant", required=True)
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds a pair must be unchanged before it is taken")
    p.add_argument("--keep-audio", action="store_true",
                   help="move archived audio to done/ instead of deleting it")
    p = add("s3", cmd_ingest_s3, "archive pairs dropped in an S3 bucket", ing)
    p.add_argument("url", help="s3://bucket/prefix/")
    p.add_argument("--tenant", required=True)
    p.add_argument("--endpoint-url", help="S3 endpoint (default: setting s3_endpoint_url)")
    p.add_argument("--region")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between passes")
    p.add_argument("--after", choices=["delete", "tag"], default="delete",
                   help="what to do with archived objects")

    p = add("import", cmd_import,
            "migrate a legacy archive: files under FOLDER listed in a CSV manifest")
    p.add_argument("folder", type=Path)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--checkpoint", type=Path,
                   help="resume file (default: MANIFEST.checkpoint.json beside it)")
    p.add_argument("--concurrency", type=int, default=4)


def _lifecycle_commands(sub: Any, add: Adder) -> None:
    p = add("worker", cmd_worker,
            "run the lifecycle worker: purge passes, sweeps and (with Object Lock) reconciling")
    p.add_argument("--once", action="store_true", help="one pass, print what it did, exit")
    p = add("purge", cmd_purge, "run one purge pass (destroy expired, unheld items)")
    p.add_argument("--dry-run", action="store_true",
                   help="only show what would be destroyed, per tenant and channel")
    p.add_argument("--until", type=_date_arg, help="with --dry-run: by this date (default now)")
    p.add_argument("--tenant", help="with --dry-run: this tenant only")
    add("sweep", cmd_sweep, "remove abandoned uploads and objects without an item; report "
        "items whose object is missing (exit 1 if any)")
    p = add("scrub", cmd_scrub,
            "decrypt and re-hash a random sample of items; exit 1 on any mismatch")
    p.add_argument("--sample", type=int, required=True, metavar="N")
    p = add("reconcile", cmd_reconcile,
            "repair drift between legal holds in the index and Object Lock in the bucket")
    p.add_argument("--verify", action="store_true",
                   help="also read the bucket's legal hold of every held or locked object")

    pol = sub.add_parser("policies", help="retention policies").add_subparsers(
        dest="policies", required=True)
    p = add("list", cmd_policies_list, "show the retention window in force per tenant and "
            "channel, with its versions", pol)
    p.add_argument("--tenant")
    p = add("set", cmd_policies_set, "preview, then (with --yes) apply a new retention window",
            pol)
    p.add_argument("--tenant", required=True)
    p.add_argument("--channel", required=True, choices=["call", "chat"])
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--reason", help="why the window changes (kept with the version)")
    p.add_argument("--yes", action="store_true", help="apply after showing the preview")


def _first_hour_commands(add: Adder) -> None:
    p = add("push", cmd_push, "push one recording (FILE) or transcript (--transcript) to a "
            "running archive over HTTP, e.g. from a PBX's post-call script; the token comes "
            "from ARCHIVE_TOKEN or --token-file. Exit 0: archived (or already was); 1: refused, "
            "do not retry; 75: not archived now, retry later; 2: bad arguments")
    p.add_argument("file", nargs="?", type=Path, metavar="FILE",
                   help="the recording (wav, mp3, ogg, gsm, ...)")
    p.add_argument("--transcript", type=Path, metavar="FILE.json|FILE.txt",
                   help="push a webchat transcript instead: the JSON document of POST "
                        "/v1/transcripts (or its messages list), or a plain-text export")
    p.add_argument("--url", help="the archive (env ARCHIVE_URL; default http://127.0.0.1:8080)")
    p.add_argument("--token-file", type=Path,
                   help="a file holding the ingest token (else env ARCHIVE_TOKEN)")
    p.add_argument("--metadata", type=Path, metavar="FILE.json",
                   help="metadata as a JSON object; the options below override its fields")
    p.add_argument("--external-id", help="the source system's call or chat id")
    p.add_argument("--started-at", help="ISO 8601 with offset, e.g. 2026-11-23T09:15:00Z")
    p.add_argument("--ended-at")
    p.add_argument("--direction", choices=["inbound", "outbound", "internal"])
    p.add_argument("--caller", help="caller number, any common UK or international notation")
    p.add_argument("--called", help="called number")
    p.add_argument("--agent", help="agent id")
    p.add_argument("--agent-extension")
    p.add_argument("--service", help="e.g. council-tax")
    p.add_argument("--queue")
    p.add_argument("--tag", action="append", help="repeat for several tags")
    p.add_argument("--special-category", action="store_true",
                   help="health or similar data was volunteered")
    p.add_argument("--pci", action="append", metavar="START-END",
                   help="seconds to silence before storage (a card payment); repeatable")
    p.add_argument("--customer-name", help="transcripts: the customer's name")
    p.add_argument("--customer-email", help="transcripts: the customer's email")
    p.add_argument("--postcode", help="transcripts: the customer's postcode")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the archive (default 300)")

    p = add("demo", cmd_demo, "seed a tenant with realistic demonstration calls, chats, holds, "
            "reviews and expired items, then print a token for each role and the URL to open")
    p.add_argument("--tenant", default="demo", help="the tenant to create (default demo)")
    p.add_argument("--calls", type=int, default=60, help="how many calls (default 60)")
    p.add_argument("--chats", type=int, default=20, help="how many webchats (default 20)")
    p.add_argument("--tones", action="store_true",
                   help="ffmpeg-generated audio even when espeak-ng is installed")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # the index, store and keyring hold personal data: owner-only files
    try:
        overrides = {"data_dir": args.data_dir, "host": getattr(args, "host", None),
                     "port": getattr(args, "port", None)}
        settings = load_settings(args.config, overrides=overrides)
        logs.configure(settings.log_level, settings.log_format)
        fn: Command = args.fn
        return asyncio.run(fn(args, settings))
    except ArchiveError as exc:
        details = "".join(f"\n  {e.field}: {e.message}" for e in exc.errors)
        _err(f"{exc.detail}{details}")
        return 2
    except StorageError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
