// Media transport: one RTCPeerConnection per peer (a full mesh), set up with "perfect negotiation"
// over the server's signal.description / signal.candidate frames. This is the only module that
// touches RTCPeerConnection. The UI sees a small surface:
//
//   setIceServers, setLocalStream, replaceTrack, connectTo, handleSignal, removePeer, closeAll,
//   setAudioOnly, sample() -> per-peer and own quality and audio levels, and the hooks
//   onRemoteStream / onPeerState,
//
// so an SFU transport with the same methods can replace this one without touching room.js.
//
// Who offers first: the member whose connection is newer (it just arrived or reconnected) calls
// connectTo() for everyone already in the room; the others answer. Glare is still handled by the
// `polite` role the server stamps on every relayed frame.
//
// A pair that has not connected after STUCK_MS starts over: the impolite side (or, before any
// frame came back, the side that offered) builds a new connection and offers again; the other
// side sees an offer from a new connection (its DTLS fingerprint changed: one connection keeps one
// certificate for life) and replaces its own instead of renegotiating a dead one. Whatever went wrong in between (a lost frame, glare that
// left one side waiting, a network that changed), the pair gets a clean second try.

// Quality thresholds (loss is a fraction, rtt in seconds). A group call over a phone connection
// stays usable up to a few percent loss; beyond ~10 % or a second of round trip, video is what hurts.
const FAIR = { loss: 0.03, rtt: 0.35 };
const POOR = { loss: 0.1, rtt: 0.8 };

/** "good" | "fair" | "poor" | "unknown" from loss (0..1) and round trip (seconds). Pure: tested. */
export function classifyQuality({ loss = null, rtt = null } = {}) {
  if (loss === null && rtt === null) return "unknown";
  if ((loss !== null && loss >= POOR.loss) || (rtt !== null && rtt >= POOR.rtt)) return "poor";
  if ((loss !== null && loss >= FAIR.loss) || (rtt !== null && rtt >= FAIR.rtt)) return "fair";
  return "good";
}

/**
 * Remembers the last samples of one's own quality and says when to suggest audio only: when
 * most of the last `window` samples (one a second) were poor, not at the first bad second.
 */
export class QualityWatch {
  constructor(window = 10, poorNeeded = 7) {
    this.window = window;
    this.poorNeeded = poorNeeded;
    this.history = [];
  }

  /** Add one sample; true when quality has stayed poor long enough to suggest audio only. */
  push(quality) {
    this.history.push(quality);
    if (this.history.length > this.window) this.history.shift();
    return this.history.filter((q) => q === "poor").length >= this.poorNeeded;
  }
}

const WORSE = { unknown: 0, good: 1, fair: 2, poor: 3 };

// A peer connection not connected this long starts over (then twice as long, up to STUCK_MAX_MS).
export const STUCK_MS = 12000;
const STUCK_MAX_MS = 60000;

/**
 * The DTLS certificate fingerprint an SDP announces: the same for every description of one
 * RTCPeerConnection (its certificate cannot change), different for a new one. (The o= session id
 * is not enough: aiortc writes a new one into every description.)
 */
export function sdpFingerprint(sdp) {
  const match = /^a=fingerprint:(.+)$/m.exec(sdp || "");
  return match ? match[1].trim().toLowerCase() : null;
}

/** The room's ICE servers as RTCPeerConnection takes them (username and credential only when set). */
export function iceServerList(servers) {
  return (servers || []).map((server) => {
    const entry = { urls: server.urls };
    if (server.username) entry.username = server.username;
    if (server.credential) entry.credential = server.credential;
    return entry;
  });
}

/** A new camera or microphone on these connections, without renegotiating (no video in audio-only mode). */
export async function swapTrack(connections, kind, track, audioOnly) {
  const next = kind === "video" && audioOnly ? null : track;
  const jobs = [];
  for (const pc of connections) {
    for (const transceiver of pc.getTransceivers()) {
      const ours = transceiver.receiver.track && transceiver.receiver.track.kind === kind && !transceiver.stopped;
      if (ours && transceiver.sender.track !== next) jobs.push(transceiver.sender.replaceTrack(next));
    }
  }
  await Promise.allSettled(jobs);
}

export class MeshTransport {
  /**
   * @param {{signal: (type: string, data: object, to: string) => void,
   *          onRemoteStream: (member: string, stream: MediaStream) => void,
   *          onPeerState: (member: string, state: string) => void}} hooks
   */
  constructor(hooks) {
    this.kind = "mesh";
    this.hooks = hooks;
    this.peers = new Map();
    this.iceServers = [];
    this.localStream = null;
    this.audioOnly = false;
    this.restarts = 0; // pairs started over because they did not connect (tests read it)
    this.watchTimer = null;
  }

  setIceServers(servers) {
    this.iceServers = iceServerList(servers);
  }

  setLocalStream(stream) {
    this.localStream = stream;
  }

  /** A new camera or microphone: swap it into every connection without renegotiating. */
  async replaceTrack(kind, track) {
    await swapTrack([...this.peers.values()].map((peer) => peer.pc), kind, track, this.audioOnly);
  }

