// The page's logic: live transcription over the websocket /v1/stream, files through POST /transcribe,
// with the model and decoding options of the options panel. Exports: export.js.
"use strict";

const $ = (id) => document.getElementById(id);
const CHUNK_SECONDS = 0.1; // audio per websocket message
const ENDPOINTING_MS = 800; // a pause this long ends a segment
const KEY_STORE = "w2v-asr-api-key";

let server = null; // /web/config.json: ready, model, models, rates, sample_rate, default_decoder, api_keys
let live = null; // the running live session
let chosenFile = null;
// The live transcript, kept across Start and Stop until Clear: segments with times from the first
// Start (each session's times follow the audio sent before it).
const transcript = { live: [], file: [], fileExtra: {} };
let liveOffset = 0; // seconds of audio sent by the sessions before this one

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
  $("key-panel").hidden = !server.api_keys; // the key card only where keys are on
  const picker = $("model");
  picker.replaceChildren(...server.models.map((name) => new Option(name, name, name === server.model)));
  picker.value = server.model;
  $("start").disabled = false;
  $("transcribe").disabled = chosenFile === null;
}

// -- options: model and decoding, for streams and files alike -------------------------------------

function listed(id) {
  return $(id).value.split(",").map((item) => item.trim()).filter((item) => item);
}

function decodeOptions() {
  const options = {};
  if ($("model").value) options.model = $("model").value;
  if ($("decoder").value) options.decoder = $("decoder").value;
  const hotwords = listed("hotwords");
  const phrases = listed("phrases");
  if (hotwords.length) options.hotwords = hotwords;
  if (phrases.length) options.phrases = phrases;
  if ($("alternatives").value) options.alternatives = Number($("alternatives").value);
  return options;
}

function modelRate() {
  return (server.rates && server.rates[$("model").value]) || server.sample_rate;
}

