"""Key rotation: the first key signs, every key verifies, and no other key is accepted.

Mail sent under the old key keeps working after a new key is put in front of it:
its tracked links, its open pixel and its preference link alike.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiohttp.test_utils import TestServer
from conftest import TEST_KEY, ReadingPace
from helpers import pixels, tracked_links

from tracker.app import create_app
from tracker.bots import ScanDetector
from tracker.keys import DETECTOR
from tracker.tokens import Tokens

NEW_KEY = b"the-new-key-after-rotation-0123456789"
FORGERS_KEY = b"a-key-nobody-in-this-deployment-has"
HTML = '<html><body><a href="https://example.com/a">a</a></body></html>'


@pytest.fixture
async def old_mail(pool, mailbox, add_recipients, make_campaign, deliver):
    """Ann's message (tracking consent), sent while TEST_KEY was the only key."""
    await add_recipients("email,tracking_consent\nann@example.com,yes\n")
    await make_campaign(HTML)
    await deliver("c")
    (message,) = mailbox.messages()
    return message


@pytest.fixture
async def rotated_tracker(settings, pool, tracker_port):
    """The tracker after rotation: NEW_KEY signs, TEST_KEY still verifies."""
    app = create_app(replace(settings, secret_keys=(NEW_KEY, TEST_KEY)), pool=pool)
    app[DETECTOR] = ScanDetector(clock=ReadingPace())
    server = TestServer(app, host="127.0.0.1", port=tracker_port)
    await server.start_server()
    yield server
    await server.close()


def preference_link(message) -> str:
    return message["List-Unsubscribe"].strip("<>")


async def test_mail_signed_with_the_old_key_keeps_working(
    pool, settings, rotated_tracker, http, old_mail
):
    html = old_mail.get_body(("html",)).get_content()
    (link,) = tracked_links(html)
    async with http.get(link, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "https://example.com/a"
    (pixel,) = pixels(html)
    async with http.get(pixel) as response:
        assert response.status == 200
    async with http.get(preference_link(old_mail)) as response:
        assert response.status == 200
        assert "ann@example.com" in await response.text()
    form = {"format": "text", "tracking": "yes", "subscribed": "yes"}
    async with http.post(
        preference_link(old_mail),
        data=form,
        headers={"Origin": settings.base_url},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 1
    assert await pool.fetchval("SELECT count(*) FROM opens WHERE message_id IS NOT NULL") == 1
    assert await pool.fetchval("SELECT format FROM recipients") == "text"


async def test_tokens_of_the_new_key_work_too(pool, settings, rotated_tracker, http, old_mail):
    message_id, link_id = await pool.fetchrow(
        "SELECT m.id, l.id FROM outbox m JOIN links l ON l.campaign_id = m.campaign_id"
        " AND l.purpose = 'content'"
    )
    new = Tokens((NEW_KEY,))
    async with http.get(
        f"{settings.base_url}/c/{new.click.encode(message_id, link_id)}", allow_redirects=False
    ) as response:
        assert response.status == 302


async def test_a_key_not_in_the_list_is_refused_while_two_are_set(
    pool, settings, rotated_tracker, http, old_mail
):
    message_id, link_id, recipient_id = await pool.fetchrow(
        "SELECT m.id, l.id, m.recipient_id FROM outbox m"
        " JOIN links l ON l.campaign_id = m.campaign_id AND l.purpose = 'content'"
    )
    events_before = await pool.fetchval("SELECT count(*) FROM consent_events")
    forged = Tokens((FORGERS_KEY,))
    base = settings.base_url
    async with http.get(
        f"{base}/c/{forged.click.encode(message_id, link_id)}", allow_redirects=False
    ) as response:
        assert response.status == 404
        assert "Location" not in response.headers
    async with http.get(f"{base}/o/{forged.opens.encode(message_id)}.gif") as response:
        assert response.status == 200  # the image loads either way; nothing is recorded
    preferences = f"{base}/p/{forged.preferences.encode(recipient_id)}"
    async with http.get(preferences) as response:
        assert response.status == 404
        assert "ann@example.com" not in await response.text()
    form = {"format": "text", "tracking": "no", "subscribed": "no"}
    async with http.post(
        preferences, data=form, headers={"Origin": base}, allow_redirects=False
    ) as response:
        assert response.status == 404
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 0
    assert await pool.fetchval("SELECT count(*) FROM opens") == 0
    assert await pool.fetchval("SELECT count(*) FROM consent_events") == events_before
    assert await pool.fetchval("SELECT format FROM recipients") == "html"