  /**
   * Audio only: send no video and ask for none. The video transceivers turn inactive (one
   * renegotiation per peer, through perfect negotiation), so the other side stops sending too.
   */
  setAudioOnly(on) {
    this.audioOnly = Boolean(on);
    for (const peer of this.peers.values()) this.applyVideoDirection(peer);
  }

  applyVideoDirection(peer) {
    const track = this.localStream ? this.localStream.getVideoTracks()[0] || null : null;
    for (const transceiver of peer.pc.getTransceivers()) {
      if (transceiver.stopped || !transceiver.receiver.track || transceiver.receiver.track.kind !== "video") continue;
      const wanted = this.audioOnly ? "inactive" : track ? "sendrecv" : "recvonly";
      if (transceiver.direction !== wanted) transceiver.direction = wanted;
      const sending = this.audioOnly ? null : track;
      if (transceiver.sender.track !== sending) transceiver.sender.replaceTrack(sending).catch(() => {});
    }
  }

  /** The RTCPeerConnections by member id (tests read getStats through this). */
  connections() {
    const out = {};
    for (const [member, peer] of this.peers) out[member] = peer.pc;
    return out;
  }

  peer(member) {
    let peer = this.peers.get(member);
    if (peer) return peer;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    peer = {
      pc,
      polite: null, // unknown until the server's first relayed frame from them says
      offered: false, // we built this connection to offer (connectTo)
      remoteFingerprint: null, // sdpFingerprint() of their descriptions: which connection of theirs
      since: performance.now(), // when it was built or last connected
      patience: STUCK_MS,
      makingOffer: false,
      ignoreOffer: false,
      queue: Promise.resolve(),
      stream: null,
      last: null,
    };
    this.peers.set(member, peer);
    this.watchPeers();

    pc.addEventListener("track", (event) => {
      const stream = event.streams[0] || peer.stream || new MediaStream();
      if (!event.streams[0]) stream.addTrack(event.track);
      peer.stream = stream;
      this.hooks.onRemoteStream(member, stream);
    });
    pc.addEventListener("icecandidate", (event) => {
      const c = event.candidate;
      this.hooks.signal(
        "signal.candidate",
        c ? { candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex } : { candidate: "" },
        member,
      );
    });
    pc.addEventListener("negotiationneeded", async () => {
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        this.hooks.signal("signal.description", { kind: pc.localDescription.type, sdp: pc.localDescription.sdp }, member);
      } catch (error) {
        console.warn("offer failed", error);
      } finally {
        peer.makingOffer = false;
      }
    });
    pc.addEventListener("connectionstatechange", () => {
      this.hooks.onPeerState(member, pc.connectionState);
      if (pc.connectionState === "connected") {
        peer.since = performance.now();
        peer.patience = STUCK_MS;
      }
      if (pc.connectionState === "failed") pc.restartIce();
    });
    return peer;
  }

  watchPeers() {
    if (this.watchTimer === null) this.watchTimer = window.setInterval(() => this.startOverStuck(), 2000);
  }

  /** Start over with every pair that has not connected in time and that this side may restart. */
  startOverStuck(now = performance.now()) {
    for (const [member, peer] of [...this.peers]) {
      const state = peer.pc.connectionState;
      if (state === "connected") {
        peer.since = now;
        continue;
      }
      // One side acts: the impolite one; before any frame came back, the one that offered.
      const mayAct = peer.polite === false || (peer.polite === null && peer.offered);
      if (!mayAct || now - peer.since < peer.patience) continue;
      const patience = Math.min(peer.patience * 2, STUCK_MAX_MS);
      console.warn(`peer ${member}: not connected after ${Math.round((now - peer.since) / 1000)} s (${state}); starting over`);
      this.restarts += 1;
      this.connectTo(member);
      const fresh = this.peers.get(member);
      fresh.polite = peer.polite;
      fresh.patience = patience;
    }
  }

  addLocalTracks(peer) {
    if (!this.localStream) return;
    const sending = new Set(peer.pc.getSenders().map((s) => s.track));
    for (const track of this.localStream.getTracks()) {
      if (!sending.has(track)) peer.pc.addTrack(track, this.localStream);
    }
  }

  /** We are the newer side: create the connection and offer (negotiationneeded does it). */
  connectTo(member) {
    this.removePeer(member);
    const peer = this.peer(member);
    peer.offered = true;
    this.addLocalTracks(peer);
    const kinds = new Set(peer.pc.getTransceivers().map((t) => t.receiver.track.kind));
    // Nothing to send of a kind: still ask to receive it.
    if (!kinds.has("audio")) peer.pc.addTransceiver("audio", { direction: "recvonly" });
    if (!kinds.has("video")) peer.pc.addTransceiver("video", { direction: "recvonly" });
    if (this.audioOnly) this.applyVideoDirection(peer);
  }

  /** A relayed frame from `from`: handled in arrival order per peer. */
  handleSignal(frame) {
    const member = frame.from;
    if (!member) return;
    let peer = this.peer(member);
    if (frame.type === "signal.description") {
      const fingerprint = sdpFingerprint(frame.sdp);
      if (frame.kind === "offer" && peer.remoteFingerprint && fingerprint !== peer.remoteFingerprint) {
        // They started over with a new connection: ours belongs to the old one, so replace it
        // (decided on arrival, so the candidates that follow go to the new one).
        this.removePeer(member);
        peer = this.peer(member);
      }
      peer.remoteFingerprint = fingerprint;
    }
    peer.polite = Boolean(frame.polite);
    peer.queue = peer.queue
      .then(() => (frame.type === "signal.description" ? this.description(member, peer, frame) : this.candidate(peer, frame)))
      .catch((error) => console.warn("signal failed", error));
  }

  async description(member, peer, frame) {
    const { pc } = peer;
    const offer = frame.kind === "offer";
    const collision = offer && (peer.makingOffer || pc.signalingState !== "stable");
    peer.ignoreOffer = !peer.polite && collision;
    if (peer.ignoreOffer) return;
    await pc.setRemoteDescription({ type: frame.kind, sdp: frame.sdp });
    if (offer) {
      // Add our tracks after the remote offer, so they reuse its transceivers (no second round trip).
      this.addLocalTracks(peer);
      if (this.audioOnly) this.applyVideoDirection(peer);
      await pc.setLocalDescription();
      this.hooks.signal("signal.description", { kind: pc.localDescription.type, sdp: pc.localDescription.sdp }, member);
    }
  }

  async candidate(peer, frame) {
    if (!frame.candidate) return; // end of candidates
    try {
      await peer.pc.addIceCandidate({
        candidate: frame.candidate,
        sdpMid: frame.sdp_mid,
        sdpMLineIndex: frame.sdp_mline_index,
      });
    } catch (error) {
      if (!peer.ignoreOffer) throw error;
    }
  }

  removePeer(member) {
    const peer = this.peers.get(member);
    if (!peer) return;
    this.peers.delete(member);
    peer.pc.close();
  }

  closeAll() {
    for (const member of [...this.peers.keys()]) this.removePeer(member);
    window.clearInterval(this.watchTimer);
    this.watchTimer = null;
  }

  /**
   * One look at every connection's statistics. Returns
   *   {peers: {member: {quality, loss, rtt, kbps, audioLevel}}, self: {quality, loss, rtt, kbps, audioLevel}}
   * where loss and kbps are measured since the previous call (so call it on a steady interval),
   * peers' figures describe what we receive from them, and self is what we send (as the
   * receivers report it back), the worst over all peers.
   */
  async sample() {
    const peers = {};
    const self = { quality: "unknown", loss: null, rtt: null, kbps: 0, audioLevel: null };
    await Promise.all(
      [...this.peers.entries()].map(async ([member, peer]) => {
        let report;
        try {
          report = await peer.pc.getStats();
        } catch {
          return;
        }
        const now = { received: 0, lost: 0, bytesIn: 0, bytesOut: 0, at: performance.now() };
        let rtt = null;
        let audioLevel = null;
        let sentLoss = null;
        report.forEach((r) => {
          if (r.type === "inbound-rtp") {
            now.received += r.packetsReceived || 0;
            now.lost += Math.max(0, r.packetsLost || 0);
            now.bytesIn += r.bytesReceived || 0;
            if (r.kind === "audio" && typeof r.audioLevel === "number") audioLevel = r.audioLevel;
          } else if (r.type === "outbound-rtp") {
            now.bytesOut += r.bytesSent || 0;
          } else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
            if (typeof r.currentRoundTripTime === "number") rtt = r.currentRoundTripTime;
          } else if (r.type === "remote-inbound-rtp") {
            if (typeof r.fractionLost === "number") sentLoss = Math.max(sentLoss || 0, r.fractionLost);
          } else if (r.type === "media-source" && r.kind === "audio" && typeof r.audioLevel === "number") {
            self.audioLevel = Math.max(self.audioLevel || 0, r.audioLevel);
          }
        });
        const last = peer.last;
        peer.last = now;
        let loss = null;
        let kbps = 0;
        let sentKbps = 0;
        if (last) {
          const received = now.received - last.received;
          const lost = now.lost - last.lost;
          if (received + lost > 0) loss = Math.max(0, lost) / (received + lost);
          const seconds = Math.max(0.001, (now.at - last.at) / 1000);
          kbps = Math.round(((now.bytesIn - last.bytesIn) * 8) / 1000 / seconds);
          sentKbps = Math.round(((now.bytesOut - last.bytesOut) * 8) / 1000 / seconds);
        }
        const connected = peer.pc.connectionState === "connected";
        const quality = connected ? classifyQuality({ loss, rtt }) : peer.pc.connectionState === "failed" ? "poor" : "unknown";
        peers[member] = { quality, loss, rtt, kbps, audioLevel };
        const mine = connected ? classifyQuality({ loss: sentLoss, rtt }) : "unknown";
        if (WORSE[mine] > WORSE[self.quality]) self.quality = mine;
        if (rtt !== null) self.rtt = Math.max(self.rtt || 0, rtt);
        if (sentLoss !== null) self.loss = Math.max(self.loss || 0, sentLoss);
        self.kbps += sentKbps;
      }),
    );
    return { peers, self };
  }
}
