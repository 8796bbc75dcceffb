"""The acceptance path: import → campaign → send over SMTP → click every link → report."""

from __future__ import annotations

from helpers import tracked_links

from tracker.reports import campaign_report

RECIPIENTS = """\
email,name,format,tracking_consent,city
ada@example.com,Ada,html,yes,London
grace@example.com,Grace,html,no,Arlington
linus@example.org,Linus,text,no,Helsinki
"""

HTML = """\
<html><head><title>{{ campaign.name }}</title></head>
<body>
<p>Hello {{ recipient.name }} in {{ recipient.attributes.city }}</p>
<p><a href="https://example.com/one?a=1&amp;b=2">One</a></p>
<p><a href='https://example.com/two'>Two</a>
   <a href="mailto:hi@example.com">mail</a> <a href="#top">top</a>
   <a href="https://example.com/untracked" data-fairclick="off">off</a></p>
<map name="m"><area shape="rect" coords="0,0,1,1" href="https://example.com/area"></map>
<p><a href="{{ preferences_url }}">Preferences</a></p>
</body></html>
"""

TARGETS = {"https://example.com/one?a=1&b=2", "https://example.com/two", "https://example.com/area"}


async def test_whole_loop(
    pool, settings, tracker, http, mailbox, add_recipients, make_campaign, deliver
):
    await add_recipients(RECIPIENTS)
    await make_campaign(HTML, name="autumn", subject="News for {{ recipient.name }}")
    progress = await deliver("autumn")
    assert progress.counts["sent"] == 3

    messages = {m["To"].addresses[0].addr_spec: m for m in mailbox.messages()}
    assert set(messages) == {"ada@example.com", "grace@example.com", "linus@example.org"}
    for message in messages.values():
        assert message["Message-ID"] and message["Date"]
        assert message["List-Unsubscribe"].startswith(f"<{settings.base_url}/p/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # Text-only: text/plain alone, original URLs, nothing that goes through the tracker's /c/.
    text_only = messages["linus@example.org"]
    assert text_only.get_content_type() == "text/plain"
    body = text_only.get_content()
    assert "https://example.com/two" in body and "/c/" not in body

    # HTML recipients: multipart/alternative whose trackable links all point at the tracker.
    clicks_expected = {}
    for address, consent in (("ada@example.com", True), ("grace@example.com", False)):
        message = messages[address]
        assert message.get_content_type() == "multipart/alternative"
        html = message.get_body(("html",)).get_content()
        assert 'href="mailto:hi@example.com"' in html and 'href="#top"' in html
        assert 'href="https://example.com/untracked"' in html
        links = tracked_links(html)
        assert len(links) == 3
        targets = set()
        for link in links:
            async with http.get(link, allow_redirects=False) as response:
                assert response.status == 302
                assert response.headers["Cache-Control"] == "no-store"
                targets.add(response.headers["Location"])
        assert targets == TARGETS
        clicks_expected[address] = consent

    rows = await pool.fetch(
        """SELECT c.message_id, c.ip, c.user_agent, r.email
           FROM clicks c LEFT JOIN outbox m ON m.id = c.message_id
           LEFT JOIN recipients r ON r.id = m.recipient_id"""
    )
    identified = [r for r in rows if r["message_id"] is not None]
    anonymous = [r for r in rows if r["message_id"] is None]
    assert {r["email"] for r in identified} == {"ada@example.com"} and len(identified) == 3
    assert len(anonymous) == 3
    assert all(r["ip"] is None and r["user_agent"] is None for r in anonymous)

    async with pool.acquire() as conn:
        report = await campaign_report(conn, "autumn")
    assert report["sent"] == 3 and report["failed"] == 0
    assert report["recipients"] == {"html": 2, "text": 1}
    assert report["clicks"] == {
        "total": 6,
        "unique": 1,
        "identified": 3,
        "anonymous": 3,
        "bot": 0,
    }
    assert {link["url"] for link in report["links"]} == TARGETS
    for link in report["links"]:
        assert (link["total"], link["unique"], link["identified"], link["anonymous"]) == (
            2,
            1,
            1,
            1,
        )
