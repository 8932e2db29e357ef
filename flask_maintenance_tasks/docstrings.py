"""A task's docstring as readable text, its reStructuredText markup taken out.

Task docstrings are written in reStructuredText, like the rest of a Python project's
documentation. The dashboard and ``flask mtasks list --long``/``show`` show them to
operators, who should read ``Backfills *every* row of ``items``.`` as "Backfills every
row of items.". This module knows the markup such docstrings use, and nothing more:

* blocks: paragraphs, bullet lists (``-``, ``*`` or ``+``), literal blocks (after a
  paragraph ending in ``::``, or under ``.. code-block::``), section titles (their
  underlines dropped); a comment or a link target (``.. _name: url``) is dropped, and
  another directive (``.. note::``) keeps its text;
* inline: ````literal````, ``*emphasis*``, ``**strong**``, ```interpreted```,
  ``:role:`target``` (``~a.b.C`` shows as ``C``), links ```text <url>`_`` (shown as
  "text (url)"), references ```text`_`` and ``name_``, backslash escapes.

What it does not know stays as written. The result is plain text: the dashboard's
templates escape it like any text, so no markup in a docstring reaches the page as HTML.
docutils would parse every construct, but it is not among the package's dependencies,
and a full rendering is more than a one-paragraph description needs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import textwrap
import typing as t

BlockKind = t.Literal["paragraph", "bullets", "literal"]


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of a docstring: a paragraph (one text), a bullet list (one text per
    item) or a literal block (its lines, as written)."""

    kind: BlockKind
    texts: tuple[str, ...]


_BULLET = re.compile(r"^([-*+\u2022])\s+(.*)$")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::\s*(.*)$")
_CODE_DIRECTIVES = {"code", "code-block", "sourcecode", "literalinclude", "doctest"}


def blocks(doc: str | None) -> list[Block]:
    """The blocks of a docstring, their inline markup taken out; ``[]`` for no docstring."""
    if not doc or not doc.strip():
        return []
    return list(_parsed(doc))


@functools.lru_cache(maxsize=256)
def _parsed(doc: str) -> tuple[Block, ...]:
    # the index asks for every task's summary at each refresh
    return tuple(_Parser(inspect.cleandoc(doc).splitlines()).parse())


def plain_text(doc: str | None) -> str:
    """The whole docstring as plain text: blocks apart by a blank line, bullet items
    after ``- ``, literal blocks indented by four spaces."""
    shown = []
    for block in blocks(doc):
        if block.kind == "paragraph":
            shown.append(block.texts[0])
        elif block.kind == "bullets":
            shown.append("\n".join(f"- {item}" for item in block.texts))
        else:
            shown.append("\n".join(f"    {line}" if line else "" for line in block.texts))
    return "\n\n".join(shown)


def summary(doc: str | None) -> str:
    """The docstring's first paragraph as plain text, or ``""``."""
    for block in blocks(doc):
        if block.kind == "paragraph":
            return block.texts[0]
        if block.kind == "bullets":
            return "; ".join(block.texts)
    return ""


