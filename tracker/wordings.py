"""What a person was shown when a choice of theirs was recorded: the wordings, in one place.

The preference page renders its three questions from PAGE (templates/web/preferences.html
reads `wording`), so the text kept as proof is the text the page showed, not a copy of it.
A wording is stored once in consent_wordings under the SHA-256 of its UTF-8 text, when
first used, with a version per purpose (1, 2, … in the order the texts were first used);
every consent event points at the one its person saw (tracker/consent.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from tracker.queries import SQL

CHANNELS = ("page", "one-click", "import", "operator", "api")
# One lock for every first use of a wording: two first uses of one purpose must not both
# take version N.
_WORDINGS_LOCK = 0x66637764  # "fcwd"


@dataclass(frozen=True)
class Question:
    """One question of the preference page: its legend, its options (form value: label),
    and the hint under them."""

    legend: str
    options: dict[str, str]
    hint: str = ""

    @property
    def text(self) -> str:
        """The question as the page shows it, one line per part: what is kept as proof."""
        lines = [self.legend, *(f"( ) {label}" for label in self.options.values())]
        return "\n".join([*lines, self.hint] if self.hint else lines)


PAGE = {
    "format": Question(
        "How we send you email",
        {"html": "HTML email", "text": "Text-only email"},
        "Text-only email has the original links and nothing that tracks a click or an open.",
    ),
    "tracking": Question(
        "Link tracking",
        {
            "yes": "Yes, you may record which links I click in your HTML email",
            "no": "No, count my clicks anonymously only",
        },
    ),
    "subscription": Question(
        "Subscription",
        {"yes": "Keep sending me these emails", "no": "Unsubscribe me"},
    ),
}
ONE_CLICK = (
    "Unsubscribe (one click): the unsubscribe button your mail program shows for our "
    "message, which it sends to the List-Unsubscribe address the message carries (RFC 8058)."
)
OPERATOR_UNSUBSCRIBE = (
    "Unsubscribed by an operator of this service at the person's request, received other "
    "than through the preference page (a reply, a letter, a call)."
)


API_UNSUBSCRIBE = (
    "Unsubscribed through fairclick's API, by an operator's program, at the person's request "
    "received other than through the preference page (a reply, a letter, a call)."
)


def import_default(filename: str) -> str:
    """The wording of an import whose operator gave none."""
    return (
        f"imported by the operator from {filename}; the person's consent was collected "
        "outside fairclick and its wording was not given"
    )


@dataclass(frozen=True)
class Wording:
    purpose: str
    text: str

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.text.encode("utf-8")).digest()


@dataclass(frozen=True)
class Proof:
    """What goes with each consent event: the channel, the wording shown for each kind of
    choice (format, tracking, subscription), the privacy policy in force, and who recorded
    it when that was not the person."""

    channel: str
    wordings: dict[str, Wording]
    policy_url: str | None = None
    policy_version: str | None = None
    actor: str | None = None
    # Wordings this proof already stored or found: an import of many rows looks each up once.
    known: set[bytes] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self):
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown consent channel {self.channel!r}")


def _policy(settings) -> dict:
    return {
        "policy_url": settings.privacy_policy_url,
        "policy_version": settings.privacy_policy_version,
    }


def page_proof(settings) -> Proof:
    return Proof(
        "page", {kind: Wording(f"page:{kind}", q.text) for kind, q in PAGE.items()},
        **_policy(settings),
    )  # fmt: skip


def one_click_proof(settings) -> Proof:
    return Proof(
        "one-click", {"subscription": Wording("one-click", ONE_CLICK)}, **_policy(settings)
    )


def import_proof(settings, text: str, *, actor: str | None) -> Proof:
    wording = Wording("import", text)
    return Proof(
        "import", {"format": wording, "tracking": wording, "subscription": wording},
        actor=actor, **_policy(settings),
    )  # fmt: skip


def operator_proof(settings, *, actor: str, channel: str = "operator") -> Proof:
    """An unsubscribe an operator records: from the command line or console, or the API."""
    text = API_UNSUBSCRIBE if channel == "api" else OPERATOR_UNSUBSCRIBE
    return Proof(
        channel, {"subscription": Wording(channel, text)}, actor=actor, **_policy(settings)
    )


async def remember(conn: asyncpg.Connection, wording: Wording, known: set | None = None) -> bytes:
    """Store the wording the first time it is used; its SHA-256 either way.

    known: digests already stored (Proof.known, which lives no longer than its transaction).
    """
    digest = wording.sha256
    if known is not None and digest in known:
        return digest
    if not await conn.fetchval(SQL.wording_known, digest):
        async with conn.transaction():
            await conn.execute(SQL.lock_wordings, _WORDINGS_LOCK)
            await conn.execute(SQL.remember_wording, digest, wording.purpose, wording.text)
    if known is not None:
        known.add(digest)
    return digest


async def wording_of(conn: asyncpg.Connection, sha256: bytes) -> asyncpg.Record | None:
    """(purpose, version, text, first_used_at) of a stored wording, or None."""
    return await conn.fetchrow(SQL.wording_by_hash, sha256)
