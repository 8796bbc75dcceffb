"""Tests of mailer.rewrite: which hrefs are trackable, and that rewriting touches nothing else."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.rewrite import (
    _FOLDS_TO_ASCII,
    LinkSpot,
    _find_links,
    _shown_by_outlook,
    find_links,
    rewrite_links,
)

URL = "https://e.com/x"


def found(html: str, **kwargs) -> list[tuple[str, str, str | None]]:
    """(raw value, url, name) of each spot find_links returns (and the exact loop agrees)."""
    spots = find_links(html, **kwargs)
    assert spots == exact(html, **kwargs)
    return [(html[s.start : s.end], s.url, s.name) for s in spots]


def exact(html: str, skip_prefixes: tuple[str, ...] = ()) -> list[LinkSpot]:
    """find_links without the fast path: every attribute of every tag parsed one by one."""
    return _find_links(html, skip_prefixes, fast=False)


@pytest.mark.parametrize(
    ("html", "raw", "url"),
    [
        (f'<a href="{URL}">go</a>', URL, URL),
        (f"<a href='{URL}'>go</a>", URL, URL),
        (f"<a href={URL}>go</a>", URL, URL),
        (f"<p><a href={URL}></p>", URL, URL),
        (f'<A HREF="{URL}">go</A>', URL, URL),
        (f'<a hReF="{URL}">', URL, URL),
        (f'<a href = "{URL}">', URL, URL),
        (f"<a\n  class='btn'\n  href=\n\t'{URL}'\n  target=_blank\n>go</a>", URL, URL),
        (f'<a id=1 class="c" href="{URL}" title="t" style="color:red">', URL, URL),
        (f'<a title="a > b" href="{URL}">', URL, URL),
        (f'<a href="{URL}" title=">">', URL, URL),
        (f'<a title=\'"\' href="{URL}">', URL, URL),
        (f'<a class="c"href="{URL}">', URL, URL),
        (f"<a/href={URL}>", URL, URL),
        (f'<a href="{URL}"/>', URL, URL),
        (f'<map><area shape=rect coords="0,0,9,9" href="{URL}"></map>', URL, URL),
        (f'<AREA HREF="{URL}">', URL, URL),
        ('<a href="HTTPS://E.COM/X">', "HTTPS://E.COM/X", "HTTPS://E.COM/X"),
        ('<a href="http://e.com/">', "http://e.com/", "http://e.com/"),
        (f'<a href="  {URL}\n">', f"  {URL}\n", URL),
        ('<a href="http://e.co/?a=1&amp;b=2">', "http://e.co/?a=1&amp;b=2", "http://e.co/?a=1&b=2"),
        ('<a href="https&#58;//e.com/&#x41;">', "https&#58;//e.com/&#x41;", "https://e.com/A"),
        ('<a href="http://e.co/?a&amp&copy;">', "http://e.co/?a&amp&copy;", "http://e.co/?a&©"),
        # Browsers keep a legacy entity without ';' before '=' or a letter in attribute values.
        ('<a href="https://e.com/?x&region=eu">', *["https://e.com/?x&region=eu"] * 2),
        ('<a href="https://e.com/?x&amp=1&copy=2">', *["https://e.com/?x&amp=1&copy=2"] * 2),
        (f'<a href="{URL}" href="https://e.com/second">', URL, URL),
        (f'<a HREF="{URL}" href="https://e.com/second">', URL, URL),
        (f'<a data-fairclick="on" href="{URL}">', URL, URL),
        (f'<a data-fairclick="offf" href="{URL}">', URL, URL),
        (f"<header><a href='{URL}'></header>", URL, URL),
        (f"<head><title>t</title></head><body><a href='{URL}'>", URL, URL),
        (f"<head><title>t</title><body><a href='{URL}'>", URL, URL),
        (f"<!-- c --><a href='{URL}'>", URL, URL),
        (f"<!--><a href='{URL}'>", URL, URL),
        (f"<!---><a href='{URL}'>", URL, URL),
        (f"<!-- c --!><a href='{URL}'>", URL, URL),
        (f"<!--[if !mso]><!--><a href='{URL}'><!--<![endif]-->", URL, URL),
        (f'<!--[if mso]><a href="{URL}">x</a><![endif]-->', URL, URL),
        (f"<title>x</tiTle\n><a href='{URL}'>", URL, URL),
        (f"<style>a{{}}</style><a href='{URL}'>", URL, URL),
        (f"<STYLE>p {{}}</style\n><a href='{URL}'>", URL, URL),
        (f"<script>s = '</scripts>';</script><a href='{URL}'>", URL, URL),
        (f"<textarea>x</textarea><a href='{URL}'>", URL, URL),
        (f"<![CDATA[ x ]]><a href='{URL}'>", URL, URL),
        (f"<!DOCTYPE html><?xml x?></ p><a href='{URL}'>", URL, URL),
        (f"a < b <3 <> <a href='{URL}'>", URL, URL),
    ],
)
def test_finds_the_href_value(html: str, raw: str, url: str) -> None:
    assert found(html) == [(raw, url, None)]
    assert_round_trip(html)


@pytest.mark.parametrize(
    "html",
    [
        '<a href="">',
        '<a href="  \n ">',
        "<a href>",
        "<a href=>",
        "<a>no href</a>",
        '<a href="mailto:help@e.com">',
        '<a href="MAILTO:help@e.com">',
        '<a href="tel:+15550100">',
        '<a href="sms:+15550100">',
        '<a href="javascript:void(0)">',
        '<a href="  JavaScript:x()">',
        '<a href="data:text/html,<b>x</b>">',
        '<a href="#top">',
        '<a href="/relative/path">',
        '<a href="e.com/x">',
        '<a href="//e.com/x">',
        '<a href="ftp://e.com/x">',
        '<a href="https:e.com">',
        f'<a data-fairclick="off" href="{URL}">',
        f"<a href='{URL}' data-fairclick='OFF'>",
        f"<a DATA-FAIRCLICK=Off href={URL}>",
        f'<a data-fairclick=" off " href="{URL}">',
        f'<link rel="stylesheet" href="{URL}">',
        f'<base href="{URL}">',
        f'<abbr href="{URL}">',
        f'<article href="{URL}">',
        f'<img src="{URL}">',
        f'<a data-href="{URL}">',
        f'<a xhref="{URL}">',
        f'<a title="href={URL}">',
        f"<a title='href=\"{URL}\"'>",
        f'<a x="<a href={URL}>">',
        f'<!-- <a href="{URL}"> -->',
        f'<!-- unclosed <a href="{URL}">',
        f'<head><a href="{URL}"></head>',
        f'<HEAD><meta charset=utf-8><a href="{URL}">',
        f'<style>/* <a href="{URL}"> */</style>',
        f'<style>/* never closed */ <a href="{URL}">',
        f"<script>document.write('<a href=\"{URL}\">')</script>",
        f'<SCRIPT type="text/javascript"><a href="{URL}"></Script>',
        f'<textarea><a href="{URL}"></textarea>',
        f'<title><a href="{URL}"></title>',
        f'<![CDATA[<a href="{URL}">]]>',
        f'a &lt;a href="{URL}"&gt;',
        f'<a href="{URL}"',
        f'<a href="{URL}>never closed',
        f"<a href={URL}",
        f'</a href="{URL}">',
        f'<plaintext><a href="{URL}">',
        # Browsers fold only ASCII letters: "</ſtyle>" (long s) does not end the <style>.
        f'<style>x</\u017ftyle><a href="{URL}">',
        f'<SCRIPT>x</\u017fcript><a href="{URL}">',
    ],
)
def test_leaves_alone(html: str) -> None:
    assert find_links(html) == []
    assert exact(html) == []


@pytest.mark.parametrize(
    ("html", "name"),
    [
        (f'<a href="{URL}" data-fairclick-name="footer">', "footer"),
        (f"<a DATA-FAIRCLICK-NAME=' Hero &amp; CTA ' href={URL}>", "Hero & CTA"),
        (f"<a data-fairclick-name=logo href={URL}>", "logo"),
        (f'<a href="{URL}" data-fairclick-name="a" data-fairclick-name="b">', "a"),
        (f'<a href="{URL}" data-fairclick-name="">', None),
        (f'<a href="{URL}" data-fairclick-names="x">', None),
        (f'<a href="{URL}">', None),
    ],
)
def test_name(html: str, name: str | None) -> None:
    assert found(html) == [(URL, URL, name)]


def test_skip_prefixes() -> None:
    html = (
        '<a href="https://t.example/prefs/abc?x=1&amp;y=2">prefs</a>'
        f'<a href="{URL}">x</a><a href="https://t.example/other">o</a>'
    )
    prefixes = ("https://t.example/prefs/", "https://never.example/")
    urls = [s.url for s in find_links(html, skip_prefixes=prefixes)]
    assert urls == [URL, "https://t.example/other"]
    assert len(find_links(html)) == 3


# Documents cut off or malformed at every step of the tokenizer, "|"-separated.
BROKEN = "<|<a|<a |<a href|<a href=|<a href='|<a href=\"x|<!|<!-|<!--|</|</a|<![CDATA[|<style>|<?"
BROKEN += "|&|&#|&#x110000;|\x00<a\x00href=\x00>|<a =x href=>"
BROKEN += "|<a href=https://e.com/&#99999999999;>|<a href='https://e.com/&#xD800;&#0;'>"


@pytest.mark.parametrize("html", BROKEN.split("|"))
def test_broken_html_does_not_raise(html: str) -> None:
    for spot in find_links(html):
        assert html[spot.start : spot.end]


# Inputs that make a backtracking scanner take minutes or hours, with the links in each.
# Each runs in a few milliseconds to a third of a second; a scanner gone quadratic or
# exponential is stopped by the timeout and fails. How fast it is belongs to bench/.
PATHOLOGICAL = [
    ("<a " + "x=" * 50_000, 0),
    ("<a " + "x " * 100_000, 0),
    ('<a href="' * 100_000, 0),  # a quote left open swallows the rest, as in a browser
    ("<a x=" * 100_000, 0),
    ("<!--" * 100_000, 0),
    ("<!" * 200_000, 0),
    ("<a" * 200_000, 0),
    ("</a" * 100_000, 0),
    ("<" * 500_000, 0),
    ("<style>" * 100_000, 0),
    ("<a href='https://e.com/?" + "&amp;" * 100_000 + "'>", 1),
    (f"<p class=c>text <a href='{URL}'>x</a></p>\n" * 10_000, 10_000),
    ("<!--[if " + "(" * 100_000 + "mso" + ")" * 100_000 + f"]><a href={URL}><![endif]-->", 0),
    ("<!--[if mso]>" + f"<v:rect href={URL}>" * 20_000 + "<![endif]-->", 20_000),
    ("<!--[if mso]>" * 100_000, 0),
    ("<td>" + "<!-- " * 100_000 + "href", 0),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("html", "links"), PATHOLOGICAL, ids=lambda v: repr(v)[:14])
def test_linear_time_on_pathological_input(html: str, links: int) -> None:
    assert len(find_links(html)) == links


EMAIL = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Spring sale <a href="https://shop.example.com/title"></title>
<style type="text/css">
  body { background: url("https://cdn.example.com/bg.png"); }
  a[href="https://shop.example.com/css"] { color: #c00; }
</style>
<!--[if mso]><style>table { border-collapse: collapse; }</style><![endif]-->
</head>
<body style="margin:0;padding:0">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#fff">
  <tr>
    <td align="center" style="padding:20px 0">
      <a href="https://shop.example.com/?utm_source=mail&amp;utm_campaign=spring"
         data-fairclick-name="logo"><img src="https://cdn.example.com/l.png" alt="A &gt; B"></a>
    </td>
  </tr>
  <tr>
    <td style="font-family:Arial,sans-serif">
      <!--[if mso]>
      <v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://shop.example.com/sale">
        <a href="https://shop.example.com/sale?client=outlook">Shop the sale</a>
      </v:roundrect>
      <![endif]-->
      <!--[if !mso]><!-->
      <a class="button" href="https://shop.example.com/sale" title="Sale > 50% off"
         style="display:inline-block;padding:12px 24px">Shop the sale</a>
      <!--<![endif]-->
      <p>Write to <a href="mailto:help@example.com">help@example.com</a>.</p>
      <p>Text that shows a tag: &lt;a href="https://evil.example.com/"&gt;</p>
      <img src="https://cdn.example.com/map.png" usemap="#m" alt="">
      <map name="m">
        <area shape="rect" coords="0,0,100,100" href="https://shop.example.com/women" alt="Women">
        <AREA SHAPE=rect COORDS="100,0,200,100" HREF='https://shop.example.com/men' ALT=Men>
      </map>
      <P><A HREF="HTTPS://SHOP.EXAMPLE.COM/NEW">New in</A></P>
      <a href=https://blog.example.com/spring-tips>Tips</a>
      <a href="https://partner.example.com/" data-fairclick="off">Partner (untracked)</a>
      <a href="#top">Back to top</a>
    </td>
  </tr>
  <tr>
    <td style="font-size:11px;color:#999">
      <a href="https://fairclick.example.com/prefs/abc">Email preferences</a> &middot;
      <a data-fairclick-name="footer" href="https://shop.example.com/about">About us</a>
    </td>
  </tr>
</table>
</body>
</html>
"""
PREFS = "https://fairclick.example.com/prefs/"


