// The therapist's side panel: waiting room (admit, admit all, deny with a message, a message to
// everyone waiting, knock sound and visual cue), raised hands in order, the roster with its
// moderation controls, lock, end, and the session timer. It renders from the room's shared state
// and only sends frames; the server's answers come back through room.js.

import { $, el, announce, clock, duration, minutes, confirmAction, replaceKeepingFocus } from "./ui.js";

const FLAG_MS = 15000; // how long "someone new is waiting" stays up

export class TherapistPanel {
  constructor({ state, socket, nameOf, serverNow, config, onKnock }) {
    this.state = state;
    this.socket = socket;
    this.nameOf = nameOf;
    this.serverNow = serverNow;
    this.config = config;
    this.onKnock = onKnock;
    this.timer = null;
    this.flagTimer = null;
    this.title = document.title;
    this.startsAt = Date.parse(config.startsAt);
    this.endsAt = Date.parse(config.endsAt);
    this.bind();
  }

  bind() {
    $("admit-all").addEventListener("click", () => this.socket.send("mod.admit_all"));
    $("lock-toggle").addEventListener("click", () => this.socket.send(this.state.locked ? "mod.unlock" : "mod.lock"));
    $("end-session").addEventListener("click", async () => {
      if (await confirmAction("End the session for everyone? Nobody will be able to rejoin.", "End session")) {
        this.socket.send("mod.end");
      }
    });
    $("lower-all").addEventListener("click", () => this.socket.send("mod.lower_all_hands"));
    $("clear-spotlight").addEventListener("click", () => this.socket.send("mod.spotlight", { member: null }));
    $("chime-toggle").addEventListener("change", (event) => {
      this.chimeEnabled = event.target.checked;
    });
    this.chimeEnabled = true;
    // A click anywhere else closes an open "More" menu.
    document.addEventListener("click", (event) => {
      for (const menu of document.querySelectorAll("details.menu[open]")) if (!menu.contains(event.target)) menu.open = false;
    });
    $("waiting-message-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("waiting-message-input");
      const text = input.value.trim();
      if (!text) return;
      if (this.socket.send("mod.waiting_message", { text })) {
        this.pendingWaitingMessage = text;
        $("waiting-message-status").textContent = "Sending…";
      }
    });
  }

  /** The server carried out a command; the only one we confirm in words is the waiting-room message. */
  acked() {
    if (this.pendingWaitingMessage) {
      const count = this.state.waiting.length;
      $("waiting-message-status").textContent =
        count === 0
          ? "Sent. Nobody is waiting right now; people who arrive later will not see it."
          : `Sent to ${count === 1 ? "the person" : `the ${count} people`} waiting.`;
      window.clearTimeout(this.statusTimer);
      this.statusTimer = window.setTimeout(() => {
        $("waiting-message-status").textContent = "";
      }, 15000);
      $("waiting-message-input").value = "";
      this.pendingWaitingMessage = null;
      const details = $("waiting-message-form").closest("details");
      details.open = false;
      details.querySelector("summary").focus();
    }
  }

  start() {
    this.tick();
    window.clearInterval(this.timer);
    this.timer = window.setInterval(() => this.tick(), 1000);
  }

  stop() {
    window.clearInterval(this.timer);
    window.clearTimeout(this.flagTimer);
    document.title = this.title;
  }

  /** Every second: the session timer and how long each person has been waiting. */
  tick() {
    const now = this.serverNow();
    const node = $("session-timer");
    if (node) {
      if (now < this.startsAt) {
        node.textContent = `Starts in ${duration(this.startsAt - now)} (at ${clock(this.startsAt)})`;
      } else if (now < this.endsAt) {
        node.textContent = `Session time ${duration(now - this.startsAt)} · ${minutes(this.endsAt - now)} left, ends ${clock(this.endsAt)}`;
      } else {
        node.textContent = `Over time by ${minutes(now - this.endsAt)} (ended ${clock(this.endsAt)})`;
      }
      node.dataset.phase = now < this.startsAt ? "before" : now < this.endsAt ? "during" : "over";
    }
    for (const since of document.querySelectorAll("#waiting-list [data-since]")) {
      since.textContent = `waiting ${minutes(now - Number(since.dataset.since))}`;
    }
  }

  // --- the waiting room ----------------------------------------------------------------------

  waitingList(entries) {
    const before = new Set(this.state.waiting.map((w) => w.member));
    this.state.waiting = entries;
    const arrived = entries.filter((entry) => !before.has(entry.member) && entry.presence === "connected");
    // The list that greets the therapist on entering is not news: no chime for it.
    const first = !this.seenList;
    this.seenList = true;
    if (arrived.length && !first) {
      const names = arrived.map((e) => e.name).join(", ");
      this.cue(`${names} ${arrived.length === 1 ? "is" : "are"} in the waiting room.`);
    }
    this.renderWaiting();
  }

  knock(name) {
    // A refused browser retries with backoff and each try knocks again: one cue per person a minute.
    const now = Date.now();
    this.knocks = this.knocks || new Map();
    if (now - (this.knocks.get(name) || 0) < 60000) return;
    this.knocks.set(name, now);
    this.cue(`${name} is knocking: the room is locked.`);
  }

  /** Someone new: a sound (if wanted), a visible flag with words, the tab title, and the live region. */
  cue(text) {
    announce(text);
    if (this.chimeEnabled) this.onKnock();
    const flag = $("waiting-flag");
    flag.textContent = text;
    flag.hidden = false;
    $("waiting-section").classList.add("mod__section--alert");
    window.clearTimeout(this.flagTimer);
    this.flagTimer = window.setTimeout(() => {
      flag.hidden = true;
      $("waiting-section").classList.remove("mod__section--alert");
    }, FLAG_MS);
  }

  renderWaiting() {
    const list = $("waiting-list");
    const now = this.serverNow();
    const rows = this.state.waiting.map((entry) => {
      const since = Date.parse(entry.since);
      return el("li", { class: "person" }, [
        el("span", { class: "person__name", text: entry.name }),
        el("span", { class: "person__detail", "data-since": String(since), text: `waiting ${minutes(now - since)}` }),
        entry.presence === "reconnecting" ? el("span", { class: "person__detail", text: "(reconnecting)" }) : null,
        el("span", { class: "person__actions" }, [
          this.button("Admit", `Admit ${entry.name}`, `${entry.member}:admit`, () =>
            this.socket.send("mod.admit", { member: entry.member }), "button--primary"),
          this.button("Deny", `Deny ${entry.name}`, `${entry.member}:deny`, () => this.deny(entry)),
        ]),
      ]);
    });
    replaceKeepingFocus(list, rows);
    const count = this.state.waiting.length;
    $("waiting-count").textContent = String(count);
    $("waiting-empty").hidden = count > 0;
    $("admit-all").hidden = count < 2;
    document.title = count ? `(${count} waiting) ${this.title}` : this.title;
  }

  async deny(entry) {
    const dialog = $("deny-dialog");
    $("deny-heading").textContent = `Turn ${entry.name} away?`;
    $("deny-message").value = "";
    dialog.returnValue = "cancel";
    const answer = new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
    dialog.showModal();
    $("deny-message").focus();
    if ((await answer) === "ok") {
      this.socket.send("mod.deny", { member: entry.member, message: $("deny-message").value.trim() });
    }
  }

  // --- hands ---------------------------------------------------------------------------------

  hands() {
    const queue = this.state.hands;
    const rows = queue.map((member, i) => {
      const name = this.nameOf(member);
      return el("li", { class: "person" }, [
        el("span", { class: "person__order", text: `${i + 1}.` }),
        el("span", { class: "person__name", text: name }),
        el("span", { class: "person__actions" }, [
          this.button("Lower hand", `Lower hand of ${name}`, `${member}:lower`, () =>
            this.socket.send("mod.lower_hand", { member })),
        ]),
      ]);
    });
    replaceKeepingFocus($("hands-list"), rows);
    $("hands-count").textContent = String(queue.length);
    $("hands-empty").hidden = queue.length > 0;
    $("lower-all").hidden = queue.length < 2;
  }

  // --- the roster ----------------------------------------------------------------------------

  roster() {
    const { state } = this;
    const others = [...state.roster.values()].filter((m) => m.member !== state.me);
    const rows = others.map((m) => this.memberRow(m));
    replaceKeepingFocus($("roster-list"), rows);
    $("roster-count").textContent = String(state.roster.size);
    const spot = state.spotlight && state.roster.get(state.spotlight);
    $("spotlight-note").hidden = !spot;
    $("spotlight-name").textContent = spot ? `Spotlight: ${state.spotlight === state.me ? "you" : spot.name}` : "";
    // The hand queue shows names: a late roster update may have filled one in.
    this.hands();
  }

  memberRow(m) {
    const send = (type, extra = {}) => () => this.socket.send(type, { member: m.member, ...extra });
    const key = (action) => `${m.member}:${action}`;
    const status = [];
    if (m.role === "moderator") status.push("therapist");
    else if (m.role === "observer") status.push("observer");
    if (!m.mic) status.push(m.hard_muted ? "muted by you (locked)" : "muted");
    if (!m.camera) status.push(m.camera_blocked ? "camera off (locked)" : "camera off");
    if (m.hand) status.push("hand raised");
    if (m.presence === "reconnecting") status.push("reconnecting");
    const spotlit = this.state.spotlight === m.member;
    const spotlight = spotlit
      ? this.button("Clear spotlight", `Clear spotlight on ${m.name}`, key("spot"), () =>
          this.socket.send("mod.spotlight", { member: null }))
      : this.button("Spotlight", `Spotlight ${m.name}`, key("spot"), send("mod.spotlight"));

    if (m.role !== "participant") {
      return el("li", { class: "person" }, [
        el("span", { class: "person__name", text: m.name }),
        el("span", { class: "person__detail", text: status.join(", ") }),
        el("span", { class: "person__actions" }, [spotlight]),
      ]);
    }

    // The one action needed most often stays in view; the rest are one "More" away.
    const quick = m.mic
      ? this.button("Mute", `Mute ${m.name}`, key("mute"), send("mod.mute"))
      : m.hard_muted
        ? this.button("Allow unmute", `Allow unmute for ${m.name}`, key("release"), send("mod.release_mute"))
        : this.button("Ask to unmute", `Ask to unmute ${m.name}`, key("ask"), send("mod.ask_unmute"));
    const more = [];
    if (!m.hard_muted) more.push(this.button("Mute and lock", `Mute and lock ${m.name}`, key("hard"), send("mod.mute", { hard: true })));
    if (m.hard_muted && !m.mic) more.push(this.button("Ask to unmute", `Ask to unmute ${m.name}`, key("ask"), send("mod.ask_unmute")));
    if (m.camera) more.push(this.button("Camera off", `Camera off for ${m.name}`, key("cam"), send("mod.camera_off")));
    if (!m.camera_blocked) {
      more.push(this.button("Camera off and lock", `Camera off and lock for ${m.name}`, key("camhard"), send("mod.camera_off", { hard: true })));
    } else {
      more.push(this.button("Allow camera", `Allow camera for ${m.name}`, key("camrelease"), send("mod.release_camera")));
    }
    more.push(spotlight);
    if (m.hand) more.push(this.button("Lower hand", `Lower hand of ${m.name}`, key("lowerhand"), send("mod.lower_hand")));
    more.push(
      this.button("Remove…", `Remove ${m.name}`, key("remove"), async () => {
        if (await confirmAction(`Remove ${m.name} from this session? They will not be able to rejoin it.`, "Remove")) {
          this.socket.send("mod.remove", { member: m.member });
        }
      }, "button--danger-quiet"),
    );
    const summary = el("summary", { class: "button button--small", "aria-label": `More for ${m.name}`, "data-key": key("more"), text: "More" });
    const menu = el("details", { class: "menu", "data-key": m.member }, [summary, el("div", { class: "menu__items" }, more)]);
    menu.addEventListener("click", (event) => {
      // A menu closes once its action is chosen; focus goes back to where it opened from.
      if (event.target.closest(".menu__items button")) {
        menu.open = false;
        summary.focus();
      }
    });
    menu.addEventListener("toggle", () => {
      if (!menu.open) return;
      for (const other of document.querySelectorAll("details.menu[open]")) if (other !== menu) other.open = false;
    });
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.open) {
        event.preventDefault();
        menu.open = false;
        summary.focus();
      }
    });
    return el("li", { class: "person" }, [
      el("span", { class: "person__name", text: m.name }),
      el("span", { class: "person__detail", text: status.join(", ") }),
      el("span", { class: "person__actions" }, [quick, menu]),
    ]);
  }

  lock() {
    $("lock-toggle").textContent = this.state.locked ? "Unlock the room" : "Lock the room";
  }

  button(label, accessibleName, key, onclick, extra = "") {
    return el("button", {
      type: "button",
      class: `button button--small ${extra}`,
      "aria-label": accessibleName,
      "data-key": key,
      text: label,
      onclick,
    });
  }
}
