// The live session page: pre-join check, waiting room, room, chat and closing page; the therapist
// panel is in panel.js. Configuration comes from a json_script block (the CSP allows no inline
// script). Media goes through rtc.js only (the transport), local devices through devices.js.

import { SessionSocket } from "./protocol.js";
import { MeshTransport, QualityWatch } from "./rtc.js";
import { SfuTransport } from "./sfu.js";
import { LocalMedia, Chime, supportsSpeakerChoice } from "./devices.js";
import { $, el, announce, clock, duration, confirmAction } from "./ui.js";
import { TherapistPanel } from "./panel.js";
import { runPrecall, describe as describePrecall } from "./precall.js";

const config = JSON.parse(document.getElementById("room-config").textContent);
const isModerator = config.capacity === "moderator";
const PHONE = window.matchMedia("(max-width: 40rem)");
const SPEAKING_LEVEL = 0.04; // getStats audioLevel (0..1, linear); quiet speech is around 0.05
const SPEAKER_HOLD_MS = 2000; // the large tile on a phone does not flit between people

const state = {
  media: null, // room.media: which path the media takes (p2p or sfu), and how many a mesh carries
  stage: "prejoin",
  me: null,
  role: null,
  skew: 0, // server clock minus ours, from the frames' ts: the server decides time
  roster: new Map(), // member id -> MemberInfo
  hands: [],
  locked: false,
  spotlight: null,
  speaker: null,
  speakerSince: 0,
  talking: new Set(), // members the SFU says are talking (sfu.talking), in an SFU room
  talkingEvents: 0,
  levels: new Map(), // member id -> last audio level
  quality: new Map(), // member id -> {quality, loss, rtt, kbps}
  waiting: [],
  chat: new Map(), // seq -> ChatEntry
  chatTab: "room",
  unread: { room: 0, private: 0 },
  waitingSince: null,
  opensAt: null,
  closing: null,
  mic: true,
  camera: true,
  hardMuted: false,
  cameraBlocked: false,
  hand: false,
  audioOnly: false,
  suggestionDismissedAt: 0,
  chimes: 0, // how many times the knock sound played (tests read it)
};

const media = new LocalMedia();
const chime = new Chime();
const qualityWatch = new QualityWatch();
const serverNow = () => Date.now() + state.skew;

function nameOf(member) {
  if (member === state.me) return "You";
  const info = state.roster.get(member);
  return info ? info.name : "Someone who left";
}

function showStage(stage) {
  state.stage = stage;
  $("room-app").dataset.stage = stage;
  for (const name of ["prejoin", "waiting", "room", "closed"]) {
    $(`stage-${name}`).hidden = name !== stage;
  }
}

// --- pre-join: devices, preview, level meter ---------------------------------------------------

const DEVICE_MESSAGES = {
  ready: "Your camera and microphone are ready.",
  audioOnly: "No camera found. You can join with audio only.",
  videoOnly: "No microphone found. Others will see you but not hear you; you can still use the chat.",
  denied:
    "Your browser is blocking the camera and microphone. You can still join without them (you will see and hear the group), or allow them in your browser's site settings and press Try again.",
  missing: "No camera or microphone found. You can still join: you will see and hear the group.",
  unsupported: "This browser cannot use a camera or microphone here. You can still join and use the chat.",
};

async function openDevices() {
  $("device-status").textContent = "Asking your browser for the camera and microphone…";
  await media.open();
  const hasAudio = Boolean(media.audioTrack);
  const hasVideo = Boolean(media.videoTrack);
  state.mic = hasAudio;
  state.camera = hasVideo;
  let message = DEVICE_MESSAGES.ready;
  if (media.error) message = DEVICE_MESSAGES[media.error];
  else if (!hasVideo) message = DEVICE_MESSAGES.audioOnly;
  else if (!hasAudio) message = DEVICE_MESSAGES.videoOnly;
  const status = $("device-status");
  status.textContent = message;
  status.classList.toggle("device-status--problem", !(hasAudio && hasVideo));
  $("devices-retry").hidden = hasAudio && hasVideo;
  // An empty stream would hold up the page's load event: show one only when there is a camera.
  $("preview").srcObject = hasVideo ? media.stream : null;
  syncPreJoinToggles();
  await fillDevicePickers();
  startMeter();
}

function syncPreJoinToggles() {
  const mic = $("pre-mic");
  const cam = $("pre-cam");
  const hasAudio = Boolean(media.audioTrack);
  const hasVideo = Boolean(media.videoTrack);
  mic.disabled = !hasAudio;
  cam.disabled = !hasVideo;
  mic.dataset.on = String(state.mic && hasAudio);
  mic.textContent = !hasAudio ? "No microphone" : state.mic ? "Microphone on" : "Microphone off";
  cam.dataset.on = String(state.camera && hasVideo);
  cam.textContent = !hasVideo ? "No camera" : state.camera ? "Camera on" : "Camera off";
  $("preview-off").textContent = hasVideo ? "Your camera is off" : "No camera";
  $("preview-off").hidden = state.camera && hasVideo;
  $("preview").hidden = !(state.camera && hasVideo);
}