def test_marketing_email() -> None:
    spots = find_links(EMAIL, skip_prefixes=(PREFS,))
    assert [(s.url, s.name) for s in spots] == [
        ("https://shop.example.com/?utm_source=mail&utm_campaign=spring", "logo"),
        ("https://shop.example.com/sale", None),  # the Outlook button (VML)
        ("https://shop.example.com/sale?client=outlook", None),
        ("https://shop.example.com/sale", None),  # the button everyone else sees
        ("https://shop.example.com/women", None),
        ("https://shop.example.com/men", None),
        ("HTTPS://SHOP.EXAMPLE.COM/NEW", None),
        ("https://blog.example.com/spring-tips", None),
        ("https://shop.example.com/about", "footer"),
    ]
    assert EMAIL[spots[0].start : spots[0].end].endswith("mail&amp;utm_campaign=spring")
    assert [s.url for s in find_links(EMAIL)][-2:] == [PREFS + "abc", spots[-1].url]


def token(i: int) -> str:
    return f"https://t.example/c/X{i}"


def assert_round_trip(html: str) -> None:
    """Rewriting changes only the spans, and rewriting the tokens back restores html exactly."""
    spots = find_links(html)
    assert rewrite_links(html, spots, lambda spot: None) == html
    numbers = {spot: i for i, spot in enumerate(spots)}
    out = rewrite_links(html, spots, lambda spot: token(numbers[spot]))

    copied_to = written = 0
    for i, spot in enumerate(spots):
        for piece in (html[copied_to : spot.start], token(i)):
            assert out[written : written + len(piece)] == piece
            written += len(piece)
        copied_to = spot.end
    assert out[written:] == html[copied_to:]

    again = find_links(out)
    assert [s.url for s in again] == [token(i) for i in range(len(spots))]
    raw_values = {token(i): html[s.start : s.end] for i, s in enumerate(spots)}
    assert rewrite_links(out, again, lambda spot: raw_values[spot.url]) == html


