"""A loopback TCP proxy in front of PostgreSQL that a test can cut and restore, in-process.

Cutting closes every connection through it and refuses new ones, as a database that
went away does; restoring listens again on the same port. It lets the tracker be run
in the test's own event loop through an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class DatabaseProxy:
    def __init__(self, database_url: str):
        self.upstream = urlsplit(database_url)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        """database_url, but through the proxy."""
        query = {k: v for k, v in parse_qs(self.upstream.query).items() if k != "host"}
        user = self.upstream.username or "postgres"
        password = f":{self.upstream.password}" if self.upstream.password else ""
        netloc = f"{user}{password}@127.0.0.1:{self.port}"
        query_text = "&".join(f"{k}={v[0]}" for k, v in query.items())
        return urlunsplit(("postgresql", netloc, self.upstream.path, query_text, ""))

    async def _open_upstream(self):
        socket_dir = parse_qs(self.upstream.query).get("host", [None])[0]
        if socket_dir and socket_dir.startswith("/"):  # the embedded server listens on a socket
            port = self.upstream.port or 5432
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self.upstream.hostname, self.upstream.port or 5432)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            client_writer.close()
            return
        self._streams |= {client_writer, up_writer}
        for reader, writer in ((client_reader, up_writer), (up_reader, client_writer)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def cut(self) -> None:
        """The database goes away: open connections break, new ones are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop listening first, so no new connection slips in
        for writer in list(self._streams):
            writer.transport.abort()
        self._streams.clear()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()
