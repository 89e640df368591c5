"""signaling.watch: the periodic survey goes to the database in chunks, whole sessions each."""

from __future__ import annotations

import uuid

import pytest

from rooms import live
from signaling import watch


class FakeConnection:
    def __init__(self, session_id, index: int) -> None:
        self.probe_value = live.Probe(
            live.Actor(session_id, uuid.uuid4(), 1), f"key-{index}", waiting=index % 5 == 0, chat_mark=0
        )
        self.checks = 0

    def probe(self):
        return self.probe_value

    def request_check(self) -> None:
        self.checks += 1


def _people(sessions: int, per_session: int) -> list[FakeConnection]:
    ids = [uuid.uuid4() for _ in range(sessions)]
    return [FakeConnection(ids[i % sessions], i) for i in range(sessions * per_session)]


def test_chunks_keep_each_session_whole_and_every_connection_once():
    people = _people(25, 12)
    asked = [(conn, conn.probe()) for conn in people]

    chunks = watch.survey_chunks(asked, 100)

    assert len(chunks) == 3  # 300 connections: 108, 108, 84 (9 sessions of 12 reach 100)
    assert sorted(id(c) for chunk in chunks for c, _ in chunk) == sorted(id(c) for c in people)
    sessions_per_chunk = [{p.actor.session_id for _, p in chunk} for chunk in chunks]
    assert all(a.isdisjoint(b) for i, a in enumerate(sessions_per_chunk) for b in sessions_per_chunk[i + 1 :])
    assert max(len(chunk) for chunk in chunks) < 100 + 12


async def test_check_all_asks_in_chunks_and_checks_who_the_survey_names(monkeypatch):
    people = _people(25, 12)
    calls: list[int] = []

    async def run(fn, probes):
        assert fn is live.survey
        calls.append(len(probes))
        return live.Survey(due=[p.waiting for p in probes], chat_seq={p.actor.session_id: 7 for p in probes})

    monkeypatch.setattr(watch.db, "run", run)
    watcher = watch.Watcher()
    watcher.connections = set(people)

    await watcher.check_all()

    assert calls == [108, 108, 84]
    assert [c.checks for c in people] == [1 if c.probe_value.waiting else 0 for c in people]
    assert watcher.chat_seq == {c.probe_value.actor.session_id: 7 for c in people}


@pytest.mark.parametrize(("size", "sizes"), [(1, [4, 4, 4]), (4, [4, 4, 4]), (5, [8, 4]), (12, [12]), (1000, [12])])
def test_chunk_size_edges(size, sizes):
    people = _people(3, 4)  # three sessions of four
    chunks = watch.survey_chunks([(c, c.probe()) for c in people], size)
    assert [len(chunk) for chunk in chunks] == sizes
