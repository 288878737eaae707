// The page's logic: live transcription over the websocket /v1/stream, files through POST /transcribe.
"use strict";

const $ = (id) => document.getElementById(id);
const CHUNK_SECONDS = 0.1; // audio per websocket message
const ENDPOINTING_MS = 800; // a pause this long ends a segment
const KEY_STORE = "w2v-asr-api-key";

let server = null; // /web/config.json: ready, model, sample_rate, default_decoder, api_keys
let live = null; // the running live session
let chosenFile = null;

// -- words for what the server says --------------------------------------------------------------

const LEADS = {
  invalid_api_key: "The server refused the API key.",
  too_many_streams: "The server is busy: it has as many live streams as it takes.",
  model_not_ready: "The model is still loading.",
  overloaded: "The server is busy.",
  decoder_unavailable: "The server's decoder is busy.",
};

function describe(code, message) {
  const lead = LEADS[code] || "The server reported an error.";
  return message ? `${lead} ${capitalise(message)}.`.replace(/\.\.$/, ".") : lead;
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function showError(box, text) {
  box.textContent = text;
  box.hidden = false;
}

function clearError(box) {
  box.textContent = "";
  box.hidden = true;
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function apiKey() {
  return $("api-key").value.trim();
}

// -- the server's model ------------------------------------------------------------------------

async function loadServer() {
  try {
    const response = await fetch("/web/config.json", { cache: "no-store" });
    server = await response.json();
  } catch (error) {
    $("status").textContent = "The server cannot be reached; retrying…";
    setTimeout(loadServer, 2000);
    return;
  }
  if (!server.ready) {
    $("status").textContent = "The model is loading; this page will be ready in a moment…";
    setTimeout(loadServer, 2000);
    return;
  }
  const keys = server.api_keys ? "this server needs an API key" : "no API key needed";
  $("status").textContent = `Model ${server.model}, ${server.sample_rate / 1000} kHz audio; ${keys}.`;
  $("key-panel").classList.toggle("required", server.api_keys);
  $("start").disabled = false;
  $("transcribe").disabled = chosenFile === null;
}

// -- live: microphone -> AudioWorklet (mono, model's rate, 16-bit) -> /v1/stream -----------------

function setLiveState(state, text) {
  $("live").dataset.state = state;
  $("live-state").textContent = text || state;
}

async function start() {
  const box = $("live-error");
  clearError(box);
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError(box, "Browsers give the microphone only to secure pages: open this page as http://localhost:PORT " +
      "(e.g. through an SSH tunnel) or over HTTPS.");
    return;
  }
  $("start").disabled = true;
  $("finals").replaceChildren();
  $("partial").textContent = "";
  setLiveState("starting", "opening the microphone…");
  const session = { socket: null, context: null, media: null, node: null, queue: [], sentSeconds: 0,
                    error: false, stopping: false };
  live = session;
  try {
    session.context = new AudioContext();
    await session.context.audioWorklet.addModule("/web/capture-worklet.js");
    session.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    showError(box, `The microphone could not be opened: ${error.message || error.name}.`);
    release(session);
    setLiveState("idle");
    $("start").disabled = false;
    live = null;
    return;
  }
  // Capture starts at once; chunks wait in the queue until the socket is open.
  const source = session.context.createMediaStreamSource(session.media);
  session.node = new AudioWorkletNode(session.context, "capture", {
    processorOptions: { targetRate: server.sample_rate, chunkSeconds: CHUNK_SECONDS },
  });
  session.node.port.onmessage = (event) => onCaptured(session, event.data);
  source.connect(session.node);
  session.source = source;

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/v1/stream`);
  session.socket = socket;
  socket.onopen = () => {
    const config = { sample_rate: server.sample_rate, encoding: "pcm_s16le", interim_results: true,
                     endpointing: ENDPOINTING_MS };
    if (apiKey()) config.api_key = apiKey();
    socket.send(JSON.stringify(config));
    for (const item of session.queue) socket.send(item);
    session.queue = [];
    setLiveState("listening", "listening…");
    $("stop").disabled = false;
  };
  socket.onmessage = (event) => onMessage(session, JSON.parse(event.data));
  socket.onclose = (event) => onClosed(session, event);
}

function onCaptured(session, data) {
  const socket = session.socket;
  if (data.done) { // the worklet has sent its last samples: end the stream
    send(session, JSON.stringify({ type: "eof" }));
    return;
  }
  send(session, data.pcm);
  session.sentSeconds += data.pcm.byteLength / 2 / server.sample_rate;
  $("live").dataset.sentSeconds = session.sentSeconds.toFixed(2);
  if (socket && socket.readyState === WebSocket.OPEN && !session.stopping) {
    $("live-state").textContent = `listening… ${session.sentSeconds.toFixed(1)} s sent`;
  }
}

function send(session, message) {
  const socket = session.socket;
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(message);
  else if (socket && socket.readyState === WebSocket.CONNECTING) session.queue.push(message);
}

function onMessage(session, message) {
  if (message.type === "partial") {
    $("partial").textContent = message.text;
  } else if (message.type === "final") {
    $("partial").textContent = "";
    if (message.text) $("finals").append(segmentItem(message));
  } else if (message.type === "error") {
    session.error = true;
    showError($("live-error"), describe(message.error, message.message));
  }
}

function segmentItem(final) {
  const item = document.createElement("li");
  item.className = "segment";
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(final.start)}–${clock(final.end)}`;
  const text = document.createElement("span");
  text.className = "text";
  final.words.forEach((word, index) => {
    if (index > 0) text.append(" ");
    const span = document.createElement("span");
    span.className = "word";
    span.textContent = word.word;
    span.title = `${word.start.toFixed(2)}–${word.end.toFixed(2)} s, confidence ${word.confidence.toFixed(2)}`;
    text.append(span);
  });
  if (!final.words.length) text.textContent = final.text;
  item.append(time, text);
  return item;
}

function stop() {
  const session = live;
  if (!session || session.stopping) return;
  session.stopping = true;
  $("stop").disabled = true;
  setLiveState("finishing", "finishing the last segment…");
  session.node.port.postMessage("flush"); // the worklet answers with its last chunk, then {done}
}

function onClosed(session, event) {
  release(session);
  if (!session.error && event.code !== 1000) {
    const why = event.reason ? `: ${event.reason}` : "";
    showError($("live-error"), `The connection to the server closed (code ${event.code})${why}.`);
  }
  $("partial").textContent = "";
  setLiveState("stopped", session.error ? "stopped by an error" : "stopped");
  $("stop").disabled = true;
  $("start").disabled = false;
  if (live === session) live = null;
}

function release(session) {
  if (session.media) session.media.getTracks().forEach((track) => track.stop());
  if (session.source) session.source.disconnect();
  if (session.context && session.context.state !== "closed") session.context.close();
}

// -- files: POST /transcribe ---------------------------------------------------------------------

function choose(file) {
  chosenFile = file || null;
  $("file-state").textContent = chosenFile ? chosenFile.name : "";
  $("transcribe").disabled = chosenFile === null || server === null || !server.ready;
}

async function transcribeFile() {
  const box = $("file-error");
  clearError(box);
  if (!chosenFile) return;
  const form = new FormData();
  form.append("file", chosenFile);
  if ($("decoder").value) form.append("decoder", $("decoder").value);
  const headers = apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
  $("file").dataset.state = "working";
  $("transcribe").disabled = true;
  $("file-state").textContent = `transcribing ${chosenFile.name}…`;
  $("file-text").textContent = "";
  $("words").hidden = true;
  try {
    const response = await fetch("/transcribe", { method: "POST", body: form, headers });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = body && body.error ? body.error : {};
      showError(box, describe(error.code, error.message || `HTTP ${response.status}`));
      $("file-state").textContent = chosenFile.name;
      return;
    }
    $("file-text").textContent = body.text;
    $("file-state").textContent = `${chosenFile.name}: ${body.duration.toFixed(2)} s, ${body.decoder} decoder`;
    const rows = body.words.map((word) => {
      const row = document.createElement("tr");
      for (const value of [word.word, word.start.toFixed(2), word.end.toFixed(2), word.confidence.toFixed(2)]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    });
    $("words").querySelector("tbody").replaceChildren(...rows);
    $("words").hidden = rows.length === 0;
  } catch (error) {
    showError(box, `The server cannot be reached: ${error.message}.`);
  } finally {
    $("file").dataset.state = "done";
    $("transcribe").disabled = chosenFile === null;
  }
}

// -- wiring --------------------------------------------------------------------------------------

function setUp() {
  const stored = sessionStorage.getItem(KEY_STORE);
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("input", () => sessionStorage.setItem(KEY_STORE, apiKey()));
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("transcribe").addEventListener("click", transcribeFile);
  $("file-input").addEventListener("change", (event) => choose(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  loadServer();
}

setUp();
