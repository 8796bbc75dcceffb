"""The `fairclick` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from tracker import schema
from tracker.errors import FairclickError
from tracker.settings import Settings


@asynccontextmanager
async def connected(
    settings: Settings, *, check_schema: bool = True
) -> AsyncIterator[asyncpg.Pool]:
    from tracker.database import create_pool, database_url

    pool = await create_pool(database_url(settings), min_size=1, max_size=4)
    try:
        if check_schema:
            async with pool.acquire() as conn:
                await schema.ensure_current(conn)
        yield pool
    finally:
        await pool.close()


async def signing_settings(pool: asyncpg.Pool, settings: Settings, *, record: bool = True):
    """settings with their keys, once the signing key is one the deployment's tracker verifies.

    Otherwise every link and unsubscribe URL signed would answer 404: one line instead.
    """
    from tracker.key_fingerprints import check_signing_key, key_source

    source = key_source(settings)
    settings = settings.with_secret_keys()
    async with pool.acquire() as conn:
        await check_signing_key(conn, settings.secret_keys, source=source, record=record)
    return settings


async def cmd_migrate(args, settings: Settings) -> int:
    from tracker.partitions import ensure_partitions

    async with connected(settings, check_schema=False) as pool, pool.acquire() as conn:
        applied = await schema.migrate(conn)
        await ensure_partitions(conn)
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
    else:
        print("the database is up to date")
    return 0


def with_ops_listen(settings: Settings, value: str | None) -> Settings:
    """settings with --ops-listen HOST:PORT|off in place of FAIRCLICK_OPS_LISTEN, if given."""
    if value is None:
        return settings
    from dataclasses import replace

    from tracker.settings import parse_ops_listen

    listen = parse_ops_listen(value, name="--ops-listen")
    # The processes of `serve --workers N` read it from their environment, as they read the rest.
    os.environ["FAIRCLICK_OPS_LISTEN"] = value
    return replace(settings, ops_listen=listen)


def cmd_serve(args, settings: Settings) -> int:
    from fairclick.apps import tracker_with_console
    from tracker.operators import for_operators

    settings = with_ops_listen(settings, args.ops_listen)

    async def check() -> None:
        async with connected(settings, check_schema=False) as pool, pool.acquire() as conn:
            if args.migrate:
                await schema.migrate(conn)
            await schema.ensure_current(conn)
            if args.ready_fd is None:  # a worker's supervisor has done it
                from tracker.key_fingerprints import record_tracker_keys

                await record_tracker_keys(conn, settings.with_secret_keys().secret_keys)

    if args.ready_fd is not None:
        # A worker of `serve --workers N`: its start-up error goes to the supervisor,
        # which says it once for all of them.
        from fairclick.workers import StartReport

        report = StartReport(args.ready_fd)
        try:
            asyncio.run(check())
            run_tracker(
                tracker_with_console(settings),
                args.host,
                args.port,
                reuse_port=True,
                ready=report.ready,
            )
        except FairclickError as exc:
            if not report.failed(exc):
                raise
            return 2
        return 0
    asyncio.run(check())
    operators = f"; for operators: {for_operators(settings)}"
    if settings.ops_listen is not None:
        operators += f"; console: {settings.console_address()}"
    if args.workers > 1:
        from fairclick.workers import serve_workers

        return serve_workers(
            args.host,
            args.port,
            args.workers,
            operators,
            on_ready=lambda: _warn_unset_organisation(settings),
        )
    announce = None if args.quiet else _serving(args, operators)

    def ready() -> None:
        if announce is not None:
            announce()
        _warn_unset_organisation(settings)

    run_tracker(
        tracker_with_console(settings),
        args.host,
        args.port,
        reuse_port=args.reuse_port,
        ready=ready,
    )
    return 0


def _warn_unset_organisation(settings: Settings) -> None:
    """Once it listens (once, not per worker): which of the organisation's settings are unset."""
    from tracker.organisation import Organisation, unset_warning

    if warning := unset_warning(Organisation.of(settings)):
        logging.getLogger("fairclick").warning("%s", warning)