async function fillDevicePickers() {
  const devices = await media.devices();
  const fill = (select, list, current, fallback) => {
    select.replaceChildren(
      ...list.map((device, i) => el("option", { value: device.deviceId, text: device.label || `${fallback} ${i + 1}` })),
    );
    if (current && list.some((d) => d.deviceId === current)) select.value = current;
  };
  fill($("pick-camera"), devices.videoinput, media.cameraId, "Camera");
  fill($("pick-mic"), devices.audioinput, media.micId, "Microphone");
  $("pick-camera-field").hidden = !media.videoTrack || devices.videoinput.length === 0;
  $("pick-mic-field").hidden = !media.audioTrack || devices.audioinput.length === 0;
  const speakers = devices.audiooutput;
  fill($("pick-speaker"), speakers, media.speakerId, "Speaker");
  // Choosing the output needs setSinkId (Chromium); elsewhere the system's output is used.
  $("pick-speaker-field").hidden = !supportsSpeakerChoice || speakers.length === 0;
}

let meterRunning = false;
function startMeter() {
  if (meterRunning) return;
  meterRunning = true;
  const meter = $("mic-meter");
  const tick = () => {
    if (state.stage !== "prejoin") {
      meterRunning = false;
      return;
    }
    // Rise at once, fall slowly: a steady bar is easier to read than a flicker.
    meter.value = state.mic ? Math.max(media.level(), meter.value * 0.94) : 0;
    window.requestAnimationFrame(tick);
  };
  tick();
}

function applyLocalTracks() {
  if (media.audioTrack) media.audioTrack.enabled = state.mic;
  if (media.videoTrack) media.videoTrack.enabled = state.camera && !state.audioOnly;
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
$("devices-retry").addEventListener("click", () => {
  media.stop();
  openDevices();
});
$("precall-run").addEventListener("click", async () => {
  // The server receives what this browser sends for a few seconds and says what arrived.
  const button = $("precall-run");
  const result = $("precall-result");
  const relay = $("precall-relay");
  button.disabled = true;
  relay.hidden = true;
  result.dataset.code = "";
  result.textContent = "Testing your connection… (about 5 seconds)";
  try {
    const report = await runPrecall(media.stream);
    result.dataset.code = report.direct.code;
    result.textContent = describePrecall(report.direct);
    if (report.relay) {
      relay.hidden = false;
      relay.dataset.code = report.relay.code;
      relay.textContent =
        report.relay.code === "precall.blocked"
          ? "The relay (TURN) path did not connect: if the direct path fails too, your network blocks calls."
          : "The relay (TURN) path works: calls can get through even strict networks.";
    }
  } catch {
    result.dataset.code = "precall.error";
    result.textContent = "The check could not run. You can still join.";
  } finally {
    button.disabled = false;
  }
});

async function switchDevice(kind, deviceId) {
  try {
    const track = await media.use(kind, deviceId);
    await transport.replaceTrack(track.kind, track);
    if (media.videoTrack) $("preview").srcObject = media.stream;
    const self = state.me && tileFor(state.me, false);
    if (self && media.videoTrack) self.querySelector("video").srcObject = media.stream;
  } catch (error) {
    $("device-status").textContent = "That device could not be opened. It may be in use by another app.";
    console.warn("device switch failed", error);
  }
}
$("pick-camera").addEventListener("change", (event) => switchDevice("videoinput", event.target.value));
$("pick-mic").addEventListener("change", (event) => switchDevice("audioinput", event.target.value));
$("pick-speaker").addEventListener("change", (event) =>
  media.setSpeaker(event.target.value, document.querySelectorAll(".tile__video")),
);
$("speaker-test").addEventListener("click", () => {
  const test = new Chime();
  test.prepare(media.speakerId);
  test.play();
});

// Browsers start audio processing only after a gesture: the level meter wakes on the first one.
for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, () => media.wake(), { once: true });

// --- the socket and media ----------------------------------------------------------------------

// The media transport: peer to peer (a mesh) until the room says its media goes through the SFU.
const transportHooks = {
  signal: (type, data, to) => socket.send(type, data, { to }),
  send: (type, data) => socket.send(type, data),
  onRemoteStream: (member, stream) => attachStream(member, stream),
  onPeerState: () => {},
};
let transport = new MeshTransport(transportHooks);

function useMediaPath(room) {
  const sfu = Boolean(room.media && room.media.mode === "sfu");
  if (sfu === (transport.kind === "sfu")) return;
  transport.closeAll();
  transport = sfu ? new SfuTransport(transportHooks) : new MeshTransport(transportHooks);
  transport.setLocalStream(media.stream);
  transport.setAudioOnly(state.audioOnly);
}