function setOptionsLocked(locked) {
  for (const id of ["model", "decoder", "alternatives", "hotwords", "phrases"]) $(id).disabled = locked;
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
  $("partial").textContent = "";
  setOptionsLocked(true);
  setLiveState("starting", "opening the microphone…");
  const rate = modelRate();
  const session = { socket: null, context: null, media: null, node: null, queue: [], sentSeconds: 0,
                    error: false, stopping: false, rate, offset: liveOffset, level: 0 };
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
    setOptionsLocked(false);
    $("start").disabled = false;
    live = null;
    return;
  }
  // Capture starts at once; chunks wait in the queue until the socket is open.
  const source = session.context.createMediaStreamSource(session.media);
  session.node = new AudioWorkletNode(session.context, "capture", {
    processorOptions: { targetRate: rate, chunkSeconds: CHUNK_SECONDS },
  });
  session.node.port.onmessage = (event) => onCaptured(session, event.data);
  source.connect(session.node);
  session.source = source;

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/v1/stream`);
  session.socket = socket;
  socket.onopen = () => {
    const config = { sample_rate: rate, encoding: "pcm_s16le", interim_results: true,
                     endpointing: ENDPOINTING_MS, ...decodeOptions() };
    if (apiKey()) config.api_key = apiKey();
    socket.send(JSON.stringify(config));
    for (const item of session.queue) socket.send(item);
    session.queue = [];
    setLiveState("listening", "listening…");
    $("recording").hidden = false;
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
  session.sentSeconds += data.pcm.byteLength / 2 / session.rate;
  $("live").dataset.sentSeconds = session.sentSeconds.toFixed(2);
  showLevel(session, data.pcm);
  if (socket && socket.readyState === WebSocket.OPEN && !session.stopping) {
    $("live-state").textContent = `listening… ${session.sentSeconds.toFixed(1)} s sent`;
  }
}

// The meter shows the chunk's peak, falling back slowly (as level meters do) so that speech reads steadily.
function showLevel(session, pcm) {
  const samples = new Int16Array(pcm);
  let peak = 0;
  for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
  session.level = Math.max(peak / 32768, session.level * 0.7);
  $("level").value = session.level;
  $("level").dataset.peak = Math.max(Number($("level").dataset.peak || 0), peak / 32768).toFixed(3);
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
    if (message.text) {
      const segment = shifted(message, session.offset);
      transcript.live.push(segment);
      $("finals").append(segmentItem(segment));
      setTools("live");
    }
  } else if (message.type === "error") {
    session.error = true;
    showError($("live-error"), describe(message.error, message.message));
  }
}

function shifted(final, offset) {
  const move = (item) => ({ ...item, start: round3(item.start + offset), end: round3(item.end + offset) });
  const segment = { ...move(final), text: final.text, words: final.words.map(move) };
  delete segment.type;
  return segment;
}

function round3(seconds) {
  return Math.round(seconds * 1000) / 1000;
}

function wordSpans(words, into) {
  words.forEach((word, index) => {
    if (index > 0) into.append(" ");
    const span = document.createElement("span");
    span.className = word.low_confidence ? "word low" : "word";
    span.textContent = word.word;
    const unsure = word.low_confidence ? " (low)" : "";
    span.title = `${word.start.toFixed(2)}–${word.end.toFixed(2)} s, confidence ${word.confidence.toFixed(2)}${unsure}`;
    into.append(span);
  });
}

function alternativesList(alternatives) {
  const list = document.createElement("ol");
  list.className = "alternatives";
  for (const alternative of alternatives.slice(1)) { // the first is the transcript itself
    const item = document.createElement("li");
    item.textContent = alternative.text || "(nothing)";
    item.title = `score ${alternative.score.toFixed(2)}`;
    list.append(item);
  }
  return list;
}

function segmentItem(final) {
  const item = document.createElement("li");
  item.className = "segment";
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(final.start)}–${clock(final.end)}`;
  const text = document.createElement("span");
  text.className = "text";
  wordSpans(final.words, text);
  if (!final.words.length) text.textContent = final.text;
  item.append(time, text);
  if (final.alternatives && final.alternatives.length > 1) item.append(alternativesList(final.alternatives));
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
  $("recording").hidden = true;
  $("level").value = 0;
  liveOffset = session.offset + session.sentSeconds;
  setLiveState("stopped", session.error ? "stopped by an error" : "stopped");
  setOptionsLocked(false);
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
  for (const [name, value] of Object.entries(decodeOptions())) {
    for (const item of [].concat(value)) form.append(name, String(item));
  }
  const headers = apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
  $("file").dataset.state = "working";
  $("transcribe").disabled = true;
  $("file-state").textContent = `transcribing ${chosenFile.name}…`;
  $("file-text").textContent = "";
  $("file-alternatives").hidden = true;
  $("words").hidden = true;
  transcript.file = [];
  setTools("file");
  try {
    const response = await fetch("/transcribe", { method: "POST", body: form, headers });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = body && body.error ? body.error : {};
      showError(box, describe(error.code, error.message || `HTTP ${response.status}`));
      $("file-state").textContent = chosenFile.name;
      return;
    }
    $("file-text").replaceChildren();
    wordSpans(body.words, $("file-text"));
    if (!body.words.length) $("file-text").textContent = body.text;
    const alternatives = body.alternatives || [];
    $("file-alternatives").replaceChildren(...alternativesList(alternatives).children);
    $("file-alternatives").hidden = alternatives.length < 2;
    $("file-state").textContent = `${chosenFile.name}: ${body.duration.toFixed(2)} s, ${body.decoder} decoder` +
      ` (${body.model})`;
    transcript.file = wordSegments(body.words);
    transcript.fileExtra = { file: chosenFile.name, model: body.model, decoder: body.decoder, duration: body.duration };
    setTools("file");
    const rows = body.words.map((word) => {
      const row = document.createElement("tr");
      if (word.low_confidence) row.className = "low";
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

// -- copy, download, clear -----------------------------------------------------------------------

function setTools(which) {
  const empty = transcript[which].length === 0;
  for (const button of document.querySelectorAll(`.tools[data-for="${which}"] button`)) button.disabled = empty;
  if (which === "live") $("clear").disabled = empty;
}

async function useTool(which, action, tools) {
  const segments = transcript[which];
  const extra = which === "file" ? transcript.fileExtra : { model: $("model").value };
  const state = tools.querySelector(".tool-state");
  if (action === "copy") {
    const text = renderTranscript(segments, "txt").trim();
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) { // no clipboard permission (an insecure page): the older way
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    state.textContent = `copied ${text.length} characters`;
    return;
  }
  const name = which === "file" ? transcript.fileExtra.file.replace(/\.[^.]*$/, "") : "transcript";
  downloadTranscript(segments, action, name, extra);
  state.textContent = `saved ${name}.${action}`;
}

function clearLive() {
  transcript.live = [];
  liveOffset = live ? liveOffset : 0;
  $("finals").replaceChildren();
  $("partial").textContent = "";
  setTools("live");
  for (const tools of document.querySelectorAll(".tools .tool-state")) tools.textContent = "";
}

// -- wiring --------------------------------------------------------------------------------------

function setUp() {
  const stored = sessionStorage.getItem(KEY_STORE);
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("input", () => sessionStorage.setItem(KEY_STORE, apiKey()));
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("transcribe").addEventListener("click", transcribeFile);
  $("clear").addEventListener("click", clearLive);
  for (const tools of document.querySelectorAll(".tools")) {
    tools.addEventListener("click", (event) => {
      const action = event.target.dataset && event.target.dataset.action;
      if (action) useTool(tools.dataset.for, action, tools);
    });
  }
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