def run_tracker(app, host: str, port: int, *, reuse_port: bool, ready) -> None:
    """Serve app until SIGINT/SIGTERM; ready() is called once it listens."""
    import errno
    import socket

    from aiohttp import web

    try:
        # run_app stops on SIGINT and SIGTERM: it stops accepting, finishes the requests
        # in hand, then the app's cleanup flushes every queued click before the process exits.
        web.run_app(
            app,
            host=host,
            port=port,
            reuse_port=reuse_port,
            print=(lambda _text: ready()) if ready else None,
        )
    except socket.gaierror as exc:
        raise FairclickError(
            f"cannot listen on {host}:{port}: the host is unknown ({exc.strerror}); "
            "use an address of this machine with --host, e.g. --host 0.0.0.0"
        ) from None
    except OSError as exc:
        why = {
            errno.EADDRINUSE: "another process is using that port: stop it or choose another "
            "with --port",
            errno.EACCES: "not allowed to use that port (below 1024 needs privileges): "
            "choose another with --port",
            errno.EADDRNOTAVAIL: "that address is not one of this machine's: use --host "
            "with one that is, e.g. --host 0.0.0.0",
        }.get(exc.errno)
        if why is None:
            raise
        # exc.strerror is asyncio's long sentence repeating host and port; the errno's is enough.
        raise FairclickError(
            f"cannot listen on {host}:{port} ({os.strerror(exc.errno)}): {why}"
        ) from None


def _serving(args, note: str):
    def announce() -> None:
        print(
            f"fairclick tracker on http://{args.host}:{args.port} (Ctrl-C stops){note}", flush=True
        )

    return announce


async def cmd_recipients_import(args, settings: Settings) -> int:
    from tracker.recipients import import_recipients

    proof = consent_wording_proof(args, settings)
    async with connected(settings) as pool, pool.acquire() as conn:
        result = await import_recipients(conn, Path(args.file), proof=proof)
    print(f"imported {result.imported} recipient(s) from {args.file}")
    if result.unchanged:
        print(
            f"{len(result.unchanged)} already on the list and left unchanged "
            "(their own choices outrank the file)"
        )
    if result.suppressed:
        print(SUPPRESSED_SKIPPED.format(result.suppressed))
    return 0


# --- consent proof, children, exports (issue 11) ---
def consent_wording_proof(args, settings: Settings):
    """The import's proof: --consent-wording FILE's text, or the default naming the file."""
    from tracker.exports import cli_actor
    from tracker.wordings import import_default, import_proof

    text = import_default(Path(args.file).name)
    if args.consent_wording:
        try:
            text = Path(args.consent_wording).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FairclickError(f"{args.consent_wording}: no such file") from None
        except UnicodeDecodeError:
            raise FairclickError(f"{args.consent_wording}: not UTF-8 text") from None
        except OSError as exc:
            raise FairclickError(
                f"{args.consent_wording}: cannot be read ({exc.strerror})"
            ) from None
        if not text.strip():
            raise FairclickError(f"{args.consent_wording}: the wording is empty")
    return import_proof(settings, text, actor=cli_actor())


async def cmd_recipients_history(args, settings: Settings) -> int:
    from tracker.history import consent_history, history_as_json, history_as_table

    async with connected(settings) as pool, pool.acquire() as conn:
        history = await consent_history(conn, args.email)
    sys.stdout.write((history_as_json if args.format == "json" else history_as_table)(history))
    return 0


async def cmd_recipients_unsubscribe(args, settings: Settings) -> int:
    """An operator records an unsubscribe the person asked for outside the page."""
    from tracker.consent import change_choices
    from tracker.exports import cli_actor
    from tracker.queries import SQL
    from tracker.wordings import operator_proof

    async with connected(settings) as pool, pool.acquire() as conn:
        recipient_id = await conn.fetchval(SQL.find_recipient_by_email, args.email.strip())
        if recipient_id is None:
            raise FairclickError(f"nobody with the address {args.email.strip()!r} is held")
        proof = operator_proof(settings, actor=cli_actor())
        changes = await change_choices(
            conn, recipient_id, subscribed=False, source="operator", proof=proof
        )
    print(f"unsubscribed {args.email.strip()}" if changes else "already unsubscribed: no change")
    return 0


def add_recipient_commands(recipients) -> None:
    """`recipients history EMAIL` and `recipients unsubscribe EMAIL`."""
    p = recipients.add_parser("history", help="a person's consent events and what they were shown")
    p.add_argument("email")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(run=cmd_recipients_history)
    p = recipients.add_parser(
        "unsubscribe", help="record an unsubscribe the person asked for outside the page"
    )
    p.add_argument("email")
    p.set_defaults(run=cmd_recipients_unsubscribe)


