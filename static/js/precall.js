// The pre-call check: offer this person's camera and microphone to the server's probe
// (media/precall.py), answer its pings on a data channel, and return its report: what really
// arrived (resolution, frame rate, bitrate, loss, round trip) and a plain verdict. With TURN
// configured, a second pass offers relay candidates only, to tell whether the relay path works.

const URL_PATH = "/media/precall/";

async function getJson(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

function gathered(pc, ms) {
  // No trickle here: the offer goes out once, with every candidate in it.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

async function onePass(start, stream, relay) {
  const pc = new RTCPeerConnection({ iceServers: start.iceServers, iceTransportPolicy: relay ? "relay" : "all" });
  const tracks = stream ? stream.getTracks().filter((t) => t.readyState === "live") : [];
  for (const track of tracks) pc.addTrack(track.clone());
  const channel = pc.createDataChannel("precall");
  const report = new Promise((resolve) => {
    channel.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "ping") channel.send(JSON.stringify({ type: "pong", t: message.t }));
      else if (message.type === "report") resolve(message);
    });
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 3000);
    const response = await fetch(URL_PATH, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": start.csrfToken },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, relay }),
    });
    const answer = await getJson(response);
    if (!response.ok) return { code: answer.error || "precall.error", text: answer.detail || "The check could not start." };
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    // The server reports even when nothing connects; the timeout only covers a lost report.
    const timeout = new Promise((resolve) =>
      setTimeout(() => resolve({ code: "precall.blocked", text: "Cannot connect: your network blocks the connection to our media servers." }), 20000),
    );
    return await Promise.race([report, timeout]);
  } finally {
    for (const sender of pc.getSenders()) if (sender.track) sender.track.stop();
    pc.close();
  }
}

export async function runPrecall(stream) {
  const response = await fetch(URL_PATH, { credentials: "same-origin" });
  if (!response.ok) return { direct: { code: "precall.error", text: "The check is not available right now." } };
  const start = await getJson(response);
  const direct = await onePass(start, stream, false);
  const relay = start.relayAvailable && direct.code !== "precall.rate_limited" ? await onePass(start, stream, true) : null;
  return { direct, relay };
}

export function describe(report) {
  const d = report.details;
  if (!d || !d.fps) return report.text;
  const parts = [];
  if (d.height) parts.push(`${d.width}×${d.height} at ${d.fps} frames a second`);
  if (d.kbps) parts.push(`${d.kbps} kbit/s`);
  if (d.rtt_ms !== null && d.rtt_ms !== undefined) parts.push(`${d.rtt_ms} ms round trip`);
  parts.push(`${d.loss_percent} % loss`);
  return `${report.text} (${parts.join(", ")})`;
}
