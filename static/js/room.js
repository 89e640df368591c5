// The live session page: pre-join check, waiting room, room, therapist panel and closing page.
// Configuration comes from a json_script block (the CSP allows no inline script). Everything a
// person or the server wrote is rendered with textContent, never as markup.

import { SessionSocket } from "./protocol.js";
import { MeshTransport } from "./rtc.js";

const config = JSON.parse(document.getElementById("room-config").textContent);
const $ = (id) => document.getElementById(id);
const isModerator = config.capacity === "moderator";

const state = {
  stage: "prejoin",
  me: null,
  role: null,
  roster: new Map(), // member id -> MemberInfo
  hands: [],
  locked: false,
  waiting: [],
  chat: new Map(), // seq -> ChatEntry
  unread: 0,
  waitingSince: null,
  closing: null,
  mic: true,
  camera: true,
  hardMuted: false,
  cameraBlocked: false,
  hand: false,
};

let localStream = null;
let meterStop = null;

// --- small helpers -------------------------------------------------------------------------------

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function announce(text) {
  const node = $("announcer");
  node.textContent = "";
  // A fresh text node after a tick, so screen readers announce repeats too.
  window.setTimeout(() => {
    node.textContent = text;
  }, 50);
}

function nameOf(member) {
  if (member === state.me) return "You";
  const info = state.roster.get(member);
  return info ? info.name : "Someone who left";
}

function clock(iso) {
  const date = new Date(iso);
  // 24-hour, like the times the server renders on the page.
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

function confirmAction(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

function showStage(stage) {
  state.stage = stage;
  $("room-app").dataset.stage = stage;
  for (const name of ["prejoin", "waiting", "room", "closed"]) {
    $(`stage-${name}`).hidden = name !== stage;
  }
}

// --- pre-join: devices, preview, level meter ---------------------------------------------------

async function openDevices() {
  const status = $("device-status");
  const attempts = [
    { audio: true, video: true },
    { audio: true, video: false },
    { audio: false, video: true },
  ];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      localStream = await navigator.mediaDevices.getUserMedia(constraints);
      break;
    } catch (error) {
      lastError = error;
      // Permission refused applies to both devices: no point asking for one of them.
      if (error.name === "NotAllowedError" || error.name === "SecurityError") break;
    }
  }
  if (!navigator.mediaDevices) lastError = { name: "NotSupported" };
  const hasAudio = Boolean(localStream && localStream.getAudioTracks().length);
  const hasVideo = Boolean(localStream && localStream.getVideoTracks().length);
  state.mic = hasAudio;
  state.camera = hasVideo;
  if (hasAudio && hasVideo) {
    status.textContent = "Your camera and microphone are ready.";
  } else if (hasAudio) {
    status.textContent = "No camera found. You can join with audio only.";
  } else if (hasVideo) {
    status.textContent = "No microphone found. Others will see you but not hear you; you can still use the chat.";
  } else if (lastError && (lastError.name === "NotAllowedError" || lastError.name === "SecurityError")) {
    status.textContent =
      "Your browser is blocking the camera and microphone. You can still join without them, or allow them in your browser's site settings and reload this page.";
  } else {
    status.textContent = "No camera or microphone found. You can still join: you will see and hear the group.";
  }
  status.classList.toggle("device-status--problem", !(hasAudio && hasVideo));
  $("preview").srcObject = localStream;
  syncPreJoinToggles();
  if (hasAudio) startMeter(localStream);
}

function syncPreJoinToggles() {
  const mic = $("pre-mic");
  const cam = $("pre-cam");
  const hasAudio = Boolean(localStream && localStream.getAudioTracks().length);
  const hasVideo = Boolean(localStream && localStream.getVideoTracks().length);
  mic.disabled = !hasAudio;
  cam.disabled = !hasVideo;
  mic.dataset.on = String(state.mic);
  mic.textContent = !hasAudio ? "No microphone" : state.mic ? "Microphone on" : "Microphone off";
  cam.dataset.on = String(state.camera);
  cam.textContent = !hasVideo ? "No camera" : state.camera ? "Camera on" : "Camera off";
  $("preview-off").textContent = hasVideo ? "Your camera is off" : "No camera";
  $("preview-off").hidden = state.camera;
  $("preview").hidden = !state.camera;
}

