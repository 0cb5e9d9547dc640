"""The NusaSMS emulator lives in the package, shared by the tests and `bridge sandbox`."""

from bridge.sandbox.nusasms import DEFAULT_API_KEY, Broadcast, Call, FakeNusaSMS, Reply, fetch

__all__ = ["DEFAULT_API_KEY", "Broadcast", "Call", "FakeNusaSMS", "Reply", "fetch"]
