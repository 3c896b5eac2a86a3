"""The words of a Dockerfile instruction as Docker's builder reads them: quotes, the escape character, and variable
substitution (`$VAR`, `${VAR}`, `${VAR:-default}` and its kin), for the instructions that take them (COPY, ENV,
LABEL, USER, WORKDIR, ...; never RUN, CMD or ENTRYPOINT, whose text goes to the shell or the program unchanged).

Outside quotes the escape character takes the next character literally; single quotes take everything literally;
double quotes still substitute, and there the escape character only escapes `"`, `$` and itself. A substituted
value splits into words at its whitespace, as an unquoted one does in a shell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hatchway.errors import BuildFailed

_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_NAME_CHARS = _NAME_START + "0123456789"


def expand(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """`text` with its variables substituted and its quotes and escapes removed, whitespace kept."""
    return "".join(piece.text for piece in _Lexer(text, env, escape).run())


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """`text` substituted like `expand`, split into words at whitespace that no quote or escape protects."""
    words: list[str] = []
    current: list[str] = []
    started = False
    for piece in _Lexer(text, env, escape).run():
        if not piece.quoted and piece.text.isspace():
            if started:
                words.append("".join(current))
            current, started = [], False
            continue
        current.append(piece.text)
        started = True  # an empty quoted string is a word of its own
    if started:
        words.append("".join(current))
    return words


def split_raw(text: str, escape: str = "\\") -> list[str]:
    """`text` split at whitespace outside quotes, each word as written (quotes and escapes still in it): how
    ENV, LABEL and ARG find their `name=value` pairs before substituting each."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == escape and quote != "'" and index + 1 < len(text):
            current += [char, text[index + 1]]
            index += 2
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char.isspace():
            if current:
                words.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    if current:
        words.append("".join(current))
    return words


@dataclass(frozen=True)
class _Piece:
    text: str
    quoted: bool


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self._text = text
        self._env = env
        self._escape = escape
        self._pos = 0

    def run(self, stop: str = "") -> list[_Piece]:
        """Pieces up to the end, or up to an unquoted `stop` character (which is left unread)."""
        pieces: list[_Piece] = []
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            if stop and char == stop:
                break
            self._pos += 1
            if char == self._escape:
                if self._pos < len(text):
                    pieces.append(_Piece(text[self._pos], True))
                    self._pos += 1
                else:
                    pieces.append(_Piece(char, False))
            elif char == "'":
                pieces += self._single_quoted()
            elif char == '"':
                pieces += self._double_quoted()
            elif char == "$":
                pieces += [_Piece(ch, False) for ch in self._dollar()]
            else:
                pieces.append(_Piece(char, False))
        return pieces

    def _single_quoted(self) -> list[_Piece]:
        end = self._text.find("'", self._pos)
        if end < 0:
            raise BuildFailed(f"unexpected end of statement while looking for matching single-quote in {self._text!r}")
        body, self._pos = self._text[self._pos : end], end + 1
        return [_Piece(ch, True) for ch in body] or [_Piece("", True)]

    def _double_quoted(self) -> list[_Piece]:
        pieces = [_Piece("", True)]
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            self._pos += 1
            if char == '"':
                return pieces
            if char == self._escape and self._pos < len(text) and text[self._pos] in ('"', "$", self._escape):
                pieces.append(_Piece(text[self._pos], True))
                self._pos += 1
            elif char == "$":
                pieces += [_Piece(ch, True) for ch in self._dollar()]
            else:
                pieces.append(_Piece(char, True))
        raise BuildFailed(f"unexpected end of statement while looking for matching double-quote in {self._text!r}")

    def _dollar(self) -> str:
        """The value of the substitution after a `$` (read already); a `$` that starts none is itself."""
        text = self._text
        if self._pos >= len(text):
            return "$"
        char = text[self._pos]
        if char == "{":
            self._pos += 1
            return self._braced()
        if char in _NAME_START:
            return self._env.get(self._name(), "")
        if char.isdigit():  # a shell's positional parameter: a builder has none
            self._pos += 1
            return ""
        return "$"

    def _name(self) -> str:
        start = self._pos
        while self._pos < len(self._text) and self._text[self._pos] in _NAME_CHARS:
            self._pos += 1
        return self._text[start : self._pos]

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise BuildFailed(f"bad substitution in {self._text!r}: no variable name after '${{'")
        rest = self._text[self._pos :]
        if not rest:
            raise BuildFailed(f"bad substitution in {self._text!r}: missing '}}'")
        if rest.startswith("}"):
            self._pos += 1
            return self._env.get(name, "")
        colon = rest.startswith(":")
        operator = rest[1:2] if colon else rest[:1]
        if operator not in ("-", "+", "?"):
            raise BuildFailed(f"unsupported modifier in {self._text!r}: only ${{{name}:-...}}, :+ and :? work here")
        self._pos += 2 if colon else 1
        word = "".join(piece.text for piece in self.run(stop="}"))
        if self._pos >= len(self._text):
            raise BuildFailed(f"bad substitution in {self._text!r}: missing '}}'")
        self._pos += 1
        value = self._env.get(name)
        present = value is not None and (value != "" or not colon)
        if operator == "-":
            return value if present and value is not None else word
        if operator == "+":
            return word if present else ""
        if not present:
            raise BuildFailed(f"{name}: {word or 'is not set'}")
        return value or ""