function startMeter(stream) {
  const AudioContextClass = window.AudioContext || window.webkitAudioContext;
  if (!AudioContextClass) return;
  const context = new AudioContextClass();
  const source = context.createMediaStreamSource(stream);
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const meter = $("mic-meter");
  let running = true;
  const tick = () => {
    if (!running) return;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    meter.value = state.mic ? Math.min(1, rms * 4) : 0;
    window.requestAnimationFrame(tick);
  };
  tick();
  meterStop = () => {
    running = false;
    context.close();
  };
}

function applyLocalTracks() {
  if (!localStream) return;
  for (const track of localStream.getAudioTracks()) track.enabled = state.mic;
  for (const track of localStream.getVideoTracks()) track.enabled = state.camera;
}

$("pre-mic").addEventListener("click", () => {
  state.mic = !state.mic;
  applyLocalTracks();
  syncPreJoinToggles();
});
$("pre-cam").addEventListener("click", () => {
  state.camera = !state.camera;
  applyLocalTracks();
  syncPreJoinToggles();
});

// --- the socket and media ----------------------------------------------------------------------

const transport = new MeshTransport({
  signal: (type, data, to) => socket.send(type, data, { to }),
  onRemoteStream: (member, stream) => attachStream(member, stream),
  onPeerState: () => {},
});

const socket = new SessionSocket(config.wsPath, {
  onFrame: (frame) => handleFrame(frame),
  onStatus: (status) => {
    $("banner").hidden = status !== "reconnecting";
  },
  onClosed: (reason) => close(reason),
});

// Tests (and support staff in the console) read connection stats through this; no inline script needed.
window.telehealth = {
  peers: () => transport.connections(),
  socket,
  state,
};

$("join-button").addEventListener("click", () => {
  $("join-button").disabled = true;
  $("join-button").textContent = "Connecting…";
  if (meterStop) meterStop();
  transport.setLocalStream(localStream);
  socket.connect();
});

