"""Server settings: every option from the command line or the environment (`ASR_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.decoding import BEAM_WIDTH, LM_ALPHA, LM_BETA
from model.package import DEFAULT_MODEL, is_package, package_lm
from model.windows import CHUNK_SECONDS, CONTEXT_SECONDS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASR_", protected_namespaces=())

    model: str = Field(str(DEFAULT_MODEL),
                       description="a model folder that ships (checkpoint/, onnx/, lm.arpa), an exported model folder "
                                   "(python -m export onnx), Hugging Face folder or Hub id, or fairseq checkpoint; "
                                   "non-ONNX models are exported once into cache_dir (default: the shipped digits "
                                   "model, models/digits)")
    lm: Path | None = Field(None, description="KenLM language model, ARPA or binary, for beam search (default, or empty: "
                                              "the model folder's lm.arpa if it ships one; `none`: no LM)")
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = Field(None, description="name reported in responses and /v1/models "
                                                     "(default: the model's folder name)")
    cache_dir: Path = Field(Path.home() / ".cache" / "w2v-asr", description="where non-ONNX models are exported to")
    provider: str = Field("cpu", description="onnxruntime execution provider: cpu, cuda or tensorrt")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0: one per core)")
    # Batching across requests.
    max_batch_size: int = Field(8, ge=1)
    max_wait_ms: float = Field(10.0, ge=0, description="how long a batch waits for more requests")
    queue_capacity: int = Field(64, ge=1, description="requests waiting for or in inference before 503 "
                                                      "Retry-After")
    # Decoding.
    decode_workers: int = Field(1, ge=1, description="worker processes for beam search")
    beam_width: int = Field(BEAM_WIDTH, ge=1, le=1024, description="default beam width")
    max_beam_width: int = Field(256, ge=1, le=1024, description="largest beam_width a request may ask for (422 above)")
    decode_queue_capacity: int = Field(64, ge=0, description="beam-search requests waiting for a worker before "
                                                             "503 Retry-After")
    decode_timeout_seconds: float = Field(30.0, gt=0, description="longest a beam search may wait for a worker, "
                                                                 "and longest it may run (its worker is then "
                                                                 "restarted); past either: 503")
    lm_alpha: float = Field(LM_ALPHA, description="language model weight")
    lm_beta: float = Field(LM_BETA, description="word insertion bonus")
    # Long audio.
    chunk_seconds: float = Field(CHUNK_SECONDS, gt=0, description="audio per inference chunk")
    chunk_context_seconds: float = Field(CONTEXT_SECONDS, ge=0, description="context each side of a chunk, not transcribed twice")
    # Limits.
    max_upload_mb: float = Field(100.0, gt=0)
    max_audio_seconds: float = Field(3600.0, gt=0)
    max_decoded_mb: float = Field(1400.0, gt=0, description="largest audio once decoded (float32, every channel, "
                                                           "at its own rate), checked from the header before "
                                                           "decoding; the default holds 1 h of 48 kHz stereo")
    body_timeout_seconds: float = Field(30.0, gt=0, description="a request body that sends nothing for this long "
                                                               "gets 408")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="on SIGTERM, how long requests in flight may "
                                                                 "take to finish")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="accepted bearer tokens; empty: no auth")
    max_streams: int = Field(16, ge=1)
    stream_max_message_bytes: int = Field(1 << 20, ge=1024)
    stream_idle_seconds: float = Field(30.0, gt=0)
    stream_max_seconds: float = Field(3600.0, gt=0, description="longest audio one stream may send")
    web_ui: bool = Field(True, description="serve the browser page at / (microphone and file transcription)")

    @model_validator(mode="before")
    @classmethod
    def _model_folder_defaults(cls, values):
        """A model folder that ships brings its LM (unless another or `none` is given) and its name."""
        if isinstance(values, dict):
            folder = Path(str(values.get("model") or DEFAULT_MODEL)).expanduser()
            if is_package(folder):
                if not str(values.get("lm") or "").strip() and package_lm(folder) is not None:
                    values = {**values, "lm": package_lm(folder)}
                if not values.get("model_name"):
                    values = {**values, "model_name": folder.resolve().name}
        return values

    @field_validator("lm", "model_name", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):  # ASR_LM= in an env file or compose means the default, not the current folder
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model", mode="before")
    @classmethod
    def _empty_is_default(cls, value):  # ASR_MODEL= (compose's default) means the shipped model
        return str(DEFAULT_MODEL) if isinstance(value, str) and not value.strip() else value

    @field_validator("lm", mode="before")
    @classmethod
    def _none_is_no_lm(cls, value):
        return None if isinstance(value, str) and value.strip().lower() == "none" else value

    @model_validator(mode="after")
    def _beam_width_within_limit(self):
        if self.beam_width > self.max_beam_width:
            raise ValueError(f"beam_width {self.beam_width} is over max_beam_width {self.max_beam_width}")
        return self

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in ("cpu", "cuda", "tensorrt"):
            raise ValueError("provider must be cpu, cuda or tensorrt")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        return [key.strip() for key in value.split(",") if key.strip()] if isinstance(value, str) else value
