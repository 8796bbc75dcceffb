"""The log of exports of identified data (privacy policy section 5, onward transfer).

Every export that names people, to anyone, is logged with who, what and when, in the log
the console writes for its own actions and exports (console_actions, console/auth.py
log_action): the person's own download (actor "recipient") and the command line's
(actor "cli:USER"). A person is named by number only ("recipient #12"), never by address.
"""

from __future__ import annotations

import getpass

import asyncpg

from tracker.queries import SQL


def cli_actor() -> str:
    """How the log names whoever runs `fairclick` here: cli:USER (the login name)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli:unknown"


def recipient_subject(recipient_id: int) -> str:
    return f"recipient #{recipient_id}"


async def log_export(conn: asyncpg.Connection, actor: str, action: str, subject: int | str) -> None:
    """One row of the log; an int subject is a recipient's id."""
    if isinstance(subject, int):
        subject = recipient_subject(subject)
    await conn.execute(SQL.log_export, actor, action, subject)