# --- end consent proof, children, exports ---


SUPPRESSED_SKIPPED = (
    "{} suppressed address(es) skipped: they were erased, bounced or complained; "
    "see `fairclick suppression remove`"
)


async def cmd_campaign_create(args, settings: Settings) -> int:
    from mailer.campaigns import create_campaign, load_campaign
    from tracker.organisation import Organisation, missing_address_warning

    organisation = Organisation.of(settings)
    async with connected(settings) as pool, pool.acquire() as conn:
        await create_campaign(
            conn,
            args.name,
            subject=args.subject,
            from_address=args.from_address,
            html_path=Path(args.html),
            text_path=Path(args.text) if args.text else None,
            organisation=organisation,
        )
        campaign = await load_campaign(conn, args.name)
    print(
        f"campaign {args.name!r} created; "
        f"preview it with `fairclick preview {args.name} --to EMAIL`"
    )
    # A warning, not a refusal: the address may reach the mail another way (an image, say).
    templates = [(campaign["html_filename"], campaign["html_template"], True)]
    if campaign["text_template"] is not None:
        templates.append((campaign["text_filename"], campaign["text_template"], False))
    if warning := missing_address_warning(organisation, templates):
        print(f"fairclick: {warning}", file=sys.stderr)
    return 0


async def cmd_campaign_status(args, settings: Settings) -> int:
    from mailer.campaigns import set_status

    async with connected(settings) as pool, pool.acquire() as conn:
        status = await set_status(conn, args.name, args.campaign_command)
    print(f"campaign {args.name!r} is {status}")
    return 0


# --- campaign links (issue 10, the link check) ---
async def cmd_campaign_links(args, settings: Settings) -> int:
    """Every link of a campaign's templates as written: tracked or not, and why."""
    import json

    from mailer.link_check import as_table, check_links

    async with connected(settings) as pool, pool.acquire() as conn:
        links = await check_links(conn, args.name, base_url=settings.base_url)
    if args.format == "json":
        print(json.dumps({"campaign": args.name, "links": links}, indent=2))
    else:
        sys.stdout.write(as_table(args.name, links))
    return 0


# --- end campaign links ---


async def cmd_worker(args, settings: Settings) -> int:
    import signal

    from mailer.delivery import Delivery

    async with connected(settings) as pool:
        settings = await signing_settings(pool, settings)
        delivery = Delivery(pool, settings, until_idle=False)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Stop claiming; messages in hand are finished and recorded before exit.
            loop.add_signal_handler(sig, delivery.stop)
        print("fairclick worker delivering queued mail (Ctrl-C stops)", flush=True)
        progress = await delivery.run()
    c = progress.counts
    print(f"worker stopped: sent {c['sent']}, deferred {c['deferred']}, failed {c['failed']}")
    return 0


async def cmd_preview(args, settings: Settings) -> int:
    from mailer.preview import preview_message

    async with connected(settings) as pool:
        # Its links are placeholders, but the mail it shows would carry this key's links.
        settings = await signing_settings(pool, settings, record=False)
        async with pool.acquire() as conn:
            preview = await preview_message(conn, settings, args.name, args.to)
    message = preview.message
    # What would be sent (but for the tokens), with the terminal's line endings, not CRLF.
    sys.stdout.write(message.as_string(policy=message.policy.clone(linesep="\n")))
    if preview.note:
        print(f"note: {preview.note}", file=sys.stderr)
    return 0