const HANDLERS = {
  welcome(frame) {
    state.me = frame.member;
    state.role = frame.role;
    if (frame.state === "admitted") enterRoom(frame.room);
    else enterWaiting(frame.waiting);
  },
  waiting(frame) {
    showWaitingState(frame.waiting);
  },
  admitted(frame) {
    announce("You have been let in.");
    enterRoom(frame.room);
  },
  denied(frame) {
    state.closing = { reason: "denied", message: frame.message };
  },
  removed() {
    state.closing = { reason: "removed" };
  },
  ended() {
    state.closing = { reason: "ended" };
  },
  resumed(frame) {
    applyRoom(frame.room);
    for (const message of frame.chat) addChat(message, false);
    if (frame.more) socket.send("chat.history", { after_seq: socket.lastSeq });
  },
  "waiting.list"(frame) {
    const before = new Set(state.waiting.map((w) => w.member));
    state.waiting = frame.entries;
    for (const entry of frame.entries) {
      if (!before.has(entry.member)) announce(`${entry.name} is in the waiting room.`);
    }
    renderWaitingList();
  },
  knock(frame) {
    announce(`${frame.name} is knocking: the room is locked.`);
  },
  "member.joined"(frame) {
    const known = state.roster.has(frame.member.member);
    upsertMember(frame.member);
    if (!known && frame.member.member !== state.me) announce(`${frame.member.name} joined.`);
  },
  "member.updated"(frame) {
    const previous = state.roster.get(frame.member.member);
    upsertMember(frame.member);
    // A new connection on their side: the old media path is gone, they will offer again.
    if (previous && previous.conn !== frame.member.conn && frame.member.member !== state.me) {
      transport.removePeer(frame.member.member);
    }
  },
  "member.left"(frame) {
    const info = state.roster.get(frame.member);
    state.roster.delete(frame.member);
    transport.removePeer(frame.member);
    const tile = tileFor(frame.member, false);
    if (tile) tile.remove();
    if (info) announce(`${info.name} left.`);
    renderRoster();
  },
  hands(frame) {
    state.hands = frame.queue;
    renderHands();
  },
  "chat.message"(frame) {
    addChat(frame.message, true);
  },
  "chat.history"(frame) {
    for (const message of frame.messages) addChat(message, false);
    if (frame.more) socket.send("chat.history", { after_seq: socket.lastSeq });
  },
  "chat.deleted"(frame) {
    const message = state.chat.get(frame.seq);
    if (message) addChat({ ...message, text: "", deleted: true }, false, true);
  },
  "signal.description"(frame) {
    transport.handleSignal(frame);
  },
  "signal.candidate"(frame) {
    transport.handleSignal(frame);
  },
  "mod.muted"(frame) {
    state.mic = false;
    state.hardMuted = frame.hard;
    applyLocalTracks();
    syncControls();
    modNote(frame.hard ? "A therapist muted you. They will let you unmute." : "A therapist muted your microphone.");
  },
  "mod.mute_released"() {
    state.hardMuted = false;
    syncControls();
    modNote("You can unmute again.");
  },
  "mod.unmute_requested"() {
    modNote("Your therapist asks you to unmute. Use the microphone button when you are ready.");
  },
  "mod.camera_off"(frame) {
    state.camera = false;
    state.cameraBlocked = frame.hard;
    applyLocalTracks();
    syncControls();
    modNote(frame.hard ? "A therapist turned your camera off. They will let you turn it on." : "A therapist turned your camera off.");
  },
  "mod.camera_released"() {
    state.cameraBlocked = false;
    syncControls();
    modNote("You can turn your camera on again.");
  },
  "mod.spotlight"(frame) {
    for (const tile of $("grid").children) tile.classList.toggle("tile--spotlight", tile.dataset.member === frame.member);
  },
  "mod.locked"(frame) {
    state.locked = frame.locked;
    renderLock();
    announce(frame.locked ? "The room is locked." : "The room is unlocked.");
  },
  error(frame) {
    if (frame.code === "mute.hard" || frame.code === "camera.blocked") {
      modNote(frame.code === "mute.hard" ? "A therapist muted you; they have to release it first." : "A therapist turned your camera off; they have to release it first.");
    } else if (frame.code === "resume.invalid") {
      socket.send("chat.history", { after_seq: 0 });
    } else {
      console.warn("server refused a message", frame.code, frame.detail);
    }
  },
};

function handleFrame(frame) {
  // Own keys only: a server type never becomes an arbitrary property lookup.
  if (Object.prototype.hasOwnProperty.call(HANDLERS, frame.type)) HANDLERS[frame.type](frame);
}

// --- waiting room ---------------------------------------------------------------------------------

let waitedTimer = null;

function enterWaiting(waiting) {
  showStage("waiting");
  state.waitingSince = Date.now();
  showWaitingState(waiting);
  $("waiting-heading").focus();
  const tick = () => {
    const seconds = Math.floor((Date.now() - state.waitingSince) / 1000);
    $("waited").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  };
  tick();
  window.clearInterval(waitedTimer);
  waitedTimer = window.setInterval(tick, 1000);
}

function showWaitingState(waiting) {
  if (!waiting) return;
  $("waiting-message").textContent = waiting.message || "";
  $("waiting-message-box").hidden = !waiting.message;
  if (waiting.message) announce(`Message from your therapist: ${waiting.message}`);
  const opens = $("waiting-opens");
  opens.hidden = !waiting.opens_at;
  if (waiting.opens_at) opens.textContent = `The room lets you in by itself at ${clock(waiting.opens_at)}.`;
}

$("waiting-leave").addEventListener("click", () => socket.leave());

// --- the room -------------------------------------------------------------------------------------

