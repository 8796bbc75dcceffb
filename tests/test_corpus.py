"""find_links on marketing emails built the way real ones are (tests/corpus/).

Each template sits beside a .expected.json: the (url, name) pairs find_links must return, in
order. The templates were written for these tests; none is a copy of a real email.
"""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.rewrite import LinkSpot, _find_links, find_links, rewrite_links

CORPUS = Path(__file__).parent / "corpus"
TEMPLATES = sorted(CORPUS.glob("*.html"))


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def expected(path: Path) -> list[tuple[str, str | None]]:
    pairs = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    return [(url, name) for url, name in pairs]


def token(i: int) -> str:
    return f"https://t.example/c/{i:04d}"


def test_the_corpus_is_complete() -> None:
    assert 6 <= len(TEMPLATES) <= 8
    assert all(path.with_suffix(".expected.json").is_file() for path in TEMPLATES)
    assert sorted(CORPUS.glob("*.expected.json")) == sorted(
        path.with_suffix(".expected.json") for path in TEMPLATES
    )


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.stem)
def test_finds_the_expected_links(path: Path) -> None:
    html = read(path)
    spots = find_links(html)
    assert [(spot.url, spot.name) for spot in spots] == expected(path)
    assert spots == _find_links(html, (), fast=False)
    # Windows line ends change offsets, not links.
    crlf = html.replace("\n", "\r\n")
    assert [(spot.url, spot.name) for spot in find_links(crlf)] == expected(path)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.stem)
def test_rewriting_and_back_restores_the_file(path: Path) -> None:
    original = path.read_bytes()
    html = original.decode("utf-8")
    spots = find_links(html)
    tokens = {spot.start: token(i) for i, spot in enumerate(spots)}
    out = rewrite_links(html, spots, lambda spot: tokens[spot.start])

    again = find_links(out)
    assert [spot.url for spot in again] == [token(i) for i in range(len(spots))]
    assert [spot.name for spot in again] == [spot.name for spot in spots]
    raw = {tokens[spot.start]: html[spot.start : spot.end] for spot in spots}
    assert rewrite_links(out, again, lambda spot: raw[spot.url]).encode("utf-8") == original


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.stem)
def test_rewriting_changes_nothing_outside_the_spans(path: Path) -> None:
    html = read(path)
    spots = find_links(html)
    out = rewrite_links(html, spots, lambda spot: token(spots.index(spot)))
    copied_to = written = 0
    for i, spot in enumerate(spots):
        for piece in (html[copied_to : spot.start], token(i)):
            assert out[written : written + len(piece)].encode() == piece.encode()
            written += len(piece)
        copied_to = spot.end
    assert out[written:].encode() == html[copied_to:].encode()
    assert len(out) == len(html) + sum(
        len(token(i)) - (s.end - s.start) for i, s in enumerate(spots)
    )


# Where no link may be rewritten, found by plain patterns (no HTML parser): comments other than
# Outlook blocks, the head, and elements whose content is text.
_COMMENT = re.compile(r"<!--(?:-?>|.*?--!?>)", re.DOTALL)
_OUTLOOK_BLOCK = re.compile(r"<!--\[if [^\]!]*\bmso\b[^\]!]*\]>.*<!\[endif\]-->", re.I | re.DOTALL)
_TEXT_ELEMENTS = {
    name: re.compile(rf"<{name}\b.*?</{name}\s*>", re.IGNORECASE | re.DOTALL)
    for name in ("head", "style", "script", "textarea", "title")
}


def forbidden_regions(html: str) -> list[tuple[int, int, str]]:
    regions = [
        (m.start(), m.end(), "comment")
        for m in _COMMENT.finditer(html)
        if not _OUTLOOK_BLOCK.fullmatch(m.group())
    ]
    for name, pattern in _TEXT_ELEMENTS.items():
        regions += [(m.start(), m.end(), name) for m in pattern.finditer(html)]
    return regions


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.stem)
def test_no_span_in_comments_head_or_text_elements(path: Path) -> None:
    html = read(path)
    regions = forbidden_regions(html)
    assert {kind for _, _, kind in regions} >= {"comment"}
    for spot in find_links(html):
        inside = [kind for start, end, kind in regions if start < spot.end and spot.start < end]
        assert not inside, (spot, inside)
        assert html[spot.start : spot.end].strip()
        assert html[spot.start - 1] in "\"'=" or html[spot.start - 1].isspace()


def test_forbidden_regions_see_what_they_should() -> None:
    html = read(CORPUS / "outlook_vml.html")
    kinds = [kind for _, _, kind in forbidden_regions(html)]
    assert {"head", "title", "style", "comment"} <= set(kinds)
    blocks = [m.group() for m in _COMMENT.finditer(html) if _OUTLOOK_BLOCK.fullmatch(m.group())]
    assert any("v:roundrect" in block for block in blocks)
    assert not any("[if !mso]" in block or "[if IE]" in block for block in blocks)


def test_outlook_twins_carry_the_same_url() -> None:
    html = read(CORPUS / "outlook_vml.html")
    spots = find_links(html)
    register = [spot for spot in spots if "/register" in spot.url]
    assert len(register) == 2
    in_block = [_is_in_outlook_block(html, spot) for spot in register]
    assert in_block == [True, False]
    assert register[0].url == register[1].url


def _is_in_outlook_block(html: str, spot: LinkSpot) -> bool:
    return any(
        m.start() < spot.start < m.end()
        for m in _COMMENT.finditer(html)
        if _OUTLOOK_BLOCK.fullmatch(m.group())
    )


# The fast path against the exact loop on the templates damaged at random: a stray quote, '<',
# '>' or '=' anywhere shifts what is a tag, a value or a comment for the rest of the document.
_damage = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1, exclude_max=True),
        st.integers(min_value=0, max_value=3),
        st.sampled_from(['"', "'", "<", ">", "=", "/", " ", "-->", "<!--", "<a href=", "A", ""]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TEMPLATES), _damage)
def test_fast_path_agrees_with_exact_loop_on_damaged_templates(path: Path, damage: list) -> None:
    html = read(path)
    for where, cut, insert in damage:
        at = int(where * len(html))
        html = html[:at] + insert + html[at + cut :]
    assert find_links(html) == _find_links(html, (), fast=False)
