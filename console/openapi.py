"""The OpenAPI 3.1 document of the JSON API (console/api.py), served at /api/openapi.json.

Written here by hand, next to the handlers, in one place: tests/test_openapi.py checks that
every /api route of the router is documented here under its route name (operationId) and
that every path documented exists, and schemathesis checks the live API's answers against
it (tests/test_api_schemathesis.py).
"""

from __future__ import annotations

import copy
from functools import cache

VERSION = "1.0.0"
MAX_LIMIT = 200  # of a page of any list (console/api.py reads these)
MAX_OFFSET = 1_000_000_000

ERROR_CODES = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "too_large",
    "unsupported_media_type",
    "internal",
    "unavailable",
    "error",
]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict, *, required: list[str] | None = None) -> dict:
    """An object with these properties, all required unless said otherwise (more may come:
    keys may be added, never renamed)."""
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
    }


def _counts(*names: str) -> dict:
    return _object({name: COUNT for name in names})


COUNT = {"type": "integer", "minimum": 0}
TEXT = {"type": "string"}
MAYBE_TEXT = {"type": ["string", "null"]}
MOMENT = {"type": "string", "format": "date-time"}
MAYBE_MOMENT = {"type": ["string", "null"], "format": "date-time"}
CAMPAIGN_STATUS = {"type": "string", "enum": ["active", "paused", "cancelled"]}