function enterRoom(room) {
  window.clearInterval(waitedTimer);
  const first = state.stage !== "room";
  showStage("room");
  applyRoom(room);
  if (first) {
    transport.setIceServers(room.ice_servers);
    selfTile();
    socket.send("media.state", { mic: state.mic, camera: state.camera });
    if (room.chat_seq > socket.lastSeq) socket.send("chat.history", { after_seq: socket.lastSeq });
    $("room-heading").focus();
  }
  // We are the newer connection: offer to everyone already here.
  for (const member of state.roster.keys()) {
    if (member !== state.me) transport.connectTo(member);
  }
  syncControls();
}

function applyRoom(room) {
  const present = new Set(room.roster.map((m) => m.member));
  for (const member of [...state.roster.keys()]) {
    if (!present.has(member)) {
      state.roster.delete(member);
      const tile = tileFor(member, false);
      if (tile) tile.remove();
    }
  }
  for (const info of room.roster) upsertMember(info);
  state.hands = room.hands;
  state.locked = room.locked;
  renderHands();
  renderLock();
}

function upsertMember(info) {
  state.roster.set(info.member, info);
  if (info.member === state.me) {
    state.hand = Boolean(info.hand);
    state.hardMuted = info.hard_muted;
    state.cameraBlocked = info.camera_blocked;
    syncControls();
  }
  if (state.stage === "room") renderTile(info);
  renderRoster();
}

function tileFor(member, create = true) {
  const grid = $("grid");
  let tile = grid.querySelector(`[data-member="${CSS.escape(member)}"]`);
  if (!tile && create) {
    const video = el("video", { class: "tile__video", autoplay: "", playsinline: "" });
    if (member === state.me) video.muted = true;
    tile = el("li", { class: "tile", "data-member": member }, [
      video,
      el("div", { class: "tile__avatar", "aria-hidden": "true" }),
      el("div", { class: "tile__label" }, [el("span", { class: "tile__name" }), el("span", { class: "tile__badges" })]),
    ]);
    if (member === state.me) tile.classList.add("tile--self");
    grid.append(tile);
    grid.dataset.count = String(grid.children.length);
  }
  if (!create && tile) {
    window.setTimeout(() => {
      grid.dataset.count = String(grid.children.length);
    }, 0);
  }
  return tile;
}

function selfTile() {
  const tile = tileFor(state.me);
  tile.querySelector("video").srcObject = localStream;
}

function renderTile(info) {
  const tile = tileFor(info.member);
  const self = info.member === state.me;
  tile.querySelector(".tile__name").textContent = self ? `${info.name} (you)` : info.name;
  tile.querySelector(".tile__avatar").textContent = (info.name || "?").slice(0, 1).toUpperCase();
  tile.classList.toggle("tile--camera-off", !info.camera);
  const badges = tile.querySelector(".tile__badges");
  badges.replaceChildren();
  const add = (text, kind) => badges.append(el("span", { class: `badge-pill badge-pill--${kind}`, text }));
  if (info.hand) add("Hand raised", "hand");
  if (!info.mic) add(info.hard_muted ? "Muted by therapist" : "Muted", "muted");
  if (!info.camera) add("Camera off", "camera");
  if (info.presence === "reconnecting") add("Reconnecting…", "reconnecting");
  if (info.role === "moderator") add("Therapist", "role");
  tile.setAttribute("aria-label", `${self ? "You" : info.name}${info.hand ? ", hand raised" : ""}${info.mic ? "" : ", muted"}`);
}

function attachStream(member, stream) {
  const tile = tileFor(member);
  const video = tile.querySelector("video");
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
}

