"""Campaign templates: compiled from stored source, errors reported with file and line."""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailer.layout_links import LayoutLinks
from mailer.plain_text import html_to_text
from mailer.rewrite import LinkSpot, find_links
from mailer.text_part import Layout, TextPart
from tracker.errors import TemplateProblem

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


class RenderFailed(TemplateProblem):
    """A template failed for one recipient (one line, wherever it is rendered)."""

    def __init__(self, error: TemplateError):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str | None  # None: the campaign has no text template (generate it from HTML)
    layout: Layout | None = None  # how the HTML was put together, for TextPart


# What one render of a template (subject, HTML or text) may spend: a
# template that loops for ever or writes without end fails like any other template error,
# with its file and line, instead of holding up `campaign create` or a worker. Steps are
# calls and loop iterations; an email builder's newsletter takes a few thousand.
MAX_RENDER_STEPS = 1_000_000
MAX_RENDER_CHARS = 10_000_000
# `**` and `*` on integers stop here: a few squarings in a loop would otherwise make a number
# whose every further operation takes minutes.
MAX_INT_BITS = 65_536
_COUNTED_LOOP = "fairclick_counted_loop"  # the filter every {% for %} iterates through


class RenderLimit(Exception):
    """A template went past MAX_RENDER_STEPS or MAX_RENDER_CHARS."""


class _Budget:
    """What the current render may still spend; shared by a campaign's environments."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.steps = MAX_RENDER_STEPS
        self.chars = MAX_RENDER_CHARS

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise RenderLimit(
                f"more than {MAX_RENDER_STEPS:,} steps (calls and loop iterations): "
                "a loop that does not end?"
            )
        if self.chars < 0:
            raise RenderLimit(f"more than {MAX_RENDER_CHARS:,} characters of output")


class _CampaignEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's sandbox (no underscore attributes, no unsafe calls, no changing lists or
    dicts, ranges of at most 100,000), with a budget per render.

    Whoever can write a campaign, or its row in the database, must not be able to run code,
    read the signing key, or stop the sender.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, budget: _Budget, **options):
        super().__init__(**options)
        self.budget = budget
        self.filters[_COUNTED_LOOP] = self._counted
        self.concat = self._concat

    def _parse(self, source, name, filename):
        # Every loop iterates through _counted, so no loop runs past the budget; the twin in
        # text_part parses through here too.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, _COUNTED_LOOP, [], [], None, None, lineno=loop.iter.lineno
            )
        return tree

    def _counted(self, iterable):
        step = self.budget.step
        for item in iterable:
            step()  # raised here, inside the template's loop: the error names its line
            yield item

    def _concat(self, chunks) -> str:
        out = []
        for chunk in chunks:
            out.append(chunk)
            self.budget.chars -= len(chunk)  # the next loop step stops an overrun
        if self.budget.chars < 0:
            self.budget.step()  # output without a loop: stopped once it is done
        return "".join(out)

    def call(self, context, obj, /, *args, **kwargs):
        self.budget.step()
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context, operator, left, right):
        numbers = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and numbers and right > 0 and abs(left) > 1:
            if abs(left).bit_length() * right > MAX_INT_BITS:
                raise RenderLimit(f"{left} ** {right} is too large a number")
        elif operator == "*" and numbers:
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise RenderLimit("a product too large")
        elif operator == "*":
            count, repeated = (right, left) if isinstance(right, int) else (left, right)
            if isinstance(count, int) and isinstance(repeated, str | list | tuple):
                if len(repeated) * count > MAX_RENDER_CHARS:
                    raise RenderLimit(f"a repetition longer than {MAX_RENDER_CHARS:,}")
        return super().call_binop(context, operator, left, right)


def _environment(
    sources: dict[str, str], *, autoescape: bool, budget: _Budget
) -> _CampaignEnvironment:
    environment = _CampaignEnvironment(
        budget,
        loader=_SourceLoader(sources),
        # HTML is autoescaped; the subject and text parts are plain text, where escaping
        # would put "&amp;" into what the reader sees.
        autoescape=autoescape,
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
        self._budget = _Budget()
        html_env = _environment({html_filename: html}, autoescape=True, budget=self._budget)
        plain_sources = {subject_name: subject}
        if text is not None:
            plain_sources[text_filename or "text"] = text
        plain_env = _environment(plain_sources, autoescape=False, budget=self._budget)
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
            TextPart(html_env, html, html_filename, html_to_text)
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
        self._budget.reset()
        if self.text_part is not None and (twin := self.text_part.render(context)) is not None:
            parts["html"], layout = twin
        for key, template, filename in (
            ("subject", self._subject, "subject"),
            ("html", self._html, self.html_filename),
            ("text", self._text, self.text_filename or "text"),
        ):
            if template is None or key in parts:
                continue
            self._budget.reset()  # after the twin too: a failed twin leaves it spent
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
