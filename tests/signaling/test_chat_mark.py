"""A connection's chat mark: what it has handled, so the periodic check re-reads nothing it delivered."""

from signaling.consumers import SessionConsumer


def test_chat_seen_advances_mark_over_unbroken_run():
    consumer = SessionConsumer()
    consumer.chat_mark, consumer.chat_sent = 5, set()

    consumer.chat_seen(7)
    assert (consumer.chat_mark, consumer.chat_sent) == (5, {7})
    consumer.chat_seen(6)

    assert (consumer.chat_mark, consumer.chat_sent) == (7, set())


def test_chat_seen_ignores_already_handled_numbers():
    consumer = SessionConsumer()
    consumer.chat_mark, consumer.chat_sent = 5, set()

    consumer.chat_seen(3)

    assert (consumer.chat_mark, consumer.chat_sent) == (5, set())
