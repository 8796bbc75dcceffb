"""What every answer of the tracker carries, and how much a request may send, over raw sockets.

aiohttp's client cannot send some of these shapes (and would hide what comes back), so
the requests are written byte for byte to the real server on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from tracker.tokens import Tokens


def exchange(port: int, request: bytes) -> bytes:
    """Send one request, return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused half-way: its answer is already on its way back
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # the server closes with our unread bytes in its buffer: a reset, after the answer
        return answer


async def send(
    port: int, path: str = "/healthz", *, headers: bytes = b""
) -> tuple[int, dict, bytes]:
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n" % (
        path.encode(),
        headers,
    )
    answer = await asyncio.to_thread(exchange, port, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), fields, body


def many(count: int, size: int) -> bytes:
    return b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * size) for i in range(count))


@pytest.mark.parametrize(
    ("headers", "refused_with"),
    [
        (many(100, 8000), 400),  # 100 fields of 8 KB: too many fields
        (many(8, 8000), 431),  # 64 KB in 8 fields: too much altogether
        (many(1, 9000), 400),  # one field longer than 8190 bytes
    ],
    ids=["100x8KB", "8x8KB", "one-9KB-field"],
)
async def test_request_headers_are_capped_with_a_clear_refusal(
    tracker, tracker_port, headers, refused_with
):
    status, fields, body = await send(tracker_port, headers=headers)
    assert status == refused_with, body[:200]
    assert fields["Server"] == "fairclick"
    # The refusal cost nobody else anything: the next request is answered as usual.
    assert (await send(tracker_port))[0] == 200


async def test_a_malformed_request_leaves_no_traceback_in_the_log(tracker, tracker_port, caplog):
    """Answered 400 and forgotten: the client's mistake, and the log line named its address."""
    caplog.set_level(logging.DEBUG)
    assert (await send(tracker_port, headers=many(100, 8000)))[0] == 400
    assert (await send(tracker_port, headers=b"Bad Header\r\n"))[0] == 400
    # (The access log, at INFO, is the click path's business: it is not shown by `serve`.)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


async def test_a_click_with_a_large_but_plausible_header_is_not_refused(tracker, tracker_port):
    """A parent domain's cookies may be large; 24 KB in 3 fields is still someone's click."""
    status, _, body = await send(tracker_port, headers=many(3, 8000))
    assert (status, body) == (200, b"ok\n")


async def test_no_answer_names_a_version(tracker, tracker_port, settings):
    token = Tokens(settings.secret_keys).click.encode(1, 1)
    answers = [
        await send(tracker_port, "/"),
        await send(tracker_port, "/healthz"),
        await send(tracker_port, "/no/such/page"),
        await send(tracker_port, f"/c/{token}"),  # a signed token naming no link: 404 page
        await send(tracker_port, headers=many(1, 9000)),  # refused by aiohttp's own parser
    ]
    assert [status for status, _, _ in answers] == [200, 200, 404, 404, 400]
    for _, fields, _ in answers:
        assert fields["Server"] == "fairclick"
        assert not any(c.isdigit() for c in fields["Server"])


async def test_every_page_forbids_type_sniffing(tracker, tracker_port, settings, add_recipients):
    await add_recipients("email\nann@example.com\n")
    page = f"/p/{Tokens(settings.secret_keys).preferences.encode(1)}"
    for path, status in ((page, 200), ("/", 200), ("/p/nothing", 404), ("/erased", 200)):
        got, fields, body = await send(tracker_port, path)
        assert got == status, body[:200]
        assert fields["Content-Type"].startswith("text/html")
        assert fields["X-Content-Type-Options"] == "nosniff"