SCHEMAS: dict = {
    "Error": {
        **_object(
            {"error": _object({"code": {"type": "string", "enum": ERROR_CODES}, "message": TEXT})}
        ),
        "description": "Every error of the API, whatever its status.",
    },
    "Rate": {
        **_object(
            {
                "value": {"type": ["number", "null"]},
                "numerator": COUNT,
                "denominator": COUNT,
            }
        ),
        "description": "A rate with what it divides (value null when the denominator is 0).",
    },
    "Rates": _object(
        {
            "human_clicks_per_delivered_html": _ref("Rate"),
            "unique_clickers_among_consenting": _ref("Rate"),
            "bot_share": _ref("Rate"),
        }
    ),
    "Formats": _counts("html", "text"),
    "CampaignSummary": _object(
        {
            "name": TEXT,
            "status": CAMPAIGN_STATUS,
            "created_at": MOMENT,
            "queued": COUNT,
            "sent": COUNT,
            "failed": COUNT,
            "unknown": COUNT,
            "pending": COUNT,
            "recipients": _ref("Formats"),
            "clicks": _counts("human", "unique", "bot"),
            "rates": _ref("Rates"),
        }
    ),
    "CampaignPage": _object(
        {
            "items": {"type": "array", "items": _ref("CampaignSummary")},
            "total": COUNT,
            "limit": COUNT,
            "offset": COUNT,
        }
    ),
    "LinkCounts": _object(
        {
            "url": TEXT,
            "name": TEXT,
            "per_recipient": {"type": "boolean"},
            **{k: COUNT for k in ("total", "unique", "identified", "anonymous", "bot")},
        }
    ),
    "SeriesPoint": _object(
        {
            "at": MOMENT,
            **{
                k: COUNT
                for k in (
                    "clicks_human",
                    "clicks_bot",
                    "identified",
                    "anonymous",
                    "opens_human",
                    "opens_bot",
                )
            },
        }
    ),
    "Failures": _object(
        {
            "by_reply": {
                "type": "array",
                "items": _object({"reply": MAYBE_TEXT, "messages": COUNT}),
            },
            "recipients": {
                "type": "array",
                "items": _object(
                    {
                        "email": {
                            "type": ["string", "null"],
                            "description": "null once the person was erased",
                        },
                        "status": {"type": "string", "enum": ["failed", "unknown"]},
                        "reply": MAYBE_TEXT,
                        "attempts": COUNT,
                        "at": MAYBE_MOMENT,
                    }
                ),
            },
            "total": COUNT,
        }
    ),
    "Report": {
        **_object(
            {
                "campaign": TEXT,
                "status": CAMPAIGN_STATUS,
                "created_at": MOMENT,
                **{
                    k: COUNT
                    for k in (
                        "queued",
                        "sent",
                        "failed",
                        "pending",
                        "unknown",
                        "skipped",
                        "cancelled",
                    )
                },
                "recipients": _ref("Formats"),
                "audience": _counts("html_consent", "html_no_consent", "text", "skipped"),
                "clicks": _counts("total", "unique", "identified", "anonymous", "bot"),
                "bot_reasons": {"type": "object", "additionalProperties": COUNT},
                "opens": _counts("total", "unique", "bot"),
                "rates": _ref("Rates"),
                "links": {"type": "array", "items": _ref("LinkCounts")},
                "series": _object(
                    {
                        "bucket": {"type": "string", "enum": ["hour", "day"]},
                        "points": {"type": "array", "items": _ref("SeriesPoint")},
                    }
                ),
                "failures": _ref("Failures"),
            }
        ),
        "description": "The JSON of `fairclick report --format json`, with the time series "
        "(clicks and opens per UTC hour or day) and the failures.",
    },
    "CheckedLink": _object(
        {
            "part": {"type": "string", "enum": ["html", "text"]},
            "position": {"type": "integer", "minimum": 1},
            "url": {"type": "string", "description": "as the template writes it"},
            "name": {"type": "string", "description": "its data-fairclick-name, or empty"},
            "tracked": {"type": "boolean"},
            "reason": {
                "type": ["string", "null"],
                "description": "why it is not tracked (mailto, tel, anchor, "
                'data-fairclick="off", not http(s), preference link); null if tracked',
            },
            "personal": {"type": "boolean", "description": "its URL differs per recipient"},
            "note": MAYBE_TEXT,
        }
    ),
    "LinkCheck": _object(
        {"campaign": TEXT, "links": {"type": "array", "items": _ref("CheckedLink")}}
    ),
    "StatusChange": _object({"campaign": TEXT, "status": CAMPAIGN_STATUS}),
    "Unsubscribed": _object(
        {
            "id": {"type": "integer", "minimum": 1},
            "subscribed": {"type": "boolean", "const": False},
            "changed": {"type": "boolean"},
        }
    ),
    "RecipientSummary": _object(
        {
            "id": {"type": "integer", "minimum": 1},
            "email": TEXT,
            "name": TEXT,
            "format": {"type": "string", "enum": ["html", "text"]},
            "tracking_consent": {"type": "boolean"},
            "subscribed": {"type": "boolean"},
            "created_at": MAYBE_MOMENT,
        }
    ),
    "RecipientPage": _object(
        {
            "items": {"type": "array", "items": _ref("RecipientSummary")},
            "total": COUNT,
            "limit": COUNT,
            "offset": COUNT,
        }
    ),
    "Recipient": _object(
        {
            "id": {"type": "integer", "minimum": 1},
            "email": TEXT,
            "name": TEXT,
            "attributes": {"type": "object"},
            "format": {"type": "string", "enum": ["html", "text"]},
            "tracking_consent": {"type": "boolean"},
            "subscribed": {"type": "boolean"},
            "unsubscribed_at": MAYBE_MOMENT,
            "created_at": MAYBE_MOMENT,
            "consent_events": {"type": "array", "items": {"type": "object"}},
            "messages": {"type": "array", "items": {"type": "object"}},
            "message_count": COUNT,
            "clicks": {
                "type": "array",
                "items": {"type": "object"},
                "description": "identified clicks only: those the person had consented to",
            },
            "click_count": COUNT,
        }
    ),
    "Me": _object(
        {
            "name": TEXT,
            "kind": {"type": "string", "enum": ["session", "token"]},
            "role": {"type": "string", "enum": ["viewer", "operator"]},
        }
    ),
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _ok(schema: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


UNAUTHORIZED = _error("No valid session or bearer token.")
BAD_REQUEST = _error("A query value it cannot take (the message says which and why).")
NOT_FOUND = _error("No such campaign or recipient.")
UNAVAILABLE = _error("The database is unreachable: try again after Retry-After seconds.")
FORBIDDEN = _error("The operator role is needed (the token is a viewer's).")
CONFLICT = _error("Not possible in the campaign's state (e.g. resume a cancelled campaign).")


def _query(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _page_parameters(prefix: str = "", default: int = 50, what: str = "items") -> list[dict]:
    return [
        _query(
            f"{prefix}limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default},
            f"how many {what} at most",
        ),
        _query(
            f"{prefix}offset",
            {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
            f"how many {what} to skip",
        ),
    ]


CAMPAIGN_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "the campaign's name, percent-encoded",
    "example": "spring sale",
}


def _get(operation_id: str, summary: str, ok: dict, *, parameters=(), errors=None) -> dict:
    responses = {"200": ok, "401": UNAUTHORIZED, "503": UNAVAILABLE, **(errors or {})}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": list(parameters),
            "responses": dict(sorted(responses.items())),
        }
    }


def _status_change(action: str, summary: str) -> dict:
    return {
        "post": {
            "operationId": f"api_campaign_{action}",
            "summary": summary,
            "description": "Operator role only; the change is written to the log of actions.",
            "parameters": [CAMPAIGN_NAME],
            "responses": {
                "200": _ok("StatusChange", "The campaign's status now."),
                "401": UNAUTHORIZED,
                "403": FORBIDDEN,
                "404": NOT_FOUND,
                "409": CONFLICT,
                "503": UNAVAILABLE,
            },
        }
    }


RECIPIENT_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "example": 1,
}

