"""signaling.frames: frames written out by hand stay exactly what the schema's models build."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rooms import live
from signaling import frames
from signaling import protocol as p

AT = datetime(2026, 3, 2, 23, 1, 2, 345678, tzinfo=UTC)


@pytest.mark.parametrize(
    "view",
    [
        live.ChatView(1, "author-1", "hello", None, AT, False),
        live.ChatView(2, "author-1", 'a "quoted" <b>not markup</b> é', "author-1", AT, False),
        live.ChatView(3, "therapist-9", "a private reply", "author-1", AT, False),
        live.ChatView(4, "author-2", "", None, AT, True),
    ],
)
@pytest.mark.parametrize("re", [None, "c-12"])
def test_the_chat_message_frame_is_the_models_own(view, re):
    built = frames.chat_message(view, re=re)
    expected = p.build(p.ChatMessageFrame, sender=view.author, re=re, message=frames.chat_entry(view))

    assert {**built, "ts": None} == {**expected, "ts": None}
    assert list(built) == list(expected)  # the same order on the wire
    assert p.encode({**built, "ts": "x"}) == p.encode({**expected, "ts": "x"})
    p.ChatMessageFrame.model_validate(built)  # and the schema accepts it
