"""Text part benchmark: fairclick's converter against html2text and inscriptis, by output and speed.

Output, over every template the tests use (the example, bench/mailer_sample.html,
tests/corpus, tests/text_corpus), rendered for one recipient: Markdown the HTML's text did
not hold (tests/text_checks.py), visible web links whose URL is missing from the text, the
longest line that is not a lone URL, and lines ending in white space.

Speed: microseconds to convert bench/mailer_sample.html (32 KB, rendered), median of --runs
conversions after a warm-up; for fairclick also the per-layout path the sender takes for most
messages (TextPart.text: filled in and wrapped, not converted). The ratio is against
html2text, the converter fairclick used before.

    python bench/text_part.py [--runs 300]
    pip install html2text inscriptis   # to compare with them (not fairclick's dependencies)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from text_checks import longest_line, markdown_findings, visible_link_urls  # noqa: E402

from mailer.plain_text import html_to_text  # noqa: E402
from mailer.templates import CampaignTemplates  # noqa: E402
from mailer.text_part import Message  # noqa: E402

TEMPLATES = [
    ROOT / "templates/email/example/welcome.html",
    ROOT / "bench/mailer_sample.html",
    *sorted((ROOT / "tests/corpus").glob("*.html")),
    *sorted((ROOT / "tests/text_corpus").glob("*.html")),
]
CONTEXT = {
    "recipient": {
        "email": "ada@example.net",
        "name": "Ada Lovelace",
        "attributes": {"city": "Oslo", "member": True},
    },
    "campaign": {"name": "autumn"},
    "preferences_url": "https://fc.example/p/tok",
    "share_url": "https://share.example/1",
}


def html2text_converter():
    """html2text as fairclick had it, set as near to plain text as its options go."""
    try:
        import html2text
    except ImportError:
        return None

    def convert(html: str) -> str:
        converter = html2text.HTML2Text()
        converter.body_width = 78
        converter.ignore_images = True
        converter.ignore_tables = True
        converter.ignore_emphasis = True
        converter.wrap_links = False
        converter.ul_item_mark = "-"
        return converter.handle(html).strip() + "\n"

    return convert


def inscriptis_converter():
    """inscriptis with link targets and image alt texts shown (without them URLs are lost)."""
    try:
        from inscriptis import get_text
        from inscriptis.model.config import ParserConfig
    except ImportError:
        return None
    config = ParserConfig(display_links=True, display_images=True)
    return lambda html: get_text(html, config).strip() + "\n"


def render(path: Path) -> tuple[CampaignTemplates, object]:
    templates = CampaignTemplates(
        subject="s", html=path.read_text(encoding="utf-8"), html_filename=path.name
    )
    return templates, templates.render(CONTEXT)


def quality(convert) -> dict[str, int]:
    totals = {"markdown": 0, "missing URLs": 0, "longest line": 0, "trailing spaces": 0}
    for path in TEMPLATES:
        html = render(path)[1].html
        text = convert(html)
        totals["markdown"] += len(markdown_findings(text, html))
        totals["missing URLs"] += sum(url not in text for url in visible_link_urls(html))
        totals["longest line"] = max(totals["longest line"], longest_line(text))
        totals["trailing spaces"] += sum(line != line.rstrip() for line in text.splitlines())
    return totals


def median_us(call, runs: int) -> float:
    for _ in range(max(3, runs // 10)):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    templates, rendered = render(ROOT / "bench/mailer_sample.html")
    html = rendered.html
    message = Message(rendered.html, rendered.layout)
    converters = {
        "fairclick (mailer/plain_text.py)": html_to_text,
        "html2text": html2text_converter(),
        "inscriptis": inscriptis_converter(),
    }
    print(f"{len(TEMPLATES)} templates; speed on bench/mailer_sample.html ({len(html):,} chars)")
    header = f"{'converter':34} {'markdown':>8} {'no URL':>7} {'widest':>7} {'trailing':>8}"
    print(f"{header} {'µs/msg':>9} {'vs html2text':>12}")
    baseline = None
    rows = []
    for name, convert in converters.items():
        if convert is None:
            print(f"{name:34} not installed")
            continue
        found = quality(convert)
        us = median_us(lambda convert=convert: convert(html), args.runs)
        if name == "html2text":
            baseline = us
        rows.append((name, found, us))
    templates.text_part.text(message)  # converts the layout once
    per_layout = median_us(lambda: templates.text_part.text(message), args.runs)
    for name, found, us in rows:
        ratio = f"{us / baseline:.2f}" if baseline else "-"
        print(
            f"{name:34} {found['markdown']:8} {found['missing URLs']:7} "
            f"{found['longest line']:7} {found['trailing spaces']:8} {us:9.0f} {ratio:>12}"
        )
    ratio = f"{per_layout / baseline:.3f}" if baseline else "-"
    print(f"{'fairclick per layout (TextPart.text)':34} {'':8} {'':7} {'':7} {'':8} "
          f"{per_layout:9.0f} {ratio:>12}")  # fmt: skip


if __name__ == "__main__":
    main()