def test_rewrite_round_trip_on_email() -> None:
    assert_round_trip(EMAIL)
    assert_round_trip(EMAIL.replace("\n", "\r\n"))


def test_rewrite_keeps_spots_mapped_to_none() -> None:
    html = f"<a href=\"{URL}\">1</a> <a href={URL}>2</a> <a href='{URL}'>3</a>"
    spots = find_links(html)
    out = rewrite_links(html, spots, lambda spot: None if spot is spots[1] else "https://t/c/Y")
    assert (
        out == f"<a href=\"https://t/c/Y\">1</a> <a href={URL}>2</a> <a href='https://t/c/Y'>3</a>"
    )


def test_rewrite_rejects_spots_out_of_order() -> None:
    spots = [LinkSpot(5, 8, URL, None), LinkSpot(0, 3, URL, None)]
    with pytest.raises(ValueError, match="out of order"):
        rewrite_links("0123456789", spots, lambda spot: "x")


# Random documents: fragments of text, tags, comments and links, glued in any order, so that a
# link may land inside a comment, a quoted value or an unclosed tag.
_text = st.text(st.sampled_from(list("ab <>/=&;!-\"'\n\t")), max_size=12)
_raw_url = st.sampled_from(
    [
        URL,
        " https://e.com/?a=1&amp;b=2 ",
        "HTTP://E.COM",
        "https://e.com/&region=1",
        "mailto:x",
        "#",
        "",
        "https://e.com/a'b",
        'https://e.com/"q"',
        "https://e.com/a b",
        "https://e.com/>",
    ]
)