async def cmd_send(args, settings: Settings) -> int:
    from fairclick.progress import ProgressBar
    from fairclick.send_processes import deliver_as_child, send_with_processes
    from mailer.campaigns import load_campaign
    from mailer.sending import check_active, queue_for_sending

    settings.require_base_url()
    settings.require_smtp()
    if args.report_fd is not None:  # a child of `send --processes N`: the parent queued
        async with connected(settings) as pool:
            settings = await signing_settings(pool, settings, record=False)
            async with pool.acquire() as conn:
                campaign = await load_campaign(conn, args.name)
            check_active(campaign)
            await deliver_as_child(pool, settings, campaign["id"], args.share_of, args.report_fd)
        return 0
    bar = None if args.quiet else ProgressBar()
    deaths: list[str] = []
    async with connected(settings) as pool:
        settings = await signing_settings(pool, settings)
        campaign_id = await queue_for_sending(pool, settings, args.name)
        progress, by_process, deaths = await send_with_processes(
            pool, settings, args.name, campaign_id, args.processes, on_progress=bar
        )
    if bar:
        bar.finish()
    c = progress.counts
    print(
        f"{args.name}: sent {c['sent']}, deferred {c['deferred']}, failed {c['failed']}, "
        f"skipped {c['skipped']}, unknown {c['unknown']} in this run"
        + (f" (sent by process: {', '.join(map(str, by_process))})" if len(by_process) > 1 else "")
    )
    if c["unknown"]:
        print(
            "unknown: the connection broke after the message was handed over, so the server "
            "may have it; these are not resent automatically (see `fairclick report`)"
        )
    if c["deferred"]:
        print("deferred messages are retried later: run `fairclick send` again to retry them")
    for line in deaths:
        print(f"fairclick: {line}", file=sys.stderr)
    return 1 if deaths else 0


async def cmd_report(args, settings: Settings) -> int:
    from tracker.reports import as_csv, as_json, as_table, campaign_report

    async with connected(settings) as pool, pool.acquire() as conn:
        report = await campaign_report(conn, args.name)
    sys.stdout.write({"table": as_table, "csv": as_csv, "json": as_json}[args.format](report))
    if args.format == "json":
        sys.stdout.write("\n")
    return 0


# --- campaign list / campaign show (issue 10: the console's numbers in a terminal) ---


async def cmd_campaign_list(args, settings: Settings) -> int:
    from tracker.reports import as_json, campaign_list, list_as_table

    async with connected(settings) as pool, pool.acquire() as conn:
        listing = await campaign_list(conn, limit=args.limit, offset=args.offset)
    sys.stdout.write(as_json(listing) + "\n" if args.format == "json" else list_as_table(listing))
    return 0


async def cmd_campaign_show(args, settings: Settings) -> int:
    from tracker.reports import as_json, campaign_failures, campaign_report, show_as_table

    async with connected(settings) as pool, pool.acquire() as conn:
        report = await campaign_report(conn, args.name)
        failures = await campaign_failures(conn, args.name, limit=args.failures)
        # --- exports (issue 11): failed recipients named here leave the database: logged ---
        if any(r["email"] is not None for r in failures["recipients"]):
            from tracker.exports import cli_actor, log_export

            await log_export(
                conn, cli_actor(), "campaign show (failed recipients)", f"campaign {args.name}"
            )
    if args.format == "json":
        sys.stdout.write(as_json({**report, "failures": failures}) + "\n")
    else:
        sys.stdout.write(show_as_table(report, failures))
    return 0


def add_campaign_views(campaign) -> None:
    """`campaign list` and `campaign show NAME` on the `campaign` subcommands."""
    p = campaign.add_parser("list", help="campaigns at a glance, newest first")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--limit", type=positive_count, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(run=cmd_campaign_list)
    p = campaign.add_parser("show", help="one campaign: delivery, failures, clicks, rates")
    p.add_argument("name")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--failures", type=positive_count, default=100, metavar="N",
                   help="list at most N failed recipients")  # fmt: skip
    p.set_defaults(run=cmd_campaign_show)


# --- end of campaign list / campaign show ---


async def cmd_erase(args, settings: Settings) -> int:
    from tracker.consent import erase

    if args.minor:
        return await erase_minor(args, settings)
    async with connected(settings) as pool, pool.acquire() as conn:
        erased = await erase(conn, args.email)
    if not erased:
        raise FairclickError(f"nobody with the address {args.email!r} is held")
    print(
        f"erased {args.email}: their data is gone; their clicks remain only as anonymous counts, "
        "and a keyed hash of the address stays on the suppression list so it is never mailed again"
    )
    return 0


async def erase_minor(args, settings: Settings) -> int:
    """erase --minor: a child's data, at once (privacy policy section 7); the address is
    suppressed even if nobody with it is held, so no list ever brings them in."""
    from tracker import suppressions
    from tracker.consent import erase

    email = suppressions.check_address(args.email)
    async with connected(settings) as pool, pool.acquire() as conn:
        erased = await erase(conn, email, reason="minor")
        if not erased:
            await suppressions.suppress(conn, email, "minor")
    held = "their data is gone" if erased else "nobody with it was held"
    print(
        f"erased as a child's ({held}); a keyed hash of the address stays on the suppression "
        "list (reason: minor) so it is never imported or mailed; only the count of such "
        "erasures is kept"
    )
    return 0


