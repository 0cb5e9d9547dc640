"""A NusaSMS of our own on 127.0.0.1, for the tests and for `bridge sandbox`.

`nusasms.FakeNusaSMS` emulates the API the bridge uses; `loopback` is the small aiohttp
server both it and the tests' fake Telegram build on. Nothing else in the package imports
this one: the bridge talks to the emulator over HTTP, exactly as to NusaSMS.
"""
