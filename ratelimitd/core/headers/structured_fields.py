"""A small parser for HTTP Structured Field Values (RFC 8941): Lists and Dictionaries.

Pure: strings in, values out. Only what the IETF RateLimit fields need: bare items
with parameters; an inner list is parsed and skipped-as-invalid by the caller.
Every syntax error raises ValueError (RFC 8941 §4.2: the whole field then fails).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

__all__ = ("BareItem", "Item", "Token", "parse_dictionary", "parse_list")


@dataclass(frozen=True, slots=True)
class Token:
    """An SF Token (`default`, `*foo`), kept apart from an SF String."""

    value: str


BareItem = int | float | str | bytes | bool | Token


@dataclass(frozen=True, slots=True)
class Item:
    """An SF Item: a bare value and its parameters (insertion-ordered, last key wins)."""

    value: BareItem | tuple[Item, ...]
    params: dict[str, BareItem] = field(default_factory=dict)


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


class _Parser:
    """Cursor over one field value; each method consumes what it parsed."""

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise ValueError("structured field must be ASCII")
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

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

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"bad number at {self.pos}")
        text = match.group()
        self.pos = match.end()
        digits = text.lstrip("-")
        if "." in digits:
            whole, _, fraction = digits.partition(".")
            if len(whole) > 12 or not 1 <= len(fraction) <= 3:
                raise ValueError(f"decimal out of range: {text}")
            return float(text)
        if len(digits) > 15:
            raise ValueError(f"integer out of range: {text}")
        return int(text)

    def parameters(self) -> dict[str, BareItem]:
        params: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            name = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params[name] = value
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


def parse_list(text: str) -> list[Item]:
    """Parse an SF List (RFC 8941 §4.2.1); raises ValueError on any syntax error."""
    parser = _Parser(text.strip(" \t"))
    members: list[Item] = []
    if parser.at_end():
        return members
    while True:
        members.append(parser.item_or_inner_list())
        if not parser.expect_member_separator():
            return members


def parse_dictionary(text: str) -> dict[str, Item]:
    """Parse an SF Dictionary (RFC 8941 §4.2.2); a key without `=` is the Boolean true."""
    parser = _Parser(text.strip(" \t"))
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
