"""Consent proof: each consent event keeps what the person was shown (a wording kept once by
its SHA-256, with a version), the privacy policy in force, the channel and who recorded it.

From every channel over the real path: the preference page and one-click unsubscribe over
HTTP, `recipients import` and `recipients unsubscribe` as subprocesses. The page's wording
is compared with the page as served, so the proof cannot drift from what people see.
"""

# ruff: noqa: F811 - `fairclick` is test_cli's fixture, imported to be used by name
from __future__ import annotations

import getpass
import hashlib
import json
from dataclasses import replace
from html.parser import HTMLParser

import pytest
from mailed_links import download_through_link
from test_cli import fairclick  # noqa: F401 - the fixture, used by name

from tracker.tokens import Tokens
from tracker.wordings import API_UNSUBSCRIBE, ONE_CLICK, OPERATOR_UNSUBSCRIBE

POLICY_URL = "https://example.com/privacy"
POLICY_VERSION = "2022-10-31"
POLICY_ENV = {
    "FAIRCLICK_PRIVACY_POLICY_URL": POLICY_URL,
    "FAIRCLICK_PRIVACY_POLICY_VERSION": POLICY_VERSION,
}
PEOPLE = "email,name,format,tracking_consent\nann@example.com,Ann,html,no\n"
ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def settings(settings):
    """The suite's settings, with a privacy policy in force (the tracker fixture uses these)."""
    return replace(settings, privacy_policy_url=POLICY_URL, privacy_policy_version=POLICY_VERSION)


def page_url(settings, recipient_id: int, endpoint: str = "") -> str:
    token = Tokens(settings.secret_keys).preferences.encode(recipient_id)
    return f"{settings.base_url}/p/{token}{endpoint}"


class Questions(HTMLParser):
    """The text of each fieldset of the page's choices form, as a person reads it: legend,
    each option's label, the hint. Keyed by the name of the fieldset's radio buttons."""

    def __init__(self):
        super().__init__()
        self.found: dict[str, list[str]] = {}
        self._parts: list[str] | None = None
        self._name = None
        self._into: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "fieldset":
            self._parts, self._name = [], None
        elif self._parts is not None and tag in ("legend", "label", "p"):
            self._into = tag
            self._parts.append("( ) " if tag == "label" else "")
        elif tag == "input" and self._parts is not None and attrs.get("type") == "radio":
            self._name = attrs["name"]

    def handle_endtag(self, tag):
        if tag == "fieldset" and self._parts is not None:
            if self._name is not None:
                self.found[self._name] = [" ".join(p.split()) for p in self._parts]
            self._parts = None
        elif tag == self._into:
            self._into = None

    def handle_data(self, data):
        if self._into is not None and self._parts is not None:
            self._parts[-1] += data


def served_questions(html: str) -> dict[str, str]:
    parser = Questions()
    parser.feed(html)
    return {name: "\n".join(parts) for name, parts in parser.found.items()}


async def proof_of(pool, recipient_id: int) -> list[dict]:
    rows = await pool.fetch(
        "SELECT e.kind, e.value, e.channel, e.policy_url, e.policy_version, e.actor,"
        " e.wording_sha256, w.version, w.purpose, w.text"
        " FROM consent_events e LEFT JOIN consent_wordings w ON w.sha256 = e.wording_sha256"
        " WHERE e.recipient_id = $1 ORDER BY e.id",
        recipient_id,
    )
    return [dict(r) for r in rows]


@pytest.fixture
async def ann(add_recipients, pool, tracker):
    await add_recipients(PEOPLE)
    return await pool.fetchval("SELECT id FROM recipients")


async def test_page_choices_keep_the_wording_the_page_showed(ann, settings, pool, http):
    async with http.get(page_url(settings, ann)) as resp:
        shown = served_questions(await resp.text())
    assert set(shown) == {"format", "tracking", "subscribed"}
    form = {"format": "text", "tracking": "yes", "subscribed": "no"}
    async with http.post(
        page_url(settings, ann), data=form, headers={"Origin": settings.base_url}
    ) as resp:
        assert resp.status == 200
    events = (await proof_of(pool, ann))[2:]  # after the import's two
    assert [(e["kind"], e["value"]) for e in events] == [
        ("format", "text"),
        ("tracking", "granted"),
        ("subscription", "unsubscribed"),
    ]
    for event, field in zip(events, ("format", "tracking", "subscribed"), strict=True):
        assert event["channel"] == "page" and event["actor"] is None
        assert (event["policy_url"], event["policy_version"]) == (POLICY_URL, POLICY_VERSION)
        # The text kept under the hash is what the page showed for that question.
        assert event["text"] == shown[field], (event["text"], shown[field])
        assert event["wording_sha256"] == hashlib.sha256(shown[field].encode()).digest()
        assert event["version"] == 1 and event["purpose"] == f"page:{event['kind']}"
    # Kept once: a second change through the page points at the same rows.
    form = {"format": "html", "tracking": "no", "subscribed": "yes"}
    async with http.post(page_url(settings, ann), data=form, headers={"Origin": settings.base_url}):
        pass
    again = (await proof_of(pool, ann))[5:]
    assert [e["wording_sha256"] for e in again] == [e["wording_sha256"] for e in events]
    assert (
        await pool.fetchval("SELECT count(*) FROM consent_wordings WHERE purpose LIKE 'page:%'")
        == 3
    )


