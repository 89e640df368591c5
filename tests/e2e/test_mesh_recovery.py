"""The mesh transport (static/js/rtc.js) gets a pair that did not connect going again.

Two MeshTransports in one chromium page, with fake camera and microphone, relay their signaling
to each other in the page (with the server's polite rule: the member id that sorts first is
polite). The relay can drop frames, as a lost or misordered frame would leave a pair stuck.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import new_page

pytestmark = [pytest.mark.e2e, pytest.mark.media]

# Builds window.pair = {a, b, drop}: transports "a" and "b" wired to each other; a frame for which
# drop(to, frame) returns true is lost.
SETUP = """
async (base) => {
  const {MeshTransport, STUCK_MS} = await import(base + "/static/js/rtc.js");
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pair = {drop: () => false, lost: 0, STUCK_MS};
  const make = (me) => {
    const transport = new MeshTransport({
      signal: (type, data, to) => {
        const frame = {type, from: me, polite: to < me, ...data};
        if (pair.drop(to, frame)) { pair.lost += 1; return; }
        setTimeout(() => pair[to].handleSignal(frame), 5);
      },
      onRemoteStream: () => {},
      onPeerState: () => {},
    });
    transport.setLocalStream(stream);
    return transport;
  };
  pair.a = make("a");
  pair.b = make("b");
  window.pair = pair;
}
"""

CONNECTED = """
() => ["a", "b"].every((me) => {
  const other = me === "a" ? "b" : "a";
  const pc = window.pair[me].connections()[other];
  return pc && pc.connectionState === "connected";
})
"""


@pytest.fixture
def page(demo_server, media_browser):
    context, page, watch = new_page(media_browser)
    context.grant_permissions(["camera", "microphone"], origin=demo_server.url)
    page.goto(f"{demo_server.url}/healthz")
    page.evaluate(SETUP, demo_server.url)
    yield page
    page.evaluate("() => { window.pair.a.closeAll(); window.pair.b.closeAll(); }")
    assert watch.errors == []
    context.close()


def test_a_pair_whose_answer_was_lost_starts_over_and_connects(page):
    # b's answer never reaches a: a waits with its offer, b with a connection nobody answers.
    page.evaluate("() => { window.pair.drop = (to, f) => to === 'a' && f.type === 'signal.description'; }")
    page.evaluate("() => window.pair.b.connectTo('a')")
    page.wait_for_function("() => window.pair.lost > 0")
    page.wait_for_timeout(1500)
    assert not page.evaluate(CONNECTED)
    page.evaluate("() => { window.pair.drop = () => false; }")

    # Before its patience runs out nothing happens; then the side that offered starts over.
    page.evaluate("() => window.pair.b.startOverStuck(performance.now() + window.pair.STUCK_MS / 2)")
    assert page.evaluate("() => window.pair.b.restarts") == 0
    page.evaluate("() => window.pair.b.startOverStuck(performance.now() + window.pair.STUCK_MS + 1)")
    assert page.evaluate("() => window.pair.b.restarts") == 1

    page.wait_for_function(CONNECTED, timeout=20_000)
    # The side that answered never restarts: it replaced its connection when the new offer came.
    assert page.evaluate("() => window.pair.a.restarts") == 0


def test_an_offer_from_a_new_connection_replaces_the_old_one(page):
    page.evaluate("() => window.pair.b.connectTo('a')")
    page.wait_for_function(CONNECTED, timeout=20_000)
    first = page.evaluate("() => { window.firstPc = window.pair.a.connections().b; return true; }")

    # b builds a new connection to a (as after a reload or a start-over): a must not renegotiate
    # the old one with an offer from another connection, but answer it with a new one of its own.
    page.evaluate("() => window.pair.b.connectTo('a')")
    page.wait_for_function("() => window.pair.a.connections().b !== window.firstPc")
    page.wait_for_function(CONNECTED, timeout=20_000)
    assert first and page.evaluate("() => window.firstPc.connectionState") == "closed"


def test_only_one_side_of_a_stuck_pair_starts_over(page):
    # a gets b's offer but nothing of a's reaches b, and no candidate of b's reaches a: stuck.
    page.evaluate("() => { window.pair.drop = (to, f) => to === 'b' || f.type === 'signal.candidate'; }")
    page.evaluate("() => window.pair.b.connectTo('a')")
    page.wait_for_function("() => window.pair.a.connections().b && window.pair.lost > 1")
    page.wait_for_timeout(1000)
    assert not page.evaluate(CONNECTED)
    page.evaluate("() => { window.pair.drop = () => false; }")

    later = "performance.now() + window.pair.STUCK_MS + 1"
    page.evaluate(f"() => {{ window.pair.a.startOverStuck({later}); window.pair.b.startOverStuck({later}); }}")
    # a heard from b (the server's rule makes a polite): it waits; b offered and heard nothing: it acts.
    assert page.evaluate("() => [window.pair.a.restarts, window.pair.b.restarts]") == [0, 1]
    page.wait_for_function(CONNECTED, timeout=20_000)
