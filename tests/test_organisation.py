"""Who we are: the organisation's name, postal address and privacy policy on every recipient
page, in campaign templates, in `campaign create`'s warning and `serve`'s, and in the name
of the data download; and what the pages say when none of it is set."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from html import escape

import pytest
from aiohttp.test_utils import TestServer
from conftest import free_port
from helpers import BAD_TOKEN_KINDS, bad_tokens
from mailed_links import deliver_queued, follow, link_in, link_messages, mailed_link, press
from playwright.async_api import async_playwright

from mailer.compose import Recipient, template_context
from tracker.app import create_app
from tracker.errors import ConfigError, TemplateProblem
from tracker.organisation import Organisation, missing_address_warning
from tracker.pages import page_environment
from tracker.personal_data import content_disposition, download_filename
from tracker.settings import Settings
from tracker.tokens import Tokens
from tracker.wordings import page_proof

NAME = "Smith & Sons <Ltd>"  # markup in it must show as text
ADDRESS_LINES = ["1 Main Street", "Springfield, IL 62701", "USA"]
POLICY = "https://example.com/privacy?v=2&lang=en"
ORGANISATION = {
    "organisation_name": NAME,
    "organisation_address": "\n".join(ADDRESS_LINES),
    "privacy_policy_url": POLICY,
}
FAULT_PAGES = ["erase_later.html", "unavailable.html", "link_erased.html"]
FORM = {"format": "text", "tracking": "no", "subscribed": "yes"}


@pytest.fixture
def settings(request, settings):
    """The organisation set, unless a test asks for `unset` or `name only` (indirectly)."""
    which = getattr(request, "param", "set")
    if which == "unset":
        return settings
    if which == "name only":
        return replace(settings, organisation_name=NAME)
    return replace(settings, **ORGANISATION)


@pytest.fixture
async def ann(add_recipients, pool, tracker, settings):
    await add_recipients("email,format,tracking_consent\nann@example.com,html,yes\n")
    rid = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")
    return rid, f"{settings.base_url}/p/{Tokens(settings.secret_keys).preferences.encode(rid)}"


async def every_page(http, pool, settings, mailbox, rid: int, url: str) -> dict:
    """Every page a recipient can be shown, by what led to it: {what: (status, html)}.

    Download and erasure go through the one-time link, read from the captured message.
    """
    own = {"Origin": settings.base_url}
    pages = {}

    async def fetch(what, method, path, **kwargs):
        async with http.request(method, path, **kwargs) as resp:
            pages[what] = (resp.status, await resp.text())

    await fetch("home", "GET", f"{settings.base_url}/")
    await fetch("preferences", "GET", url)
    await fetch("saved", "POST", url, data=FORM, headers=own)
    await fetch("unsubscribed", "POST", url, data={**FORM, "subscribed": "no"}, headers=own)
    await fetch("bad form post", "POST", url, data={**FORM, "format": "pdf"}, headers=own)
    await fetch("confirmation link sent", "POST", url + "/data", headers=own)
    assert (await press(http, settings, rid, "download"))[0] == 200
    await deliver_queued(pool, settings)
    download, expiring = sorted({link_in(m) for m in link_messages(mailbox, "ann@example.com")})
    erase = await mailed_link(http, pool, settings, mailbox, rid, "erase")  # the third link
    await fetch("too many links", "POST", url + "/erase", headers=own)  # the fourth this hour
    await fetch("mailed download link", "GET", download)
    await fetch("mailed erase link", "GET", erase)
    await fetch("erasure not confirmed", "POST", erase, data={}, headers=own)
    assert (await follow(http, download, settings))[0] == 200  # the file, not a page
    await fetch("mailed link used", "GET", download)
    await pool.execute(
        "UPDATE mailbox_links SET expires_at = now() - interval '1 second'"
        " WHERE used_at IS NULL AND action = 'download'"
    )
    await fetch("mailed link expired", "GET", expiring)
    await fetch("mailed link not valid", "GET", f"{settings.base_url}/p/confirm/erase/not-a-token")
    await fetch("preference link not valid", "GET", f"{settings.base_url}/p/not-a-token")
    await fetch("tracked link not valid", "GET", f"{settings.base_url}/c/not-a-token")
    await fetch("erased", "POST", erase, data={"confirm": "yes"}, headers=own)
    await fetch("old link after erasure", "GET", url)
    await fetch("mailed link after erasure", "GET", erase)
    environment = page_environment(Organisation.of(settings))
    for name in FAULT_PAGES:
        pages[name] = (0, environment.get_template(name).render())
    return pages


STATUS = {
    "home": 200,
    "preferences": 200,
    "saved": 200,
    "unsubscribed": 200,
    "bad form post": 400,
    "confirmation link sent": 200,
    "too many links": 429,
    "mailed download link": 200,
    "mailed erase link": 200,
    "erasure not confirmed": 400,
    "mailed link used": 410,
    "mailed link expired": 410,
    "mailed link not valid": 404,
    "preference link not valid": 404,
    "tracked link not valid": 404,
    "erased": 200,
    "old link after erasure": 410,
    "mailed link after erasure": 410,
}


def footer_of(html: str) -> str | None:
    found = re.findall(r"<footer>(.*?)</footer>", html, re.DOTALL)
    assert len(found) <= 1
    return found[0] if found else None


async def test_every_page_says_who_we_are_where_we_are_and_links_the_policy(
    ann, settings, http, pool, mailbox
):
    rid, url = ann
    pages = await every_page(http, pool, settings, mailbox, rid, url)
    assert len(pages) == len(STATUS) + len(FAULT_PAGES)
    for what, (status, html) in pages.items():
        assert status == STATUS.get(what, 0), what
        footer = footer_of(html)
        assert footer is not None, f"{what}: no footer"
        assert f"<strong>{escape(NAME, quote=False)}</strong>" in footer, what
        assert "<address>1 Main Street<br>Springfield, IL 62701<br>USA</address>" in footer, what
        assert f'<a href="{escape(POLICY)}">Privacy policy of {escape(NAME, quote=False)}</a>' in (
            footer
        ), what
        assert NAME not in html, what  # never unescaped
        assert f"– {escape(NAME, quote=False)}</title>" in html, what


@pytest.mark.parametrize("settings", ["unset", "name only"], indirect=True)
async def test_without_the_settings_pages_work_and_claim_nothing(
    ann, settings, http, pool, mailbox
):
    """Nothing unset is shown empty ("Address:" and a blank), as "None", or made up."""
    rid, url = ann
    pages = await every_page(http, pool, settings, mailbox, rid, url)
    for what, (status, html) in pages.items():
        assert status == STATUS.get(what, 0), what
        footer = footer_of(html)
        if settings.organisation_name:
            assert (
                footer.strip() == f"<p>These emails come from <strong>{escape(NAME)}</strong>.</p>"
            )
        else:
            assert footer is None, what
            assert " – " not in html and "come from" not in html, what
        for claim in ("<address", "Address", "Privacy policy", "None", 'href=""'):
            assert claim not in html, (what, claim)
    sender = escape(NAME) if settings.organisation_name else "these emails"
    assert f"You are unsubscribed from {sender}" in pages["unsubscribed"][1]
    assert ("erased by" in pages["old link after erasure"][1]) is bool(settings.organisation_name)


async def test_unsubscribed_says_from_whom_and_offers_the_way_back(ann, settings, http, pool):
    rid, url = ann
    own = {"Origin": settings.base_url}
    async with http.post(url, data={**FORM, "subscribed": "no"}, headers=own) as resp:
        html = await resp.text()
    assert resp.url.query.get("saved") == "1"
    name = escape(NAME, quote=False)
    assert f"Your choices are saved. You are unsubscribed from {name}." in html  # role=status
    assert f'<h2 id="unsubscribed">You are unsubscribed from {name}</h2>' in html
    # The way back is a form of its own on the same page, keeping the other choices.
    back = re.search(r'<section class="unsubscribed".*?</section>', html, re.DOTALL)[0]
    assert f'<form method="post" action="{url.removeprefix(settings.base_url)}">' in back
    assert '<input type="hidden" name="format" value="text">' in back
    assert '<input type="hidden" name="tracking" value="no">' in back
    assert '<input type="hidden" name="subscribed" value="yes">' in back
    assert "Subscribe me again</button>" in back
    async with http.post(url, data={"format": "text", "tracking": "no", "subscribed": "yes"},
                         headers=own) as resp:  # fmt: skip
        html = await resp.text()
    assert "You are unsubscribed" not in html
    assert await pool.fetchval("SELECT unsubscribed_at IS NULL FROM recipients WHERE id = $1", rid)
    # RFC 8058's one-click answer names the organisation too.
    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    async with http.post(url, data=b"List-Unsubscribe=One-Click", headers=one_click) as resp:
        assert await resp.text() == f"You are unsubscribed from {NAME}.\n"  # text/plain


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
async def test_erased_old_link_says_erased_and_a_bad_one_says_not_valid(
    ann, settings, http, pool, mailbox, kind
):
    rid, url = ann
    bad = f"{settings.base_url}/p/{bad_tokens(settings, rid)[kind]}"
    erase = await mailed_link(http, pool, settings, mailbox, rid, "erase")
    status, headers, _ = await follow(http, erase, settings, {"confirm": "yes"})
    assert (status, headers["Location"]) == (303, "/erased")
    links = await pool.fetchval("SELECT count(*) FROM mailbox_links")
    own = {"Origin": settings.base_url}
    # The page, its form, and its Download and Erase buttons (which would mail a link).
    for method, endpoint in (("GET", ""), ("POST", ""), ("POST", "/data"), ("POST", "/erase")):
        what = (method, endpoint, kind)
        async with http.request(method, url + endpoint, data=FORM, headers=own) as r:
            html = await r.text()
        assert r.status == 410, what
        assert "<h1>The data behind this link was erased</h1>" in html, what
        assert "not valid" not in html, what
        async with http.request(method, bad + endpoint, data=FORM, headers=own) as r:
            html = await r.text()
        assert r.status == 404, what
        assert "This link is not valid" in html and "erased" not in html, what
    assert await pool.fetchval("SELECT count(*) FROM mailbox_links") == links  # nothing mailed


async def test_erase_stands_apart_from_save_and_looks_destructive(ann, http):
    _, url = ann
    async with http.get(url) as resp:
        html = await resp.text()
    save_form = re.search(r'<form method="post" action="[^"]+">\s*<fieldset>.*?</form>', html,
                          re.DOTALL)[0]  # fmt: skip
    assert "Save my choices" in save_form and "Erase" not in save_form
    zone = re.search(r'<section class="danger-zone".*?</section>', html, re.DOTALL)[0]
    assert '<h2 id="erase">Erase my data</h2>' in zone
    assert '<button type="submit" class="danger">Erase my data</button>' in zone
    assert "It cannot be undone." in zone
    assert "Save my choices" not in zone and "Download my data" not in zone
    css = re.search(r"button\.danger \{([^}]*)\}", html)[1]
    assert "background: #a4161a" in css and "color: #fff" in css  # red, 7.7:1 with white


async def test_the_mailed_erase_link_confirms_with_a_destructive_button(
    ann, settings, http, pool, mailbox
):
    rid, _ = ann
    pages = {}
    for action in ("erase", "download"):
        link = await mailed_link(http, pool, settings, mailbox, rid, action)
        async with http.get(link) as resp:
            assert resp.status == 200
            pages[action] = await resp.text()
    assert '<button type="submit" class="danger">Erase my data</button>' in pages["erase"]
    assert "It cannot be undone." in pages["erase"]
    assert '<button type="submit">Download my data</button>' in pages["download"]


def test_settings_from_the_environment():
    env = {
        "FAIRCLICK_ORGANISATION_NAME": "  Example   Corp ",
        # "\n" as two characters: what a .env or compose file can hold.
        "FAIRCLICK_ORGANISATION_ADDRESS": "1 Main Street\\nSpringfield\n\n  USA ",
        "FAIRCLICK_PRIVACY_POLICY_URL": " https://example.com/privacy ",
    }
    settings = Settings.from_env(env)
    assert settings.organisation_name == "Example Corp"
    assert settings.organisation_address == "1 Main Street\nSpringfield\nUSA"
    assert settings.privacy_policy_url == "https://example.com/privacy"
    empty = Settings.from_env({"FAIRCLICK_ORGANISATION_ADDRESS": " \\n "})
    assert (empty.organisation_name, empty.organisation_address, empty.privacy_policy_url) == (
        None,
        None,
        None,
    )
    assert Organisation.of(empty).unset() == [
        "FAIRCLICK_ORGANISATION_NAME",
        "FAIRCLICK_ORGANISATION_ADDRESS",
        "FAIRCLICK_PRIVACY_POLICY_URL",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FAIRCLICK_PRIVACY_POLICY_URL", "example.com/privacy", "is not an http(s) address"),
        ("FAIRCLICK_PRIVACY_POLICY_URL", "javascript:alert(1)", "is not an http(s) address"),
        ("FAIRCLICK_PRIVACY_POLICY_URL", "https://[::1/x", "is not an http(s) address"),
        ("FAIRCLICK_PRIVACY_POLICY_URL", "https://e.com/a b", "is not an http(s) address"),
        ("FAIRCLICK_PRIVACY_POLICY_URL", "https://e.com/\u202eftp", "is not an http(s) address"),
        ("FAIRCLICK_PRIVACY_POLICY_URL", "https://e.com/\x1b[2J", "is not an http(s) address"),
        # Every address setting goes through one check (settings.http_url_parts): a broken
        # IPv6 host was a ValueError traceback, a bad port or a space was taken as is.
        ("FAIRCLICK_BASE_URL", "http://[::1", "is not an http(s) address"),
        ("FAIRCLICK_BASE_URL", "http://click.example.com:abc", "is not an http(s) address"),
        ("FAIRCLICK_BASE_URL", "http://click.example.com:99999", "is not an http(s) address"),
        ("FAIRCLICK_BASE_URL", "http://click example.com", "is not an http(s) address"),
        ("FAIRCLICK_BASE_URL", "https://e.com/\u202ex", "is not an http(s) address"),
        ("FAIRCLICK_CONSOLE_URL", "http://[::1", "is not an http(s) address"),
        ("FAIRCLICK_CONSOLE_URL", "http://ops.example.com:x", "is not an http(s) address"),
        ("FAIRCLICK_PRIVACY_POLICY_VERSION", "v2\u2066", "one line of at most 100"),
        ("FAIRCLICK_ORGANISATION_NAME", "Evil\x1b]0;owned\x07", "control character"),
        ("FAIRCLICK_ORGANISATION_ADDRESS", "1 Main St\\n\u202eASU", "control character"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_it(variable, value, says):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(variable) and says in str(raised.value)
    assert "\n" not in str(raised.value)


def test_one_policy_setting_for_the_footer_and_the_consent_proof():
    """The consent proof (tracker/wordings.py) and the pages read the same setting."""
    settings = Settings.from_env(
        {
            "FAIRCLICK_PRIVACY_POLICY_URL": "https://example.com/privacy",
            "FAIRCLICK_PRIVACY_POLICY_VERSION": " 2026-01 ",
        }
    )
    proof = page_proof(settings)
    assert Organisation.of(settings).privacy_policy_url == proof.policy_url
    assert (proof.policy_url, proof.policy_version) == ("https://example.com/privacy", "2026-01")


def test_campaign_templates_see_the_organisation():
    recipient = Recipient(1, "ann@example.com", "Ann", "html", False, {})
    organisation = Organisation(NAME, "\n".join(ADDRESS_LINES), POLICY)
    context = template_context(recipient, "c", "https://t.example/p/x", organisation)
    assert context["organisation"] == {
        "name": NAME,
        "address": "\n".join(ADDRESS_LINES),
        "address_lines": tuple(ADDRESS_LINES),
        "privacy_policy_url": POLICY,
    }
    nothing = template_context(recipient, "c", "https://t.example/p/x")["organisation"]
    assert nothing == {"name": "", "address": "", "address_lines": (), "privacy_policy_url": ""}


TEMPLATE = """<html><body><p>Hello</p>
<a href="https://shop.example/">shop</a>
<footer>{{ organisation.name }}<br>
{% for line in organisation.address_lines %}{{ line }}<br>{% endfor %}
<a href="{{ organisation.privacy_policy_url }}">Privacy</a></footer></body></html>
"""
TEXT = "Hello\n\n{{ organisation.name }}\n{{ organisation.address }}\n"


async def test_sent_mail_carries_the_organisation(
    ann, settings, pool, make_campaign, deliver, mailbox, add_recipients
):
    await add_recipients("email,format\nbob@example.com,text\n", name="bob.csv")
    await make_campaign(TEMPLATE, name="c", subject="C")
    await make_campaign(TEMPLATE, name="t", subject="T", text=TEXT)
    await deliver("c")
    await deliver("t")

    def body(who, subject, kind):
        (mail,) = [m for m in mailbox.for_address(who) if m["Subject"] == subject]
        return mail.get_body((kind,)).get_content().replace("\r\n", "\n")

    html = body("ann@example.com", "C", "html")
    assert "<footer>Smith &amp; Sons &lt;Ltd&gt;<br>" in html  # autoescaped in HTML
    assert "1 Main Street<br>Springfield, IL 62701<br>USA<br>" in html
    # Text-only Bob: the text made from the HTML, and the text template as written.
    made = body("bob@example.com", "C", "plain")
    assert all(line in made for line in ADDRESS_LINES), made
    assert f"{NAME}\n" + "\n".join(ADDRESS_LINES) in body("bob@example.com", "T", "plain")
    # The policy link is the same for everyone: one links row with its URL, not the message's.
    rows = await pool.fetch(
        "SELECT url, per_message FROM links l JOIN campaigns c ON c.id = l.campaign_id"
        " WHERE c.name = 'c' AND l.purpose = 'content' ORDER BY url"
    )
    assert [tuple(r) for r in rows] == [(POLICY, False), ("https://shop.example/", False)]
    assert await pool.fetchval("SELECT count(*) FROM message_links") == 0


@pytest.mark.parametrize(
    "expression",
    [
        "organisation.__class__",
        "organisation.address_lines.append('x')",
        "organisation.update(name='x')",
        "organisation.name.__class__.__mro__",
    ],
)
async def test_the_organisation_is_inside_the_sandbox(make_campaign, pool, expression):
    with pytest.raises(TemplateProblem) as error:
        await make_campaign(f"<p>{{{{ {expression} }}}}</p>\n")
    # Refused by the sandbox, or not there at all (address_lines is a tuple): never run.
    assert re.search(r"c\.html:1: (SecurityError|UndefinedError)", str(error.value))
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.mark.parametrize(
    ("address", "html", "text", "warned"),
    [
        # Read from the settings, or written out (in HTML, across tags and entities).
        (True, "<p>{{ organisation.address }}</p>", None, []),
        (True, "{% for l in organisation.address_lines %}{{ l }}{% endfor %}", None, []),
        (True, "<p>{{ organisation['address'] }}</p>", None, []),
        (True, "<p>1 Main  Street<br>Springfield,\nIL 62701<br>USA</p>", None, []),
        (True, "<p>1 Main Street &amp; Springfield, IL 62701, USA</p>", None, []),
        # Missing: nowhere, in part, only in a comment-free other part, or not configured.
        (True, "<p>Hello {{ organisation.name }}</p>", None, ["h.html"]),
        (True, "<p>1 Main Street, USA</p>", None, ["h.html"]),
        (True, "<p>{{ organisation.address }}</p>", "Hello", ["t.txt"]),
        (True, "<p>Hi</p>", "Hi", ["h.html", "t.txt"]),
        (False, "<p>{{ organisation.address }}</p>", None, ["h.html"]),
        (False, "<p>1 Main Street</p>", None, ["h.html"]),
    ],
)
def test_missing_address_warning(address, html, text, warned):
    organisation = Organisation(NAME, "\n".join(ADDRESS_LINES) if address else None, POLICY)
    templates = [("h.html", html, True)] + ([("t.txt", text, False)] if text else [])
    warning = missing_address_warning(organisation, templates)
    if not warned:
        assert warning is None
        return
    assert warning.startswith(f"warning: {' and '.join(warned)} carr")
    assert "no postal address" in warning and "CAN-SPAM" in warning and "\n" not in warning
    assert ("set FAIRCLICK_ORGANISATION_ADDRESS" in warning) is not address


def fairclick_env(db_url, tmp_path, **env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    return environ | {
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
        "FAIRCLICK_SECRET_KEY": "organisation-test-key-0123456789",
        "FAIRCLICK_OPS_LISTEN": "off",
        **env,
    }


def run_fairclick(db_url, tmp_path, *args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fairclick.cli", *args],
        env=fairclick_env(db_url, tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("configured", [True, False], ids=["address set", "address unset"])
async def test_campaign_create_warns_in_one_line_and_stores_the_campaign(
    db_url, tmp_path, write_file, pool, configured
):
    env = {"FAIRCLICK_ORGANISATION_ADDRESS": "1 Main Street\\nUSA"} if configured else {}
    bare = write_file("bare.html", "<p>Hi {{ recipient.name }}</p>")
    text = write_file("bare.txt", "Hi")
    with_address = write_file("addr.html", "<p>Hi</p><p>{{ organisation.address }}</p>")
    create = ("campaign", "create", "--subject", "Hi", "--from", "news@example.com")

    result = run_fairclick(db_url, tmp_path, *create[:2], "a", *create[2:], "--html", str(bare),
                           "--text", str(text), env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"fairclick: warning: {bare} and {text} carry no postal address")
    assert ("set FAIRCLICK_ORGANISATION_ADDRESS" in line) is not configured
    assert "campaign 'a' created" in result.stdout

    result = run_fairclick(db_url, tmp_path, *create[:2], "b", *create[2:], "--html",
                           str(with_address), env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    if configured:
        assert result.stderr == ""
    else:
        (line,) = result.stderr.splitlines()
        assert f"{with_address} carries no postal address" in line
    names = await pool.fetch("SELECT name FROM campaigns ORDER BY name")
    assert [r["name"] for r in names] == ["a", "b"]  # a warning, never a refusal


SETTING_NAMES = [
    "FAIRCLICK_ORGANISATION_NAME",
    "FAIRCLICK_ORGANISATION_ADDRESS",
    "FAIRCLICK_PRIVACY_POLICY_URL",
]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("configured", [0, 2, 3], ids=["none set", "two set", "all set"])
def test_serve_says_once_which_settings_are_unset(db_url, tmp_path, workers, configured):
    values = ["Example Corp", "1 Main Street\\nUSA", "https://example.com/privacy"]
    env = dict(zip(SETTING_NAMES[:configured], values, strict=False))
    with subprocess.Popen(
        [sys.executable, "-m", "fairclick.cli", "serve", "--port", str(free_port()),
         "--workers", workers],
        env=fairclick_env(db_url, tmp_path, **env),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        try:
            first = process.stdout.readline()  # printed once it (or every worker) listens
            assert "fairclick tracker on" in first or "workers" in first, process.stderr.read()
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
    said = [line for line in err.splitlines() if "not set: recipients' pages leave it out" in line]
    unset_names = SETTING_NAMES[configured:]
    if not unset_names:
        assert said == [], err
        return
    assert len(said) == 1, err  # once, not once per worker
    verb = "is" if len(unset_names) == 1 else "are"
    assert said[0].startswith(f"fairclick: {', '.join(unset_names)} {verb} not set"), said


def test_download_filename_is_the_organisation_and_the_day():
    day = date(2026, 12, 2)

    def named(name):
        return download_filename(Settings(data_dir="/tmp", organisation_name=name), day)

    assert named("Example Corp") == "example-corp-data-2026-12-02.json"
    assert named("ExampleCorp") == "examplecorp-data-2026-12-02.json"
    assert named(None) == "personal-data-2026-12-02.json"
    assert named("../../etc/passwd") == "etc-passwd-data-2026-12-02.json"
    assert named('a"b\\c;d\r\ne') == "a-b-c-d-e-data-2026-12-02.json"
    assert named("!!!") == "personal-data-2026-12-02.json"
    assert named("Zoë & Co.") == "zoë-co-data-2026-12-02.json"
    assert named("例え株式会社") == "例え株式会社-data-2026-12-02.json"
    assert len(named("x" * 500)) == len("-data-2026-12-02.json") + 60
    assert content_disposition("example-corp-data-2026-12-02.json") == (
        'attachment; filename="example-corp-data-2026-12-02.json"'
    )
    assert content_disposition("zoë-co-data-2026-12-02.json") == (
        'attachment; filename="zoe-co-data-2026-12-02.json"; '
        "filename*=UTF-8''zo%C3%AB-co-data-2026-12-02.json"
    )
    assert content_disposition("例え株式会社-data-2026-12-02.json") == (
        'attachment; filename="data-2026-12-02.json"; filename*=UTF-8'
        "''%E4%BE%8B%E3%81%88%E6%A0%AA%E5%BC%8F%E4%BC%9A%E7%A4%BE-data-2026-12-02.json"
    )


async def test_the_browser_saves_the_download_under_the_organisations_name(
    add_recipients, pool, settings, tracker_port, mailbox
):
    """Through the real page and the mailed link in Chromium: filename* gives the UTF-8 name."""
    zoe = replace(settings, organisation_name="Zoë & Co.")
    await add_recipients("email\nann@example.com\n")
    rid = await pool.fetchval("SELECT id FROM recipients")
    server = TestServer(create_app(zoe, pool=pool), host="127.0.0.1", port=tracker_port)
    await server.start_server()
    try:
        url = f"{settings.base_url}/p/{Tokens(settings.secret_keys).preferences.encode(rid)}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
            )
            page = await (await browser.new_context(accept_downloads=True)).new_page()
            await page.goto(url)
            async with page.expect_navigation():
                await page.get_by_role("button", name="Download my data").click()
            await deliver_queued(pool, zoe)
            (message,) = link_messages(mailbox, "ann@example.com")
            await page.goto(link_in(message))
            days = {datetime.now(UTC).date()}
            async with page.expect_download() as download:
                await page.get_by_role("button", name="Download my data").click()
            days.add(datetime.now(UTC).date())
            name = (await download.value).suggested_filename
            await browser.close()
    finally:
        await server.close()
    assert name in {f"zoë-co-data-{d.isoformat()}.json" for d in days}