async def test_one_click_unsubscribe_keeps_its_wording(ann, settings, pool, http):
    async with http.post(
        page_url(settings, ann),
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 200
    (event,) = (await proof_of(pool, ann))[2:]
    assert (event["kind"], event["value"], event["channel"]) == (
        "subscription", "unsubscribed", "one-click",
    )  # fmt: skip
    assert (event["text"], event["purpose"], event["version"]) == (ONE_CLICK, "one-click", 1)
    assert event["wording_sha256"] == hashlib.sha256(ONE_CLICK.encode()).digest()
    assert (event["policy_url"], event["policy_version"]) == (POLICY_URL, POLICY_VERSION)


async def test_import_keeps_the_operators_wording_and_versions_it(fairclick, write_file, pool):
    people = write_file("people.csv", PEOPLE)
    wording = "Tick to get our news. We record clicks only if you say so.\nPrivacy: see our policy."
    first = fairclick(
        "recipients", "import", str(people), "--consent-wording",
        str(write_file("form.txt", wording)), **POLICY_ENV,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    ann = await pool.fetchval("SELECT id FROM recipients")
    events = await proof_of(pool, ann)
    assert [(e["kind"], e["channel"]) for e in events] == [
        ("format", "import"),
        ("tracking", "import"),
    ]
    for e in events:
        assert (e["text"], e["purpose"], e["version"], e["actor"]) == (wording, "import", 1, ACTOR)
        assert e["wording_sha256"] == hashlib.sha256(wording.encode()).digest()
        assert (e["policy_url"], e["policy_version"]) == (POLICY_URL, POLICY_VERSION)
    # Another list with no wording given: the default, naming the file, is version 2.
    other = write_file("fair.csv", "email\nbob@example.com\n")
    second = fairclick("recipients", "import", str(other), **POLICY_ENV)
    assert second.returncode == 0, second.stderr
    bob = await pool.fetchval("SELECT id FROM recipients WHERE email = 'bob@example.com'")
    (e, _) = await proof_of(pool, bob)
    assert "imported by the operator from fair.csv" in e["text"] and e["version"] == 2
    # A wording file that is not there is one line, and nothing is imported.
    missing = fairclick("recipients", "import", str(other), "--consent-wording", "nope.txt")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "nope.txt" in missing.stderr


async def test_operator_unsubscribe_from_the_command_line(fairclick, add_recipients, pool):
    await add_recipients(PEOPLE)
    result = fairclick("recipients", "unsubscribe", "Ann@Example.com", **POLICY_ENV)
    assert result.returncode == 0, result.stderr
    ann = await pool.fetchval("SELECT id FROM recipients")
    assert await pool.fetchval("SELECT unsubscribed_at IS NOT NULL FROM recipients") is True
    (event,) = (await proof_of(pool, ann))[2:]
    assert (event["kind"], event["value"], event["channel"], event["actor"]) == (
        "subscription", "unsubscribed", "operator", ACTOR,
    )  # fmt: skip
    assert event["text"] == OPERATOR_UNSUBSCRIBE
    assert (event["policy_url"], event["policy_version"]) == (POLICY_URL, POLICY_VERSION)
    nobody = fairclick("recipients", "unsubscribe", "zed@example.com")
    assert nobody.returncode == 2 and "zed@example.com" in nobody.stderr


async def test_history_prints_every_event_with_its_proof(fairclick, write_file, pool):
    # A file name with a terminal escape in it: it is in every event's source.
    people = write_file("new\x1b[2Jlist.csv", PEOPLE)
    assert fairclick("recipients", "import", str(people), **POLICY_ENV).returncode == 0
    assert fairclick("recipients", "unsubscribe", "ann@example.com", **POLICY_ENV).returncode == 0
    table = fairclick("recipients", "history", "ann@example.com")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "new\\x1b[2Jlist.csv" in table.stdout
    events = await proof_of(pool, await pool.fetchval("SELECT id FROM recipients"))
    for e in events:
        assert e["wording_sha256"].hex() in table.stdout
    assert "format: html" in table.stdout and "tracking: not granted" in table.stdout
    assert "subscription: unsubscribed" in table.stdout and "via operator" in table.stdout
    assert f"privacy policy: {POLICY_VERSION} at {POLICY_URL}" in table.stdout
    assert "v1 of import" in table.stdout and "v1 of operator" in table.stdout
    as_json = json.loads(
        fairclick("recipients", "history", "ann@example.com", "--format", "json").stdout
    )
    assert [(e["what"], e["value"], e["channel"]) for e in as_json["events"]] == [
        ("format", "html", "import"),
        ("tracking", "not granted", "import"),
        ("subscription", "unsubscribed", "operator"),
    ]
    assert as_json["events"][2]["wording"]["text"] == OPERATOR_UNSUBSCRIBE
    unknown = fairclick("recipients", "history", "zed@example.com")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1


async def test_download_holds_the_events_with_the_wording_they_refer_to(
    ann, settings, pool, http, mailbox
):
    form = {"format": "html", "tracking": "yes", "subscribed": "yes"}
    headers = {"Origin": settings.base_url}
    async with http.post(page_url(settings, ann), data=form, headers=headers):
        pass
    data = json.loads(await download_through_link(http, pool, settings, mailbox, ann))
    events = data["consent_events"]
    assert [(e["what"], e["value"], e["channel"]) for e in events] == [
        ("format", "html", "import"),
        ("tracking", "not granted", "import"),
        ("tracking", "granted", "page"),
    ]
    stored = {r["sha256"].hex(): r for r in await pool.fetch("SELECT * FROM consent_wordings")}
    for e in events:
        w = e["wording"]
        assert (
            w["text"] == stored[w["sha256"]]["text"]
            and w["version"] == stored[w["sha256"]]["version"]
        )
        assert hashlib.sha256(w["text"].encode()).hexdigest() == w["sha256"]
    assert "Yes, you may record which links I click" in events[2]["wording"]["text"]
    assert events[2]["privacy_policy"] == {"url": POLICY_URL, "version": POLICY_VERSION}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FAIRCLICK_PRIVACY_POLICY_URL", "ftp://example.com/privacy"),
        ("FAIRCLICK_PRIVACY_POLICY_URL", "privacy.html"),
        ("FAIRCLICK_PRIVACY_POLICY_VERSION", "v1\nv2"),
    ],
)
def test_malformed_policy_settings_are_one_line(fairclick, variable, value):
    result = fairclick("recipients", "history", "ann@example.com", **{variable: value})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert variable in result.stderr




