// Parley browser demo: microphone -> WebRTC -> parley serve; agent audio + events back.
// Plain JS, no dependencies. State is mirrored on window.parley for tests and debugging.
"use strict";

const $ = (id) => document.getElementById(id);
const KNOWN_STAGES = ["vad_endpoint_ms", "asr_ms", "llm_first_token_ms", "tts_first_audio_ms"];
const AGENT_ON_LEVEL = 0.01; // RMS above this: agent audio is audible

const parley = (window.parley = {
  connected: false, events: [], error: null, agentPeak: 0, agentFrames: 0, micPeak: 0,
  inbound: null, session: null, echoHint: null,
});

let pc = null, dc = null, micStream = null, audioCtx = null, timer = null, statsTimer = null;
let micAnalyser = null, agentAnalyser = null;
let agentLine = null;           // <p> of the agent's reply being generated
const turns = new Map();        // turn -> {row, turnEndAt, vadEndpoint, heard}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = "status" + (isError ? " error" : "");
  if (isError) parley.error = text;
}

function addLine(cls, text) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  $("log").appendChild(p);
  $("log").scrollTop = $("log").scrollHeight;
  return p;
}

function rms(analyser) {
  const buf = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(buf);
  let s = 0;
  for (const v of buf) s += v * v;
  return Math.sqrt(s / buf.length);
}

function meterWidth(level) {  // RMS -> 0..100 % on a dB scale (-60 .. 0 dBFS)
  const db = 20 * Math.log10(level + 1e-9);
  return Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
}

function tick() {
  const now = performance.now();
  if (micAnalyser) {
    const m = rms(micAnalyser);
    parley.micPeak = Math.max(parley.micPeak, m);
    $("mic-level").style.width = meterWidth(m) + "%";
  }
  if (agentAnalyser) {
    const a = rms(agentAnalyser);
    parley.agentPeak = Math.max(parley.agentPeak, a);
    $("agent-level").style.width = meterWidth(a) + "%";
    if (a > AGENT_ON_LEVEL) {
      parley.agentFrames += 1;
      for (const t of turns.values()) {
        if (t.turnEndAt !== null && t.heard === null && now > t.turnEndAt) {
          t.heard = now - t.turnEndAt + (t.vadEndpoint || 0);
          t.row.cells[7].textContent = t.heard.toFixed(0);
        }
      }
    }
  }
}

function turnRow(turn) {
  if (!turns.has(turn)) {
    const row = $("latency").tBodies[0].insertRow(-1);
    for (let i = 0; i < 8; i++) row.insertCell(-1).textContent = i === 0 ? String(turn) : "";
    turns.set(turn, { row, turnEndAt: null, vadEndpoint: null, heard: null });
  }
  return turns.get(turn);
}

function onEvent(e) {
  parley.events.push(e);
  switch (e.type) {
    case "ready":
      parley.session = e.session;
      addLine("sys", `connected to session ${e.session} (engine ${e.engine})`);
      break;
    case "vad":
      $("vad").textContent = e.state;
      $("vad").className = "vad " + e.state;
      break;
    case "turn_end":
      turnRow(e.turn).turnEndAt = performance.now();
      break;
    case "user_transcript":
      addLine("user", e.text || "(nothing recognized)");
      agentLine = null;
      break;
    case "agent_text":
      if (!agentLine) agentLine = addLine("agent", "");
      agentLine.textContent += e.text;
      break;
    case "agent_done":
      if (agentLine) {
        agentLine.textContent = e.text || "(nothing played)";
        if (e.interrupted) agentLine.classList.add("interrupted");
      }
      agentLine = null;
      if (e.gap_ms > 0) addLine("sys", `the engine fell behind real time: ${e.gap_ms} ms of gaps in this reply`);
      break;
    case "barge_in":
      addLine("sys", `you interrupted the agent after ${(e.played_ms / 1000).toFixed(1)} s`);
      break;
    case "latency": {
      const t = turnRow(e.turn), st = e.stages || {};
      t.vadEndpoint = st.vad_endpoint_ms || 0;
      const c = t.row.cells;
      c[1].textContent = e.total_ms.toFixed(0);
      KNOWN_STAGES.forEach((k, i) => { c[2 + i].textContent = k in st ? st[k].toFixed(0) : ""; });
      c[6].textContent = Object.entries(st).filter(([k]) => !KNOWN_STAGES.includes(k))
        .map(([k, v]) => `${k.replace(/_ms$/, "")} ${v.toFixed(0)}`).join(", ");
      break;
    }
    case "error":
      addLine("sys", "server: " + e.message);
      break;
  }
}

