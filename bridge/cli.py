"""Command line: `bridge run --config PATH`, `bridge sandbox`, `bridge check`, ..."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from bridge.core.config import ConfigError, Settings, load_settings
from bridge.core.logs import Redactor, setup_logging
from bridge.ops import maintenance

# Mirrors bridge.ops.preflight.CHECK_TIMEOUT_SECONDS, which is not imported before it is needed:
# `bridge run` with a bad config answers before Telegram's library is even loaded.
CHECK_TIMEOUT_SECONDS = 10.0
# `bridge sandbox`: the page's default port, and the key only the emulator accepts.
SANDBOX_PORT = 8090
SANDBOX_API_KEY = "sandbox-nusasms-key"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bridge` console script."""
    parser = argparse.ArgumentParser(
        prog="bridge", description="Answer WhatsApp customers (NusaSMS) from a Telegram forum."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the bridge until SIGTERM")
    run.add_argument("--config", type=Path, default=Path("config.yaml"), help="YAML config file")
    check = commands.add_parser(
        "check", help="check the configuration and both services; exit 0 only if all pass"
    )
    check.add_argument("--config", type=Path, default=Path("config.yaml"), help="YAML config file")
    check.add_argument(
        "--timeout",
        type=float,
        default=CHECK_TIMEOUT_SECONDS,
        help="seconds each service check may take (default %(default)g)",
    )
    sandbox = commands.add_parser(
        "sandbox",
        help="run the bridge against a local NusaSMS emulator, with a customer's phone page",
    )
    sandbox.add_argument(
        "--config", type=Path, default=Path("config.yaml"), help="YAML config file"
    )
    sandbox.add_argument(
        "--port", type=int, default=SANDBOX_PORT, help="the page's port (default %(default)s)"
    )
    sandbox.add_argument(
        "--failure-rate",
        type=float,
        default=0.0,
        help="share of replies that end 'failed', 0 to 1 (default %(default)g)",
    )
    maintenance.add_parsers(commands)
    args = parser.parse_args(argv)
    if args.command in maintenance.COMMANDS:
        return maintenance.run(args)

    if args.command == "sandbox" and not 0 <= args.failure_rate <= 1:
        print("--failure-rate must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        settings = load_for(args.command, args.config)
    except ConfigError as exc:
        if args.command == "check":
            print("✘ configuration")
            for line in str(exc).splitlines():
                print(f"    {line}")
            print(f"    fix: {exc.fix}")
            return 1
        print(f"config error: {exc}".replace("\n", "\nconfig error: "), file=sys.stderr)
        return 2
    if args.command == "check":
        setup_logging("ERROR", secrets=settings.secrets())
        return asyncio.run(_check(settings, args.timeout))
    setup_logging(
        settings.logging.level, json_lines=settings.logging.json_lines, secrets=settings.secrets()
    )
    if args.command == "sandbox":
        return asyncio.run(_sandbox(settings, args.port, args.failure_rate))
    from bridge.app import run as run_bridge

    return asyncio.run(run_bridge(settings))


def load_for(command: str, path: Path) -> Settings:
    """The configuration a command runs with; ConfigError names what is wrong.

    The sandbox needs no NusaSMS key: a fixed one that only the emulator knows stands in,
    so the real key (in the file or the environment) is never used.
    """
    if command == "sandbox":
        return load_settings(path, {**os.environ, "NUSASMS_API_KEY": SANDBOX_API_KEY})
    return load_settings(path)


def sandbox_settings(settings: Settings, *, nusasms_url: str, port: int) -> Settings:
    """The configuration `bridge sandbox` runs the bridge with.

    NusaSMS is the emulator at ``nusasms_url`` with the sandbox's key; the callback server
    listens on 127.0.0.1:``port`` (also its public URL, for the emulator to fetch media);
    the database and media folder sit beside the real ones under a ``.sandbox`` name, so a
    sandbox never touches real data. Telegram, the secret and the rest stay as configured.
    """
    storage = settings.storage
    database = storage.path.with_name(f"{storage.path.stem}.sandbox.db")
    media = storage.media_path
    return settings.model_copy(
        update={
            "nusasms": settings.nusasms.model_copy(
                update={
                    "base_url": nusasms_url,
                    "api_key": SecretStr(SANDBOX_API_KEY),
                    "media_mode": "url",
                }
            ),
            "server": settings.server.model_copy(
                update={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"}
            ),
            "storage": storage.model_copy(
                update={"path": database, "media_dir": media.with_name(f"{media.name}.sandbox")}
            ),
        }
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _sandbox(settings: Settings, page_port: int, failure_rate: float) -> int:
    from bridge.app import run as run_bridge
    from bridge.sandbox.customers import SandboxNusaSMS

    emulator = SandboxNusaSMS(
        api_key=SANDBOX_API_KEY,
        port=page_port,
        failure_rate=failure_rate,
        window_seconds=settings.window.hours * 3600,
    )
    try:
        await emulator.start()
    except OSError as exc:
        print(
            f"cannot listen on 127.0.0.1:{page_port} ({exc.strerror}): try --port", file=sys.stderr
        )
        return 2
    try:
        sandboxed = sandbox_settings(settings, nusasms_url=emulator.base_url, port=free_port())
        secret = sandboxed.server.callback_secret.get_secret_value()
        emulator.callback_base = f"http://127.0.0.1:{sandboxed.server.port}/callbacks/{secret}/wa"
        print(f"sandbox database: {sandboxed.storage.path}", flush=True)
        print(f"the customer's phone: {emulator.page_url}", flush=True)
        return await run_bridge(sandboxed)
    finally:
        await emulator.stop()


async def _check(settings: Settings, per_check: float) -> int:
    from bridge.ops.preflight import checklist

    # A detail may quote what a server answered, e.g. a proxy's error page echoing the
    # request URL, which holds the bot token: the checklist is redacted like a log line.
    redact = Redactor(settings.secrets()).redact
    passed = failed = 0
    # Each line as soon as it is decided (flushed: stdout may be a pipe), not all at the end.
    async for result in checklist(settings, per_check=per_check):
        print(redact(f"{'✔' if result.ok else '✘'} {result.name}: {result.detail}"), flush=True)
        if not result.ok and result.fix:
            print(redact(f"    fix: {result.fix}"), flush=True)
        passed += result.ok
        failed += not result.ok
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
