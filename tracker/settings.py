"""Settings read once from the environment into one typed object."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from tracker.control_chars import CONTROL
from tracker.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "fairclick"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
DEFAULT_OPS_LISTEN = "127.0.0.1:9180"


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    use_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DkimSettings:
    domain: str
    selector: str
    private_key: bytes = field(repr=False)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    base_url: str | None = None
    secret_keys: tuple[bytes, ...] = field(default=(), repr=False)
    smtp: SmtpTarget | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    smtp_connections: int = 4
    smtp_rate: float = 0.0  # messages per second over all connections; 0 = no limit
    send_lease_seconds: float = 60.0
    dkim: DkimSettings | None = None
    # (host, port) of the operators' listener (/metrics, /readyz detail); None: none.
    # from_env defaults to DEFAULT_OPS_LISTEN; built in code (tests), there is none.
    ops_listen: tuple[str, int] | None = None
    # The console's address as browsers reach it (a proxy may put https in front of the
    # operators' listener): decides Secure cookies and what quickstart prints.
    # None: http://HOST:PORT of ops_listen (see console_address()).
    console_url: str | None = None
    # Who sends the mail, as recipients' pages and campaign templates show it (tracker/
    # organisation.py). None: unset, and then nothing is said about it.
    organisation_name: str | None = None
    organisation_address: str | None = None  # postal address; lines separated by "\n"
    # The privacy policy in force: linked from every recipient page (organisation) and
    # recorded with each consent choice (tracker/wordings.py), with its version.
    privacy_policy_url: str | None = None
    # --- consent proof (issue 11) ---
    privacy_policy_version: str | None = None
    # --- end consent proof ---

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Settings from FAIRCLICK_* variables; malformed values raise ConfigError."""
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("FAIRCLICK_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
        base_url = env.get("FAIRCLICK_BASE_URL") or None
        if base_url is not None:
            base_url = parse_base_url(base_url)
        keys = env.get("FAIRCLICK_SECRET_KEY") or None
        database_url = env.get("FAIRCLICK_DATABASE_URL") or None
        smtp = env.get("FAIRCLICK_SMTP_URL") or None
        return cls(
            data_dir=data_dir,
            database_url=parse_database_url(database_url) if database_url else None,
            base_url=base_url,
            secret_keys=parse_secret_keys(keys) if keys else (),
            smtp=parse_smtp_url(smtp) if smtp else None,
            trusted_proxies=parse_networks(env.get("FAIRCLICK_TRUSTED_PROXIES") or ""),
            smtp_connections=int(_number(env, "FAIRCLICK_SMTP_CONNECTIONS", 4, minimum=1)),
            smtp_rate=_number(env, "FAIRCLICK_SMTP_RATE", 0.0, minimum=0),
            send_lease_seconds=_number(env, "FAIRCLICK_SEND_LEASE_SECONDS", 60.0, minimum=1),
            dkim=parse_dkim(env),
            ops_listen=parse_ops_listen(env.get("FAIRCLICK_OPS_LISTEN") or DEFAULT_OPS_LISTEN),
            console_url=parse_console_url(env["FAIRCLICK_CONSOLE_URL"])
            if env.get("FAIRCLICK_CONSOLE_URL")
            else None,
            **parse_organisation(env),
            privacy_policy_version=parse_privacy_policy_version(env),
        )

    def console_address(self) -> str | None:
        """Where browsers reach the console: FAIRCLICK_CONSOLE_URL, else the operators' listener."""
        if self.console_url:
            return self.console_url
        if self.ops_listen is None:
            return None
        host, port = self.ops_listen
        # Listening everywhere: this machine answers on its loopback address too.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def console_is_https(self) -> bool:
        """Cookies are marked Secure when browsers reach the console over https."""
        return (self.console_address() or "").startswith("https://")

    def require_base_url(self) -> str:
        if not self.base_url:
            raise ConfigError(
                "FAIRCLICK_BASE_URL is not set: set it to the public address of the tracker "
                "that links in mail will point to, e.g. FAIRCLICK_BASE_URL=https://click.example.com"
            )
        return self.base_url

    def require_smtp(self) -> SmtpTarget:
        if self.smtp is None:
            raise ConfigError(
                "FAIRCLICK_SMTP_URL is not set: set it to your mail relay, "
                "e.g. FAIRCLICK_SMTP_URL=smtp://user:password@mail.example.com:587"
            )
        return self.smtp

    def with_secret_keys(self) -> Settings:
        """These settings with secret keys; one is generated and stored if none is set."""
        if self.secret_keys:
            return self
        return replace(self, secret_keys=(load_or_create_secret_key(self.data_dir),))


def http_url_parts(value: str) -> SplitResult | None:
    """The parts of an absolute http(s) address with a host and a numeric port, else None.

    One check for every address setting: no whitespace, control or bidi characters (they
    end up in mail, pages and stored proof), and nothing urlsplit refuses ("http://[::1").
    """
    if any(c.isspace() or unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in value):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number or too big
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts


def parse_base_url(value: str) -> str:
    parts = http_url_parts(value.strip())
    if parts is None or parts.query or parts.fragment:
        raise ConfigError(
            f"FAIRCLICK_BASE_URL={value!r} is not an http(s) address: "
            "use e.g. FAIRCLICK_BASE_URL=https://click.example.com"
        )
    return value.strip().rstrip("/")


DATABASE_URL_EXAMPLE = "FAIRCLICK_DATABASE_URL=postgresql://fairclick:PASSWORD@db.example.com:5432/fairclick"


def parse_database_url(value: str) -> str:
    """A PostgreSQL URL whose scheme and ports asyncpg will take; the value is never echoed.

    It holds the database password, so errors name what is wrong, not the URL.
    """
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(
            f"FAIRCLICK_DATABASE_URL is malformed ({exc}): use e.g. {DATABASE_URL_EXAMPLE}"
        ) from None
    if parts.scheme not in ("postgresql", "postgres"):
        found = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ConfigError(
            f"FAIRCLICK_DATABASE_URL is not a PostgreSQL URL ({found}): "
            f"use e.g. {DATABASE_URL_EXAMPLE}"
        )
    # asyncpg takes several hosts ("h1:5432,h2:5433"); urlsplit's .port does not.
    for host in parts.netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, port = port.rpartition(":") if ":" in port else ("", "", "")
        if colon and port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            # Digits only are shown: "user:secret/db" (no host) would put a password here.
            shown = f"the port {port[:12]}" if port.isascii() and port.isdigit() else "a port"
            raise ConfigError(
                f"FAIRCLICK_DATABASE_URL has {shown} that is not a number from 1 to 65535 "
                f"(PostgreSQL's is 5432): use e.g. {DATABASE_URL_EXAMPLE}"
            )
    return url


def _number(env: dict, name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be a number of at least {minimum:g}")
    return value


def parse_organisation(env: dict) -> dict:
    """organisation_name, organisation_address and privacy_policy_url from the environment."""
    name = " ".join((env.get("FAIRCLICK_ORGANISATION_NAME") or "").split())
    address = env.get("FAIRCLICK_ORGANISATION_ADDRESS") or ""
    # A .env file or a compose file cannot hold a line break: "\n" (backslash n) stands for one.
    lines = [" ".join(line.split()) for line in address.replace("\\n", "\n").splitlines()]
    for variable, text in (
        ("FAIRCLICK_ORGANISATION_NAME", name),
        ("FAIRCLICK_ORGANISATION_ADDRESS", "".join(lines)),
    ):
        # Shown on pages and in mail: nothing that moves the cursor or reorders the text.
        if any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in text):
            raise ConfigError(
                f"{variable} holds a control character: write plain text "
                "(separate the lines of an address with \\n)"
            )
    return {
        "organisation_name": name or None,
        "organisation_address": "\n".join(line for line in lines if line) or None,
        "privacy_policy_url": parse_privacy_policy_url(env.get("FAIRCLICK_PRIVACY_POLICY_URL")),
    }


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def parse_privacy_policy_url(value: str | None) -> str | None:
    """An absolute http(s) address, or None when unset."""
    url = (value or "").strip()
    if not url:
        return None
    if http_url_parts(url) is None:
        raise ConfigError(
            f"FAIRCLICK_PRIVACY_POLICY_URL={url!r} is not an http(s) address: "
            "use e.g. FAIRCLICK_PRIVACY_POLICY_URL=https://example.com/privacy"
        )
    return url


def parse_console_url(value: str) -> str:
    """An http(s) origin, with no path: the console's links and cookies live at its root."""
    parts = http_url_parts(value.strip())
    if (
        parts is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ConfigError(
            f"FAIRCLICK_CONSOLE_URL={value!r} is not an http(s) address without a path: "
            "use e.g. FAIRCLICK_CONSOLE_URL=https://console.example.com (the console is served "
            "at the root of its address)"
        )
    return value.strip().rstrip("/")


def parse_privacy_policy_version(env: dict) -> str | None:
    """FAIRCLICK_PRIVACY_POLICY_VERSION: one short line, or None when unset."""
    version = (env.get("FAIRCLICK_PRIVACY_POLICY_VERSION") or "").strip() or None
    if version is not None and (
        len(version) > 100 or CONTROL.search(version) or any(c in _BIDI_CONTROLS for c in version)
    ):
        raise ConfigError(
            "FAIRCLICK_PRIVACY_POLICY_VERSION must be one line of at most 100 characters, "
            "e.g. FAIRCLICK_PRIVACY_POLICY_VERSION=2022-10-31"
        )
    return version


def parse_ops_listen(value: str, *, name: str = "FAIRCLICK_OPS_LISTEN") -> tuple[str, int] | None:
    """HOST:PORT (or PORT alone, on 127.0.0.1; [::1]:PORT for IPv6), or `off`."""
    value = value.strip()
    if value.lower() == "off":
        return None
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not (port.isdigit() and 0 < int(port) < 65536) or any(c in host for c in "[]/ "):
        raise ConfigError(
            f"{name}={value!r} is not HOST:PORT: use e.g. "
            f"{name}={DEFAULT_OPS_LISTEN} (the default), or `off` for none"
        )
    return host, int(port)


def parse_dkim(env: dict) -> DkimSettings | None:
    names = ("FAIRCLICK_DKIM_DOMAIN", "FAIRCLICK_DKIM_SELECTOR", "FAIRCLICK_DKIM_KEY_FILE")
    values = [env.get(n) or "" for n in names]
    if not any(values):
        return None
    missing = [n for n, v in zip(names, values, strict=True) if not v]
    if missing:
        raise ConfigError(f"DKIM signing needs all of {', '.join(names)}; missing {missing[0]}")
    domain, selector, key_file = values
    try:
        key = Path(key_file).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"FAIRCLICK_DKIM_KEY_FILE={key_file}: cannot read it ({exc.strerror})"
        ) from None
    if b"PRIVATE KEY" not in key:
        raise ConfigError(f"FAIRCLICK_DKIM_KEY_FILE={key_file}: not a PEM private key")
    return DkimSettings(domain=domain.strip(), selector=selector.strip(), private_key=key)


def parse_networks(value: str) -> tuple:
    """Comma-separated addresses or networks (CIDR) of the proxies in front of the tracker."""
    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"FAIRCLICK_TRUSTED_PROXIES: {part!r} is not an IP address or network; "
                "use e.g. FAIRCLICK_TRUSTED_PROXIES=10.0.0.0/8,192.0.2.7"
            ) from None
    return tuple(networks)


