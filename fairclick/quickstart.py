"""`fairclick quickstart`: embedded database, local SMTP capture, example campaign, tracker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import textwrap
from collections.abc import Iterator
from dataclasses import replace

from aiohttp import web

from console.admins import LOGIN_LINK_SECONDS, QUICKSTART_ADMIN, create_login_link, ensure_admin
from fairclick.apps import tracker_with_console
from mailer.campaigns import create_campaign
from mailer.capture import start_capture_server
from mailer.queries import SQL as MAILER_SQL
from mailer.sending import send_campaign
from tracker import schema
from tracker.bots import BURST_LINKS, BURST_SECONDS
from tracker.database import create_pool, database_url
from tracker.errors import FairclickError
from tracker.exports import cli_actor
from tracker.key_fingerprints import check_signing_key, key_source, record_tracker_keys
from tracker.operators import for_operators
from tracker.organisation import Organisation
from tracker.pages import templates_dir
from tracker.recipients import import_recipients
from tracker.recorder import TOO_SOON_SECONDS
from tracker.settings import Settings, SmtpTarget
from tracker.tokens import Tokens
from tracker.wordings import import_default, import_proof

CAMPAIGN = "welcome"


async def quickstart(settings: Settings, *, host: str, port: int) -> int:
    example = templates_dir() / "email" / "example"
    mail_dir = settings.data_dir / "mail"
    signing_key = key_source(settings)
    settings = settings.with_secret_keys()
    if settings.base_url is None:
        settings = replace(settings, base_url=f"http://{host}:{port}")
    print(f"data directory: {settings.data_dir}")
    pool = await create_pool(database_url(settings), min_size=1, max_size=10)
    capture = None
    runner = None
    try:
        async with pool.acquire() as conn:
            applied = await schema.migrate(conn)
            print(f"database ready ({len(applied)} migration(s) applied)")
            # The tracker started below verifies these keys and the mail is signed with the
            # first: recorded, so a later `send` with another key is refused, not silent.
            await record_tracker_keys(conn, settings.secret_keys)
            await check_signing_key(conn, settings.secret_keys, source=signing_key)
        capture = start_capture_server(mail_dir, host="127.0.0.1")
        settings = replace(settings, smtp=SmtpTarget("127.0.0.1", capture.port, use_tls=False))
        print(f"SMTP capture server on 127.0.0.1:{capture.port}, saving mail to {mail_dir}")
        async with pool.acquire() as conn:
            proof = import_proof(
                settings, import_default("recipients.csv"), actor=cli_actor()
            )  # consent proof (issue 11): the policy in force, who imported
            result = await import_recipients(conn, example / "recipients.csv", proof=proof)
            print(
                f"recipients: {result.imported} imported, {len(result.unchanged)} already there, "
                f"{result.suppressed} suppressed (erased, bounced or complained) skipped"
            )
            if await conn.fetchval(MAILER_SQL.campaign_by_name, CAMPAIGN) is None:
                await create_campaign(
                    conn,
                    CAMPAIGN,
                    subject="Autumn notes for {{ recipient.name or 'you' }}",
                    from_address="fairclick example <news@example.com>",
                    html_path=example / "welcome.html",
                    organisation=Organisation.of(settings),
                )
        progress = await send_campaign(pool, settings, CAMPAIGN)
        c = progress.counts
        print(
            f"campaign {CAMPAIGN!r}: sent {c['sent']} now (messages already sent are never resent)"
        )

        runner = web.AppRunner(tracker_with_console(settings, pool=pool))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        with _stop_signal() as stop:  # before the guide says Ctrl-C stops everything
            await _print_guide(pool, settings, mail_dir)
            await stop.wait()
        print("\nstopping…")
        return 0
    except OSError as exc:
        raise FairclickError(
            f"cannot start the tracker on {host}:{port} ({exc}); try --port"
        ) from exc
    finally:
        if runner is not None:
            await runner.cleanup()
        if capture is not None:
            capture.stop()
        await pool.close()


async def _print_guide(pool, settings: Settings, mail_dir) -> None:
    tokens = Tokens(settings.secret_keys)
    async with pool.acquire() as conn:
        campaign = await conn.fetchrow(MAILER_SQL.campaign_by_name, CAMPAIGN)
        example = await conn.fetchrow(MAILER_SQL.example_tracked_link, campaign["id"])
    print()
    print(f"tracker:          {settings.base_url}")
    print(f"captured emails:  {mail_dir}")
    print(f"for operators:    {for_operators(settings)}")
    console = settings.console_address()
    if settings.ops_listen is not None and console:
        async with pool.acquire() as conn:
            # A new link at every run: quickstart stays re-runnable, and each link works once.
            token = await create_login_link(conn, await ensure_admin(conn, QUICKSTART_ADMIN))
        print(f"console:          {console}")
        print(f"one-time login:   {console}/login/once/{token}")
        print(
            f"                  (works once, within {LOGIN_LINK_SECONDS // 60} minutes, as "
            f"{QUICKSTART_ADMIN}, an operator; `fairclick admin create EMAIL` for a password)"
        )
    if example:
        token = tokens.click.encode(example["message_id"], example["link_id"])
        link = f"{settings.base_url}/c/{token}"
        prefs = f"{settings.base_url}/p/{tokens.preferences.encode(example['recipient_id'])}"
        print(f"a tracked link:   {link}")
        print(f"                  (in {example['email']}'s mail; it leads to {example['url']})")
        print(f"preference page:  {prefs}")
    print(f"then see:         fairclick report {CAMPAIGN}")
    print()
    print(_HOW_CLICKS_COUNT)
    print("Ctrl-C stops everything.", flush=True)


# Said up front: a marketer trying the link at once, or with curl, would otherwise see only
# bot clicks and no reason why.
_HOW_CLICKS_COUNT = textwrap.fill(
    "How clicks are counted: a click is taken for a machine's (a link scanner or "
    "prefetcher), and counted as a bot click apart from people's, when it comes within "
    f"{TOO_SOON_SECONDS} s of delivery, is a HEAD request, has no user agent or a known "
    "scanner or crawler agent (curl's and wget's are on that list), follows the hidden "
    f"honeypot link, or is one of {BURST_LINKS} links of one message within "
    f"{BURST_SECONDS:g} s (or near a honeypot hit). To click as a person: wait "
    f"{TOO_SOON_SECONDS} s after sending, then open the link in a browser. "
    "The report lists bot clicks by reason.",
    width=88,
)


@contextlib.contextmanager
def _stop_signal() -> Iterator[asyncio.Event]:
    """An event that Ctrl-C (SIGINT) or SIGTERM sets while the block runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