function syncControls() {
  const mic = $("ctl-mic");
  mic.dataset.on = String(state.mic);
  mic.textContent = state.mic ? "Mute microphone" : "Unmute microphone";
  mic.disabled = (!state.mic && state.hardMuted) || !localStream || !localStream.getAudioTracks().length;
  const cam = $("ctl-cam");
  cam.dataset.on = String(state.camera);
  cam.textContent = state.camera ? "Turn camera off" : "Turn camera on";
  cam.disabled = (!state.camera && state.cameraBlocked) || !localStream || !localStream.getVideoTracks().length;
  const hand = $("ctl-hand");
  hand.dataset.on = String(state.hand);
  hand.textContent = state.hand ? "Lower hand" : "Raise hand";
}

function modNote(text) {
  const note = $("mod-note");
  note.textContent = text;
  note.hidden = false;
}

function sendMediaState() {
  applyLocalTracks();
  syncControls();
  socket.send("media.state", { mic: state.mic, camera: state.camera });
}

$("ctl-mic").addEventListener("click", () => {
  state.mic = !state.mic;
  sendMediaState();
});
$("ctl-cam").addEventListener("click", () => {
  state.camera = !state.camera;
  sendMediaState();
});
$("ctl-hand").addEventListener("click", () => {
  socket.send(state.hand ? "hand.lower" : "hand.raise");
});
$("ctl-chat").addEventListener("click", () => {
  const panel = $("chat-panel");
  panel.hidden = !panel.hidden;
  $("ctl-chat").setAttribute("aria-pressed", String(!panel.hidden));
  if (!panel.hidden) {
    state.unread = 0;
    renderUnread();
    $("chat-input").focus();
  }
});
$("ctl-leave").addEventListener("click", async () => {
  if (await confirmAction("Leave the session? You can come back while it is on.")) socket.leave();
});

// Keyboard shortcuts (not while typing): M microphone, V camera, H hand.
document.addEventListener("keydown", (event) => {
  if (state.stage !== "room" || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, textarea, select, dialog")) return;
  const button = { m: "ctl-mic", v: "ctl-cam", h: "ctl-hand" }[event.key.toLowerCase()];
  if (button && !$(button).disabled) {
    event.preventDefault();
    $(button).click();
  }
});

// --- chat -----------------------------------------------------------------------------------------

function addChat(message, live, replace = false) {
  if (state.chat.has(message.seq) && !replace) return;
  state.chat.set(message.seq, message);
  const log = $("chat-log");
  const item = el("li", { class: "chat-item", "data-seq": String(message.seq) }, [
    el("div", { class: "chat-item__meta" }, [
      el("span", { class: "chat-item__author", text: nameOf(message.author) }),
      el("time", { datetime: message.at, text: clock(message.at) }),
      ...(message.thread ? [el("span", { class: "chat-item__private", text: "Private" })] : []),
    ]),
    el("p", { class: "chat-item__text", text: message.deleted ? "Message removed by a therapist" : message.text }),
  ]);
  if (message.deleted) item.classList.add("chat-item--deleted");
  const existing = log.querySelector(`[data-seq="${message.seq}"]`);
  if (existing) {
    existing.replaceWith(item);
  } else {
    // Keep sequence order even when history and live messages interleave.
    const after = [...log.children].find((child) => Number(child.dataset.seq) > message.seq);
    log.insertBefore(item, after || null);
  }
  log.scrollTop = log.scrollHeight;
  if (live && message.author !== state.me) {
    announce(`${nameOf(message.author)} says: ${message.text}`);
    if ($("chat-panel").hidden) {
      state.unread += 1;
      renderUnread();
    }
  }
}

function renderUnread() {
  const badge = $("unread");
  badge.hidden = state.unread === 0;
  badge.textContent = state.unread ? `${state.unread} new` : "";
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  if (socket.send("chat.send", { text })) input.value = "";
});
$("chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("chat-form").requestSubmit();
  }
});

// --- therapist panel ------------------------------------------------------------------------------

function personRow(name, detail, actions) {
  return el("li", { class: "person" }, [
    el("span", { class: "person__name", text: name }),
    ...(detail ? [el("span", { class: "person__detail", text: detail })] : []),
    el("span", { class: "person__actions" }, actions),
  ]);
}

