"""Typed keys of the tracker application."""

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
