"""Which template link a rendered link is, and whether its URL is the recipient's."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EMAIL_TEMPLATES, ROOT

from mailer.rewrite import find_links
from mailer.template_links import UNWRITTEN, LinkKey, TemplateLinks
from mailer.templates import CampaignTemplates
from tracker.targets import erased_location

PREFERENCES = "https://t.example/p/"


def context(n: int) -> dict:
    return {
        "recipient": {
            "email": f"r{n}@example.net",
            "name": f"Reader {n}",
            "attributes": {
                "city": f"City{n}",
                "homepage": f"https://home{n}.example/",
                "member": n % 2 == 0,
            },
        },
        "campaign": {"name": "autumn & co"},
        "preferences_url": f"{PREFERENCES}tok{n}",
        "share_url": f"https://share.example/{n}",
    }


def keys(source: str, n: int, *, text: str | None = None) -> list[LinkKey]:
    """The links rows of recipient n's rendered HTML links, as the composer names them."""
    templates = CampaignTemplates(subject="s", html=source, html_filename="t.html")
    rendered = templates.render(context(n))
    matcher = TemplateLinks.of_html(source).matcher()
    spots = find_links(rendered.html, skip_prefixes=(PREFERENCES,))
    return [matcher.key(spot.url, spot.name or "") for spot in spots]


@pytest.mark.parametrize("path", EMAIL_TEMPLATES, ids=lambda p: p.stem)
def test_every_link_of_real_templates_is_a_written_one(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    for n in range(3):
        found = keys(source, n)
        assert found and all(key.url != UNWRITTEN for key in found)
        # Only a link that reads more than the campaign is the message's.
        assert {key.url for key in found if key.per_message} <= {"{{ share_url }}"}


def test_links_that_read_only_the_campaign_keep_their_rendered_url() -> None:
    """The benchmark's 25 links all carry {{ campaign.name | urlencode }}: no row per person,
    nothing per message, the composer's fast path."""
    source = (ROOT / "bench/mailer_sample.html").read_text(encoding="utf-8")
    assert keys(source, 1) == keys(source, 2)
    assert not any(key.per_message for key in keys(source, 1))
    assert any("utm_campaign=autumn%20%26%20co" in key.url for key in keys(source, 1))


def test_a_link_reading_the_recipient_is_named_as_written() -> None:
    source = (
        '<a href="https://s.example/?who={{ recipient.email|urlencode }}&amp;x=1">a</a>'
        '<a href="https://s.example/c" data-fairclick-name="{{ recipient.attributes.city }}">c</a>'
        '<a href="{{ recipient.attributes.homepage }}" data-fairclick-name="home">h</a>'
        '<a href="https://s.example/fixed" data-fairclick-name="f">f</a>'
    )
    expected = [
        LinkKey("https://s.example/?who={{ recipient.email|urlencode }}&x=1", "", True, 0),
        LinkKey("https://s.example/c", "{{ recipient.attributes.city }}"),
        LinkKey("{{ recipient.attributes.homepage }}", "home", True, 0),
        LinkKey("https://s.example/fixed", "f"),
    ]
    assert keys(source, 1) == keys(source, 2) == expected


def test_a_loop_gives_one_row_per_occurrence_under_one_written_link() -> None:
    source = (
        '{% for n in range(3) %}<a href="https://s.example/p/{{ n }}">p</a>{% endfor %}'
        '<a href="https://s.example/p/{{ recipient.name|urlencode }}/more">m</a>'
    )
    written = "https://s.example/p/{{ n }}"
    assert keys(source, 1) == [
        LinkKey(written, "", True, 0),
        LinkKey(written, "", True, 1),
        LinkKey(written, "", True, 2),
        # Both patterns match: the more specific one (more literal text) wins.
        LinkKey("https://s.example/p/{{ recipient.name|urlencode }}/more", "", True, 0),
    ]


def test_whitespace_control_and_blocks_inside_an_href() -> None:
    source = (
        '<a href="https://s.example/ {%- if recipient.name %}?n={{ recipient.name|urlencode }}'
        '{%- endif %}">a</a>'
    )
    (key,) = keys(source, 1)
    assert key.per_message and key.url.startswith("https://s.example/ {%- if")


def test_a_link_the_template_does_not_write_is_the_messages() -> None:
    source = "<p>{{ recipient.attributes.homepage | safe }}</p>"
    templates = CampaignTemplates(subject="s", html=source, html_filename="t.html")
    ctx = context(1)
    ctx["recipient"]["attributes"]["homepage"] = '<a href="https://mine.example/">me</a>'
    spots = find_links(templates.render(ctx).html)
    matcher = TemplateLinks.of_html(source).matcher()
    assert [matcher.key(s.url, s.name or "") for s in spots] == [LinkKey(UNWRITTEN, "", True, 0)]


def test_links_of_a_text_template_as_written() -> None:
    text = (
        "Hello {{ recipient.name }},\n"
        "shop: https://s.example/?who={{ recipient.email|urlencode }}.\n"
        "home ({{ recipient.attributes.homepage }})\n"
        "fixed: https://s.example/fixed, prefs: {{ preferences_url }}\n"
    )
    written = [(link.url, link.personal_url) for link in TemplateLinks.of_text(text).written]
    assert written == [
        ("{{ recipient.name }}", True),  # might be a URL: only ever a fallback pattern
        ("https://s.example/?who={{ recipient.email|urlencode }}", True),
        ("{{ recipient.attributes.homepage }}", True),
        ("https://s.example/fixed", False),
    ]
    matcher = TemplateLinks.of_text(text).matcher()
    assert matcher.key("https://s.example/?who=r1%40example.net", "") == LinkKey(
        "https://s.example/?who={{ recipient.email|urlencode }}", "", True, 0
    )
    assert matcher.key("https://s.example/fixed", "") == LinkKey("https://s.example/fixed", "")


@pytest.mark.parametrize(
    ("written", "location"),
    [
        ("https://shop.example/?who={{ recipient.email|urlencode }}", "https://shop.example/"),
        ("https://shop.example:8443/a/{{ x }}", "https://shop.example:8443/"),
        ("HTTP://Shop.example#{{ x }}", "HTTP://Shop.example/"),
        ("{{ recipient.attributes.homepage }}", None),
        ("https://{{ recipient.attributes.site }}/", None),
        # The host may go on in the rendering ("…example.evil.net"): no origin was written.
        ("https://shop.example{{ path }}", None),
        ("(a link the template does not write)", None),
    ],
)
def test_where_an_erased_link_leads(written: str, location: str | None) -> None:
    assert erased_location(written) == location
