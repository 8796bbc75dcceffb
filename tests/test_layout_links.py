"""Links found once per layout are, spot for spot, what find_links finds in each message."""

from pathlib import Path

import pytest
from helpers import EMAIL_TEMPLATES, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mailer.rewrite import find_links
from mailer.templates import CampaignTemplates

PREFERENCES = "https://fc.example/p/"
SKIP = (PREFERENCES,)
PLAIN = ["Ada Lovelace", "Zoë Ünal-Smith", "Grace", "", "KELVIN \u212a and \u0130"]
AWKWARD = [
    "O'Brien & Sons",
    '"quoted"',
    "<b>bold</b>",
    "a --> b",
    "x--",
    "<!-- c -->",
    "href",
    "HREF=x",
    "&amp;",
    "&",
    "line\nbreak",
    " spaced ",
    "https://x.example/a?b=1&amp;c",
    "</title>",
    "<![endif]-->",
    "[if mso]>",
]


def context(name, n: int, campaign: str = "autumn 2025 & more") -> dict:
    return {
        "recipient": {
            "email": f"r{n}@example.net",
            "name": name,
            "attributes": {"city": name or "Oslo", "member": n % 2 == 0},
        },
        "campaign": {"name": campaign},
        "preferences_url": f"{PREFERENCES}tok{n}",
        "share_url": f"https://share.example/{n}",
    }


def assert_same_links(templates: CampaignTemplates, ctx: dict) -> None:
    rendered = templates.render(ctx)
    assert templates.find_links(rendered, SKIP) == find_links(rendered.html, skip_prefixes=SKIP)


@pytest.mark.parametrize("path", EMAIL_TEMPLATES, ids=lambda p: p.stem)
def test_links_are_find_links_for_every_recipient(path: Path) -> None:
    templates = CampaignTemplates(
        subject="s", html=path.read_text(encoding="utf-8"), html_filename=path.name
    )
    for n, name in enumerate(PLAIN + AWKWARD):
        assert_same_links(templates, context(name, n))
        assert_same_links(templates, context(Markup(name), n, campaign=name or "c"))


def test_plain_values_use_the_layouts_links() -> None:
    """The benchmark's template: one scan per layout, none per message."""
    path = ROOT / "bench/mailer_sample.html"
    templates = CampaignTemplates(subject="s", html=path.read_text(), html_filename=path.name)
    layout_links = templates._layout_links
    for n, name in enumerate([name for name in PLAIN if name] * 4):
        rendered = templates.render(context(name, n))
        spots = layout_links._from_plan(rendered.html, rendered.layout, SKIP)
        assert spots is not None and len(spots) == 25
        assert spots == find_links(rendered.html, skip_prefixes=SKIP)
    # Two layouts (member or not); the campaign name in the Outlook button's href is keyed.
    assert len(layout_links._keyed) == 2
    assert all(len(keyed) == 1 for keyed in layout_links._keyed.values())
    assert len(layout_links._plans) == 2


# Template fragments putting a value everywhere the scanner distinguishes.
FRAGMENTS = [
    "<p>Hi {{ v }}, welcome</p>",
    '<a href="https://shop.example/{{ v }}?a=1&amp;b=2">x</a>',
    "<a href='{{ v }}'>x</a>",
    "<a href={{ v }}>x</a>",
    '<a href="https://x.example/" data-fairclick="{{ v }}">x</a>',
    '<a href="https://x.example/n" data-fairclick-name="{{ v }}">x</a>',
    '<area href="https://x.example/area" {{ v }}>',
    '<{{ v }} href="https://x.example/t">t</a>',
    '<a {{ v }}="https://x.example/attr">x</a>',
    '<a href="https://x.example/u" title={{ v }}>x</a>',
    '<!-- {{ v }} --><a href="https://x.example/after-comment">x</a>',
    '<!--{{ v }}<a href="https://x.example/in-comment">x</a>-->',
    '<!--[if mso]>{{ v }}<v:roundrect href="https://x.example/vml"><![endif]-->',
    '<!--[if {{ v }}]><a href="https://x.example/cond">x</a><![endif]-->',
    '<!--[if mso]><a href="https://x.example/{{ v }}">x</a><![endif]-->',
    '<title>{{ v }}</title><a href="https://x.example/title">x</a>',
    '<style>p{color:red}</{{ v }}<a href="https://x.example/style">x</a></style>',
    '<textarea>{{ v }}</textarea><a href="https://x.example/ta">x</a>',
    '<head><a href="https://x.example/head">{{ v }}</a></head>',
    '<p {{ v }}>para</p><a href="https://x.example/p">x</a>',
    '<img alt="{{ v }}" src=x><a href="https://x.example/img">x</a>',
    '<{{ v }}<a href="https://x.example/lt">x</a>',
    '<a href="{{ preferences_url }}">prefs</a>',
    '<a href="https://x.example/open',
    '{% if v %}<a href="https://x.example/if">{{ v }}</a>{% endif %}',
    '<title>a</titl{{ v }}<a href="https://x.example/t2">x</a></title>',
    '<plaintext>{{ v }}<a href="https://x.example/pt">x</a>',
]
VALUES = st.text(alphabet="aZ -!<>\"'=&/;[]#?:\u212a", max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    fragments=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=5),
    values=st.lists(VALUES, min_size=1, max_size=6),
    safe=st.booleans(),
)
def test_generated_templates(fragments: list[str], values: list[str], safe: bool) -> None:
    templates = CampaignTemplates(subject="s", html="".join(fragments), html_filename="t.html")
    assert templates._layout_links is not None
    for n, value in enumerate(values):
        ctx = context("x", n)
        ctx["v"] = Markup(value) if safe else value
        assert_same_links(templates, ctx)
