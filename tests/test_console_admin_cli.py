"""`fairclick admin …` as a real process: passwords never as arguments, tokens shown once."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
import time

import pytest
from argon2 import PasswordHasher
from conftest import free_port
from test_cli import environment, one_line_error
from test_operators import serve_env, start_serve, stop

PASSWORD = "correct horse battery"


@pytest.fixture
def fairclick(db_url, tmp_path):
    """Run `fairclick ARGS`, with `stdin` as its standard input (a pipe, not a terminal)."""

    def run(*args: str, stdin: str = "", **env: str | None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fairclick.cli", *args],
            env=environment(db_url, tmp_path, **env),
            cwd=tmp_path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


async def test_create_reads_the_password_from_stdin_and_stores_an_argon2id_hash(fairclick, pool):
    result = fairclick(
        "admin", "create", "ops@example.com", "--password-file", "-", stdin=PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("admin ops@example.com created (operator)")
    row = await pool.fetchrow("SELECT email, role, password_hash FROM admins")
    assert (row["email"], row["role"]) == ("ops@example.com", "operator")
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert PasswordHasher().verify(row["password_hash"], PASSWORD)


async def test_create_reads_the_first_line_of_a_file(fairclick, pool, write_file):
    path = write_file("pw.txt", PASSWORD + "\r\nsecond line\n")
    result = fairclick(
        "admin", "create", "v@example.com", "--role", "viewer", "--password-file", str(path)
    )
    assert result.returncode == 0, result.stderr
    row = await pool.fetchrow("SELECT role, password_hash FROM admins")
    assert row["role"] == "viewer" and PasswordHasher().verify(row["password_hash"], PASSWORD)


@pytest.mark.parametrize(
    ("args", "stdin", "said"),
    [
        (
            ("--password-file", "-"),
            "short pw\n",
            "the password is too short (8 characters): use at least 12",
        ),
        (
            ("--password-file", "/nonexistent/pw"),
            "",
            "--password-file /nonexistent/pw: cannot read it",
        ),
        ((), PASSWORD + "\n", "no terminal to ask for the password: use --password-file FILE"),
    ],
)
async def test_password_mistakes_are_one_line_and_store_nothing(fairclick, pool, args, stdin, said):
    result = fairclick("admin", "create", "ops@example.com", *args, stdin=stdin)
    assert one_line_error(result).startswith(f"fairclick: {said}")
    assert await pool.fetchval("SELECT count(*) FROM admins") == 0


async def test_an_existing_email_is_refused_and_reset_sets_a_new_password(fairclick, pool):
    assert (
        fairclick(
            "admin", "create", "ops@example.com", "--password-file", "-", stdin=PASSWORD
        ).returncode
        == 0
    )
    first = await pool.fetchval("SELECT password_hash FROM admins")
    await pool.execute(
        "INSERT INTO console_sessions (id_hash, admin_id, expires_at)"
        " SELECT '\\x00', id, now() + interval '1 hour' FROM admins"
    )
    again = fairclick("admin", "create", "OPS@example.com", "--password-file", "-", stdin=PASSWORD)
    assert one_line_error(again) == (
        "fairclick: an admin OPS@example.com exists already: "
        "`fairclick admin create OPS@example.com --reset` sets a new password"
    )
    assert await pool.fetchval("SELECT password_hash FROM admins") == first
    new = "another long password"
    reset = fairclick(
        "admin",
        "create",
        "OPS@example.com",
        "--reset",
        "--role",
        "viewer",
        "--password-file",
        "-",
        stdin=new,
    )
    assert reset.returncode == 0, reset.stderr
    row = await pool.fetchrow("SELECT role, password_hash FROM admins")
    assert row["role"] == "viewer" and PasswordHasher().verify(row["password_hash"], new)
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0  # logged out
    unknown = fairclick(
        "admin", "create", "x@example.com", "--reset", "--password-file", "-", stdin=new
    )
    assert one_line_error(unknown).startswith("fairclick: no admin x@example.com")


def _on_a_terminal(args: list[str], env: dict, answers: list[str]) -> tuple[int, str]:
    """Run fairclick on a pseudo-terminal of its own; type each answer after a prompt."""
    import fcntl
    import pty
    import termios

    controller, terminal = pty.openpty()

    def take_terminal() -> None:  # the child's controlling terminal, where getpass asks
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, "-m", "fairclick.cli", *args],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env,
        start_new_session=True, preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(terminal)
    said, pending = b"", list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal: it has ended
                break
            if not chunk:
                break
            said += chunk
            # Answered only once its prompt is out (getpass turns echo off just before it).
            prompts = said.count(b"Password: ") + said.count(b"again: ")
            while pending and len(answers) - len(pending) < prompts:
                os.write(controller, pending.pop(0).encode() + b"\n")
        elif process.poll() is not None:
            break
    os.close(controller)
    if process.poll() is None:  # stuck at a prompt: the test fails, the process does not stay
        process.kill()
    return process.wait(timeout=60), said.decode(errors="replace")


async def test_create_asks_twice_on_a_terminal(pool, db_url, tmp_path):
    env = environment(db_url, tmp_path)
    args = ["admin", "create", "ops@example.com"]
    code, said = _on_a_terminal(args, env, [PASSWORD, PASSWORD + "x"])
    assert code == 2 and "the two passwords differ; nothing was changed" in said, said
    assert PASSWORD not in said  # not echoed
    assert await pool.fetchval("SELECT count(*) FROM admins") == 0
    code, said = _on_a_terminal(args, env, [PASSWORD, PASSWORD])
    assert code == 0, said
    assert "Password:" in said and "The same password again:" in said
    assert PasswordHasher().verify(
        await pool.fetchval("SELECT password_hash FROM admins"), PASSWORD
    )


async def test_a_token_is_printed_once_listed_without_secrets_and_revoked(fairclick, pool):
    made = fairclick("admin", "token", "grafana")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("fc_") and "\n" not in token  # alone: TOKEN=$(fairclick admin token x)
    assert "shown only now" in made.stderr
    row = await pool.fetchrow("SELECT role, token_hash FROM api_tokens")
    assert row["role"] == "viewer"
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert fairclick("admin", "token", "ci", "--role", "operator").returncode == 0
    assert one_line_error(fairclick("admin", "token", "grafana")).startswith(
        "fairclick: an API token named 'grafana' exists already"
    )
    fairclick("admin", "create", "ops@example.com", "--password-file", "-", stdin=PASSWORD)
    listed = fairclick("admin", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ops@example.com  operator" in listed.stdout
    assert "grafana  viewer" in listed.stdout and "ci  operator" in listed.stdout
    assert "last used never" in listed.stdout
    assert token not in listed.stdout and "argon2" not in listed.stdout

    revoked = fairclick("admin", "token", "grafana", "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert await pool.fetchval("SELECT array_agg(name) FROM api_tokens") == ["ci"]
    assert one_line_error(fairclick("admin", "token", "grafana", "--revoke")).startswith(
        "fairclick: no API token named 'grafana'"
    )


async def test_remove_an_admin(fairclick, pool):
    fairclick("admin", "create", "ops@example.com", "--password-file", "-", stdin=PASSWORD)
    removed = fairclick("admin", "remove", "OPS@example.com")
    assert removed.returncode == 0, removed.stderr
    assert await pool.fetchval("SELECT count(*) FROM admins") == 0
    assert one_line_error(fairclick("admin", "remove", "ops@example.com")).startswith(
        "fairclick: no admin ops@example.com"
    )


@pytest.mark.parametrize(
    ("env", "args", "said"),
    [
        (
            {"FAIRCLICK_CONSOLE_URL": "console.example.com"},
            ("admin", "list"),
            "fairclick: FAIRCLICK_CONSOLE_URL='console.example.com' is not an http(s) address",
        ),
        (
            {"FAIRCLICK_CONSOLE_URL": "https://example.com/console"},
            ("admin", "list"),
            "fairclick: FAIRCLICK_CONSOLE_URL='https://example.com/console' is not an http(s) "
            "address without a path",
        ),
        (
            {},
            ("serve", "--ops-listen", "localhost", "--port", str(free_port())),
            "fairclick: --ops-listen='localhost' is not HOST:PORT: use e.g. "
            "--ops-listen=127.0.0.1:9180",
        ),
        ({}, ("admin", "create", "not-an-address"), "fairclick: 'not-an-address' is not an email"),
        (
            {},
            (
                "admin",
                "create",
                "ops\udcff@example.com",
            ),  # a byte that is not UTF-8, as argv has it
            "fairclick: 'ops\\udcff@example.com' is not an email",
        ),
    ],
)
def test_console_settings_mistakes_are_one_line(fairclick, env, args, said):
    assert one_line_error(fairclick(*args, **env)).startswith(said)


async def test_serve_ops_listen_moves_the_console_and_says_where(
    db_url, tmp_path, tracker_port, http
):
    ops = free_port()
    env = serve_env(db_url, tmp_path, "off")  # the option overrides the environment
    process, line = await start_serve(env, tracker_port, "--ops-listen", f"127.0.0.1:{ops}")
    try:
        assert f"console: http://127.0.0.1:{ops}" in line
        async with http.get(f"http://127.0.0.1:{ops}/login") as response:
            assert response.status == 200 and "Log in" in await response.text()
    finally:
        assert "Traceback" not in await stop(process)
