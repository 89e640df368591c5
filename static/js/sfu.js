// Media through the server's SFU (Janus), for rooms whose `room.media.mode` is "sfu".
//
// Two RTCPeerConnections whatever the size of the group: one that publishes this person's camera
// and microphone, one that receives everyone else's streams (one `mid` per member and kind). The
// browser never talks to Janus: it exchanges SDP and ICE candidates with our server in `sfu.*`
// frames (docs/protocol.md), and the server builds every Janus request itself.
//
// Same surface as MeshTransport (rtc.js), so the UI does not care which one it has.

import { classifyQuality, iceServerList, swapTrack } from "./rtc.js";

// Simulcast pictures, high to low (the order Janus reads them in); the SFU forwards one of them to
// each subscriber (sfu.layers). Browsers send fewer layers from small cameras, so a camera under
// 960 pixels wide sends two: full size and half size.
function simulcastFor(track) {
  const width = (track.getSettings && track.getSettings().width) || 640;
  const layers = [
    { rid: "h", maxBitrate: 1_200_000 },
    { rid: "m", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  ];
  if (width >= 960) layers.push({ rid: "l", scaleResolutionDownBy: 4, maxBitrate: 150_000 });
  return layers;
}

const RESTART_STATES = new Set(["hangup", "down", "moved"]);

// What one forwarded stream costs, kbps: the same rough figures as the server's media/layers.py,
// which makes the real decision; here they only tell when an estimate stops limiting anything.
const LAYER_KBPS = { off: 0, low: 300, high: 1200 };
const AUDIO_KBPS = 40;

/** The kbps a layout asks for: {member: "off" | "low" | "high"} plus everyone's audio. */
export function layoutKbps(layers) {
  return Object.values(layers).reduce((sum, quality) => sum + LAYER_KBPS[quality] + AUDIO_KBPS, 0);
}

/**
 * The next estimate of what this downlink carries (kbps, or null: no limit seen), from one second of
 * what arrived: heavy loss means the link carries about what got through; clean seconds let the
 * estimate grow until it no longer limits the layout (additive-increase, multiplicative-decrease
 * in spirit). The server fits the simulcast layers to it (sfu.layers downlink_kbps).
 */
export function nextDownlinkEstimate(previous, { kbps, loss, wantedKbps }) {
  if (loss !== null && loss >= 0.05 && kbps > 0) return Math.max(100, Math.round(kbps * 0.85));
  if (previous === null) return null;
  if (loss === null || loss < 0.02) {
    const grown = Math.round(previous * 1.15);
    return grown >= wantedKbps * 1.5 ? null : grown;
  }
  return previous;
}

export class SfuTransport {
  /**
   * @param {{send: (type: string, data: object) => void,
   *          onRemoteStream: (member: string, stream: MediaStream) => void,
   *          onPeerState: (member: string, state: string) => void}} hooks
   */
  constructor(hooks) {
    this.kind = "sfu";
    this.hooks = hooks;
    this.iceServers = [];
    this.localStream = null;
    this.audioOnly = false;
    this.pub = null;
    this.sub = null;
    this.midMember = new Map(); // subscriber mid -> member id (from the server's sfu.offer)
    this.peers = new Map(); // member id -> their MediaStream (the UI reads .size)
    this.last = null;
    this.queue = Promise.resolve(); // subscriber offers, in arrival order
    this.layout = {};
    this.wantedLayers = {}; // member -> "off" | "low" | "high", most important first
    this.pubRequest = null; // id of the latest sfu.publish / sfu.subscribe: answers to older ones are stale
    this.subRequest = null;
    this.downlinkKbps = null; // nextDownlinkEstimate's latest
    this.sentLayers = "";
    this.retryDelay = 0; // ms before starting over after sfu.unavailable; grows while it lasts
    this.retryTimer = null;
  }

  setIceServers(servers) {
    this.iceServers = iceServerList(servers);
  }

  setLocalStream(stream) {
    this.localStream = stream;
  }

  /** Enter (or re-enter after a reconnect): publish, and subscribe to everyone who publishes. */
  start() {
    this.closeAll();
    this.publish().catch((error) => console.warn("publish failed", error));
    this.subRequest = this.hooks.send("sfu.subscribe", { feeds: null });
  }

  trickle(handle, event) {
    const c = event.candidate;
    this.hooks.send(
      "sfu.trickle",
      c ? { handle, candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex } : { handle, candidate: "" },
    );
  }

  async publish() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pub = pc;
    // Until this connection's own offer is sent, an answer to the one before it is stale: applied
    // here (no local offer yet) it would fail, "called in wrong state: stable".
    this.pubRequest = null;
    const tracks = this.localStream ? this.localStream.getTracks() : [];
    for (const track of tracks) {
      const sending = track.kind === "video" && this.audioOnly ? null : track;
      const init = { direction: "sendonly", streams: this.localStream ? [this.localStream] : [] };
      // Simulcast: three pictures of the camera; each subscriber gets the one its layout needs.
      if (track.kind === "video") init.sendEncodings = simulcastFor(track);
      pc.addTransceiver(sending || track.kind, init);
    }
    if (!tracks.some((t) => t.kind === "audio")) pc.addTransceiver("audio", { direction: "sendonly" });
    pc.addEventListener("icecandidate", (event) => this.trickle("publisher", event));
    pc.addEventListener("connectionstatechange", () => {
      if (pc === this.pub && pc.connectionState === "failed") this.republish();
    });
    await pc.setLocalDescription(await pc.createOffer());
    if (pc !== this.pub) return; // started over meanwhile
    this.pubRequest = this.hooks.send("sfu.publish", { sdp: pc.localDescription.sdp });
  }

  republish() {
    if (this.pub) this.pub.close();
    this.publish().catch((error) => console.warn("publish failed", error));
  }

  /** The server could not reach the SFU node: start over after a growing pause (2 s .. 15 s). The
   * server re-reads where the session's room is on every attempt, so this finds the new node. */
  unavailable(re = null) {
    if (this.retryTimer || (re && re !== this.pubRequest && re !== this.subRequest)) return; // a stale request's
    this.retryDelay = Math.min(this.retryDelay ? this.retryDelay * 2 : 2000, 15000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.start();
    }, this.retryDelay);
  }

  /** The server's answers and offers (sfu.answer, sfu.offer); sfu.link trouble starts over
   * (hangup, down, or moved: the session is on another SFU node now). */
  handleSfu(frame) {
    // After starting over (a reconnect, the session moving to another SFU node) an answer or offer
    // to an earlier request may still arrive: it belongs to connections that are gone.
    if (frame.re && frame.re !== this.pubRequest && frame.re !== this.subRequest) return;
    if (frame.type === "sfu.answer" && this.pub) {
      this.retryDelay = 0;
      this.pub.setRemoteDescription({ type: "answer", sdp: frame.sdp }).catch((error) => console.warn("answer", error));
    } else if (frame.type === "sfu.offer") {
      this.queue = this.queue.then(() => this.subscriberOffer(frame)).catch((error) => console.warn("offer", error));
    } else if (frame.type === "sfu.link" && RESTART_STATES.has(frame.state)) {
      this.start();
    }
  }

  subscriber() {
    if (this.sub) return this.sub;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.sub = pc;
    pc.addEventListener("icecandidate", (event) => this.trickle("subscriber", event));
    pc.addEventListener("track", (event) => {
      const member = this.midMember.get(event.transceiver.mid);
      if (!member) return;
      let stream = this.peers.get(member);
      if (!stream) {
        stream = new MediaStream();
        this.peers.set(member, stream);
      }
      for (const old of stream.getTracks()) if (old.kind === event.track.kind) stream.removeTrack(old);
      stream.addTrack(event.track);
      if (event.track.kind === "video") event.track.enabled = !this.audioOnly;
      this.hooks.onRemoteStream(member, stream);
      this.setLayout(this.layout); // a new member's picture: choose its layer too
    });
    pc.addEventListener("connectionstatechange", () => {
      for (const member of this.peers.keys()) this.hooks.onPeerState(member, pc.connectionState);
    });
    return pc;
  }

  async subscriberOffer(frame) {
    for (const stream of frame.streams || []) this.midMember.set(stream.mid, stream.member);
    const pc = this.subscriber();
    await pc.setRemoteDescription({ type: "offer", sdp: frame.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.hooks.send("sfu.start", { sdp: pc.localDescription.sdp });
  }

  /** A new camera or microphone: swap it into the published connection without renegotiating. */
  async replaceTrack(kind, track) {
    await swapTrack(this.pub ? [this.pub] : [], kind, track, this.audioOnly);
  }

  /**
   * Audio only: stop sending video, and ask the SFU to stop forwarding everyone's video to us
   * (every layer "off"), so a weak connection carries voices only; the tiles show names.
   */
  setAudioOnly(on) {
    this.audioOnly = Boolean(on);
    const video = this.localStream ? this.localStream.getVideoTracks()[0] || null : null;
    this.replaceTrack("video", video).catch(() => {});
    for (const stream of this.peers.values()) for (const track of stream.getVideoTracks()) track.enabled = !this.audioOnly;
    this.setLayout(this.layout);
  }

  /** The connections (tests read getStats through this). */
  connections() {
    const out = {};
    if (this.pub) out.publisher = this.pub;
    if (this.sub) out.subscriber = this.sub;
    return out;
  }

  /** What arrives from each member over the subscriber connection: {member: {video: {...}, audio: {...}}}. */
  async memberStats() {
    const out = {};
    if (!this.sub) return out;
    const report = await this.sub.getStats();
    report.forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      const member = this.midMember.get(r.mid);
      if (!member) return;
      out[member] = out[member] || {};
      out[member][r.kind] = {
        framesDecoded: r.framesDecoded || 0,
        frameWidth: r.frameWidth || 0,
        bytesReceived: r.bytesReceived || 0,
        totalSamplesReceived: r.totalSamplesReceived || 0,
        packetsReceived: r.packetsReceived || 0,
        packetsLost: Math.max(0, r.packetsLost || 0),
        audioLevel: typeof r.audioLevel === "number" ? r.audioLevel : null,
      };
    });
    return out;
  }

  /**
   * Which picture to receive of each member, from the layout: the spotlight large and everyone else
   * a thumbnail; with no spotlight, a grid of up to four tiles is large enough for the high picture,
   * past that only the active speaker gets it; in audio-only mode none at all. The large ones go
   * first (the server lowers the last ones first when the downlink is short).
   */
  setLayout({ spotlight = null, speaker = null } = {}) {
    this.layout = { spotlight, speaker };
    const members = [...this.peers.keys()];
    const large = (member) => (spotlight ? member === spotlight : members.length <= 3 || member === speaker);
    const layers = {};
    for (const member of [...members.filter(large), ...members.filter((m) => !large(m))]) {
      layers[member] = this.audioOnly ? "off" : large(member) ? "high" : "low";
    }
    this.wantedLayers = layers;
    this.sendLayers();
  }

  /** sfu.layers with the layout and the downlink estimate, when either changed. */
  sendLayers() {
    if (!this.sub || Object.keys(this.wantedLayers).length === 0) return;
    const data = { layers: this.wantedLayers, downlink_kbps: this.downlinkKbps };
    const key = JSON.stringify(data);
    if (key === this.sentLayers) return;
    this.sentLayers = key;
    this.hooks.send("sfu.layers", data);
  }

  connectTo() {} // the subscription covers everyone; the server pushes a new offer when someone joins

  handleSignal() {} // no peer-to-peer signaling in an SFU room

  removePeer(member) {
    this.peers.delete(member);
  }

  closeAll() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pub) this.pub.close();
    if (this.sub) this.sub.close();
    this.pub = this.sub = null;
    this.midMember.clear();
    this.peers.clear();
    this.last = null;
    this.queue = Promise.resolve();
    this.sentLayers = "";
  }

  /** Same shape as MeshTransport.sample(): quality per member (what we receive) and for ourselves. */
  async sample() {
    const peers = {};
    const self = { quality: "unknown", loss: null, rtt: null, kbps: 0, audioLevel: null };
    const now = { at: performance.now(), members: await this.memberStats().catch(() => ({})), sent: 0 };
    let rtt = null;
    let sentLoss = null;
    if (this.pub) {
      const report = await this.pub.getStats().catch(() => new Map());
      report.forEach((r) => {
        if (r.type === "outbound-rtp") now.sent += r.bytesSent || 0;
        else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
          if (typeof r.currentRoundTripTime === "number") rtt = r.currentRoundTripTime;
        } else if (r.type === "remote-inbound-rtp" && typeof r.fractionLost === "number") {
          sentLoss = Math.max(sentLoss || 0, r.fractionLost);
        } else if (r.type === "media-source" && r.kind === "audio" && typeof r.audioLevel === "number") {
          self.audioLevel = r.audioLevel;
        }
      });
    }
    const last = this.last;
    this.last = now;
    const seconds = last ? Math.max(0.001, (now.at - last.at) / 1000) : 1;
    const receiving = this.sub && this.sub.connectionState === "connected";
    for (const [member, kinds] of Object.entries(now.members)) {
      const before = (last && last.members[member]) || {};
      let received = 0;
      let lost = 0;
      let bytes = 0;
      for (const kind of ["audio", "video"]) {
        const a = kinds[kind];
        const b = before[kind];
        if (!a || !b) continue;
        received += a.packetsReceived - b.packetsReceived;
        lost += a.packetsLost - b.packetsLost;
        bytes += a.bytesReceived - b.bytesReceived;
      }
      const loss = received + lost > 0 ? Math.max(0, lost) / (received + lost) : null;
      const quality = receiving ? classifyQuality({ loss, rtt }) : "unknown";
      const audioLevel = kinds.audio ? kinds.audio.audioLevel : null;
      peers[member] = { quality, loss, rtt, kbps: Math.round((bytes * 8) / 1000 / seconds), audioLevel };
    }
    if (last && receiving) this.updateDownlink(now.members, last.members, seconds);
    if (this.pub && this.pub.connectionState === "connected") self.quality = classifyQuality({ loss: sentLoss, rtt });
    else if (this.pub && this.pub.connectionState === "failed") self.quality = "poor";
    self.rtt = rtt;
    self.loss = sentLoss;
    self.kbps = last ? Math.round(((now.sent - last.sent) * 8) / 1000 / seconds) : 0;
    return { peers, self };
  }

  /** Everything that arrived over the receiving connection since the last sample -> the estimate. */
  updateDownlink(members, before, seconds) {
    let received = 0;
    let lost = 0;
    let bytes = 0;
    for (const [member, kinds] of Object.entries(members)) {
      for (const kind of ["audio", "video"]) {
        const a = kinds[kind];
        const b = before[member] && before[member][kind];
        if (!a || !b) continue;
        received += a.packetsReceived - b.packetsReceived;
        lost += a.packetsLost - b.packetsLost;
        bytes += a.bytesReceived - b.bytesReceived;
      }
    }
    const loss = received + lost > 0 ? Math.max(0, lost) / (received + lost) : null;
    const kbps = Math.round((bytes * 8) / 1000 / seconds);
    this.downlinkKbps = nextDownlinkEstimate(this.downlinkKbps, { kbps, loss, wantedKbps: layoutKbps(this.wantedLayers) });
    this.sendLayers();
  }
}
