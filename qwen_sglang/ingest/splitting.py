"""Splitting text into chunks, streaming: paragraphs kept whole when they fit, long ones cut at
sentence ends, over-long sentences cut; linear time, memory bounded by ``max_chars`` and a block."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from qwen_sglang.errors import ConfigurationError

__all__ = ["MAX_SPACE_RUN", "Chunker", "iter_chunks", "split_text"]

#: A whitespace run longer than this separates paragraphs (keeps the splitter's memory bounded).
MAX_SPACE_RUN = 1 << 16
# A paragraph break: a whitespace run with two newlines, or a very long one (patterns that
# start with a character class are scanned fast by ``re``).
_PARAGRAPH_BREAK = re.compile(rf"\n\s*\n|\s(?<!\s\s)\s{{{MAX_SPACE_RUN},}}")
_LEADING_SPACE = re.compile(r"\s*")
# A sentence end: ASCII . ! ? followed by space, or the CJK full stop / exclamation / question
# mark; the separator is what follows the mark.
_SENTENCE_END = re.compile(r"[.!?]\s+|[\u3002\uff01\uff1f]\s*")

Piece = tuple[str, str]  # (separator before the piece, piece)


def _search(buf: str, pos: int) -> tuple[int, int] | None:
    """Span of the first sentence separator starting at ``pos`` or later (``buf[pos - 1]`` may be
    its mark)."""
    if pos > len(buf):
        return None
    m = _SENTENCE_END.search(buf, max(pos - 1, 0))
    return None if m is None else (m.start() + 1, m.end())


class _LongParagraph:
    """Cuts a paragraph longer than ``max_chars`` at sentence ends, and sentences longer than
    ``max_chars`` every ``max_chars`` characters, as its text streams in."""

    def __init__(self, max_chars: int) -> None:
        self.max = max_chars
        self.buf = ""  # unprocessed text; buf[: self.start] is one character of look-behind context
        self.start = 0
        self.find = 0  # where the next separator search starts
        self.sep = "\n\n"

    def feed(self, text: str, final: bool = False) -> list[Piece]:
        out: list[Piece] = []
        buf, start, find = self.buf + text, self.start, self.find
        while (m := _search(buf, find)) is not None and (final or m[1] < len(buf)):
            self._cut(buf, start, m[0], out, whole=True)
            self.sep = buf[m[0] : m[1]]
            start, find = m[1], m[1] + (m[0] == m[1])
        if final:
            self._cut(buf, start, len(buf), out, whole=True)
            return out
        known = (m[0] if m is not None else len(buf)) - start  # the sentence is at least this long
        full = max(known - 1, 0) // self.max  # cuts that more text cannot move
        self._cut(buf, start, start + full * self.max, out, whole=False)
        start += full * self.max
        keep = max(start - 1, 0)  # one character of context for the look-behind
        self.buf, self.start, self.find = buf[keep:], start - keep, max(find, start) - keep
        return out

    def _cut(self, buf: str, begin: int, end: int, out: list[Piece], *, whole: bool) -> None:
        """Pieces of ``buf[begin:end]``, each ``max_chars`` long but the last one (when ``whole``)."""
        for at in range(begin, end, self.max):
            piece = buf[at : min(at + self.max, end)]
            if piece:
                out.append((self.sep, piece))
                self.sep = ""
        del whole


class Chunker:
    """Streaming :func:`split_text`: feed text blocks, get finished chunks. Memory is bounded by
    ``max_chars`` and the block size, time is linear in the text."""

    def __init__(self, max_chars: int) -> None:
        if max_chars < 1:
            raise ConfigurationError("max_chars must be positive")
        self.max = max_chars
        self.hold = ""  # trailing whitespace: inside the paragraph, or the start of a break
        self.between = True  # no paragraph open: leading whitespace is dropped
        self.short = ""  # an open paragraph while it may still fit in one piece
        self.long: _LongParagraph | None = None
        self.parts: list[str] = []  # the chunk being filled, and its length
        self.size = 0

    def feed(self, block: str) -> list[str]:
        out: list[str] = []
        text = self.hold + block
        self.hold = ""
        pos = _LEADING_SPACE.match(text).end() if self.between else 0  # type: ignore[union-attr]
        body_end = len(text.rstrip())
        for m in _PARAGRAPH_BREAK.finditer(text, pos, body_end):
            self._add(text[pos : m.start()].rstrip(), out)
            self._end_paragraph(out)
            pos = _LEADING_SPACE.match(text, m.end()).end()  # type: ignore[union-attr]
        if pos < body_end:
            self._add(text[pos:body_end], out)
        tail = text[max(pos, body_end) :]
        if tail.count("\n") >= 2 or len(tail) > MAX_SPACE_RUN:
            self._end_paragraph(out)
        elif not self.between:
            self.hold = tail
        return out

    def close(self) -> list[str]:
        out: list[str] = []
        self._end_paragraph(out)
        if self.parts:
            out.append("".join(self.parts))
            self.parts, self.size = [], 0
        return out

    def _add(self, text: str, out: list[str]) -> None:
        if not text:
            return
        self.between = False
        if self.long is not None:
            self._merge(self.long.feed(text), out)
            return
        self.short += text
        if len(self.short) > self.max:
            self.long = _LongParagraph(self.max)
            self._merge(self.long.feed(self.short), out)
            self.short = ""

    def _end_paragraph(self, out: list[str]) -> None:
        if self.long is not None:
            self._merge(self.long.feed("", final=True), out)
            self.long = None
        elif self.short:
            self._merge([("\n\n", self.short)], out)
            self.short = ""
        self.between, self.hold = True, ""

    def _merge(self, pieces: list[Piece], out: list[str]) -> None:
        """Greedy: pieces joined with their separators while the chunk stays within max_chars."""
        for sep, piece in pieces:
            if self.parts and self.size + len(sep) + len(piece) <= self.max:
                self.parts += (sep, piece)
                self.size += len(sep) + len(piece)
                continue
            if self.parts:
                out.append("".join(self.parts))
            self.parts, self.size = [piece], len(piece)


def iter_chunks(blocks: Iterable[str], max_chars: int = 2000) -> Iterator[str]:
    """Split text arriving in ``blocks`` into chunks of at most ``max_chars`` characters, streaming.

    The chunks are those of :func:`split_text` on the concatenated text, whatever the block
    boundaries; memory stays bounded by ``max_chars`` and the block size, time is linear.
    """
    chunker = Chunker(max_chars)
    for block in blocks:
        yield from chunker.feed(block)
    yield from chunker.close()


def split_text(text: str, max_chars: int = 2000) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars`` characters.

    Paragraphs (separated by a blank line, or by a whitespace run of more than 65,536
    characters) are kept together when they fit, long paragraphs are split at sentence ends
    (``. ! ?`` followed by space, and the CJK full stop, exclamation and question marks), and
    sentences longer than ``max_chars`` are cut. Pieces keep their original separators, so a
    chunk is a verbatim stretch of the document.
    Sizes are in characters, not tokens: a chunk that still exceeds the model's token limit goes
    through the client's ``long_text`` policy. Linear time; see :func:`iter_chunks` to stream.

    Example:
        ```python
        from qwen_sglang.ingest import split_text

        print(split_text("First paragraph here.\\n\\nSecond one.\\n\\nThird.", 25))
        # ['First paragraph here.', 'Second one.\\n\\nThird.']
        ```
    """
    return list(iter_chunks([text], max_chars))