// What the browser says of its echo path, for the server's echo guard (POST /offer "echo_hint"):
// "cancelled" when echo cancellation is on (the guard then starts low, so the user can interrupt
// the first reply early), else "unknown" (a loudspeaker next to the microphone is assumed).
function echoHint(track) {
  const ec = track && track.getSettings ? track.getSettings().echoCancellation : undefined;
  return ec === true || ec === "all" || ec === "remote-only" ? "cancelled" : "unknown";
}

function waitIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

async function pollStats() {
  if (!pc) return;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      parley.inbound = { packets: r.packetsReceived, energy: r.totalAudioEnergy || 0,
                         level: r.audioLevel || 0 };
    }
  });
}

async function connect() {
  $("connect").disabled = true;
  setStatus("asking for the microphone ...");
  parley.error = null;
  try {
    if (!navigator.mediaDevices || !window.isSecureContext) {
      throw new Error("the microphone needs a secure page: open it as http://127.0.0.1 or localhost, " +
                      "or serve it over https");
    }
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    parley.echoHint = echoHint(micStream.getAudioTracks()[0]);
    audioCtx = new AudioContext();
    micAnalyser = audioCtx.createAnalyser();
    micAnalyser.fftSize = 1024;
    audioCtx.createMediaStreamSource(micStream).connect(micAnalyser);

    pc = new RTCPeerConnection({ iceServers: [] }); // no STUN: nothing leaves this network
    dc = pc.createDataChannel("events");
    dc.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (err) { console.warn(err); } };
    micStream.getAudioTracks().forEach((t) => pc.addTrack(t, micStream));
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      $("agent-audio").srcObject = stream;
      $("agent-audio").play().catch(() => {});
      agentAnalyser = audioCtx.createAnalyser();
      agentAnalyser.fftSize = 1024;
      audioCtx.createMediaStreamSource(stream).connect(agentAnalyser);
    };
    pc.onconnectionstatechange = () => {
      const s = pc ? pc.connectionState : "closed";
      parley.connected = s === "connected";
      if (s === "connected") setStatus("connected: talk now");
      else if (s === "failed") { setStatus("connection failed", true); disconnect(); }
    };

    setStatus("connecting ...");
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc, 3000);
    const resp = await fetch("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type,
                             echo_hint: parley.echoHint }),
    });
    const answer = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (!resp.ok) throw new Error(answer.error || `HTTP ${resp.status}`);
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    timer = setInterval(tick, 20);
    statsTimer = setInterval(pollStats, 250);
    $("disconnect").disabled = false;
  } catch (err) {
    setStatus("error: " + (err.message || err), true);
    disconnect(true);
  }
}

function disconnect(keepStatus) {
  clearInterval(timer); clearInterval(statsTimer);
  if (pc) pc.close();
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  if (audioCtx) audioCtx.close();
  pc = dc = micStream = audioCtx = micAnalyser = agentAnalyser = null;
  parley.connected = false;
  $("mic-level").style.width = "0%";
  $("agent-level").style.width = "0%";
  $("vad").textContent = "quiet"; $("vad").className = "vad quiet";
  $("connect").disabled = false;
  $("disconnect").disabled = true;
  if (keepStatus !== true) setStatus("disconnected");
}

$("connect").addEventListener("click", connect);
$("disconnect").addEventListener("click", () => disconnect());
