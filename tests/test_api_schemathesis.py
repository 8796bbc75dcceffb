"""schemathesis against the live console API: generated requests, every answer checked.

The console runs for real in a thread of its own (its own event loop and pool, over
loopback), on a database seeded for each operation with a sent campaign (the document's
example name), a click, a failure and recipients. Each documented operation gets a bounded,
deterministic run; the checks: no 5xx, every status documented, every body valid against
the document's schema, every content type documented.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import asyncpg
import pytest
import schemathesis
from aiohttp import web
from conftest import TEST_KEY, free_port
from helpers import tracked_links
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from console.app import create_console_app
from console.auth import create_api_token
from console.openapi import PATHS, document
from tracker.settings import Settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
EXAMPLE_CAMPAIGN = PATHS["/api/v1/campaigns/{name}"]["get"]["parameters"][0]["example"]
HTML = """<html><body><p>Hello {{ recipient.name }}</p>
<a href="https://example.com/one" data-fairclick-name="one">One</a>
<a href="https://example.com/two?for={{ recipient.email|urlencode }}">Two</a>
<a href="mailto:hi@example.com">mail</a> <a href="{{ preferences_url }}">Preferences</a>
</body></html>"""
RECIPIENTS = """\
email,name,format,tracking_consent
ada@example.com,Ada,html,yes
grace@example.com,Grace,html,no
linus@example.org,Linus,text,no
"""

schema = schemathesis.openapi.from_dict(document())


class LiveConsole:
    """The console app served by a thread with its own event loop and database pool."""

    def __init__(self, settings: Settings, port: int):
        self.settings = settings
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="live-console", daemon=True)
        self.started = threading.Event()
        self.failed: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # said to the test, which fails with it
            self.failed = exc
            self.started.set()
            return
        self.started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.pool = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=4)
        self.runner = web.AppRunner(create_console_app(self.settings, self.pool))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.pool.close()

    def __enter__(self) -> LiveConsole:
        self.thread.start()
        assert self.started.wait(60), "the console did not start"
        if self.failed is not None:
            raise self.failed
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)
        self.loop.close()


@pytest.fixture(scope="module")
def live_console(db_url, tmp_path_factory) -> Iterator[LiveConsole]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("live-console"),
        database_url=db_url,
        base_url="http://127.0.0.1:9",
        secret_keys=(TEST_KEY,),
    )
    with LiveConsole(settings, free_port()) as console:
        yield console


@pytest.fixture
async def operator_headers(
    pool, tracker, http, mailbox, add_recipients, make_campaign, deliver
) -> dict[str, str]:
    """A sent campaign named as the document's example, one click, one failure; the
    Authorization header of an operator's token."""
    await add_recipients(RECIPIENTS)
    await make_campaign(HTML, name=EXAMPLE_CAMPAIGN)
    await deliver(EXAMPLE_CAMPAIGN)
    ada = mailbox.for_address("ada@example.com")[0]
    link = tracked_links(ada.get_body(("html",)).get_content())[0]
    async with http.get(link, allow_redirects=False) as response:
        assert response.status == 302
    await pool.execute(
        "UPDATE outbox SET status = 'failed', smtp_reply = '550 5.1.1 no such user', "
        "outcome_at = now() WHERE id = (SELECT max(id) FROM outbox)"
    )
    async with pool.acquire() as conn:
        token = await create_api_token(conn, "schemathesis", "operator")
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_live_api_keeps_to_its_document(case, live_console, operator_headers):
    case.call_and_validate(
        base_url=live_console.url, headers=operator_headers, checks=CHECKS, timeout=30
    )