const socket = new SessionSocket(config.wsPath, {
  onFrame: (frame) => handleFrame(frame),
  onStatus: (status) => {
    $("banner").hidden = status !== "reconnecting";
    // Never let in yet (a locked room refuses the connection): say so instead of a silent spinner.
    if (state.stage === "prejoin" && status === "reconnecting") {
      $("join-button").textContent = "Still trying to get in…";
      $("device-status").textContent =
        "We couldn't get you in yet. The room may be locked for a moment; this page keeps trying.";
      $("device-status").classList.add("device-status--problem");
    }
  },
  onClosed: (reason) => close(reason),
});

const panel = isModerator
  ? new TherapistPanel({ state, socket, nameOf, serverNow, config, onKnock: () => knocked() })
  : null;

// Tests (and support staff in the console) read connection stats through this; no inline script needed.
window.telehealth = {
  peers: () => transport.connections(),
  mediaPath: () => transport.kind,
  memberStats: () => (transport.kind === "sfu" ? transport.memberStats() : null),
  socket,
  state,
  media,
};

$("join-button").addEventListener("click", () => {
  $("join-button").disabled = true;
  $("join-button").textContent = "Connecting…";
  media.wake();
  // The click is the gesture that lets the knock sound play later.
  if (isModerator) chime.prepare(media.speakerId);
  transport.setLocalStream(media.stream);
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
    if (panel) panel.waitingList(frame.entries);
  },
  knock(frame) {
    if (panel) panel.knock(frame.name);
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
    if (state.speaker === frame.member) state.speaker = null;
    state.talking.delete(frame.member);
    if (info) announce(`${info.name} left.`);
    layoutGrid();
    if (panel) panel.roster();
    refreshPrivateRecipients();
  },
  hands(frame) {
    state.hands = frame.queue;
    if (panel) panel.hands();
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
  "sfu.answer"(frame) {
    if (transport.kind === "sfu") transport.handleSfu(frame);
  },
  "sfu.offer"(frame) {
    if (transport.kind === "sfu") transport.handleSfu(frame);
  },
  "sfu.link"(frame) {
    if (transport.kind === "sfu") transport.handleSfu(frame);
  },
  "sfu.talking"(frame) {
    // Janus's verdict from the audio-level header of each voice; sampleStats picks the speaker.
    if (frame.talking) state.talking.add(frame.member);
    else state.talking.delete(frame.member);
    state.talkingEvents += 1;
  },
  "mod.muted"(frame) {
    state.mic = false;
    state.hardMuted = state.hardMuted || frame.hard;
    applyLocalTracks();
    syncControls();
    modNote(
      state.hardMuted
        ? "A therapist muted you. You can't unmute until they allow it."
        : "A therapist muted your microphone. You can unmute when you need to speak.",
      state.hardMuted,
    );
  },
  "mod.mute_released"() {
    state.hardMuted = false;
    syncControls();
    modNote("Your therapist allows you to unmute again. Your microphone stays off until you turn it on.");
  },
  "mod.unmute_requested"() {
    modNote("Your therapist asks you to unmute. Use the microphone button (or press M) when you are ready.");
    announce("Your therapist asks you to unmute.");
  },
  "mod.camera_off"(frame) {
    state.camera = false;
    state.cameraBlocked = state.cameraBlocked || frame.hard;
    applyLocalTracks();
    syncControls();
    modNote(
      state.cameraBlocked
        ? "A therapist turned your camera off. You can't turn it on until they allow it."
        : "A therapist turned your camera off.",
      state.cameraBlocked,
    );
  },
  "mod.camera_released"() {
    state.cameraBlocked = false;
    syncControls();
    modNote("You can turn your camera on again.");
  },
  "mod.spotlight"(frame) {
    state.spotlight = frame.member;
    layoutGrid();
    if (panel) panel.roster();
    if (frame.member) announce(`${nameOf(frame.member)} ${frame.member === state.me ? "are" : "is"} in the spotlight.`);
  },
  "mod.locked"(frame) {
    state.locked = frame.locked;
    if (panel) panel.lock();
    announce(frame.locked ? "The room is locked." : "The room is unlocked.");
  },
  ack() {
    if (panel) panel.acked();
  },
  error(frame) {
    if (frame.code === "mute.hard") {
      state.mic = false;
      state.hardMuted = true;
      applyLocalTracks();
      syncControls();
      modNote("A therapist muted you; they have to allow you to unmute first.", true);
    } else if (frame.code === "camera.blocked") {
      state.camera = false;
      state.cameraBlocked = true;
      applyLocalTracks();
      syncControls();
      modNote("A therapist turned your camera off; they have to allow it first.", true);
    } else if (frame.code === "resume.invalid") {
      socket.send("chat.history", { after_seq: 0 });
    } else if (frame.code === "sfu.unavailable" && transport.kind === "sfu") {
      transport.unavailable(frame.re); // its node is down: try again shortly (the server moves the session)
    } else {
      console.warn("server refused a message", frame.code, frame.detail);
    }
  },
};

function handleFrame(frame) {
  if (typeof frame.ts === "string") {
    const ts = Date.parse(frame.ts);
    if (!Number.isNaN(ts) && frame.type === "welcome") state.skew = ts - Date.now();
  }
  // Own keys only: a server type never becomes an arbitrary property lookup.
  if (Object.prototype.hasOwnProperty.call(HANDLERS, frame.type)) HANDLERS[frame.type](frame);
}

// --- waiting room ---------------------------------------------------------------------------------

let waitingTimer = null;
let reopenTimer = null;

function enterWaiting(waiting) {
  const first = state.stage !== "waiting";
  showStage("waiting");
  // Kept across reconnects: the person has been waiting since they first arrived.
  if (state.waitingSince === null) state.waitingSince = Date.now();
  showWaitingState(waiting);
  if (first) $("waiting-heading").focus();
  window.clearInterval(waitingTimer);
  waitingTick();
  waitingTimer = window.setInterval(waitingTick, 1000);
}

function waitingTick() {
  $("waited").textContent = duration(Date.now() - state.waitingSince);
  if (state.opensAt === null) return;
  const left = state.opensAt - serverNow();
  $("opens-countdown").textContent = left > 0 ? duration(left) : "a moment";
  $("waiting-heading").textContent = left > 0 ? "The room opens soon" : "The room is opening…";
}

function showWaitingState(waiting) {
  if (!waiting) return;
  const previous = $("waiting-message").textContent;
  $("waiting-message").textContent = waiting.message || "";
  $("waiting-message-box").hidden = !waiting.message;
  if (waiting.message && waiting.message !== previous) announce(`Message from your therapist: ${waiting.message}`);
  state.opensAt = waiting.opens_at ? Date.parse(waiting.opens_at) : null;
  $("waiting-opens").hidden = state.opensAt === null;
  window.clearTimeout(reopenTimer);
  if (state.opensAt !== null) {
    $("opens-at").textContent = `(at ${clock(state.opensAt)})`;
    $("waiting-lead").textContent = "You will go in by yourself when it opens. Please stay on this page.";
    // At opening time, connect again: the server's entry check lets us straight in, instead of
    // waiting for its next periodic check.
    const wait = state.opensAt - serverNow() + 1500;
    if (wait < 24 * 3600 * 1000) reopenTimer = window.setTimeout(() => {
      if (state.stage === "waiting") socket.reconnectNow();
    }, Math.max(0, wait));
  } else {
    $("waiting-heading").textContent = "Your therapist will let you in";
    $("waiting-lead").textContent = "Please stay on this page. You will go in automatically.";
  }
  waitingTick();
}

$("waiting-leave").addEventListener("click", () => socket.leave());

// --- the room -------------------------------------------------------------------------------------

let statsTimer = null;
let levelTimer = null;
let selfLevel = 0;

function enterRoom(room) {
  window.clearInterval(waitingTimer);
  window.clearTimeout(reopenTimer);
  const first = state.stage !== "room";
  showStage("room");
  applyRoom(room);
  useMediaPath(room);
  // Every room view brings fresh ICE servers (a TURN credential of our own): keep the latest.
  transport.setIceServers(room.ice_servers);
  if (first) {
    $("settings-devices-home").append($("device-pickers"));
    selfTile();
    socket.send("media.state", { mic: state.mic, camera: state.camera && !state.audioOnly });
    if (room.chat_seq > socket.lastSeq) socket.send("chat.history", { after_seq: socket.lastSeq });
    $("room-heading").focus();
    statsTimer = window.setInterval(sampleStats, 1000);
    // The own level is read more often than the stats: short words should still light the tile.
    levelTimer = window.setInterval(() => {
      selfLevel = Math.max(selfLevel, media.level());
    }, 150);
    if (panel) panel.start();
  }
  if (transport.kind === "sfu") {
    transport.start(); // publish, and subscribe to everyone who publishes (again after a reconnect)
  } else {
    // We are the newer connection: offer to everyone already here.
    for (const member of state.roster.keys()) {
      if (member !== state.me) transport.connectTo(member);
    }
  }
  syncControls();
  layoutGrid();
}

function applyRoom(room) {
  state.media = room.media || null;
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
  state.spotlight = room.spotlight;
  layoutGrid();
  if (panel) {
    panel.hands();
    panel.lock();
  }
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
  if (panel) panel.roster();
  refreshPrivateRecipients();
}

function tileFor(member, create = true) {
  const grid = $("grid");
  let tile = grid.querySelector(`[data-member="${CSS.escape(member)}"]`);
  if (!tile && create) {
    const self = member === state.me;
    const video = el("video", { class: "tile__video", autoplay: true, playsinline: true });
    if (self) video.muted = true;
    if (!self && media.speakerId && video.setSinkId) video.setSinkId(media.speakerId).catch(() => {});
    tile = el("li", { class: "tile", "data-member": member }, [
      video,
      el("div", { class: "tile__avatar", "aria-hidden": "true" }),
      el("p", { class: "quality", "data-quality": "unknown" }, [
        el("span", { class: "bars", "aria-hidden": "true" }, [el("span"), el("span"), el("span")]),
        el("span", { class: "visually-hidden quality__text", text: "connection: checking" }),
      ]),
      el("div", { class: "tile__label" }, [
        el("span", { class: "tile__name" }),
        el("span", { class: "tile__badges" }),
        el("span", { class: "badge-pill badge-pill--speaking tile__speaking", text: "Speaking" }),
      ]),
    ]);
    if (self) tile.classList.add("tile--self");
    grid.append(tile);
  }
  return tile;
}

function selfTile() {
  const tile = tileFor(state.me);
  tile.querySelector("video").srcObject = media.videoTrack ? media.stream : null;
}

function renderTile(info) {
  const tile = tileFor(info.member);
  const self = info.member === state.me;
  tile.querySelector(".tile__name").textContent = self ? `${info.name} (you)` : info.name;
  tile.querySelector(".tile__avatar").textContent = (info.name || "?").slice(0, 1).toUpperCase();
  tile.classList.toggle("tile--camera-off", !info.camera || state.audioOnly);
  const badges = tile.querySelector(".tile__badges");
  badges.replaceChildren();
  const add = (text, kind) => badges.append(el("span", { class: `badge-pill badge-pill--${kind}`, text }));
  if (info.role === "moderator") add("Therapist", "role");
  if (info.hand) add("Hand raised", "hand");
  if (!info.mic) add(info.hard_muted ? "Muted by therapist" : "Muted", "muted");
  if (!info.camera) add(info.camera_blocked ? "Camera off by therapist" : "Camera off", "camera");
  if (info.presence === "reconnecting") add("Reconnecting…", "reconnecting");
  if (state.spotlight === info.member) add("Spotlight", "spotlight");
}

function attachStream(member, stream) {
  const tile = tileFor(member);
  const video = tile.querySelector("video");
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
  layoutGrid();
}

/** Which tile is large: the spotlight for everyone; on a phone, else the active speaker. */
function featuredMember() {
  if (state.spotlight && state.roster.has(state.spotlight)) return state.spotlight;
  if (!PHONE.matches) return null;
  if (state.speaker && state.roster.has(state.speaker)) return state.speaker;
  // Nobody speaking yet: the therapist, else whoever else is here.
  const others = [...state.roster.values()].filter((m) => m.member !== state.me);
  const lead = others.find((m) => m.role === "moderator") || others[0];
  return lead ? lead.member : null;
}

// Therapists only: a peer-to-peer room past what a mesh carries well (no SFU configured).
function updateMeshNotice() {
  const notice = document.getElementById("mesh-notice");
  if (!notice || !state.media) return;
  const limit = state.media.mesh_limit;
  const people = state.roster.size;
  const crowded = state.media.mode === "p2p" && limit && people > limit;
  notice.hidden = !crowded;
  if (crowded) {
    notice.textContent =
      `${people} people are connected peer to peer: each sends their video to everyone, so video may ` +
      `stutter past ${limit}. Suggest audio only to anyone on a weak connection; your administrator ` +
      "can set up the group video server (SFU) for larger groups.";
  }
}

function layoutGrid() {
  updateMeshNotice();
  if (transport.kind === "sfu") transport.setLayout({ spotlight: state.spotlight, speaker: state.speaker });
  const grid = $("grid");
  const featured = featuredMember();
  for (const tile of grid.children) {
    const member = tile.dataset.member;
    tile.classList.toggle("tile--featured", member === featured);
    tile.classList.toggle("tile--speaking", member === state.speaker || (member === state.me && selfSpeaking));
    const info = state.roster.get(member);
    if (info) renderTile(info);
  }
  grid.dataset.count = String(grid.children.length);
  grid.classList.toggle("grid--featured", Boolean(featured));
}
PHONE.addEventListener("change", layoutGrid);

let selfSpeaking = false;

async function sampleStats() {
  if (state.stage !== "room") return;
  const { peers, self } = await transport.sample();
  state.lastSample = { peers, self }; // for support staff in the console (and the tests)
  // Active speaker, held a little so it doesn't flicker: in an SFU room the loudest of those the SFU
  // says are talking (sfu.talking); otherwise (a mesh, or nobody talking) the loudest remote voice
  // over the threshold.
  let loudest = null;
  let level = SPEAKING_LEVEL;
  const talking = [...state.talking].filter((member) => state.roster.get(member)?.mic);
  for (const [member, figures] of Object.entries(peers)) {
    const info = state.roster.get(member);
    state.quality.set(member, figures);
    renderQuality(tileFor(member, false), figures, info ? `${info.name}'s connection` : "Connection");
    if (!talking.length && info && info.mic && figures.audioLevel !== null && figures.audioLevel > level) {
      loudest = member;
      level = figures.audioLevel;
    }
  }
  const loudness = (member) => (peers[member] && peers[member].audioLevel) || 0;
  if (talking.length) loudest = talking.reduce((best, member) => (loudness(member) > loudness(best) ? member : best));
  const now = Date.now();
  if (loudest && loudest !== state.speaker && (now - state.speakerSince > SPEAKER_HOLD_MS || !state.speaker)) {
    state.speaker = loudest;
    state.speakerSince = now;
  } else if (!loudest && state.speaker && now - state.speakerSince > SPEAKER_HOLD_MS * 2) {
    // Silence for a while: keep the large tile where it is on a phone, drop only the highlight.
    state.speakerSince = now;
  } else if (loudest === state.speaker) {
    state.speakerSince = now;
  }
  selfSpeaking = state.mic && selfLevel > 0.08;
  selfLevel = 0;
  layoutGrid();
  renderSelfQuality(self);
  if (qualityWatch.push(self.quality) && !state.audioOnly && now - state.suggestionDismissedAt > 5 * 60 * 1000) {
    $("quality-banner").hidden = false;
  }
}

const QUALITY_WORDS = { good: "good", fair: "fair", poor: "poor", unknown: "checking" };

function describe(figures) {
  const parts = [];
  if (figures.loss !== null && figures.loss !== undefined) parts.push(`loss ${Math.round(figures.loss * 100)}%`);
  if (figures.rtt !== null && figures.rtt !== undefined) parts.push(`round trip ${Math.round(figures.rtt * 1000)} ms`);
  if (figures.kbps) parts.push(`${figures.kbps} kbit/s`);
  return parts.join(", ");
}

function renderQuality(tile, figures, subject) {
  if (!tile) return;
  const node = tile.querySelector(".quality");
  node.dataset.quality = figures.quality;
  const words = `${subject}: ${QUALITY_WORDS[figures.quality]}`;
  node.querySelector(".quality__text").textContent = words;
  const details = describe(figures);
  node.title = details ? `${words} (${details})` : words;
}

function renderSelfQuality(self) {
  const node = $("self-quality");
  node.dataset.quality = self.quality;
  const alone = transport.peers.size === 0;
  const words = alone ? "Your connection: nobody else is here yet" : `Your connection: ${QUALITY_WORDS[self.quality]}`;
  $("self-quality-text").textContent = words;
  const details = describe(self);
  node.title = details ? `${words} (${details})` : words;
  renderQuality(tileFor(state.me, false), self, "Your connection");
}

function syncControls() {
  const mic = $("ctl-mic");
  const hasAudio = Boolean(media.audioTrack);
  const hasVideo = Boolean(media.videoTrack);
  const micLocked = !state.mic && state.hardMuted;
  mic.dataset.on = String(state.mic && hasAudio);
  mic.dataset.locked = String(micLocked);
  // Still focusable when locked (aria-disabled, not disabled), so the reason can be found and read.
  mic.setAttribute("aria-disabled", String(micLocked || !hasAudio));
  // Long words on wide screens, short ones on a phone; the accessible name is always the long one.
  const [micLong, micShort] = !hasAudio
    ? ["No microphone", "No mic"]
    : micLocked
      ? ["Muted by therapist", "Muted"]
      : state.mic
        ? ["Mute microphone", "Mute"]
        : ["Unmute microphone", "Unmute"];
  mic.setAttribute("aria-label", micLong);
  $("ctl-mic-label").textContent = micLong;
  $("ctl-mic-short").textContent = micShort;
  const cam = $("ctl-cam");
  const camLocked = !state.camera && state.cameraBlocked;
  cam.dataset.on = String(state.camera && hasVideo && !state.audioOnly);
  cam.dataset.locked = String(camLocked);
  cam.setAttribute("aria-disabled", String(camLocked || !hasVideo));
  const [camLong, camShort] = !hasVideo
    ? ["No camera", "No camera"]
    : camLocked
      ? ["Camera off by therapist", "Camera off"]
      : state.camera && !state.audioOnly
        ? ["Turn camera off", "Camera off"]
        : ["Turn camera on", "Camera on"];
  cam.setAttribute("aria-label", camLong);
  $("ctl-cam-label").textContent = camLong;
  $("ctl-cam-short").textContent = camShort;
  const hand = $("ctl-hand");
  hand.dataset.on = String(state.hand);
  $("ctl-hand-label").textContent = state.hand ? "Lower hand" : "Raise hand";
  const audioOnly = $("audio-only-toggle");
  audioOnly.textContent = state.audioOnly ? "Turn video back on" : "Switch to audio only";
  $("audio-only-chip").hidden = !state.audioOnly;
}

let noteTimer = null;

/** A note from the therapist's side above the controls; it stays while it describes a lock. */
function modNote(text, sticky = false) {
  const note = $("mod-note");
  note.textContent = text;
  note.hidden = false;
  window.clearTimeout(noteTimer);
  if (!sticky) {
    noteTimer = window.setTimeout(() => {
      note.hidden = true;
    }, 20000);
  }
}

function sendMediaState() {
  applyLocalTracks();
  syncControls();
  socket.send("media.state", { mic: state.mic, camera: state.camera && !state.audioOnly });
}

function setAudioOnly(on) {
  state.audioOnly = on;
  transport.setAudioOnly(on);
  $("quality-banner").hidden = true;
  for (const tile of $("grid").children) {
    const info = state.roster.get(tile.dataset.member);
    if (info) renderTile(info);
  }
  sendMediaState();
  announce(on ? "Audio only: video is paused." : "Video is back on.");
}

$("ctl-mic").addEventListener("click", () => {
  if (!media.audioTrack) return;
  if (!state.mic && state.hardMuted) {
    modNote("A therapist muted you. You can't unmute until they allow it.", true);
    return;
  }
  state.mic = !state.mic;
  sendMediaState();
});
$("ctl-cam").addEventListener("click", () => {
  if (!media.videoTrack) return;
  if ((!state.camera || state.audioOnly) && state.cameraBlocked) {
    modNote("A therapist turned your camera off. You can't turn it on until they allow it.", true);
    return;
  }
  if (state.audioOnly) {
    state.camera = true;
    setAudioOnly(false);
    return;
  }
  state.camera = !state.camera;
  sendMediaState();
});
$("ctl-hand").addEventListener("click", () => {
  socket.send(state.hand ? "hand.lower" : "hand.raise");
});
$("ctl-chat").addEventListener("click", () => {
  const panelNode = $("chat-panel");
  panelNode.hidden = !panelNode.hidden;
  $("ctl-chat").setAttribute("aria-pressed", String(!panelNode.hidden));
  if (!panelNode.hidden) {
    selectTab(state.chatTab);
    panelNode.scrollIntoView({ block: "nearest" });
  }
});
$("ctl-settings").addEventListener("click", () => {
  fillDevicePickers();
  $("settings-dialog").showModal();
});
$("audio-only-toggle").addEventListener("click", () => setAudioOnly(!state.audioOnly));
$("suggest-audio-only").addEventListener("click", () => setAudioOnly(true));
$("suggest-dismiss").addEventListener("click", () => {
  state.suggestionDismissedAt = Date.now();
  $("quality-banner").hidden = true;
});
$("ctl-leave").addEventListener("click", async () => {
  if (await confirmAction("Leave the session? You can come back while it is on.", "Leave")) socket.leave();
});

// Keyboard shortcuts (not while typing or in a dialog): M microphone, V camera, H hand.
document.addEventListener("keydown", (event) => {
  if (state.stage !== "room" || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest("input, textarea, select, dialog, [contenteditable]")) return;
  const button = { m: "ctl-mic", v: "ctl-cam", h: "ctl-hand" }[event.key.toLowerCase()];
  if (button) {
    event.preventDefault();
    $(button).click();
  }
});

// --- chat -----------------------------------------------------------------------------------------

function tabOf(message) {
  return message.thread ? "private" : "room";
}

function addChat(message, live, replace = false) {
  if (state.chat.has(message.seq) && !replace) return;
  state.chat.set(message.seq, message);
  const tab = tabOf(message);
  const log = tab === "private" ? $("private-log") : $("chat-log");
  const mine = message.author === state.me;
  let privateLabel = null;
  if (message.thread) {
    // Who the private thread is with, said in words (not only by colour or place).
    privateLabel = isModerator
      ? `Private · ${message.thread === message.author ? "from" : "to"} ${nameOf(message.thread)}`
      : mine
        ? "Private · to the therapists"
        : "Private · from your therapist";
  }
  const item = el("li", { class: `chat-item${mine ? " chat-item--mine" : ""}`, "data-seq": String(message.seq) }, [
    el("div", { class: "chat-item__meta" }, [
      el("span", { class: "chat-item__author", text: nameOf(message.author) }),
      el("time", { datetime: message.at, text: clock(message.at) }),
      privateLabel && el("span", { class: "chat-item__private", text: privateLabel }),
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
  $("chat-empty").hidden = $("chat-log").children.length > 0;
  $("private-empty").hidden = $("private-log").children.length > 0;
  if (message.thread && isModerator) {
    refreshPrivateRecipients();
    // Answer whoever wrote last, unless the therapist is in the middle of writing to someone.
    if (!mine && !$("private-input").value) $("private-to").value = message.thread;
  }
  if (live && !mine) {
    const where = message.thread ? " privately" : "";
    announce(`${nameOf(message.author)} says${where}: ${message.text}`);
    if ($("chat-panel").hidden || state.chatTab !== tab) {
      state.unread[tab] += 1;
      renderUnread();
    }
  }
}

function renderUnread() {
  const total = state.unread.room + state.unread.private;
  const badge = $("unread");
  badge.hidden = total === 0;
  badge.textContent = total ? `${total} new` : "";
  for (const tab of ["room", "private"]) {
    const node = $(`unread-${tab}`);
    node.hidden = state.unread[tab] === 0;
    node.textContent = state.unread[tab] ? `${state.unread[tab]} new` : "";
  }
}

function selectTab(tab) {
  state.chatTab = tab;
  for (const name of ["room", "private"]) {
    const selected = name === tab;
    const button = $(`tab-${name}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`chat-${name}`).hidden = !selected;
  }
  state.unread[tab] = 0;
  renderUnread();
  (tab === "private" ? $("private-input") : $("chat-input")).focus();
}

for (const name of ["room", "private"]) {
  $(`tab-${name}`).addEventListener("click", () => selectTab(name));
  // Arrow keys move between the two tabs (the WAI-ARIA tabs pattern).
  $(`tab-${name}`).addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      event.preventDefault();
      const other = name === "room" ? "private" : "room";
      selectTab(other);
      $(`tab-${other}`).focus();
    }
  });
}

/** The therapist's "Reply to" list: participants in the room and anyone who wrote privately. */
function refreshPrivateRecipients() {
  if (!isModerator) return;
  const select = $("private-to");
  const current = select.value;
  const ids = new Set(
    [...state.roster.values()].filter((m) => m.role === "participant").map((m) => m.member),
  );
  for (const message of state.chat.values()) if (message.thread) ids.add(message.thread);
  const options = [...ids].map((id) => el("option", { value: id, text: nameOf(id) }));
  const same =
    options.length === select.options.length &&
    options.every((o, i) => o.value === select.options[i].value && o.textContent === select.options[i].textContent);
  if (!same) select.replaceChildren(...options);
  if (current && ids.has(current)) select.value = current;
}

function sendChat(input, data) {
  const text = input.value.trim();
  if (!text) return;
  if (socket.send("chat.send", { text, ...data })) input.value = "";
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sendChat($("chat-input"), {});
});
$("private-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (isModerator) {
    const thread = $("private-to").value;
    if (thread) sendChat($("private-input"), { thread });
  } else {
    sendChat($("private-input"), { to_therapists: true });
  }
});
for (const [input, form] of [
  ["chat-input", "chat-form"],
  ["private-input", "private-form"],
]) {
  $(input).addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $(form).requestSubmit();
    } else if (event.key === "Escape") {
      // Out of the text box, so the M / V / H shortcuts work again.
      $("ctl-chat").focus();
    }
  });
}

// --- the therapist's knock sound --------------------------------------------------------------

function knocked() {
  if (chime.play()) state.chimes += 1;
}

// --- closing ---------------------------------------------------------------------------------------

const CLOSINGS = {
  removed: [
    "You were removed from this session",
    "A therapist removed you. If you think this is a mistake, please contact your therapist or the clinic.",
  ],
  denied: ["Your therapist couldn't let you in", ""],
  ended: ["The session has ended", "Thank you for joining. You can find your next session on My sessions."],
  replaced: [
    "This session is open elsewhere",
    "You joined from another tab or device, so this page stopped. Close it, or reload it to move the session back here.",
  ],
  logged_out: ["Please log in again", "Your login ended. Log in again to rejoin."],
  left: ["You left the session", "You can rejoin from My sessions while the session is on."],
  unreachable: ["We couldn't reconnect", "Check your internet connection, then reload this page to try again."],
};

function close(reason) {
  // A frame that came just before the close code says more than the code itself (denied vs removed).
  const closing = state.closing || { reason };
  const [heading, text] = CLOSINGS[closing.reason] || CLOSINGS.unreachable;
  transport.closeAll();
  window.clearInterval(waitingTimer);
  window.clearTimeout(reopenTimer);
  window.clearInterval(statsTimer);
  window.clearInterval(levelTimer);
  if (panel) panel.stop();
  media.stop();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  $("closed-heading").textContent = heading;
  $("closed-text").textContent =
    closing.reason === "denied"
      ? closing.message || "The session is not available to you today. Please contact your therapist or the clinic."
      : text;
  showStage("closed");
  $("closed-heading").focus();
  announce(heading);
}

showStage("prejoin");
openDevices();
