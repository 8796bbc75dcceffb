"""Typed keys of the console: on the operators' application and on each request."""

import jinja2
from aiohttp import web

from console.auth import Principal

CONSOLE_PAGES = web.AppKey("console_pages", jinja2.Environment)
# Who made the request: set by the login check for every route that is not public.
PRINCIPAL = web.RequestKey("principal", Principal)