class _Parser:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.at = 0
        self.found: list[Block] = []

    def parse(self) -> list[Block]:
        while self.at < len(self.lines):
            line = self.lines[self.at]
            if not line.strip():
                self.at += 1
            elif line.startswith(".."):
                self._directive()
            elif _BULLET.match(line):
                self._bullets()
            else:
                self._paragraph()
        return self.found

    def _indented(self, start: int, deeper_than: int) -> list[str]:
        """The lines from ``start`` indented more than ``deeper_than`` (and the blank lines
        between them); moves past them."""
        taken: list[str] = []
        at = start
        while at < len(self.lines):
            line = self.lines[at]
            if line.strip() and _indent(line) <= deeper_than:
                break
            taken.append(line)
            at += 1
        while taken and not taken[-1].strip():
            taken.pop()
        self.at = start + len(taken)
        return taken

    def _literal(self, lines: list[str]) -> None:
        text = textwrap.dedent("\n".join(lines)).strip("\n")
        if text:
            self.found.append(Block("literal", tuple(text.splitlines())))

    def _directive(self) -> None:
        line = self.lines[self.at]
        directive = _DIRECTIVE.match(line)
        content = self._indented(self.at + 1, 0)
        if directive is None:  # a comment, or a link target: nothing to read
            return
        name, argument = directive.groups()
        # the directive's options (":linenos:") come first in its content
        while content and content[0].strip().startswith(":"):
            content.pop(0)
        if name in _CODE_DIRECTIVES:
            self._literal(content)
            return
        inner = _Parser(textwrap.dedent("\n".join(content)).splitlines()).parse()
        if argument:
            inner.insert(0, Block("paragraph", (inline(argument),)))
        self.found.extend(inner)

    def _bullets(self) -> None:
        items: list[str] = []
        while self.at < len(self.lines):
            match = _BULLET.match(self.lines[self.at])
            if match is None:
                break
            parts = [match.group(2)]
            # an item's next lines are indented under its text
            for more in self._indented(self.at + 1, _indent(self.lines[self.at])):
                if more.strip():
                    parts.append(more.strip())
            items.append(inline(" ".join(parts)))
            while self.at < len(self.lines) and not self.lines[self.at].strip():
                self.at += 1
        self.found.append(Block("bullets", tuple(items)))

    def _paragraph(self) -> None:
        parts: list[str] = []
        base = _indent(self.lines[self.at])
        while self.at < len(self.lines):
            line = self.lines[self.at]
            if not line.strip() or (parts and _BULLET.match(line) and _indent(line) <= base):
                break
            if parts and _UNDERLINE.match(line.strip()) and len(parts) == 1:
                self.at += 1  # a section title's underline
                break
            if _UNDERLINE.match(line.strip()) and not parts:
                self.at += 1  # an overline, or a transition
                continue
            parts.append(line.strip())
            self.at += 1
        text = " ".join(parts)
        literal_follows = text.endswith("::")
        if literal_follows:
            # "Text::" reads "Text:", "Text ::" reads "Text", and "::" alone nothing
            head = text[:-2]
            text = head.rstrip() if not head or head.endswith(" ") else head + ":"
        if text:
            self.found.append(Block("paragraph", (inline(text),)))
        if literal_follows:
            while self.at < len(self.lines) and not self.lines[self.at].strip():
                self.at += 1
            self._literal(self._indented(self.at, base))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_LITERAL = re.compile(r"``(.+?)``")
_LINK = re.compile(r"`([^`<]*?)\s*<([^`>]+)>`__?")
_ROLE_BEFORE = re.compile(r":[\w:+.-]+:`([^`]+)`")
_ROLE_AFTER = re.compile(r"`([^`]+)`:[\w:+.-]+:")
_REFERENCE = re.compile(r"`([^`]+)`__?")
_INTERPRETED = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"(?<![\w*\\])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])")
_EMPHASIS = re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![\w*])")
_NAME_REFERENCE = re.compile(r"(?<![\w-])([A-Za-z0-9](?:[\w-]*[A-Za-z0-9])?)__?(?![\w-])")
_ESCAPE = re.compile(r"\\(.)")


def inline(text: str) -> str:
    """``text`` with reStructuredText's inline markup taken out."""
    # Literals first: nothing inside ``...`` is markup.
    pieces = _LITERAL.split(text)
    shown = []
    for index, piece in enumerate(pieces):
        shown.append(piece if index % 2 else _inline_markup(piece))
    return "".join(shown)


def _inline_markup(text: str) -> str:
    text = _LINK.sub(_link, text)
    text = _ROLE_BEFORE.sub(lambda m: _role_target(m.group(1)), text)
    text = _ROLE_AFTER.sub(lambda m: _role_target(m.group(1)), text)
    text = _REFERENCE.sub(r"\1", text)
    text = _INTERPRETED.sub(lambda m: _role_target(m.group(1)), text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _NAME_REFERENCE.sub(r"\1", text)
    return _ESCAPE.sub(r"\1", text)


def _link(match: re.Match[str]) -> str:
    title, target = match.group(1).strip(), match.group(2).strip()
    if not title or title == target:
        return target
    if "://" not in target and not target.startswith("mailto:"):
        return title  # a link to a target elsewhere in the documentation
    return f"{title} ({target})"


def _role_target(text: str) -> str:
    """What a role's or an interpreted text's target reads as: its title when it has
    one (``Title <target>``), the last part of a ``~`` path, the text otherwise."""
    titled = re.match(r"^(.*?)\s*<[^<>]+>$", text)
    if titled and titled.group(1):
        return titled.group(1)
    if text.startswith("~"):
        return text[1:].rsplit(".", 1)[-1]
    return text.lstrip("!")
