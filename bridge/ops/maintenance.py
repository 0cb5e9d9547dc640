"""Commands an operator runs beside a live bridge: `bridge backup` and `bridge health`.

Neither touches the running process: `backup` copies the database through SQLite's online
backup API on a read-only connection (WAL lets the bridge keep committing meanwhile), and
`health` asks the bridge's own `/healthz` where the configuration serves it (the admin
listener `server.admin`, or `server.port` with the admin token), so a container's
HEALTHCHECK follows the configuration instead of a number baked into the image.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.config import ConfigError, Settings, load_settings

COMMANDS = ("backup", "health")
HEALTH_TIMEOUT_SECONDS = 3.0
# Wildcard listen addresses are reached through the loopback of the same family.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What `backup` wrote."""

    path: Path
    size: int
    schema_version: int


class BackupError(Exception):
    """The database could not be copied."""


def backup(database: Path, destination: Path, *, folder: bool = False) -> BackupResult:
    """Copy `database` to `destination` consistently while the bridge may be writing to it.

    Into a time-stamped file if `destination` is a folder (or `folder` says it is meant to
    be one: it is created then).

    The whole copy is one step of the backup API, so it reads one snapshot: a copy made in
    several steps restarts whenever the bridge commits in between and, under steady
    traffic, might never finish. The copy is written beside `destination` first, checked,
    switched to a plain rollback journal (one self-contained file, no -wal beside it) and
    then renamed into place, so `destination` is either the old file or a complete backup.
    """
    if not database.is_file():
        raise BackupError(f"no database at {database}")
    if folder:
        destination.mkdir(parents=True, exist_ok=True)
    if destination.is_dir():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        destination = destination / f"{database.stem}-{stamp}{database.suffix or '.sqlite3'}"
    partial = destination.with_name(destination.name + ".part")
    partial.unlink(missing_ok=True)
    # The copy holds customers' messages: readable by its owner only, whatever the umask.
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.execute("PRAGMA busy_timeout = 5000")
            target = sqlite3.connect(partial)
            try:
                source.backup(target, pages=-1)
                target.execute("PRAGMA journal_mode = DELETE")
                (check,) = target.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise BackupError(f"the copy failed its integrity check: {check}")
                (version,) = target.execute("PRAGMA user_version").fetchone()
            finally:
                target.close()
        finally:
            source.close()
        partial.replace(destination)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot back up {database}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupResult(destination, destination.stat().st_size, int(version))


@dataclass(frozen=True, slots=True)
class HealthTarget:
    """Where the configuration serves `/healthz`, and the key that says so."""

    host: str
    port: int
    key: str
    token: str | None = None


def health_target(settings: Settings) -> HealthTarget:
    """The admin listener, or the public port (with the token) under `server.admin: public`."""
    server = settings.server
    token = server.admin_token.get_secret_value() or None
    admin = server.admin_listen
    if admin is None:
        return HealthTarget(server.host, server.port, "server.port", token)
    return HealthTarget(admin[0], admin[1], "server.admin", token)


def probe_health(
    host: str,
    port: int,
    *,
    timeout: float = HEALTH_TIMEOUT_SECONDS,
    token: str | None = None,
    key: str = "server.admin",
) -> str | None:
    """None if the bridge at `host:port` answers `/healthz` with 200, else what is wrong."""
    if port == 0:
        return f"the port in {key} is 0 (a random port): set a fixed port to probe it"
    address = _LOOPBACK.get(host, host)
    if ":" in address:
        address = f"[{address}]"
    url = f"http://{address}:{port}/healthz"
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return None if response.status == 200 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return f"{url} answered 401: server.admin_token differs from the running bridge's"
        return f"{url} answered {exc.code}{_problems(exc)}"
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return f"{url} not reachable: {reason}"


def _problems(response: urllib.error.HTTPError) -> str:
    try:
        body: Any = json.loads(response.read(65536))
    except (ValueError, OSError):
        return ""
    problems = body.get("problems") if isinstance(body, dict) else None
    if not problems or not isinstance(problems, list):
        return ""
    return ": " + "; ".join(str(p) for p in problems)[:500]


def add_parsers(commands: Any) -> None:
    """Add `backup` and `health` to the `bridge` command line's subcommands."""
    default = Path("config.yaml")
    backup_parser = commands.add_parser(
        "backup", help="copy the database while the bridge runs (SQLite online backup)"
    )
    backup_parser.add_argument("--config", type=Path, default=default, help="YAML config file")
    backup_parser.add_argument(
        "destination", help="file to write, or a folder (ending in /) for a time-stamped file"
    )
    health_parser = commands.add_parser(
        "health", help="exit 0 if the bridge's /healthz (on server.admin) answers 200, else 1"
    )
    health_parser.add_argument("--config", type=Path, default=default, help="YAML config file")
    health_parser.add_argument(
        "--timeout", type=float, default=HEALTH_TIMEOUT_SECONDS, help="seconds to wait"
    )


def run(args: argparse.Namespace) -> int:
    """Run a maintenance command; the exit code (0 done, 1 not: Docker reserves 2)."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}".replace("\n", "\nconfig error: "), file=sys.stderr)
        return 1
    if args.command == "health":
        target = health_target(settings)
        problem = probe_health(
            target.host, target.port, timeout=args.timeout, token=target.token, key=target.key
        )
        if problem is not None:
            print(f"unhealthy: {problem}", file=sys.stderr)
            return 1
        print("healthy")
        return 0
    try:
        result = backup(
            settings.storage.path,
            Path(args.destination),
            folder=args.destination.endswith(("/", os.sep)),
        )
    except (BackupError, OSError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup written: {result.path} ({result.size} bytes, schema {result.schema_version})")
    return 0