@st.composite
def _link(draw: st.DrawFn) -> str:
    quote = draw(st.sampled_from(['"', "'", ""]))
    space = draw(st.sampled_from(["", " ", "\n  "]))
    extras = "| class='c'| title='>'| data-fairclick=off| data-fairclick-name='n &amp; m'| href=x"
    extra = draw(st.sampled_from(extras.split("|")))
    tag = draw(st.sampled_from(["a", "A", "area", "link", "abbr"]))
    value = f"{quote}{draw(_raw_url)}{quote}"
    return f"<{tag}{extra} href{space}={space}{value}{draw(st.sampled_from(['', ' /', ' x=1']))}>"


_MARKUP_BITS = [
    *"</a> <p> <br/> <head> </head> <body> <style> </style> <script> </script> <title> </title>"
    " <textarea> </textarea> <!-- --> <![endif]--> <![CDATA[ ]]> <!--> <a \" '".split(),
    *["<!--[if mso]>", "&lt;a href=x&gt;", "<!DOCTYPE html>"],
]
_fragment = st.one_of(_text, _link(), st.sampled_from(_MARKUP_BITS))


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragment, max_size=25).map("".join))
def test_rewrite_round_trip_on_random_documents(html: str) -> None:
    spots = find_links(html)
    assert spots == exact(html)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spots))
    assert all(s.url.lower().startswith(("http://", "https://")) for s in spots)
    assert_round_trip(html)