function actionButton(label, accessibleName, onclick, extra = "") {
  return el("button", { type: "button", class: `button button--small ${extra}`, "aria-label": accessibleName, text: label, onclick });
}

function renderWaitingList() {
  if (!isModerator) return;
  const list = $("waiting-list");
  list.replaceChildren(
    ...state.waiting.map((entry) =>
      personRow(entry.name, `waiting since ${clock(entry.since)}`, [
        actionButton("Admit", `Admit ${entry.name}`, () => socket.send("mod.admit", { member: entry.member }), "button--primary"),
        actionButton("Deny", `Deny ${entry.name}`, async () => {
          if (await confirmAction(`Turn ${entry.name} away? They will not be able to join this session.`)) {
            socket.send("mod.deny", { member: entry.member });
          }
        }),
      ]),
    ),
  );
  $("waiting-count").textContent = String(state.waiting.length);
  $("waiting-empty").hidden = state.waiting.length > 0;
  $("admit-all").hidden = state.waiting.length === 0;
}

function renderRoster() {
  if (!isModerator) return;
  const others = [...state.roster.values()].filter((m) => m.member !== state.me);
  $("roster-list").replaceChildren(
    ...others.map((m) =>
      personRow(m.name, m.role === "participant" ? null : m.role === "moderator" ? "therapist" : "observer", [
        actionButton(m.mic ? "Mute" : "Muted", `Mute ${m.name}`, () => socket.send("mod.mute", { member: m.member })),
        actionButton("Remove", `Remove ${m.name}`, async () => {
          if (await confirmAction(`Remove ${m.name} from this session? They will not be able to rejoin.`)) {
            socket.send("mod.remove", { member: m.member });
          }
        }, "button--danger-quiet"),
      ]),
    ),
  );
}

function renderHands() {
  if (!isModerator) return;
  $("hands-list").replaceChildren(...state.hands.map((member) => el("li", { class: "person", text: nameOf(member) })));
  $("hands-empty").hidden = state.hands.length > 0;
}

function renderLock() {
  if (!isModerator) return;
  const button = $("lock-toggle");
  button.textContent = state.locked ? "Unlock the room" : "Lock the room";
}

if (isModerator) {
  $("admit-all").addEventListener("click", () => socket.send("mod.admit_all"));
  $("lock-toggle").addEventListener("click", () => socket.send(state.locked ? "mod.unlock" : "mod.lock"));
  $("end-session").addEventListener("click", async () => {
    if (await confirmAction("End the session for everyone? Nobody will be able to rejoin.")) socket.send("mod.end");
  });
}

// --- closing ---------------------------------------------------------------------------------------

const CLOSINGS = {
  removed: ["You were removed from this session", "A therapist removed you. If you think this is a mistake, please contact your therapist or the clinic."],
  denied: ["Your therapist couldn't let you in", ""],
  ended: ["The session has ended", "Thank you for joining. You can find your next session on My sessions."],
  replaced: ["This session is open elsewhere", "You joined from another tab or device, so this page stopped. Close it, or reload it to move the session back here."],
  logged_out: ["Please log in again", "Your login ended. Log in again to rejoin."],
  left: ["You left the session", "You can rejoin from My sessions while the session is on."],
  unreachable: ["We couldn't reconnect", "Check your internet connection, then reload this page to try again."],
};

function close(reason) {
  // A frame that came just before the close code says more than the code itself (denied vs removed).
  const closing = state.closing || { reason };
  const [heading, text] = CLOSINGS[closing.reason] || CLOSINGS.unreachable;
  transport.closeAll();
  window.clearInterval(waitedTimer);
  if (localStream) for (const track of localStream.getTracks()) track.stop();
  if (meterStop) meterStop();
  $("closed-heading").textContent = heading;
  $("closed-text").textContent = closing.reason === "denied" ? closing.message || "The session is not available to you today. Please contact your therapist or the clinic." : text;
  showStage("closed");
  $("closed-heading").focus();
  announce(heading);
}

showStage("prejoin");
openDevices();
