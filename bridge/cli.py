"""Command line: `bridge run --config PATH`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import maintenance
from bridge.config import ConfigError, Settings, load_settings
from bridge.logs import Redactor, setup_logging

# Mirrors bridge.preflight.CHECK_TIMEOUT_SECONDS, which is not imported before it is needed:
# `bridge run` with a bad config answers before Telegram's library is even loaded.
CHECK_TIMEOUT_SECONDS = 10.0


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
    maintenance.add_parsers(commands)
    args = parser.parse_args(argv)
    if args.command in maintenance.COMMANDS:
        return maintenance.run(args)

    try:
        settings = load_settings(args.config)
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
    from bridge.app import run as run_bridge

    return asyncio.run(run_bridge(settings))


async def _check(settings: Settings, per_check: float) -> int:
    from bridge.preflight import checklist

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
