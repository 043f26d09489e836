"""Reading a Triton `config.pbtxt` (protobuf text format) into our subset of Triton's
`ModelConfig` message, keeping what Triton's full message has and ours lacks out of the way.

protobuf's own `allow_unknown_field` cannot skip an unknown field written in Triton's list style
(`model_warmup [ { ... } ]`), so the text is walked once first: each field ours does not
declare (at any depth: `dynamic_batching`, `instance_group.gpus`, `input.format`) is cut out of
the text and named, and what is left is parsed strictly. A real syntax error is still an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor

from foldserve._proto.inference.model_config_pb2 import ModelConfig

_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<word>[-+\w.]+)
      | (?P<punct>[{}<>\[\]:,;/])""",
    re.VERBOSE,
)
_CLOSERS = {"{": "}", "<": ">"}


class PbtxtError(ValueError):
    """Text that is not protobuf text format; the message says where (line:column)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def parse_model_config(text: str) -> tuple[ModelConfig, tuple[str, ...]]:
    """A config.pbtxt's text as our `ModelConfig`, and the fields it gives that our subset lacks
    (dotted paths, in order of appearance, each once).

    Raises:
        PbtxtError: not protobuf text format, or a field of ours with a value of the wrong type.
    """
    walk = _Walk(text)
    walk.message(ModelConfig.DESCRIPTOR, "", None)
    kept = walk.kept_text()
    config = ModelConfig()
    try:
        text_format.Parse(kept, config)
    except text_format.ParseError as exc:
        raise PbtxtError(str(exc)) from None
    return config, tuple(dict.fromkeys(walk.unknown))


class _Walk:
    """One pass over the tokens: where each unknown field starts and ends."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.unknown: list[str] = []
        self.cuts: list[tuple[int, int]] = []

    def kept_text(self) -> str:
        """The text without the unknown fields (each cut keeps its newlines: same line numbers)."""
        pieces, last = [], 0
        for start, end in self.cuts:
            pieces += [self.text[last:start], "\n" * self.text.count("\n", start, end)]
            last = end
        return "".join([*pieces, self.text[last:]])

    def message(self, descriptor: Descriptor | None, path: str, closer: str | None) -> None:
        while (token := self._peek()) is not None and token.text != closer:
            self.field(descriptor, path)
        if token is None and closer is not None:
            raise self._error(f"expected {closer!r} before the end of the text")

    def field(self, descriptor: Descriptor | None, path: str) -> None:
        first = self._next()
        if first.text == "[":  # an extension or Any type URL: never one of ours
            while self._next().text != "]":
                pass
            name, field = first.text, None
        elif first.kind == "word":
            name = first.text
            field = descriptor.fields_by_name.get(name) if descriptor is not None else None
        else:
            raise self._error(f"expected a field name, got {first.text!r}", first)
        if self._peek_text() == ":":
            self._next()
        inner = field.message_type if field is not None else None
        self.value(inner, f"{path}{name}.")
        if self._peek_text() in (",", ";"):
            self._next()
        if field is None and descriptor is not None:
            self.unknown.append(f"{path}{name}")
            self.cuts.append((first.start, self.tokens[self.at - 1].end))

    def value(self, descriptor: Descriptor | None, path: str) -> None:
        token = self._next()
        if token.text in _CLOSERS:
            self.message(descriptor, path, _CLOSERS[token.text])
            self._next()
        elif token.text == "[":
            while self._peek_text() != "]":
                self.value(descriptor, path)
                if self._peek_text() != ",":
                    break
                self._next()
            if self._next().text != "]":
                raise self._error("expected ']' to close a list", self.tokens[self.at - 1])
        elif token.kind == "string":
            while (after := self._peek()) is not None and after.kind == "string":
                self._next()
        elif token.kind != "word":
            raise self._error(f"expected a value, got {token.text!r}", token)

    def _peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _peek_text(self) -> str | None:
        token = self._peek()
        return None if token is None else token.text

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise self._error("unexpected end of the text")
        self.at += 1
        return token

    def _error(self, message: str, token: _Token | None = None) -> PbtxtError:
        offset = len(self.text) if token is None else token.start
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return PbtxtError(f"{line}:{column}: {message}")


def _tokens(text: str) -> list[_Token]:
    tokens, at = [], 0
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None:
            line = text.count("\n", 0, at) + 1
            raise PbtxtError(f"{line}: unexpected character {text[at]!r}")
        if found.lastgroup != "skip":
            tokens.append(_Token(found.lastgroup, found.group(), at, found.end()))  # type: ignore[arg-type]
        at = found.end()
    return tokens
