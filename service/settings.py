"""Server settings: every option from the command line or the environment (`ASR_*`), and the
models they name (`ModelSpec`: a name, what to load, its language model, its weights and lexicon).
The settings that give requests' decoding defaults take their limits and descriptions from the
core's `DecodeOptions` (`service.options.setting`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.decoding import BEAM_WIDTH, LM_ALPHA, LM_BETA, MAX_BEAM_WIDTH
from model.package import DEFAULT_MODEL, package_lexicon, package_lm, tuned_lm_weights
from model.runtime import PROVIDERS, Provider
from model.windows import CHUNK_SECONDS, CONTEXT_SECONDS

from .cores import SessionLayout, session_layout
from .options import setting

DEFAULT_LANGUAGE = "en"  # what a model speaks unless --language says otherwise
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a model name given as NAME=PATH


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: the name requests choose it by, what to load, its language model and lexicon."""

    name: str
    reference: str  # a model folder, exported folder, Hugging Face folder or Hub id, fairseq checkpoint
    lm: Path | None
    lexicon: Path | None = None  # the words beam search stays within (`model.lexicon`)
    lm_alpha: float = LM_ALPHA  # its language model's weight
    lm_beta: float = LM_BETA  # its word insertion bonus


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASR_", protected_namespaces=())

    model: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [str(DEFAULT_MODEL)],
        description="[NAME=]PATH, repeatable (env: comma-separated): a model folder that ships (checkpoint/, "
        "onnx/, lm.arpa), an exported model folder (python -m export onnx), Hugging Face folder or Hub "
        "id, or fairseq checkpoint; non-ONNX models are exported once into cache_dir. NAME (default: "
        "the folder's name) is what requests choose it by; the first model is the default (default: "
        "the shipped digits model, models/digits)",
    )
    lm: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="[NAME=]PATH, repeatable (env: comma-separated): the KenLM language model, ARPA or binary, "
        "of model NAME (a bare PATH: the default model's) for beam search (default: the model "
        "folder's lm.arpa if it ships one; PATH `none`: no LM)",
    )
    lexicon: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="[NAME=]PATH, repeatable (env: comma-separated): the words, one per line, that beam search "
        "with model NAME (a bare PATH: the default model's) may write, unless a request gives hotwords "
        "or phrases (default: the model folder's lexicon.txt if it ships one; PATH `none`: any "
        "spelling)",
    )
    default_model: str | None = Field(
        None, description="the model that answers requests naming none (default: the first)"
    )
    model_alias: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="ALIAS=NAME, repeatable (env: comma-separated): another name requests may choose model NAME "
        "by, over HTTP and /v1/realtime alike (e.g. whisper-1=digits, for clients that send OpenAI's "
        "model names)",
    )
    language: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="[NAME=]CODE, repeatable (env: comma-separated): the language model NAME (a bare CODE: the "
        "default model's) speaks, as an ISO-639-1 code; requests naming another language get 400 "
        "(default: en for every model)",
    )
    host: str = Field("127.0.0.1", description="the address to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="the TCP port to listen on")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="the log's format, for the server's and uvicorn's lines alike: text, or json (one object a line)",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="the least severe log lines written (refused requests are info)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="web origins (https://app.example) whose pages may call the API from a "
        "browser, comma-separated; * for any; empty: none (no CORS headers)",
    )
    rate_limit_requests: float = Field(
        0.0,
        ge=0,
        description="transcription requests one API key (or, without "
        "keys, one client address) may make a minute; "
        "past it: 429 Retry-After (0: no limit)",
    )
    rate_limit_audio_seconds: float = Field(
        0.0,
        ge=0,
        description="seconds of audio one API key (or client "
        "address) may have transcribed a minute; past "
        "it: 429 Retry-After (0: no limit)",
    )
    model_name: str | None = Field(
        None, description="the name of the first model, if its --model gives none (NAME=PATH says it better)"
    )
    cache_dir: Path = Field(Path.home() / ".cache" / "w2v-asr", description="where non-ONNX models are exported to")
    provider: Provider = Field("cpu", description="onnxruntime execution provider: cpu, cuda or tensorrt")
    threads: int = Field(
        0,
        ge=0,
        description="onnxruntime threads each model's inference uses in all, shared out among its sessions "
        "(default 0: the cores this process may use, by its CPU affinity and container quota)",
    )
    sessions: int = Field(
        0,
        ge=0,
        description="onnxruntime sessions per model, each running batches from the model's one queue, so "
        "that every core works (default 0: on cpu one single-thread session per thread of --threads, "
        "which on 2 cores served 1.6-2x what one 2-thread session did for one client, 1.4-2.4x for 16; "
        "on cuda and tensorrt 1). Each holds its own copy of the weights",
    )
    wide_session: bool = Field(
        True,
        description="on cpu with several sessions, one more session with every thread of --threads, which "
        "runs a batch when it is all the work there is (the other sessions then wait for it): one client "
        "gets every core, many get a session each. It holds its own copy of the weights (the default model "
        "~6 MB, a base-sized one ~480 MB): --no-wide-session saves them",
    )
    # Batching across requests.
    max_batch_size: int = Field(
        0,
        ge=0,
        description="most utterances (or chunks of long audio) in one inference run (default 0: 1 on cpu, where "
        "a batch only adds padding and one session's wait for the slowest row: at 16 clients batches of 1 served "
        "1.17x what batches of 8 did on a base-sized model; 8 on cuda and tensorrt, where batches are the speed)",
    )
    max_batch_audio_seconds: float = Field(
        80.0,
        gt=0,
        description="audio in one inference run, padding "
        "included: what bounds inference memory (the "
        "default model takes ~7 MB per second in a run); "
        "a longer window runs alone",
    )
    inference_memory_seconds: float = Field(
        30.0,
        ge=0,
        description="audio in an inference run (batch x seconds, padding included) up to which each session "
        "keeps the run's working memory for the next (the default model: ~7 MB per second): larger runs "
        "give theirs back when they end; 0: every run does (least memory, but each run then maps fresh "
        "pages: up to 1.7x slower)",
    )
    max_wait_ms: float = Field(
        10.0,
        ge=0,
        description="the longest a batch waits for more requests after its first arrived. A request "
        "that finds the sessions idle and no others arriving runs at once; requests that queue while "
        "the sessions are busy form the next batch without waiting; a batch waits only while "
        "requests arrive faster than half a batch's inference time",
    )
    queue_capacity: int = Field(64, ge=1, description="requests waiting for or in inference before 503 Retry-After")
    # Decoding.
    decode_workers: int = Field(1, ge=1, description="worker processes for beam search")
    beam_width: int = setting(
        "beam_width", BEAM_WIDTH, "beams kept at each frame, for requests that give no beam_width"
    )
    max_beam_width: int = Field(
        256, ge=1, le=MAX_BEAM_WIDTH, description="largest beam_width a request may ask for (422 above)"
    )
    decode_queue_capacity: int = Field(
        64, ge=0, description="beam-search requests waiting for a worker before 503 Retry-After"
    )
    decode_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="longest a beam search may wait for a worker "
        "(past it: 503), and longest it may run (its "
        "worker is then restarted; 422)",
    )
    max_beam_audio_seconds: float = Field(
        600.0,
        gt=0,
        description="longest audio beam search takes (413 above: "
        "decoder=greedy takes it); with its ~50 ms "
        "a second on noise, keep it under 20 x "
        "decode_timeout_seconds",
    )
    lm_alpha: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=f"[NAME=]VALUE, repeatable (env: comma-separated): the language model weight of model NAME; a "
        f"bare VALUE: every model's (default: the model folder's lm.json with its lm.arpa, else {LM_ALPHA})",
    )
    lm_beta: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=f"[NAME=]VALUE, repeatable (env: comma-separated): the word insertion bonus of model NAME; a "
        f"bare VALUE: every model's (default: the model folder's lm.json with its lm.arpa, else {LM_BETA})",
    )
    min_confidence: float = setting(
        "min_confidence",
        more=" (every request's). Higher marks more speech the model does not know and noise, and more correct words",
    )
    # Long audio.
    chunk_seconds: float = Field(CHUNK_SECONDS, gt=0, description="audio per inference chunk")
    chunk_context_seconds: float = Field(
        CONTEXT_SECONDS, ge=0, description="context each side of a chunk, not transcribed twice"
    )
    # Limits.
    max_upload_mb: float = Field(100.0, gt=0, description="largest request body, in MiB (413 above)")
    max_audio_seconds: float = Field(3600.0, gt=0, description="longest audio one request may hold (413 above)")
    max_decoded_mb: float = Field(
        1400.0,
        gt=0,
        description="largest audio once decoded (float32, every channel, "
        "at its own rate), checked from the header before "
        "decoding; the default holds 1 h of 48 kHz stereo",
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="a request body that sends nothing for this long gets 408"
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM, how long requests in flight may take to finish"
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted bearer tokens; empty: no auth"
    )
    max_streams: int = Field(
        16,
        ge=1,
        description="websocket streams (/v1/stream and /v1/realtime together) open at once; one more is refused (1013)",
    )
    stream_max_message_bytes: int = Field(1 << 20, ge=1024, description="largest websocket message, in bytes")
    stream_idle_seconds: float = Field(
        30.0, gt=0, description="a stream that sends no audio for this long is closed (control messages do not count)"
    )
    stream_max_seconds: float = Field(3600.0, gt=0, description="longest audio one stream may send")
    stream_max_session_seconds: float = Field(
        7200.0,
        gt=0,
        description="longest a stream may stay open: its audio so far is then transcribed, and it is closed",
    )
    web_ui: bool = Field(True, description="serve the browser page at / (microphone and file transcription)")

    _models: list[ModelSpec] = PrivateAttr(default_factory=list)
    _aliases: dict[str, str] = PrivateAttr(default_factory=dict)
    _languages: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator(
        "model", "lm", "lexicon", "lm_alpha", "lm_beta", "model_alias", "language", "cors_origins", mode="before"
    )
    @classmethod
    def _listed(cls, value):
        """Repeated options, or one comma-separated value (the environment's form); empty entries
        (ASR_LM= in an env file or compose) mean the default."""
        values = value.split(",") if isinstance(value, str) else [str(item) for item in value or []]
        return [item.strip() for item in values if item.strip()]

    @field_validator("model")
    @classmethod
    def _default_model_if_none(cls, value: list[str]) -> list[str]:  # ASR_MODEL= (compose's default)
        return value or [str(DEFAULT_MODEL)]

    @field_validator("model_name", "default_model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _resolve_models(self):
        """Name each model, give each its language model, and check the names fit together."""
        specs: list[tuple[str, str]] = []
        for index, entry in enumerate(self.model):
            name, reference = _named(entry)
            if name is None:
                name = self.model_name if index == 0 and self.model_name else folder_name(reference)
            if name in (known for known, _ in specs):
                raise ValueError(f"two models are named '{name}'; name each one: --model NAME=PATH")
            specs.append((name, reference))
        names = [name for name, _ in specs]
        default = self.default_model or names[0]
        if default not in names:
            raise ValueError(f"--default-model {default}: no model is named so (models: {', '.join(names)})")
        given_lms = _per_model(self.lm, "--lm", "language models", names, default)
        lexicons = _per_model(self.lexicon, "--lexicon", "lexicons", names, default)
        folders = {name: Path(reference).expanduser() for name, reference in specs}
        lms = {name: given_lms[name] if name in given_lms else package_lm(folder) for name, folder in folders.items()}
        # A model folder's lm.json holds the weights tuned for its lm.arpa: they come with it, not with another LM.
        weights = {name: tuned_lm_weights(folder, lms[name]) or (LM_ALPHA, LM_BETA) for name, folder in folders.items()}
        alphas = _weights(self.lm_alpha, "--lm-alpha", names, {name: alpha for name, (alpha, _) in weights.items()})
        betas = _weights(self.lm_beta, "--lm-beta", names, {name: beta for name, (_, beta) in weights.items()})
        self._models = [
            ModelSpec(
                name,
                reference,
                lms[name],
                lexicons[name] if name in lexicons else package_lexicon(folders[name]),
                alphas[name],
                betas[name],
            )
            for name, reference in specs
        ]
        self._models.sort(key=lambda spec: spec.name != default)  # the default first, the others in order
        self._aliases = _aliases(self.model_alias, names)
        self._languages = {
            name: code for name, code in _per_model_values(self.language, "--language", names, default).items()
        }
        return self

    @property
    def aliases(self) -> dict[str, str]:
        """Alias -> the name of the model it stands for."""
        return self._aliases

    def language_of(self, name: str) -> str:
        """The ISO-639-1 code of the language model `name` speaks."""
        return self._languages.get(name, DEFAULT_LANGUAGE)

    @property
    def models(self) -> list[ModelSpec]:
        """Every model to serve, the default first."""
        return self._models

    @property
    def default(self) -> ModelSpec:
        """The model that answers requests naming none."""
        return self._models[0]

    @property
    def batch_size(self) -> int:
        """--max-batch-size, or the provider's default for 0."""
        return self.max_batch_size or (1 if self.provider == "cpu" else 8)

    @property
    def layout(self) -> SessionLayout:
        """Each model's inference sessions and their threads, from --sessions and --threads."""
        return session_layout(self.provider, self.sessions, self.threads, wide=self.wide_session)

    @model_validator(mode="after")
    def _beam_width_within_limit(self):
        if self.beam_width > self.max_beam_width:
            raise ValueError(f"beam_width {self.beam_width} is over max_beam_width {self.max_beam_width}")
        return self

    @field_validator("provider", mode="before")
    @classmethod
    def _known_provider(cls, value):
        if value not in PROVIDERS:
            raise ValueError(f"provider must be {', '.join(PROVIDERS[:-1])} or {PROVIDERS[-1]}")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        return [key.strip() for key in value.split(",") if key.strip()] if isinstance(value, str) else value


def _named(entry: str) -> tuple[str | None, str]:
    """NAME=PATH -> (NAME, PATH); anything else (a path, a Hub id) -> (None, entry)."""
    name, separator, rest = entry.partition("=")
    if separator and NAME.fullmatch(name.strip()):
        return name.strip(), rest.strip()
    return None, entry


def _per_model(entries: list[str], flag: str, what: str, names: list[str], default: str) -> dict[str, Path | None]:
    """[NAME=]PATH entries -> model name -> path (None for `none`); a bare PATH is the default model's."""
    chosen: dict[str, Path | None] = {}
    for entry in entries:
        name, path = _named(entry)
        if name is not None and name not in names:
            raise ValueError(f"{flag} {entry}: no model is named '{name}' (models: {', '.join(names)})")
        name = name or default
        if name in chosen:
            raise ValueError(f"two {what} for model '{name}'")
        chosen[name] = None if path.lower() == "none" else Path(path).expanduser()
    return chosen


def _weights(entries: list[str], flag: str, names: list[str], defaults: dict[str, float]) -> dict[str, float]:
    """[NAME=]VALUE entries -> model name -> value: a bare VALUE is every model's, NAME=VALUE one
    model's (whichever order they come in); a model given neither has its value in `defaults`."""
    every: float | None = None
    chosen: dict[str, float] = {}
    for entry in entries:
        name, text = _named(entry)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{flag} {entry}: {text!r} is not a number") from None
        if name is None:
            if every is not None:
                raise ValueError(f"{flag} is given for every model twice; name the model: {flag} NAME=VALUE")
            every = value
            continue
        if name not in names:
            raise ValueError(f"{flag} {entry}: no model is named '{name}' (models: {', '.join(names)})")
        if name in chosen:
            raise ValueError(f"{flag}: two values for model '{name}'")
        chosen[name] = value
    return {name: chosen.get(name, defaults[name] if every is None else every) for name in names}


def _aliases(entries: list[str], names: list[str]) -> dict[str, str]:
    """ALIAS=NAME entries -> alias -> model name; an alias may not be a model's name, nor name no model."""
    aliases: dict[str, str] = {}
    for entry in entries:
        alias, separator, name = (part.strip() for part in entry.partition("="))
        if not separator or not NAME.fullmatch(alias):
            raise ValueError(f"--model-alias {entry}: write ALIAS=NAME (an alias is letters, digits and ._-)")
        if name not in names:
            raise ValueError(f"--model-alias {entry}: no model is named '{name}' (models: {', '.join(names)})")
        if alias in names or alias in aliases:
            raise ValueError(f"--model-alias {entry}: '{alias}' already names a model")
        aliases[alias] = name
    return aliases


def _per_model_values(entries: list[str], flag: str, names: list[str], default: str) -> dict[str, str]:
    """[NAME=]CODE entries -> model name -> ISO-639-1 code (a bare CODE: the default model's)."""
    chosen: dict[str, str] = {}
    for entry in entries:
        name, code = _named(entry)
        if name is not None and name not in names:
            raise ValueError(f"{flag} {entry}: no model is named '{name}' (models: {', '.join(names)})")
        code = code.strip().lower()
        if not re.fullmatch(r"[a-z]{2}", code):
            raise ValueError(f"{flag} {entry}: give the language as an ISO-639-1 code (en, de, fr, ...)")
        chosen[name or default] = code
    return chosen


def folder_name(reference: str) -> str:
    """A model's name when none is given: its folder's (a checkpoint file's, less its suffix; a Hub
    id's last part)."""
    path = Path(reference).expanduser()
    if path.exists():
        path = path.resolve()
        return path.stem if path.is_file() else path.name
    return reference.rstrip("/").rsplit("/", 1)[-1]