async def cmd_retention(args, settings: Settings) -> int:
    from tracker.retention import apply_retention

    async with connected(settings) as pool, pool.acquire() as conn:
        result = await apply_retention(
            conn, deidentify_after=args.de_identify_after, delete_after=args.delete_after
        )
    print(
        f"de-identified {result.deidentified['clicks']} click(s) and "
        f"{result.deidentified['opens']} open(s) from before {result.deidentified_before}: "
        "still counted, no longer linked to anyone"
    )
    if result.deleted_before is not None:
        dropped = ", ".join(result.dropped) or "none"
        print(
            f"deleted everything from before {result.deleted_before}: monthly partitions "
            f"dropped: {dropped}; {result.deleted['clicks']} click(s) and "
            f"{result.deleted['opens']} open(s) deleted from the default partition"
        )
    return 0


async def cmd_suppression(args, settings: Settings) -> int:
    """check, add or remove one address; exit 1 when check or remove finds none."""
    from tracker import suppressions

    action, email = args.suppression_command, suppressions.check_address(args.email)
    async with connected(settings) as pool, pool.acquire() as conn:
        if action == "add":
            entry = await suppressions.suppress(conn, email, args.reason)
        else:
            lookup = suppressions.lift if action == "remove" else suppressions.suppression_of
            entry = await lookup(conn, email)
    if entry is None and action == "add":
        print(f"suppressed {email} ({args.reason}): no campaign will mail it")
    elif entry is None:
        print(f"{email} is not suppressed" + ("; nothing changed" if action == "remove" else ""))
        return 1
    elif action == "remove":
        print(
            f"lifted the suppression of {email} ({entry.reason} on {entry.since:%Y-%m-%d}): "
            "it can be imported and mailed again"
        )
    else:
        changed = "; nothing changed" if action == "add" else ""
        print(f"{email} is suppressed ({entry.reason} on {entry.since:%Y-%m-%d}){changed}")
    return 0


# --- admin: who may use the ops console (console/admins.py) -------------------------------