PATHS: dict = {
    "/api/v1/me": _get("api_me", "Who the request is authenticated as", _ok("Me")),
    "/api/v1/campaigns": _get(
        "api_campaigns",
        "Campaigns at a glance, newest first",
        _ok("CampaignPage"),
        parameters=_page_parameters(what="campaigns"),
        errors={"400": BAD_REQUEST},
    ),
    "/api/v1/campaigns/{name}": _get(
        "api_campaign",
        "One campaign at a glance",
        _ok("CampaignSummary"),
        parameters=[CAMPAIGN_NAME],
        errors={"404": NOT_FOUND},
    ),
    "/api/v1/campaigns/{name}/report": _get(
        "api_campaign_report",
        "A campaign's report, time series and failures",
        _ok("Report"),
        parameters=[
            CAMPAIGN_NAME,
            _query(
                "bucket",
                {"type": "string", "enum": ["hour", "day"], "default": "hour"},
                "the time series' bucket (UTC)",
            ),
            _query("start", MOMENT, "the series' first bucket (default: the first activity)"),
            _query("end", MOMENT, "the series' last bucket (default: the last activity)"),
            *_page_parameters("failures_", 100, "failed recipients"),
        ],
        errors={"400": BAD_REQUEST, "404": NOT_FOUND},
    ),
    "/api/v1/campaigns/{name}/links": _get(
        "api_campaign_links",
        "The link check: every link of the templates as written, tracked or why not",
        _ok("LinkCheck"),
        parameters=[CAMPAIGN_NAME],
        errors={"404": NOT_FOUND},
    ),
    "/api/v1/campaigns/{name}/pause": _status_change("pause", "Stop delivering for now"),
    "/api/v1/campaigns/{name}/resume": _status_change("resume", "Deliver a paused campaign"),
    "/api/v1/campaigns/{name}/cancel": _status_change(
        "cancel", "Never deliver the rest (queued and deferred messages are cancelled)"
    ),
    "/api/v1/recipients": _get(
        "api_recipients",
        "Look a recipient up by address (email=, exact) or search addresses (q=)",
        _ok("RecipientPage"),
        parameters=[
            _query("email", TEXT, "one address, case-insensitive: that person or nobody"),
            _query("q", TEXT, "text the address contains (give email or q, not both)"),
            *_page_parameters(what="recipients"),
        ],
        errors={"400": BAD_REQUEST},
    ),
    "/api/v1/recipients/{id}": _get(
        "api_recipient",
        "One recipient: choices, consent history, messages, identified clicks",
        _ok("Recipient"),
        parameters=[RECIPIENT_ID],
        errors={"400": BAD_REQUEST, "404": NOT_FOUND},
    ),
    "/api/v1/recipients/{id}/unsubscribe": {
        "post": {
            "operationId": "api_recipient_unsubscribe",
            "summary": "Record an unsubscribe the person asked for elsewhere",
            "description": (
                "Operator role only. A consent event with channel `api`, this token as the "
                "actor and the API's wording; written to the log of actions. Idempotent: "
                "`changed` is false when the person was unsubscribed already."
            ),
            "parameters": [RECIPIENT_ID],
            "responses": {
                "200": _ok("Unsubscribed", "The person is unsubscribed."),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": FORBIDDEN,
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document (no login needed)",
            "security": [],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
            },
        }
    },
}


@cache
def _document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fairclick console API",
            "version": VERSION,
            "description": "Campaigns, reports, the link check and recipients of fairclick, "
            "on the operators' listener. Send `Authorization: Bearer TOKEN` (a token made "
            "with `fairclick admin token NAME`). Every error is JSON: "
            '{"error": {"code": …, "message": …}}. Lists are paginated with limit and offset.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token (`fairclick admin token NAME`) or a "
                    "console session",
                }
            },
            "schemas": SCHEMAS,
        },
    }


def document() -> dict:
    """The document (a copy: callers may change it)."""
    return copy.deepcopy(_document())
