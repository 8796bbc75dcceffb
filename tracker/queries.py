"""Named SQL blocks (`-- name: xyz`) loaded from a .sql file, so all SQL stays together."""

from __future__ import annotations

import re
from importlib import resources
from types import SimpleNamespace

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load_queries(package: str, filename: str = "queries.sql") -> SimpleNamespace:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    blocks = {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}
    return SimpleNamespace(**blocks)


SQL = load_queries("tracker")
