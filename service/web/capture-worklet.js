// The microphone, mixed to mono and resampled to the model's rate, as 16-bit PCM chunks.
//
// Runs on the audio thread (AudioWorklet). Resampling is band-limited interpolation: a windowed
// sinc whose cutoff is the lower of the two Nyquist frequencies, so downsampling a 48 kHz
// microphone to 16 kHz does not fold the 8-24 kHz band onto speech.
//
// Messages out: {pcm: ArrayBuffer} every `chunkSeconds` of output, and {done: true} after "flush".

const ZERO_CROSSINGS = 16; // the kernel's half-width, in periods of the cutoff frequency
const STEPS = 512; // kernel values per input sample (linear interpolation between them)
const CUTOFF = 0.95; // of the lower Nyquist frequency: a little room for the transition band

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, chunkSeconds } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    this.cutoff = CUTOFF * Math.min(1, targetRate / sampleRate); // cycles per input sample, times 2
    this.half = Math.ceil(ZERO_CROSSINGS / this.cutoff); // input samples each side of an output
    this.kernel = this.makeKernel();
    this.history = new Float32Array(this.half); // zeros before the first sample
    this.position = this.half; // of the next output, in input samples from history[0]
    this.chunk = new Int16Array(Math.max(1, Math.round(targetRate * chunkSeconds)));
    this.filled = 0;
    this.done = false;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  makeKernel() {
    const kernel = new Float32Array(this.half * STEPS + 2);
    for (let index = 0; index < kernel.length; index++) {
      const t = index / STEPS; // distance in input samples
      const x = Math.PI * this.cutoff * t;
      const sinc = t === 0 ? 1 : Math.sin(x) / x;
      const u = Math.min(1, t / this.half); // Blackman window over [-half, half]
      const window = 0.42 + 0.5 * Math.cos(Math.PI * u) + 0.08 * Math.cos(2 * Math.PI * u);
      kernel[index] = this.cutoff * sinc * window;
    }
    return kernel;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!this.done && channels && channels.length) this.push(mono(channels));
    return !this.done;
  }

  push(samples) {
    const joined = new Float32Array(this.history.length + samples.length);
    joined.set(this.history);
    joined.set(samples, this.history.length);
    this.history = joined;
    const last = joined.length - 1;
    while (this.position + this.half <= last) {
      this.emit(this.interpolate(this.position));
      this.position += this.step;
    }
    const keep = Math.max(0, Math.floor(this.position) - this.half); // what later outputs no longer need
    this.history = this.history.slice(keep);
    this.position -= keep;
  }

  interpolate(position) {
    const first = Math.ceil(position - this.half);
    const end = Math.floor(position + this.half);
    let sum = 0;
    for (let k = first; k <= end; k++) {
      const at = Math.abs(position - k) * STEPS;
      const index = Math.floor(at);
      const weight = this.kernel[index] + (this.kernel[index + 1] - this.kernel[index]) * (at - index);
      sum += this.history[k] * weight;
    }
    return sum;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = Math.round(clipped * 32767);
    if (this.filled === this.chunk.length) this.send();
  }

  send() {
    if (this.filled === 0) return;
    const pcm = this.chunk.slice(0, this.filled).buffer;
    this.port.postMessage({ pcm }, [pcm]);
    this.filled = 0;
  }

  flush() {
    if (this.done) return;
    this.push(new Float32Array(this.half)); // zeros after the last sample: its outputs can be made
    this.send();
    this.done = true;
    this.port.postMessage({ done: true });
  }
}

function mono(channels) {
  if (channels.length === 1) return channels[0];
  const mixed = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mixed.length; i++) mixed[i] += channel[i] / channels.length;
  }
  return mixed;
}

registerProcessor("capture", Capture);