async def test_operator_unsubscribe_from_the_console_and_the_api(
    add_recipients, console, tokens, pool
):
    await add_recipients(PEOPLE + "bob@example.com,Bob,text,no\n")
    ann, bob = [r[0] for r in await pool.fetch("SELECT id FROM recipients ORDER BY id")]
    path = f"/recipients/{ann}/unsubscribe"
    refused = await console.post(path, data={"confirm": "yes"}, headers=tokens["viewer"])
    unconfirmed = await console.post(path, data={}, headers=tokens["operator"])
    assert (refused.status, unconfirmed.status) == (403, 400)
    assert len(await proof_of(pool, ann)) == 2  # the import's only: nothing changed
    done = await console.post(
        path, data={"confirm": "yes"}, headers=tokens["operator"], allow_redirects=False
    )
    assert done.status == 303
    api = await console.post(f"/api/v1/recipients/{bob}/unsubscribe", headers=tokens["operator"])
    assert api.status == 200 and await api.json() == {
        "id": bob,
        "subscribed": False,
        "changed": True,
    }
    again = await console.post(f"/api/v1/recipients/{bob}/unsubscribe", headers=tokens["operator"])
    assert (await again.json())["changed"] is False
    missing = await console.post("/api/v1/recipients/999/unsubscribe", headers=tokens["operator"])
    assert missing.status == 404
    (by_console,) = (await proof_of(pool, ann))[2:]
    (by_api,) = (await proof_of(pool, bob))[2:]
    assert (by_console["channel"], by_console["actor"], by_console["text"]) == (
        "operator", "token:operator", OPERATOR_UNSUBSCRIBE,
    )  # fmt: skip
    assert (by_api["channel"], by_api["actor"], by_api["text"]) == (
        "api", "token:operator", API_UNSUBSCRIBE,
    )  # fmt: skip
    for event in (by_console, by_api):
        assert (event["kind"], event["value"]) == ("subscription", "unsubscribed")
        assert (event["policy_url"], event["policy_version"]) == (POLICY_URL, POLICY_VERSION)
    # The console's recipient page shows each event's proof.
    page = await (await console.get(f"/recipients/{ann}", headers=tokens["viewer"])).text()
    assert "wording v1 of operator, policy 2022-10-31" in page and "by token:operator" in page