def read_new_password(path: str | None) -> str:
    """A new password: asked twice on the terminal, or the first line of a file ('-': stdin).

    Never an argument: arguments are visible to every user in `ps` and kept in shell history.
    """
    from console.passwords import check_new_password

    if path is None:
        import getpass

        if not sys.stdin.isatty():
            raise FairclickError(
                "no terminal to ask for the password: use --password-file FILE "
                "(its first line; - reads it from standard input)"
            )
        first = getpass.getpass("Password: ")
        if getpass.getpass("The same password again: ") != first:
            raise FairclickError("the two passwords differ; nothing was changed")
        return check_new_password(first)
    try:
        if path == "-":
            line = sys.stdin.readline()
        else:
            with open(path, encoding="utf-8") as f:
                line = f.readline()
    except OSError as exc:
        raise FairclickError(f"--password-file {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise FairclickError(f"--password-file {path}: not UTF-8 text") from None
    return check_new_password(line.rstrip("\r\n"))


async def cmd_admin_create(args, settings: Settings) -> int:
    from console.admins import check_email, create_admin, reset_admin

    email = check_email(args.email)
    password = read_new_password(args.password_file)  # before connecting: mistakes first
    async with connected(settings) as pool, pool.acquire() as conn:
        if args.reset:
            role = await reset_admin(conn, email, password, args.role)
            print(f"new password set for {email} ({role}); their sessions were ended")
        else:
            role = args.role or "operator"
            await create_admin(conn, email, password, role)
            print(f"admin {email} created ({role}); log in at {_login_url(settings)}")
    return 0


def _login_url(settings: Settings) -> str:
    address = settings.console_address()
    return f"{address}/login" if address else "the console (FAIRCLICK_OPS_LISTEN is off)"


async def cmd_admin_token(args, settings: Settings) -> int:
    from console.admins import check_role, revoke_api_token
    from console.auth import create_api_token

    async with connected(settings) as pool, pool.acquire() as conn:
        if args.revoke:
            await revoke_api_token(conn, args.name)
            print(f"API token {args.name!r} revoked: it opens nothing any more")
            return 0
        token = await create_api_token(conn, args.name, check_role(args.role))
    # The token alone on standard output (TOKEN=$(fairclick admin token NAME)); the rest aside.
    print(
        f"API token {args.name!r} ({args.role}); shown only now, only its hash is kept. "
        "Send it as 'Authorization: Bearer TOKEN'.",
        file=sys.stderr,
    )
    print(token)
    return 0


async def cmd_admin_list(args, settings: Settings) -> int:
    from console.admins import list_access

    async with connected(settings) as pool, pool.acquire() as conn:
        listing = await list_access(conn)
    print(f"admins ({len(listing.admins)}):")
    for a in listing.admins:
        print(
            f"  {a['email']}  {a['role']}  since {a['created_at']:%Y-%m-%d}  "
            f"{a['sessions']} active session(s)"
        )
    print(f"API tokens ({len(listing.tokens)}):")
    for t in listing.tokens:
        used = f"{t['last_used_at']:%Y-%m-%d %H:%M} UTC" if t["last_used_at"] else "never"
        print(f"  {t['name']}  {t['role']}  since {t['created_at']:%Y-%m-%d}  last used {used}")
    return 0


async def cmd_admin_remove(args, settings: Settings) -> int:
    from console.admins import remove_admin

    async with connected(settings) as pool, pool.acquire() as conn:
        await remove_admin(conn, args.email)
    print(f"admin {args.email.strip()} removed; their sessions were ended")
    return 0


def add_admin_parser(sub) -> None:
    admin = sub.add_parser(
        "admin", help="who may use the ops console: admins and API tokens"
    ).add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    p = admin.add_parser(
        "create", help="add an admin (password asked twice, or read from --password-file)"
    )
    p.add_argument("email")
    p.add_argument(
        "--role",
        choices=("viewer", "operator"),
        help="a viewer reads; an operator (a new admin's default) may also pause, resume, "
        "cancel and erase",
    )
    p.add_argument(
        "--password-file", metavar="FILE", help="the password is FILE's first line (- = stdin)"
    )
    p.add_argument("--reset", action="store_true", help="set a new password for an existing admin")
    p.set_defaults(run=cmd_admin_create)
    p = admin.add_parser("token", help="make an API token (printed once), or --revoke one")
    p.add_argument("name")
    p.add_argument("--role", choices=("viewer", "operator"), default="viewer")
    p.add_argument("--revoke", action="store_true", help="revoke the token of that name")
    p.set_defaults(run=cmd_admin_token)
    p = admin.add_parser("list", help="admins and API tokens (no secrets)")
    p.set_defaults(run=cmd_admin_list)
    p = admin.add_parser("remove", help="remove an admin (their sessions end)")
    p.add_argument("email")
    p.set_defaults(run=cmd_admin_remove)


# --- end of admin --------------------------------------------------------------------------


def cmd_quickstart(args, settings: Settings) -> int:
    from fairclick.quickstart import quickstart

    settings = with_ops_listen(settings, args.ops_listen)
    return asyncio.run(quickstart(settings, host=args.host, port=args.port))


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (argparse turns the ValueError into one usage line)."""
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port: use a number from 1 to 65535")
    return port


def positive_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text} is too few: at least 1")
    return count


def process_count(text: str) -> int:
    from fairclick.send_processes import MAX_PROCESSES

    try:
        count = positive_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count > MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"{text} is too many: at most {MAX_PROCESSES}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairclick", description="Email link tracking that asks first."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the tracker web service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080)
    p.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    p.add_argument(
        "--workers",
        type=positive_count,
        default=1,
        help="processes sharing the port (SO_REUSEPORT)",
    )
    p.add_argument(
        "--ops-listen",
        metavar="HOST:PORT|off",
        help="where the console, /metrics and /readyz listen (default: FAIRCLICK_OPS_LISTEN, "
        "else 127.0.0.1:9180)",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    # Set by `serve --workers N` for each worker: where to say "listening" or why not.
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(run=cmd_serve, sync=True)

    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(run=cmd_migrate)

    recipients = sub.add_parser("recipients", help="manage recipients").add_subparsers(
        dest="recipients_command", required=True, metavar="ACTION"
    )
    p = recipients.add_parser("import", help="import recipients from CSV or JSON lines")
    p.add_argument("file")
    p.add_argument(
        "--consent-wording", metavar="FILE",
        help="the text people were shown where their consent was collected (kept as proof)",
    )  # fmt: skip
    p.set_defaults(run=cmd_recipients_import)
    add_recipient_commands(recipients)

    campaign = sub.add_parser("campaign", help="manage campaigns").add_subparsers(
        dest="campaign_command", required=True, metavar="ACTION"
    )
    p = campaign.add_parser("create", help="create a campaign from Jinja2 templates")
    p.add_argument("name")
    p.add_argument("--subject", required=True, help="the subject (a template too)")
    p.add_argument("--from", dest="from_address", required=True, metavar="ADDRESS")
    p.add_argument("--html", required=True, metavar="FILE")
    p.add_argument("--text", metavar="FILE", help="text template (default: generated from HTML)")
    p.set_defaults(run=cmd_campaign_create)
    for action, text in (
        ("pause", "stop delivering a campaign for now (the queue is kept)"),
        ("resume", "deliver a paused campaign again"),
        ("cancel", "never deliver the rest of a campaign"),
    ):
        p = campaign.add_parser(action, help=text)
        p.add_argument("name")
        p.set_defaults(run=cmd_campaign_status)
    # --- campaign links (issue 10, the link check) ---
    p = campaign.add_parser(
        "links", help="every link of a campaign's templates: tracked or not, and why"
    )
    p.add_argument("name")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(run=cmd_campaign_links)
    # --- end campaign links ---
    add_campaign_views(campaign)

    p = sub.add_parser("worker", help="deliver queued mail of all active campaigns, as a daemon")
    p.set_defaults(run=cmd_worker)

    p = sub.add_parser("preview", help="print the message one recipient would get")
    p.add_argument("name")
    p.add_argument("--to", required=True, metavar="EMAIL")
    p.set_defaults(run=cmd_preview)

    p = sub.add_parser("send", help="queue and deliver a campaign (safe to re-run)")
    p.add_argument("name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--processes",
        type=process_count,
        default=1,
        help="sender processes sharing the outbox, each with FAIRCLICK_SMTP_CONNECTIONS "
        "connections; FAIRCLICK_SMTP_RATE is split between them (default 1)",
    )
    # Set by `send --processes N` for its children: deliver only, at 1/N of the rate,
    # and report progress through this pipe.
    p.add_argument("--share-of", type=process_count, default=1, help=argparse.SUPPRESS)
    p.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(run=cmd_send)

    p = sub.add_parser("report", help="sends and clicks of a campaign")
    p.add_argument("name")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("erase", help="remove a person's data, keeping anonymous counts")
    p.add_argument("email")
    p.add_argument(
        "--minor", action="store_true",
        help="the person is a child under 13: erase, suppress (reason minor), count only",
    )  # fmt: skip
    p.set_defaults(run=cmd_erase)

    suppression = sub.add_parser(
        "suppression", help="addresses never mailed again (kept as keyed hashes)"
    ).add_subparsers(dest="suppression_command", required=True, metavar="ACTION")
    for action, text in (
        ("check", "is the address suppressed? (exit 1 if not)"),
        ("add", "suppress an address (a complaint, or an operator's decision)"),
        ("remove", "lift a suppression, only after the person opted in again"),
    ):
        p = suppression.add_parser(action, help=text)
        p.add_argument("email")
        if action == "add":
            p.add_argument("--reason", choices=("complained", "operator"), default="operator")
        p.set_defaults(run=cmd_suppression)

    p = sub.add_parser(
        "retention", help="de-identify old clicks and opens, and optionally delete older ones"
    )
    p.add_argument(
        "--de-identify-after",
        type=int,
        required=True,
        metavar="MONTHS",
        help="whole months after which clicks and opens keep no message, network or agent",
    )
    p.add_argument(
        "--delete-after",
        type=int,
        metavar="MONTHS",
        help="whole months after which clicks and opens are deleted (counts included)",
    )
    p.set_defaults(run=cmd_retention)

    add_admin_parser(sub)

    p = sub.add_parser("quickstart", help="run everything locally on the embedded defaults")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080)
    p.add_argument(
        "--ops-listen", metavar="HOST:PORT|off", help="where the console listens (as for serve)"
    )
    p.set_defaults(run=cmd_quickstart, sync=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fairclick: %(message)s")
    try:
        settings = Settings.from_env()
        if getattr(args, "sync", False):
            return args.run(args, settings)
        return asyncio.run(args.run(args, settings))
    except FairclickError as exc:
        print(f"fairclick: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fairclick: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
