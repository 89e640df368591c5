// Media transport: one RTCPeerConnection per peer (a full mesh), set up with "perfect negotiation"
// over the server's signal.description / signal.candidate frames. The UI only sees
// addPeer/removePeer/setLocalStream and the onRemoteStream callback, so an SFU transport can
// replace this module later without touching room.js.
//
// Who offers first: the member whose connection is newer (it just arrived or reconnected) calls
// connectTo() for everyone already in the room; the others answer. Glare is still handled by the
// `polite` role the server stamps on every relayed frame.

export class MeshTransport {
  /**
   * @param {{signal: (type: string, data: object, to: string) => void,
   *          onRemoteStream: (member: string, stream: MediaStream) => void,
   *          onPeerState: (member: string, state: string) => void}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.peers = new Map();
    this.iceServers = [];
    this.localStream = null;
  }

  setIceServers(servers) {
    this.iceServers = (servers || []).map((server) => {
      const entry = { urls: server.urls };
      if (server.username) entry.username = server.username;
      if (server.credential) entry.credential = server.credential;
      return entry;
    });
  }

  setLocalStream(stream) {
    this.localStream = stream;
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
    peer = { pc, polite: true, makingOffer: false, ignoreOffer: false, queue: Promise.resolve(), stream: null };
    this.peers.set(member, peer);

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
      if (pc.connectionState === "failed") pc.restartIce();
    });
    return peer;
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
    this.addLocalTracks(peer);
    if (!this.localStream || this.localStream.getTracks().length === 0) {
      // Nothing to send: still ask to receive their audio and video.
      peer.pc.addTransceiver("audio", { direction: "recvonly" });
      peer.pc.addTransceiver("video", { direction: "recvonly" });
    }
  }

  /** A relayed frame from `from`: handled in arrival order per peer. */
  handleSignal(frame) {
    const member = frame.from;
    if (!member) return;
    const peer = this.peer(member);
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
  }
}
