"""rooms_store_chats(): the chat store's common case in one statement on PostgreSQL.

``rooms.live._store_in_one_pass`` calls it with one array element per message. It takes the
sessions' row locks in id order (batches on several processes never deadlock), then stores each
message with every check and moves its session's counter only if it stored it. The function is
VOLATILE, so in READ COMMITTED each statement in it sees what was committed before the locks were
granted (a removal, a newer tab), as ``_lock_session`` does. One call is one statement: in
autocommit it is its own transaction, and an error keeps nothing of the batch.

Before, the same statements went from Python in psycopg's pipeline (BEGIN, the lock, one store per
message, COMMIT): measured on one connection, 240-270 us of the server's CPU per message stored
alone, against 70-80 us for this call (docs/performance.md). The statuses, states and capacities
come in as arguments, so the model's choices stay the one place they are spelled.

Other databases (SQLite) have no such function; there the general path stores every message.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION rooms_store_chats(
    p_ids uuid[], p_sessions uuid[], p_users uuid[], p_epochs integer[], p_client_ids text[],
    p_texts text[], p_private boolean[], p_now timestamptz,
    p_ended text, p_cancelled text, p_admitted text, p_participant text, p_moderator text
) RETURNS TABLE (batch_index integer, stored_seq integer, sender_member_id varchar)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i integer;
BEGIN
    PERFORM 1 FROM rooms_session WHERE id = ANY(p_sessions) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        RETURN QUERY
        WITH stored AS (
            INSERT INTO rooms_chatmessage
                (id, session_id, seq, sender_id, client_id, text, thread_participant_id, created_at)
            SELECT p_ids[i], s.id, s.chat_seq + 1, seat.id, p_client_ids[i], p_texts[i],
                   CASE WHEN p_private[i] THEN seat.id END, p_now
            FROM rooms_session s JOIN rooms_seat seat ON seat.session_id = s.id
            WHERE s.id = p_sessions[i] AND s.status NOT IN (p_ended, p_cancelled) AND s.ends_at > p_now
              AND seat.user_id = p_users[i] AND seat.epoch = p_epochs[i]
              AND seat.state = p_admitted AND seat.capacity IN (p_participant, p_moderator)
              AND NOT (p_private[i] AND seat.capacity <> p_participant)
              AND NOT EXISTS (
                  SELECT 1 FROM rooms_chatmessage earlier
                  WHERE earlier.session_id = p_sessions[i] AND earlier.sender_id = seat.id
                    AND earlier.client_id = p_client_ids[i])
            RETURNING rooms_chatmessage.seq AS new_seq, rooms_chatmessage.sender_id AS new_sender
        ), counted AS (
            UPDATE rooms_session SET chat_seq = chat_seq + 1
            WHERE id = p_sessions[i] AND EXISTS (SELECT 1 FROM stored)
        )
        SELECT i, stored.new_seq, seat.member_id
        FROM stored JOIN rooms_seat seat ON seat.id = stored.new_sender;
    END LOOP;
END
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS rooms_store_chats(
    uuid[], uuid[], uuid[], integer[], text[], text[], boolean[], timestamptz, text, text, text, text, text
);
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0003_waiting_room_message"),
    ]

    operations = [migrations.RunPython(create, drop)]
