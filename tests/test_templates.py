"""Campaign templates render exactly as Jinja does, with its own filters' results."""

from __future__ import annotations

import jinja2
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from mailer.templates import CampaignTemplates

SOURCE = '<a href="https://example.com/?c={{ value | urlencode }}">{{ value | urlencode }}</a>'


def ours(value) -> tuple[str, str]:
    templates = CampaignTemplates(
        subject="{{ value | urlencode }}", html=SOURCE, html_filename="c.html"
    )
    rendered = templates.render({"value": value})
    return rendered.subject, rendered.html


def jinjas(value) -> tuple[str, str]:
    html = jinja2.Environment(autoescape=True).from_string(SOURCE)
    subject = jinja2.Environment().from_string("{{ value | urlencode }}")
    return subject.render(value=value), html.render(value=value)


@given(st.text(max_size=40))
def test_urlencode_of_text_is_jinjas_each_time(value):
    assert ours(value) == jinjas(value)
    assert ours(value) == jinjas(value)  # the second time from what was remembered


def test_urlencode_of_other_values_is_jinjas():
    for value in (Markup("<b>a&b</b>"), {"a": "1 2", "b": "&"}, [("k", "v w")], 42, "Zoë & co/?"):
        assert ours(value) == jinjas(value), value
