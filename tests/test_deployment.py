"""The Dockerfile and docker-compose.yml, as far as they can be tried without a Docker engine.

The Dockerfile's own install command is run on exactly the files it copies, and the
installed package must work; the compose file must agree with the image (data volume,
ports, healthcheck) and keep its promises (pinned images, no default secrets, nothing
but the tracker published beyond the host's loopback).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (op.upper(), rest.strip())
        for op, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def dockerfile(op: str) -> list[str]:
    return [args for name, args in instructions() if name == op]


def image_env() -> dict[str, str]:
    env = {}
    for args in dockerfile("ENV"):
        env |= dict(part.split("=", 1) for part in shlex.split(args))
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_image_installs_once_from_what_it_copies_and_works(tmp_path):
    """Run the Dockerfile's pip command on a context holding only its COPY sources."""
    assert dockerfile("WORKDIR")[0] == "/build"  # where the COPY destinations below are
    context = tmp_path / "build"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for args in dockerfile("COPY"):
        *sources, dest = args.split()
        for source in sources:
            assert f"!{source.rstrip('/')}" in ignored or f"!{source}/" in ignored, source
            target = context / dest / Path(source).name if dest.endswith("/") else context / dest
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    (install,) = [args for args in dockerfile("RUN") if "pip install" in args]
    command = shlex.split(install.split("&&")[0])
    assert command[:2] == ["pip", "install"] and command[-1] == "."
    # The same command, but into a folder of its own, offline, on this venv's hatchling.
    site = tmp_path / "site"
    extra = ["--no-deps", "--no-build-isolation", "--no-index", "--target", str(site)]
    result = subprocess.run(
        [sys.executable, "-m", *command[:-1], *extra, "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    check = (
        "import fairclick, tracker.pages as p; "
        "print(fairclick.__file__); print(p.templates_dir() / 'web' / 'preferences.html')"
    )
    shown = subprocess.run(
        [sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    package, page = shown.stdout.split()
    assert package.startswith(str(site)) and page.startswith(str(site)), shown.stderr
    assert Path(page).is_file()
    assert (Path(page).parent.parent / "email" / "example" / "recipients.csv").is_file()
    assert "rm -rf /build" in install  # no sources left in the image: it runs what it installed
    entry = shlex.split(dockerfile("ENTRYPOINT")[0].strip("[]").replace(",", " "))
    helped = subprocess.run(
        [sys.executable, "-m", "fairclick.cli", "--help"], env=env, capture_output=True, text=True
    )
    assert entry == ["fairclick"] and helped.returncode == 0, helped.stderr


def pinned(image: str) -> bool:
    tag = image.partition(":")[2]
    return bool(tag) and tag != "latest" and any(c.isdigit() for c in tag)


def test_every_image_is_pinned(compose):
    (base,) = dockerfile("FROM")
    assert pinned(base), base
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"] == "." and service["image"] == "fairclick:local", name
        else:
            assert pinned(service["image"]), (name, service["image"])


def test_the_app_is_installed_in_the_image_never_at_start(compose):
    for name, service in compose["services"].items():
        command = " ".join(service.get("command") or [])
        assert "pip" not in command, name
        if "build" in service:
            assert "volumes" not in service or all(
                not v.startswith((".:", "./")) for v in service["volumes"]
            ), name  # runs what the image holds, not the working tree


def test_the_data_dir_is_a_volume_so_the_spool_survives_a_new_container(compose):
    data_dir = image_env()["FAIRCLICK_DATA_DIR"]
    assert dockerfile("VOLUME") == [f'["{data_dir}"]']
    tracker = compose["services"]["tracker"]
    mounts = dict(volume.split(":", 1)[::-1] for volume in tracker["volumes"])
    assert mounts[data_dir] in compose["volumes"]  # a named volume, not the container's layer
    assert "FAIRCLICK_DATA_DIR" not in tracker.get("environment", {})  # the image's, not another


def test_health_checks_wait_for_a_start_and_services_restart(compose):
    for name, service in compose["services"].items():
        assert service["restart"] in ("unless-stopped", "always", "on-failure"), name
        if "healthcheck" in service:
            assert service["healthcheck"]["start_period"], name
    tracker = compose["services"]["tracker"]
    port = tracker["command"][tracker["command"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(tracker["healthcheck"]["test"])
    assert compose["services"]["worker"]["depends_on"]["tracker"]["condition"] == (
        "service_healthy"
    )


def test_only_the_public_tracker_port_is_published_beyond_loopback(compose):
    public = compose["services"]["tracker"]["command"]
    public_port = public[public.index("--port") + 1]
    ops_port = image_env()["FAIRCLICK_OPS_LISTEN"].rpartition(":")[2]
    assert {public_port, ops_port} <= set(" ".join(dockerfile("EXPOSE")).split())
    published = {
        (name, mapping)
        for name, service in compose["services"].items()
        for mapping in service.get("ports", [])
    }
    assert ("tracker", f"{public_port}:{public_port}") in published
    assert ("tracker", f"127.0.0.1:{ops_port}:{ops_port}") in published
    for name, mapping in published - {("tracker", f"{public_port}:{public_port}")}:
        assert mapping.startswith("127.0.0.1:"), (name, mapping)


def test_no_secret_has_a_default(compose):
    db = compose["services"]["db"]["environment"]
    assert db["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for name in ("tracker", "worker"):
        env = compose["services"][name]["environment"]
        assert env["FAIRCLICK_SECRET_KEY"].startswith("${FAIRCLICK_SECRET_KEY:?")
        assert ":${POSTGRES_PASSWORD:?" in env["FAIRCLICK_DATABASE_URL"]
    assert ".env" in (ROOT / ".gitignore").read_text().split()
