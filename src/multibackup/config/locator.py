"""Line numbers for the keys of a TOML document.

``tomllib`` parses but keeps no positions, and a config error without a line number sends
the user hunting. :class:`KeyLocator` walks the text once (after ``tomllib`` accepted it,
so it may assume valid TOML) and records the line where each key path is first written:
table headers, ``[[array]]`` elements, dotted keys, inline tables and array items.
"""

from __future__ import annotations

import re
import tomllib

KeyPath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = ",]}\n#"


class KeyLocator:
    """Maps key paths such as ``("plans", "web", "sources", 1)`` to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._explicit: set[KeyPath] = set()
        _Scanner(text, self).scan()

    def define(self, path: KeyPath, line: int, explicit: bool) -> None:
        # A table made implicitly by [a.b.c] gets the line of its own [a.b] header if that
        # comes later; a header never loses its line to a later implicit mention.
        if explicit:
            if path not in self._explicit:
                self._explicit.add(path)
                self._lines[path] = line
        else:
            self._lines.setdefault(path, line)

    def line_of(self, path: KeyPath) -> int:
        """The key's line, else its nearest enclosing table's, else 1."""
        for n in range(len(path), 0, -1):
            line = self._lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return 1


class _Scanner:
    def __init__(self, text: str, sink: KeyLocator) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.sink = sink
        self.arrays: dict[KeyPath, int] = {}  # [[path]] -> elements seen so far

    # ---- characters ----------------------------------------------------------------

    def peek(self, n: int = 1) -> str:
        return self.text[self.i:self.i + n]

    def advance(self, n: int = 1) -> None:
        self.line += self.text.count("\n", self.i, self.i + n)
        self.i += n

    def skip_space(self, newlines: bool = False) -> None:
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            else:
                return

    # ---- structure -----------------------------------------------------------------

    def scan(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_space(newlines=True)
            if self.i >= len(self.text):
                return
            line = self.line
            if self.peek(2) == "[[":
                self.advance(2)
                key = self.key()
                path = (*self.in_arrays(key[:-1]), *key[-1:])
                self.skip_space()
                self.advance(2)
                index = self.arrays.get(path, 0)
                self.arrays[path] = index + 1
                self.define_parents(path, line)
                self.sink.define(path, line, True)
                table = (*path, index)
                self.sink.define(table, line, True)
            elif self.peek() == "[":
                self.advance()
                table = self.in_arrays(self.key())
                self.skip_space()
                self.advance()
                self.define_parents(table, line)
                self.sink.define(table, line, True)
            else:
                self.key_value(table)

    def in_arrays(self, path: KeyPath) -> KeyPath:
        """Header paths through an array of tables mean its latest element."""
        out: KeyPath = ()
        for part in path:
            out = (*out, part)
            if out in self.arrays:
                out = (*out, self.arrays[out] - 1)
        return out

    def define_parents(self, path: KeyPath, line: int) -> None:
        for n in range(1, len(path)):
            self.sink.define(path[:n], line, False)

    def key_value(self, table: KeyPath) -> None:
        line = self.line
        path = (*table, *self.key())
        self.skip_space()
        self.advance()  # "="
        self.skip_space()
        self.define_parents(path, line)
        self.sink.define(path, line, True)
        self.value(path)

    def key(self) -> KeyPath:
        parts: list[str] = []
        while True:
            self.skip_space()
            c = self.peek()
            if c in "\"'":
                start = self.i
                self.string()
                parts.append(tomllib.loads("k = " + self.text[start:self.i])["k"])
            else:
                m = _BARE.match(self.text, self.i)
                if not m:  # not valid TOML after all: stop rather than loop
                    self.i = len(self.text)
                    return tuple(parts)
                parts.append(m.group())
                self.advance(m.end() - self.i)
            self.skip_space()
            if self.peek() != ".":
                return tuple(parts)
            self.advance()

    def value(self, path: KeyPath) -> None:
        c = self.peek()
        if c == "{":
            self.advance()
            while True:
                self.skip_space(newlines=True)
                if self.peek() in ("}", ""):
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.key_value(path)
        elif c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_space(newlines=True)
                c = self.peek()
                if c in ("]", ""):
                    self.advance()
                    return
                if c == ",":
                    self.advance()
                    index += 1
                    continue
                item = (*path, index)
                self.sink.define(item, self.line, True)
                self.value(item)
        elif c in "\"'":
            self.string()
        else:
            while self.i < len(self.text) and self.text[self.i] not in _SCALAR_END:
                self.i += 1

    def string(self) -> None:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.advance(3)
            while self.i < len(self.text):
                if quote == '"' and self.peek() == "\\":
                    self.advance(2)
                elif self.peek(3) == quote * 3:
                    self.advance(3)
                    for _ in range(2):  # up to two quotes may end the content itself
                        if self.peek() == quote:
                            self.advance()
                    return
                else:
                    self.advance()
            return
        self.advance()
        while self.i < len(self.text):
            c = self.peek()
            if quote == '"' and c == "\\":
                self.advance(2)
            elif c == quote or c == "\n":
                self.advance(1 if c == quote else 0)
                return
            else:
                self.advance()