def parse_secret_keys(value: str) -> tuple[bytes, ...]:
    """Comma-separated keys: the first signs, all verify (so keys can be rotated)."""
    keys = tuple(k.strip().encode() for k in value.split(","))
    if any(len(k) < 16 for k in keys):
        raise ConfigError(
            "FAIRCLICK_SECRET_KEY holds a key shorter than 16 characters: use long random keys, "
            'e.g. from `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )
    return keys


def parse_smtp_url(value: str) -> SmtpTarget:
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"FAIRCLICK_SMTP_URL is malformed ({exc})") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(
            "FAIRCLICK_SMTP_URL must look like smtp://[user:password@]host[:port] "
            "or smtps://… for implicit TLS"
        )
    use_tls = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname,
        port=port or (465 if use_tls else 25),
        use_tls=use_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def load_or_create_secret_key(data_dir: Path) -> bytes:
    """The key stored in the data dir, created (mode 0600) with a warning the first time."""
    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        key = path.read_text().strip().encode()
        if len(key) < 16:
            raise ConfigError(f"{path} holds no usable key: delete it to generate a new one")
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    log.warning(
        "FAIRCLICK_SECRET_KEY is not set: generated one and stored it in %s (mode 0600). "
        "Every server and sender must use the same key; set FAIRCLICK_SECRET_KEY in production.",
        path,
    )
    return key.encode()