# Outlook on Windows renders with Word, which shows what a downlevel-hidden conditional comment
# hides from everyone else: bulletproof buttons are VML shapes in there.
def outlook(condition: str, content: str) -> str:
    return f"<!--[if {condition}]>{content}<![endif]-->"


@pytest.mark.parametrize(
    "html",
    [
        outlook("mso", f'<a href="{URL}">x</a>'),
        outlook(
            "gte mso 9",
            f'<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="{URL}"'
            ' style="height:40px;v-text-anchor:middle;width:200px;" arcsize="10%"'
            ' strokecolor="#1a73e8" fillcolor="#1a73e8"><w:anchorlock/><center>Buy</center>'
            "</v:roundrect>",
        ),
        outlook("(mso)|(IE)", f'<v:rect xmlns:v="urn:schemas-microsoft-com:vml" href="{URL}"/>'),
        outlook("mso | IE", f"<v:shape href={URL}></v:shape>"),
        f'<!--[IF MSO]><V:OVAL HREF="{URL}"></V:OVAL><![ENDIF]-->',
        outlook("gte mso 12", f'<map name="m"><area shape=rect href="{URL}"></map>'),
        outlook("mso 16", f"<v:image src='https://e.com/i.png' href='{URL}'/>"),
        outlook("(gte mso 9)&(!IE)", f'<a href="{URL}">x</a>'),
        outlook("gte vml 1", f'<v:roundrect href="{URL}"/>'),
        outlook("lte mso 15", f'\n<table><tr><td>\n<a\nhref="{URL}">x</a>\n</td></tr></table>\n'),
        outlook("mso", f'<v:roundrect href="{URL}"><a href="mailto:x@e.com">m</a></v:roundrect>'),
        outlook("mso", f'<style>a {{}}</style><v:rect href="{URL}"/>'),
        outlook("mso", f'<!-- note --><a href="{URL}">shown to everyone</a>'),
        outlook("mso", "<style>") + f'<a href="{URL}">after the block</a>',
        outlook("mso", f'<v:roundrect href="{URL}" href="https://e.com/second"/>'),
        outlook("mso", f'<v:roundrect data-fairclick="on" href="{URL}"/>'),
        f"<body>{outlook('mso', f'<a href={URL}>x</a>')}</body>",
    ],
)
def test_finds_links_in_outlook_blocks(html: str) -> None:
    assert [spot.url for spot in find_links(html)] == [URL]
    assert find_links(html) == exact(html)
    assert_round_trip(html)


