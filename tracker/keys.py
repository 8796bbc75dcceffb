"""Typed keys of the tracker application."""

from collections.abc import Callable

import asyncpg
import jinja2
from aiohttp import web

from tracker.bots import ScanDetector
from tracker.recorder import Recorder
from tracker.settings import Settings
from tracker.targets import TargetCache
from tracker.tokens import Tokens

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", Tokens)
PAGES = web.AppKey("pages", jinja2.Environment)
RECORDER = web.AppKey("recorder", Recorder)
TARGETS = web.AppKey("targets", TargetCache)
DETECTOR = web.AppKey("detector", ScanDetector)
# What `fairclick serve` adds to the operators' listener (console.app.install): the tracker
# never imports the console, it is handed it.
CONSOLE = web.AppKey("console", Callable[[web.Application, web.Application], None])
