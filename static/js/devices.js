// This person's own camera, microphone and speaker: opening them, switching between devices,
// the microphone level, and small sounds. No network here; rtc.js sends what this module opens.

// Modest video: a group mesh sends one copy per peer, and many people join from phones.
const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15, max: 24 } };

export const supportsSpeakerChoice = typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;

function denied(error) {
  return Boolean(error) && (error.name === "NotAllowedError" || error.name === "SecurityError");
}

export class LocalMedia {
  constructor() {
    this.stream = new MediaStream();
    this.error = null; // "denied" | "missing" | "unsupported" | null
    this.cameraId = "";
    this.micId = "";
    this.speakerId = "";
    this.analyser = null;
    this.context = null;
    this.samples = null;
  }

  get audioTrack() {
    return this.stream.getAudioTracks()[0] || null;
  }

  get videoTrack() {
    return this.stream.getVideoTracks()[0] || null;
  }

  /** Ask for both devices, then each alone: a missing camera must not cost the microphone. */
  async open() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.error = "unsupported";
      return this;
    }
    let lastError = null;
    for (const constraints of [
      { audio: true, video: VIDEO },
      { audio: true, video: false },
      { audio: false, video: VIDEO },
    ]) {
      try {
        this.stream = await navigator.mediaDevices.getUserMedia(constraints);
        lastError = null;
        break;
      } catch (error) {
        lastError = error;
        // Permission refused covers both devices: asking again for one of them only nags.
        if (denied(error)) break;
      }
    }
    if (!this.audioTrack && !this.videoTrack) this.error = denied(lastError) ? "denied" : "missing";
    this.rememberIds();
    this.startAnalyser();
    return this;
  }

  rememberIds() {
    const id = (track) => (track && track.getSettings ? track.getSettings().deviceId || "" : "");
    this.cameraId = id(this.videoTrack);
    this.micId = id(this.audioTrack);
  }

  /** Devices by kind, with labels (only after permission was granted). */
  async devices() {
    const out = { audioinput: [], videoinput: [], audiooutput: [] };
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return out;
    for (const device of await navigator.mediaDevices.enumerateDevices()) {
      if (out[device.kind] && device.deviceId) out[device.kind].push(device);
    }
    return out;
  }

  /**
   * Use another camera ("videoinput") or microphone ("audioinput"). Returns the new track (the
   * caller hands it to the transport); the old one is stopped. Keeps the on/off state.
   */
  async use(kind, deviceId) {
    const audio = kind === "audioinput";
    const old = audio ? this.audioTrack : this.videoTrack;
    const constraints = audio ? { audio: { deviceId: { exact: deviceId } } } : { video: { ...VIDEO, deviceId: { exact: deviceId } } };
    const fresh = await navigator.mediaDevices.getUserMedia(constraints);
    const track = audio ? fresh.getAudioTracks()[0] : fresh.getVideoTracks()[0];
    if (old) {
      track.enabled = old.enabled;
      this.stream.removeTrack(old);
      old.stop();
    }
    this.stream.addTrack(track);
    this.rememberIds();
    if (audio) this.startAnalyser();
    return track;
  }

  /** Play remote audio (and a test sound) through the chosen output, where the browser allows it. */
  async setSpeaker(deviceId, elements) {
    this.speakerId = deviceId;
    if (!supportsSpeakerChoice) return;
    await Promise.allSettled([...elements].map((element) => element.setSinkId(deviceId)));
  }

  startAnalyser() {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass || !this.audioTrack) return;
    if (!this.context) this.context = new AudioContextClass();
    if (this.source) this.source.disconnect();
    this.source = this.context.createMediaStreamSource(new MediaStream([this.audioTrack]));
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 512;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
  }

  /** The microphone's level now, 0..1 (0 while it is off). */
  level() {
    const track = this.audioTrack;
    if (!this.analyser || !track || !track.enabled) return 0;
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    return Math.min(1, Math.sqrt(sum / this.samples.length) * 4);
  }

  /** Call from a click or key press: browsers start audio only after a gesture. */
  wake() {
    if (this.context && this.context.state === "suspended") this.context.resume().catch(() => {});
  }

  stop() {
    for (const track of this.stream.getTracks()) track.stop();
    if (this.context) this.context.close().catch(() => {});
    this.context = null;
    this.analyser = null;
  }
}

/**
 * A short, soft two-note chime made with WebAudio (no sound file to fetch), for the therapist
 * when someone knocks or starts waiting. Plays through the chosen speaker where supported.
 */
export class Chime {
  constructor() {
    this.context = null;
    this.enabled = true;
  }

  /** Call from a user gesture (the Join click), so the browser lets it play later. */
  prepare(speakerId = "") {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass) return;
    if (!this.context) this.context = new AudioContextClass();
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
    if (speakerId && this.context.setSinkId) this.context.setSinkId(speakerId).catch(() => {});
  }

  play() {
    if (!this.enabled || !this.context) return false;
    const ctx = this.context;
    const start = ctx.currentTime + 0.02;
    for (const [offset, frequency] of [
      [0, 660],
      [0.18, 880],
    ]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + offset);
      gain.gain.exponentialRampToValueAtTime(0.18, start + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start + offset);
      osc.stop(start + offset + 0.4);
    }
    return true;
  }
}
