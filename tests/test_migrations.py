"""Migrations apply once, in order; serve refuses a database that is behind."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from tracker import schema
from tracker.errors import PendingMigrations


@pytest.fixture
async def empty_db(database_url):
    _, server_url, _ = database_url
    name = f"fairclick_empty_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrate_applies_each_file_once(empty_db):
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(PendingMigrations, match="fairclick migrate"):
            await schema.ensure_current(conn)
        first = await schema.migrate(conn)
        again = await schema.migrate(conn)
        assert [m.version for m in first] == [m.version for m in schema.available_migrations()]
        assert again == []
        await schema.ensure_current(conn)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_concurrent_migrations_do_not_collide(empty_db):
    conns = [await asyncpg.connect(empty_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(schema.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(schema.available_migrations())]
    finally:
        for c in conns:
            await c.close()


def serve(db_url: str, port: int, *extra: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": "serve-test-key-0123456789abcdef",
        "FAIRCLICK_OPS_LISTEN": "off",  # not 9180, which anything else may hold
    }
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fairclick.cli",
        "serve",
        "--port",
        str(port),
        *extra,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_serve_refuses_pending_migrations(empty_db, tracker_port):
    process = await serve(empty_db, tracker_port)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"pending migration" in stderr and b"Traceback" not in stderr


async def test_serve_with_migrate_starts_and_stops_cleanly_on_sigterm(empty_db, tracker_port):
    port = tracker_port
    process = await serve(empty_db, port, "--migrate")
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert f"127.0.0.1:{port}".encode() in line
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0
