"""What the README promises about media a customer sends: the callback carries text only."""

from __future__ import annotations

from tests.conftest import Callbacks, inbox_body
from tests.fakes.telegram import FakeTelegram


async def test_a_media_message_without_text_shows_as_empty_and_extra_fields_are_ignored(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    # Whatever NusaSMS might add for a photo is not part of the documented callback.
    body = {**inbox_body("media-1", ""), "type": "image", "media_url": "https://x.invalid/a.jpg"}

    assert (await callbacks.inbox(body)).status == 200

    await telegram.wait_for(
        lambda: any(m.plain_text == "(empty message)" for m in telegram.messages), timeout=10
    )
    assert not any("x.invalid" in (m.plain_text or "") for m in telegram.messages)
