"""What both fakes share: an aiohttp server on 127.0.0.1 that can go down and come back on
the same port, and a `wait_for` that explains itself when the condition never holds."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web

_SHUTDOWN_TIMEOUT = 0.05
MAX_BODY = 64 * 1024 * 1024


def describe(predicate: Callable[[], bool]) -> str:
    """The predicate's source, for a failure message."""
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


class LoopbackServer:
    """A fake service on 127.0.0.1; subclasses provide `_build_app` and `_state`."""

    def __init__(self) -> None:
        self._port: int | None = None
        self._runner: web.AppRunner | None = None

    def _build_app(self) -> web.Application:
        raise NotImplementedError

    def _state(self) -> str:
        """A line about what the fake has seen, for a failed `wait_for`."""
        raise NotImplementedError

    async def start(self) -> None:
        """Listen on 127.0.0.1, on an OS-chosen port the first time, the same one after."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already listening")
        runner = web.AppRunner(
            self._build_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self._port or 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and release resources; safe to call twice or after go_down."""
        await self.go_down()

    async def go_down(self) -> None:
        """Stop listening (connections are refused, open ones dropped) but keep all state."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def come_up(self) -> None:
        """Listen again on the same port as before."""
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port, fixed once the fake first started."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._port

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Poll ``predicate`` every 10 ms until it holds; AssertionError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                raise AssertionError(
                    f"{type(self).__name__}: condition not met within {timeout}s: "
                    f"{describe(predicate)}\n{self._state()}"
                )
            await asyncio.sleep(0.01)
