"""Campaign templates: compiled from stored source, errors reported with file and line."""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from typing import Any

import html2text
import jinja2

from mailer.layout_links import LayoutLinks
from mailer.rewrite import LinkSpot, find_links
from mailer.text_part import Layout, TextPart

# Layout tables become plain paragraphs; links stay visible as URLs.
_TEXT_GENERATOR_OPTIONS = {
    "body_width": 78,
    "ignore_images": True,
    "ignore_tables": True,
    "ignore_emphasis": True,
    "wrap_links": False,
}


_jinja_urlencode = jinja2.filters.do_urlencode


@functools.lru_cache(maxsize=4096)
def _urlencode_text(value: str) -> str:
    return _jinja_urlencode(value)


def _urlencode(value):
    """Jinja's urlencode, remembered for plain strings: email builders put
    `{{ campaign.name | urlencode }}` into every link (~4 µs each, 25 per message)."""
    return _urlencode_text(value) if type(value) is str else _jinja_urlencode(value)


class _SourceLoader(jinja2.BaseLoader):
    """Templates from stored source, named after the file they came from (for error lines)."""

    def __init__(self, sources: dict[str, str]):
        self.sources = sources

    def get_source(self, environment, template):
        if template not in self.sources:
            raise jinja2.TemplateNotFound(template)
        return self.sources[template], template, lambda: True


@dataclass(frozen=True)
class TemplateError:
    where: str  # "file:line"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class RenderFailed(Exception):
    def __init__(self, error: TemplateError):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str | None  # None: the campaign has no text template (generate it from HTML)
    layout: Layout | None = None  # how the HTML was put together, for TextPart


def _environment(sources: dict[str, str], *, autoescape: bool) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=_SourceLoader(sources),
        # HTML is autoescaped; the subject and text parts are plain text, where escaping
        # would put "&amp;" into what the reader sees.
        autoescape=autoescape,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["urlencode"] = _urlencode
    return environment


def _render_error(exc: Exception, filename: str) -> TemplateError:
    """Where in the template a render error happened, from the traceback Jinja rewrites."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    where = f"{filename}:{line}" if line else filename
    return TemplateError(where, f"{type(exc).__name__}: {exc}")


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    for option, value in _TEXT_GENERATOR_OPTIONS.items():
        setattr(converter, option, value)
    return converter.handle(html).strip() + "\n"


class CampaignTemplates:
    """The subject, HTML and optional text templates of one campaign, compiled."""

    def __init__(
        self,
        *,
        subject: str,
        html: str,
        html_filename: str,
        text: str | None = None,
        text_filename: str | None = None,
    ):
        """Compile all three; raises TemplateProblem-ready TemplateErrors via CompileFailed."""
        self.html_filename = html_filename
        self.text_filename = text_filename
        subject_name = "subject"
        errors = []
        html_env = _environment({html_filename: html}, autoescape=True)
        plain_sources = {subject_name: subject}
        if text is not None:
            plain_sources[text_filename or "text"] = text
        plain_env = _environment(plain_sources, autoescape=False)
        compiled = {}
        for env, name in [(html_env, html_filename), *((plain_env, n) for n in plain_sources)]:
            try:
                compiled[name] = env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                errors.append(TemplateError(f"{name}:{exc.lineno}", f"syntax error: {exc.message}"))
        if errors:
            raise CompileFailed(errors)
        self._subject = compiled[subject_name]
        self._html = compiled[html_filename]
        self._text = compiled.get(text_filename or "text")
        # Without a text template the text part is generated from the HTML.
        self.text_part = (
            TextPart(html_env, html, html_filename, html_to_text, _TEXT_GENERATOR_OPTIONS)
            if self._text is None
            else None
        )
        twin = self.text_part.twin if self.text_part is not None else None
        # Placeholders start with a letter: after a '<' one is read as a tag name, as a value is.
        self._layout_links = LayoutLinks(twin, "fairclickvalue{}x") if twin is not None else None

    def find_links(self, rendered: Rendered, skip_prefixes: tuple[str, ...]) -> list[LinkSpot]:
        """find_links(rendered.html, skip_prefixes=…), from its layout's links where it has one."""
        if self._layout_links is None or rendered.layout is None:
            return find_links(rendered.html, skip_prefixes=skip_prefixes)
        return self._layout_links.find(rendered.html, rendered.layout, skip_prefixes)

    def render(self, context: dict[str, Any]) -> Rendered:
        """Render for one recipient; raises RenderFailed naming file and line."""
        parts = {}
        layout = None
        if self.text_part is not None and (twin := self.text_part.render(context)) is not None:
            parts["html"], layout = twin
        for key, template, filename in (
            ("subject", self._subject, "subject"),
            ("html", self._html, self.html_filename),
            ("text", self._text, self.text_filename or "text"),
        ):
            if template is None or key in parts:
                continue
            try:
                parts[key] = template.render(context)
            except Exception as exc:  # any error inside a template is the template's problem
                raise RenderFailed(_render_error(exc, filename)) from exc
        subject = " ".join(parts["subject"].split())  # one line, so no header can be injected
        return Rendered(subject=subject, html=parts["html"], text=parts.get("text"), layout=layout)


class CompileFailed(Exception):
    def __init__(self, errors: list[TemplateError]):
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors
