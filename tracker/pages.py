"""HTML pages of the tracker, rendered from templates/web with autoescaping always on."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2
from aiohttp import web

from tracker.organisation import Organisation


def templates_dir() -> Path:
    """templates/ of the repository, or its copy inside the installed wheel."""
    installed = Path(str(resources.files("fairclick"))) / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "templates"


def page_environment(organisation: Organisation | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "web"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    # Every page's footer says who we are (base.html); unset parts are left out.
    env.globals["organisation"] = organisation or Organisation()
    return env


def render_page(
    env: jinja2.Environment, name: str, *, status: int = 200, **context
) -> web.Response:
    return web.Response(
        text=env.get_template(name).render(**context),
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on
            # our own form, which the origin check must refuse. The token still never
            # reaches another site.
            "Referrer-Policy": "same-origin",
            "X-Robots-Tag": "noindex",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )
