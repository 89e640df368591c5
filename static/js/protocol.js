// The session WebSocket (docs/protocol.md, subprotocol telehealth.v1). The only module that
// touches WebSocket: it frames envelopes, numbers messages, reconnects with jittered backoff,
// resumes the seat and chat after a drop, and turns the final close codes into one "closed"
// event that never reconnects.

export const SUBPROTOCOL = "telehealth.v1";
const VERSION = 1;

// Close codes after which reconnecting would be wrong (removed, ended, replaced, logged out).
export const FINAL_CLOSES = {
  4401: "logged_out",
  4403: "removed",
  4409: "replaced",
  4410: "ended",
};

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
// A refused handshake shows up as 1006 with no reason; after this many failed attempts in a row
// the page says so instead of retrying forever.
const MAX_FAILED_ATTEMPTS = 10;

export function backoffDelay(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
  // "Equal jitter": never zero, never in lockstep with everyone else who dropped at the same moment.
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class SessionSocket {
  /**
   * @param {string} path  e.g. /ws/sessions/<uuid>/
   * @param {{onFrame: (frame: object) => void, onStatus: (status: string) => void,
   *          onClosed: (reason: string, code: number) => void}} handlers
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.ws = null;
    this.counter = 0;
    // Ids are idempotency keys for chat: unique per page, so a resend after a reconnect is recognised.
    this.prefix = Math.random().toString(36).slice(2, 10);
    this.resumeToken = null;
    this.admitted = false;
    this.lastSeq = 0;
    this.failed = 0;
    this.stopped = false;
    this.retryTimer = null;
    this.leaving = false;
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}${this.path}`;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url(), SUBPROTOCOL);
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      if (typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame.type === "string") this.receive(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws === ws) this.closed(event.code);
    });
  }

  nextId() {
    this.counter += 1;
    return `${this.prefix}-${this.counter}`;
  }

  /** Send one message; returns its id (echoed as `re`), or null when the socket is not open. */
  send(type, data = {}, { to = null, id = null } = {}) {
    const messageId = id || this.nextId();
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const envelope = { v: VERSION, type, id: messageId, data };
    if (to !== null) envelope.to = to;
    this.ws.send(JSON.stringify(envelope));
    return messageId;
  }

  seen(seq) {
    if (Number.isInteger(seq) && seq > this.lastSeq) this.lastSeq = seq;
  }

  receive(frame) {
    if (frame.type === "welcome") {
      this.failed = 0;
      const previous = this.resumeToken;
      const wasAdmitted = this.admitted;
      this.resumeToken = frame.resume_token;
      this.admitted = frame.state === "admitted";
      this.handlers.onStatus("connected");
      this.handlers.onFrame(frame);
      // Back after a drop: ask for the room now and exactly the chat we missed.
      if (previous && wasAdmitted && this.admitted) {
        this.send("resume", { resume_token: previous, last_seq: this.lastSeq });
      }
      return;
    }
    if (frame.type === "admitted") this.admitted = true;
    if (frame.type === "chat.message" && frame.message) this.seen(frame.message.seq);
    if ((frame.type === "chat.history" && frame.messages) || (frame.type === "resumed" && frame.chat)) {
      for (const message of frame.messages || frame.chat) this.seen(message.seq);
    }
    this.handlers.onFrame(frame);
  }

  closed(code) {
    this.ws = null;
    if (this.stopped) return;
    if (this.leaving) {
      this.stop();
      this.handlers.onClosed("left", code);
      return;
    }
    if (FINAL_CLOSES[code]) {
      this.stop();
      this.handlers.onClosed(FINAL_CLOSES[code], code);
      return;
    }
    this.failed += 1;
    if (this.failed > MAX_FAILED_ATTEMPTS) {
      this.stop();
      this.handlers.onClosed("unreachable", code);
      return;
    }
    this.handlers.onStatus("reconnecting");
    this.retryTimer = window.setTimeout(() => this.connect(), backoffDelay(this.failed - 1));
  }

  /** Leave on purpose: the server frees the seat at once and closes with 1000. */
  leave() {
    this.leaving = true;
    if (!this.send("session.leave")) {
      this.stop();
      this.handlers.onClosed("left", 1000);
    }
  }

  stop() {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }

  /**
   * Connect again now, without waiting for a drop: the server re-runs its entry checks on a new
   * connection, so a waiting room whose opening time has come lets the person in at once instead
   * of at the server's next periodic check. The seat is kept (same as any reconnect).
   */
  reconnectNow() {
    if (this.stopped || !this.ws) return;
    const ws = this.ws;
    this.ws = null;
    ws.close(4000);
    this.connect();
  }

  /** For tests and diagnostics: drop the socket as a network failure would. */
  dropForTest() {
    if (this.ws) this.ws.close(4000);
  }
}
