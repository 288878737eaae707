"""The decoding options as the server takes them, generated from the core's `DecodeOptions`
(`model.options`): a request's fields (`DecodeRequest`, which /transcribe's, the OpenAI route's
and the streams' parameters extend) and the settings that give a request's defaults. Names,
defaults, limits and descriptions are the core's; only what is the server's own is added here
(`word_timestamps`, the schema's word pattern for phrases).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, create_model, field_validator

from model.options import DecodeOptions, OptionField, from_values, option_fields

# The options a request may give; min_confidence is the server's (--min-confidence), not a request's.
REQUEST_OPTIONS = ("decoder", "beam_width", "hotwords", "hotword_weight", "alternatives", "phrases", "beam_search")
FIELDS = {spec.name: spec for spec in option_fields()}


def _some_words(schema: dict) -> None:
    """The schema says what `phrases`' check refuses: an empty list, and items with no word (blank,
    or only the commas that separate phrases)."""
    for choice in schema.get("anyOf", [schema]):
        if choice.get("type") == "array":
            choice["minItems"] = 1
            choice["items"] = {**choice.get("items", {}), "pattern": r"[^\s,]"}


def _request_field(spec: OptionField) -> tuple[Any, Any]:
    """A core option as a pydantic field: its type, default, limits and description."""
    kind: Any = Literal[spec.choices] if spec.choices else spec.kind
    if spec.many:
        kind = list[kind]
    if spec.optional:
        kind = kind | None
    default = {"default_factory": list} if spec.default == () else {"default": spec.default}
    extra = {"json_schema_extra": _some_words} if spec.name == "phrases" else {}
    return kind, Field(
        **default, ge=spec.minimum, le=spec.maximum, max_length=spec.max_items, description=spec.help, **extra
    )


_RequestFields = create_model(
    "_RequestFields",
    __config__=ConfigDict(extra="forbid"),
    **{name: _request_field(FIELDS[name]) for name in REQUEST_OPTIONS},
)


class DecodeRequest(_RequestFields):
    """A request's decoding options: the core's fields (`model.options.DecodeOptions`), and whether
    to answer each word's times."""

    word_timestamps: bool = True

    @field_validator("phrases")
    @classmethod
    def _some_phrases(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any(phrase.strip() for phrase in value):
            raise ValueError("give at least one word or phrase, or leave phrases out")
        return value

    def options(self, min_confidence: float) -> DecodeOptions:
        """These options as the core takes them, with the server's `min_confidence`."""
        return from_values(
            {**{name: getattr(self, name) for name in REQUEST_OPTIONS}, "min_confidence": min_confidence}
        )


def setting(name: str, default: Any = None, description: str | None = None, more: str = "") -> Any:
    """A server setting that gives requests' value for the core option `name`: the core's limits, its
    default unless `default` is given, its description unless `description` is (and `more` after)."""
    spec = FIELDS[name]
    return Field(
        spec.default if default is None else default,
        ge=spec.minimum,
        le=spec.maximum,
        description=(spec.help if description is None else description) + more,
    )
