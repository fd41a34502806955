"""Where code sent by value came from, so that a job's traceback names its file, line and
source line.

cloudpickle (3.1.3 on) names the file of every code object it pickles by value
``<dynamic-code>``, and the job's host may lack the file (or hold another version of it). The
client puts in the payload's plain header, outside the bytes the cache key hashes, each
by-value code object's file and the source lines that code spans (within a budget); the job
gives the code objects their files back as it unpickles them and puts the lines in
:mod:`linecache`. Imported by the runner: standard library only.
"""

from __future__ import annotations

import linecache
import logging
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator
from types import CodeType
from typing import IO, Any

log = logging.getLogger(__name__)

#: the most bytes of source lines one payload carries; a file's lines that do not fit stay home
MAX_SOURCE_BYTES = 256 * 1024
DYNAMIC = "<dynamic-code>"

CodeId = tuple[str, int, int]


def code_id(code: CodeType) -> CodeId:
    """What names a code object on both sides: its name, first line and bytecode's CRC."""
    return (code.co_name, code.co_firstlineno, zlib.crc32(code.co_code))


def _walk(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _walk(const)


def _lines_of(code: CodeType) -> range:
    """The lines a traceback through ``code``, or code nested in it, may show."""
    last = code.co_firstlineno
    for c in _walk(code):
        if hasattr(c, "co_positions"):  # 3.11 on: a statement may end on a later line
            spans: Iterable[tuple] = c.co_positions()
        else:
            spans = ((line, line) for _, _, line in c.co_lines())
        for span in spans:
            last = max(last, span[0] or 0, span[1] or 0)
    return range(code.co_firstlineno, last + 1)


def describe(codes: Iterable[CodeType], budget: int = MAX_SOURCE_BYTES) -> dict[str, Any]:
    """The header entries for code objects sent by value (nested ones included): ``files``,
    each one's file by :func:`code_id`, and ``lines``, the source lines they span by file and
    line number, of the files whose lines fit in ``budget`` bytes, smallest first."""
    files: dict[CodeId, str] = {}
    wanted: dict[str, set[int]] = {}
    for code in codes:
        wanted.setdefault(code.co_filename, set()).update(_lines_of(code))
        for c in _walk(code):
            files[code_id(c)] = c.co_filename
    found: dict[str, dict[int, str]] = {}
    for name, numbers in wanted.items():
        text = linecache.getlines(name)
        found[name] = {n: text[n - 1] for n in sorted(numbers) if n <= len(text)}
    lines: dict[str, dict[int, str]] = {}
    for name, numbered in sorted(found.items(), key=lambda kv: _size(kv[1])):
        if numbered and _size(numbered) <= budget:
            lines[name] = numbered
            budget -= _size(numbered)
        elif numbered:
            log.debug(
                "the source lines of %s (%d bytes) do not travel with the payload",
                name,
                _size(numbered),
            )
    return {"files": files, "lines": lines} if files else {}


def _size(numbered: dict[int, str]) -> int:
    return sum(len(t.encode(errors="replace")) for t in numbered.values())


def install(lines: dict[str, dict[int, str]]) -> None:
    """Put shipped source lines in :mod:`linecache`, the file of that name here (if any)
    giving the rest: code sent by value shows the lines it was compiled from, code imported
    here the lines it was imported from. No modification time: ``checkcache`` keeps them."""
    for name, numbered in lines.items():
        merged = list(linecache.getlines(name))
        merged += ["\n"] * (max(numbered) - len(merged))
        for n, text in numbered.items():
            merged[n - 1] = text
        linecache.cache[name] = (sum(map(len, merged)), None, merged, name)


class Unpickler(pickle.Unpickler):
    """Unpickles a payload, giving each by-value code object the file it came from (in
    ``files``, by :func:`code_id`) where cloudpickle replaced it with ``<dynamic-code>``."""

    def __init__(self, file: IO[bytes], files: dict[CodeId, str]) -> None:
        super().__init__(file)
        self._files = files

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if self._files and module.startswith("cloudpickle") and name == "_builtin_type":
            return self._builtin_type(found)  # how cloudpickle names types.CodeType
        return found

    def _builtin_type(self, builtin_type: Callable[[str], Any]) -> Callable[[str], Any]:
        def relocating(type_name: str) -> Any:
            found = builtin_type(type_name)
            return self._code if found is CodeType else found

        return relocating

    def _code(self, *args: Any) -> CodeType:
        code = CodeType(*args)
        if code.co_filename == DYNAMIC:
            name = self._files.get(code_id(code))
            if name is not None:
                return code.replace(co_filename=name)
        return code
