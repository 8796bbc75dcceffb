"""The SMTP sink of bench/mailer.py: an aiosmtpd server that accepts every message and discards it.

It runs in its own process (started and stopped by bench/mailer.py), so the sender under test
does not share its interpreter with the server. Nothing is written anywhere: a message costs the
sink only aiosmtpd's parsing. `VRFY <stats@sink.invalid>` answers with what it has taken so far
("252 messages=N bytes=B"), so the benchmark can check every message arrived.

    python bench/mailer_sink.py --port 2525 [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP


class Discard:
    """aiosmtpd handler: count, then forget."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.connections = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages += len(envelope.rcpt_tos)
        self.bytes += len(envelope.original_content or b"")
        return "250 2.0.0 OK discarded"

    async def handle_VRFY(self, server, session, envelope, address) -> str:
        return f"252 messages={self.messages} bytes={self.bytes} connections={self.connections}"


def new_loop(kind: str) -> tuple[asyncio.AbstractEventLoop, str]:
    if kind in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                sys.exit("mailer_sink: --loop uvloop needs uvloop (pip install uvloop)")
        else:
            return uvloop.new_event_loop(), f"uvloop {uvloop.__version__}"
    return asyncio.new_event_loop(), "asyncio"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    args = parser.parse_args()
    loop, loop_name = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    handler = Discard()
    server = loop.run_until_complete(
        loop.create_server(
            # A fixed hostname: aiosmtpd would otherwise ask the resolver for the FQDN.
            lambda: SMTP(handler, hostname="sink.invalid", ident="fairclick bench sink", loop=loop),
            host=args.host,
            port=args.port,
        )
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    print(f"sink listening on {args.host}:{args.port} ({loop_name})", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()
        print(
            f"sink stopped: {handler.messages} messages, {handler.bytes} bytes, "
            f"{handler.connections} connections",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
