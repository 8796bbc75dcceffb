"""Typed keys of the tracker application."""

import asyncpg
import jinja2
from aiohttp import web

from tracker.settings import Settings
from tracker.tokens import Tokens

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", Tokens)
PAGES = web.AppKey("pages", jinja2.Environment)