@pytest.mark.parametrize(
    "html",
    [
        outlook("!mso", f'<a href="{URL}">x</a>'),
        outlook("!(mso)", f'<a href="{URL}">x</a>'),
        outlook("IE", f'<a href="{URL}">x</a>'),
        outlook("!IE", f'<a href="{URL}">x</a>'),
        outlook("lt mso 9", f'<a href="{URL}">x</a>'),
        outlook("gt mso 16", f'<a href="{URL}">x</a>'),
        outlook("mso&IE", f'<a href="{URL}">x</a>'),
        outlook("(gte mso 9", f'<a href="{URL}">x</a>'),
        outlook("gte mso", f'<a href="{URL}">x</a>'),
        outlook("", f'<a href="{URL}">x</a>'),
        f'<!--[if mso]><a href="{URL}">x</a>-->',
        f'<!--[if mso]><a href="{URL}">x</a><![endif]',
        f'<!--[if mso><a href="{URL}">x</a><![endif]-->',
        f'<!--[ifmso]><a href="{URL}">x</a><![endif]-->',
        f'<!-- [if mso]><a href="{URL}">x</a><![endif]-->',
        outlook(
            "mso", f'<link href="{URL}"><base href="{URL}"><vx href="{URL}"><o:p href="{URL}">'
        ),
        outlook("mso", f'<v:roundrect data-fairclick="off" href="{URL}"/>'),
        outlook("mso", '<v:roundrect href="mailto:x@e.com"/><v:rect href="#top"/>'),
        outlook("mso", f'<!-- <a href="{URL}"> -->'),
        outlook("mso", f'<style><a href="{URL}"></style>'),
        outlook("mso", f'<textarea><a href="{URL}">') + "</textarea>",
        outlook("mso", f"<a href='{URL}'"),
        outlook("mso", f"<plaintext><a href={URL}>"),
        f"<head>{outlook('gte mso 9', f'<xml><a href={URL}></a></xml>')}</head>",
        f'<v:roundrect href="{URL}"></v:roundrect>',
        outlook("mso", "") + f'<v:rect href="{URL}"/>',
        f'<!--[if !mso]><!--><v:roundrect href="{URL}"/><!--<![endif]-->',
    ],
)
def test_leaves_alone_in_and_around_outlook_blocks(html: str) -> None:
    assert find_links(html) == []
    assert exact(html) == []


def test_bulletproof_button_twins_share_the_url() -> None:
    # The Outlook twin (VML) and the button everyone else sees: one link for the mailer.
    href = "https://shop.example.com/sale?utm_source=mail&amp;utm_content=button"
    html = (
        "<td>"
        + outlook(
            "mso",
            f'<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="{href}"'
            ' style="height:44px;width:220px;" arcsize="10%" fillcolor="#1a73e8">'
            '<w:anchorlock/><center style="color:#fff">Shop now</center></v:roundrect>',
        )
        + f'<!--[if !mso]><!--><a href="{href}" data-fairclick-name="button">Shop now</a>'
        + "<!--<![endif]--></td>"
    )
    outlook_twin, button = find_links(html)
    assert outlook_twin.url == button.url == href.replace("&amp;", "&")
    assert (outlook_twin.name, button.name) == (None, "button")
    assert html[outlook_twin.start : outlook_twin.end] == html[button.start : button.end] == href
    assert_round_trip(html)


@pytest.mark.parametrize(
    ("condition", "shown"),
    [
        (" mso", True),
        (" MSO", True),
        (" gte mso 9", True),
        (" (gte mso 9)|(IE)", True),
        (" mso | IE", True),
        (" (mso)&(!IE)", True),
        (" mso 12", True),
        (" mso 12.0", True),
        (" gte mso 15.0", True),
        (" lte mso 9", True),
        (" !!mso", True),
        (" gte vml 1", True),
        (" !mso", False),
        (" !(mso)", False),
        (" IE", False),
        (" !IE", False),
        (" true", False),
        (" mso 13", False),
        (" lt mso 9", False),
        (" gt mso 16", False),
        (" mso & IE", False),
        (" (gte mso 9", False),
        (" gte mso 9)", False),
        (" gte mso", False),
        (" mso mso", False),
        (" mso |", False),
        (" mso, IE", False),
        ("", False),
        (" " + "(" * 150 + "mso" + ")" * 150, False),  # longer than any real condition
    ],
)
def test_outlook_conditions(condition: str, shown: bool) -> None:
    assert _shown_by_outlook(condition) is shown


