"""Baseline of bench/mailer.py: bare aiosmtplib sending one pre-built message N times.

MAIL, RCPT and DATA through aiosmtplib's public `SMTP.sendmail`, over --connections
connections, each reused, each taking the next message (a distinct envelope recipient per
message). Prints one JSON line: messages, seconds and CPU seconds of the sending alone
(from the first connection to the last QUIT; interpreter start-up and reading the file are
not counted).

    python bench/bare_sender.py --port 2525 --message message.eml --count 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiosmtplib


async def send(args: argparse.Namespace, data: bytes) -> int:
    numbers = iter(range(args.count))
    sent = 0

    async def connection() -> None:
        nonlocal sent
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=args.port, start_tls=False)
        await client.connect()
        for n in numbers:  # shared: each connection takes the next message
            await client.sendmail(args.sender, [f"reader{n + 1}@example.net"], data)
            sent += 1
        await client.quit()

    await asyncio.gather(*(connection() for _ in range(args.connections)))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--message", required=True, help="the message, CRLF line endings")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sender", default="news@northwind.example")
    args = parser.parse_args()
    with open(args.message, "rb") as f:
        data = f.read()
    cpu, wall = time.process_time(), time.monotonic()
    sent = asyncio.run(send(args, data))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    print(json.dumps({"messages": sent, "seconds": wall, "cpu": cpu, "bytes": len(data)}))


if __name__ == "__main__":
    main()
