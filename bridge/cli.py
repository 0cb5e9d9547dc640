"""Command line: `bridge run --config PATH`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.config import ConfigError, load_settings
from bridge.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bridge` console script."""
    parser = argparse.ArgumentParser(
        prog="bridge", description="Answer WhatsApp customers (NusaSMS) from a Telegram forum."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the bridge until SIGTERM")
    run.add_argument("--config", type=Path, default=Path("config.yaml"), help="YAML config file")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}".replace("\n", "\nconfig error: "), file=sys.stderr)
        return 2
    setup_logging(
        settings.logging.level, json_lines=settings.logging.json_lines, secrets=settings.secrets()
    )
    from bridge.app import run as run_bridge

    return asyncio.run(run_bridge(settings))


if __name__ == "__main__":
    sys.exit(main())
