"""A small parser for HTTP Structured Field Values (RFC 9651): Items, Lists, Dictionaries.

Pure: strings in, values out. Passes every parsing case of httpwg's structured-field-tests
(tests/unit/test_structured_field_suite.py). Every syntax error raises ValueError
(RFC 9651 §4.2: the whole field then fails).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

__all__ = (
    "BareItem",
    "Date",
    "DisplayString",
    "Item",
    "Token",
    "parse_dictionary",
    "parse_item",
    "parse_list",
)


@dataclass(frozen=True, slots=True)
class Token:
    """An SF Token (`default`, `*foo`), kept apart from an SF String."""

    value: str


@dataclass(frozen=True, slots=True)
class Date:
    """An SF Date (`@1659578233`, RFC 9651 §3.3.7): integer unix seconds."""

    seconds: int


@dataclass(frozen=True, slots=True)
class DisplayString:
    """An SF Display String (`%"f%c3%bc"`, RFC 9651 §3.3.8): Unicode text."""

    value: str


BareItem = int | float | str | bytes | bool | Token | Date | DisplayString


@dataclass(frozen=True, slots=True)
class Item:
    """An SF Item: a bare value and its parameters (insertion-ordered, last key wins)."""

    value: BareItem | tuple[Item, ...]
    params: dict[str, BareItem] = field(default_factory=dict)


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_PARAMETER_KEY = re.compile(r"; *([a-z*][a-z0-9_\-.*]*)")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")
# RFC 9651 §4.2.10: printable ASCII except `%` and `"` as is, anything else as lower-case `%xx`.
_DISPLAY = re.compile(r'%"((?:[ !#$&-~]|%[0-9a-f]{2})*)"')


class _Parser:
    """Cursor over one field value; each method consumes what it parsed."""

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise ValueError("structured field must be ASCII")
        self.text = text
        self.end = len(text)
        self.pos = 0

    def peek(self) -> str:
        """The next character, or "" at the end."""
        return self.text[self.pos : self.pos + 1]

    def skip(self, chars: str) -> None:
        while self.pos < self.end and self.text[self.pos] in chars:
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= self.end

    def expect_member_separator(self) -> bool:
        """After a member: end of input (False), or `OWS , OWS` then another member (True)."""
        self.skip(" \t")
        if self.at_end():
            return False
        if self.peek() != ",":
            raise ValueError(f"expected ',' at {self.pos}")
        self.pos += 1
        self.skip(" \t")
        if self.at_end():
            raise ValueError("trailing ',' in structured field")
        return True

    def key(self) -> str:
        match = _KEY.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"expected a key at {self.pos}")
        self.pos = match.end()
        return match.group()

    def bare_item(self) -> BareItem:
        char = self.peek()
        if char == '"':
            return self.string()
        if char == "?":
            if self.text[self.pos + 1 : self.pos + 2] not in ("0", "1"):
                raise ValueError(f"bad boolean at {self.pos}")
            self.pos += 2
            return self.text[self.pos - 1] == "1"
        if char == ":":
            match = _BYTES.match(self.text, self.pos)
            if match is None:
                raise ValueError(f"bad byte sequence at {self.pos}")
            self.pos = match.end()
            try:
                return base64.b64decode(match.group(1), validate=True)
            except binascii.Error as exc:
                raise ValueError(f"bad base64 in byte sequence: {exc}") from exc
        if char == "-" or char.isdigit():
            return self.number()
        if char == "@":
            self.pos += 1
            date = self.number()
            if not isinstance(date, int):
                raise ValueError(f"a date must be an integer, got {date!r}")
            return Date(date)
        if char == "%":
            return self.display_string()
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"unexpected {char!r} at {self.pos}")
        self.pos = match.end()
        return Token(match.group())

    def string(self) -> str:
        self.pos += 1  # the opening quote
        out: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\") or escaped == "":
                    raise ValueError("bad escape in string")
                out.append(escaped)
                self.pos += 1
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise ValueError("control character in string")
            else:
                out.append(char)
        raise ValueError("unterminated string")

    def display_string(self) -> DisplayString:
        match = _DISPLAY.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"bad display string at {self.pos}")
        self.pos = match.end()
        try:
            return DisplayString(unquote_to_bytes(match.group(1)).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"display string is not UTF-8: {exc}") from exc

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"bad number at {self.pos}")
        text = match.group()
        self.pos = match.end()
        whole, dot, fraction = text.partition(".")
        digits = len(whole) - (text[0] == "-")
        if dot:
            if digits > 12 or not 1 <= len(fraction) <= 3:
                raise ValueError(f"decimal out of range: {text}")
            return float(text)
        if digits > 15:
            raise ValueError(f"integer out of range: {text}")
        return int(text)

    def parameters(self) -> dict[str, BareItem]:
        params: dict[str, BareItem] = {}
        text = self.text
        while self.pos < self.end and text[self.pos] == ";":
            match = _PARAMETER_KEY.match(text, self.pos)
            if match is None:
                raise ValueError(f"expected a parameter key at {self.pos + 1}")
            self.pos = match.end()
            value: BareItem = True
            if text[self.pos : self.pos + 1] == "=":
                self.pos += 1
                value = self.bare_item()
            params[match.group(1)] = value
        return params

    def item_or_inner_list(self) -> Item:
        if self.peek() != "(":
            value = self.bare_item()
            return Item(value, self.parameters())
        self.pos += 1
        members: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return Item(tuple(members), self.parameters())
            if self.at_end():
                raise ValueError("unterminated inner list")
            members.append(Item(self.bare_item(), self.parameters()))
            if self.peek() not in (" ", ")"):
                raise ValueError(f"bad inner list at {self.pos}")


def parse_item(text: str) -> Item:
    """Parse an SF Item (RFC 9651 §4.2.3); raises ValueError on any syntax error."""
    parser = _Parser(text.strip(" "))
    item = Item(parser.bare_item(), parser.parameters())
    if not parser.at_end():
        raise ValueError(f"unexpected {parser.peek()!r} after the item at {parser.pos}")
    return item


def parse_list(text: str) -> list[Item]:
    """Parse an SF List (RFC 9651 §4.2.1); raises ValueError on any syntax error."""
    # Only SP is trimmed at the edges (RFC 9651 §4.2 steps 2 and 6); a tab there fails.
    parser = _Parser(text.strip(" "))
    members: list[Item] = []
    if parser.at_end():
        return members
    while True:
        members.append(parser.item_or_inner_list())
        if not parser.expect_member_separator():
            return members


def parse_dictionary(text: str) -> dict[str, Item]:
    """Parse an SF Dictionary (RFC 9651 §4.2.2); a key without `=` is the Boolean true."""
    parser = _Parser(text.strip(" "))
    members: dict[str, Item] = {}
    if parser.at_end():
        return members
    while True:
        name = parser.key()
        if parser.peek() == "=":
            parser.pos += 1
            members[name] = parser.item_or_inner_list()
        else:
            members[name] = Item(True, parser.parameters())
        if not parser.expect_member_separator():
            return members