def test_lowercase_copy_cannot_change_the_markup() -> None:
    # After an uppercase tag the fast path reads a lowercase copy of the document; a character
    # whose lowercase is ASCII (or longer) could turn text into markup there, so a document
    # with one is left to the exact loop.
    folding = [
        c
        for c in map(chr, range(0x80, 0x110000))
        if len(lowered := c.lower()) != 1 or lowered.isascii()
    ]
    assert sorted(folding) == sorted(_FOLDS_TO_ASCII)
    for trap in _FOLDS_TO_ASCII:
        html = f"<{trap} x='<a href=\"{URL}\">'>"  # text, then a link: "<K" starts no tag
        for document in (html, f"<P>{html}", f"<P CLASS=x>{html}</P>", html.upper()):
            assert [spot.url.lower() for spot in find_links(document)] == [URL], document


@pytest.mark.parametrize(
    "html",
    [
        f'<p>x</p><TD WIDTH=1>y</TD><a href="{URL}">z</a><TABLE><A HREF="{URL}">w</A>',
        f'<P>x<sTyle><a href="{URL}"></STYLE><a href="{URL}">',
        f'<body><TiTlE><a href="{URL}"></title><a data-FAIRCLICK=off href="{URL}">'
        f'<a href="{URL}" DATA-fairclick-NAME=n>',
        f'<HEAD><a href="{URL}"></HEAD><a hrefX="{URL}" href="{URL}">',
        outlook("MSO", f'<V:ROUNDRECT HREF="{URL}"/>') + f'<!-- <A HREF="{URL}"> -->',
    ],
)
def test_mixed_case_documents(html: str) -> None:
    # The fast path knows lowercase names only: it hands the rest to the exact loop, and reads a
    # lowercase copy of the document from the first uppercase tag on.
    spots = find_links(html)
    assert spots == exact(html)
    assert spots and all(spot.url == URL for spot in spots)
    assert_round_trip(html)


# The fast path against the exact loop, on documents full of tags a strict grammar rejects:
# quotes in names and unquoted values, '>' in values, missing spaces, stray '=' and '/'.
_tag_name = st.sampled_from(
    "a A area AREA abbr p P td TD head HEAD body style title textarea script plaintext xmp"
    " v:roundrect V:RECT v: v vx b st te x-y br I i sTyle Head tITLE TextArea ScRiPt aREA Body"
    " pLaintext V:Rect hEAD Td".split()
)
_attr_name = st.sampled_from(
    [
        "href",
        "HREF",
        "hReF",
        "data-fairclick",
        "DATA-FAIRCLICK",
        "data-fairclick-name",
        "class",
        "x",
        'a"b',
        "'",
        "=",
        "<",
        "hrefx",
        "hrefX",
        "Href",
        "data-FairClick",
        "DATA-fairclick-NAME",
        "data-fairclick-names",
        "a/b",
        "`",
        ":x",
        "-",
        "1",
    ]
)
_attr_value = st.one_of(
    _raw_url,
    st.sampled_from(["off", "OFF", " off ", "n &amp; m"]),
    st.text(st.sampled_from(list("ab><= /\"'`&;")), max_size=6),
)


@st.composite
def _messy_tag(draw: st.DrawFn) -> str:
    parts = [draw(st.sampled_from(["<", "<", "</"])), draw(_tag_name)]
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(st.sampled_from([" ", " ", "", "\n\t", "/", " / "])))
        parts.append(draw(_attr_name))
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(["=", "=", " = ", "= ", " =", "=="])))
            quote = draw(st.sampled_from(['"', "'", ""]))
            closing = draw(st.sampled_from([quote, quote, quote, ""]))
            parts.append(quote + draw(_attr_value) + closing)
    parts.append(draw(st.sampled_from([">", ">", "/>", " />", " >", "/ >", ""])))
    return "".join(parts)


_messy_bits = st.sampled_from(
    [
        "<!--[if mso]>",
        "<!--[if gte mso 9]>",
        "<!--[if !mso]>",
        "<!--[if !mso]><!-->",
        "<![endif]-->",
        "<!--<![endif]-->",
        "<!-- -->",
        "<!--",
        "-->",
        "</style>",
        "</title>",
        "</textarea>",
        "</head>",
        "<!DOCTYPE html>",
        "<![CDATA[",
        "]]>",
        "<?x?>",
        "</ x>",
        "<",
        "text ",
        "\n",
        "\"'",
        "a > b",
        "&lt;a href=x&gt;",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_messy_tag(), _link(), _messy_bits, _text), max_size=30).map("".join))
def test_fast_path_agrees_with_exact_loop(html: str) -> None:
    assert find_links(html) == exact(html)
    assert find_links(html.upper()) == exact(html.upper())
