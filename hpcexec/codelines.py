"""Where code sent by value came from, so that a job's traceback names its file, line and
source line.

cloudpickle (3.1.3 on) names the file of every code object it pickles by value
``<dynamic-code>``, and the job's host may lack the file (or hold another version of it). The
client puts in the payload's plain header, outside the bytes the cache key hashes, each
by-value code object's file and the text of those files (within a budget); the job gives the
code objects their files back as it unpickles them and puts the lines in :mod:`linecache`.
Imported by the runner: standard library only.
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

#: the most bytes of source text one payload carries; a file that does not fit stays home
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


def describe(codes: Iterable[CodeType], budget: int = MAX_SOURCE_BYTES) -> dict[str, Any]:
    """The header entries for code objects sent by value (nested ones included): ``files``,
    each one's file by :func:`code_id`, and ``lines``, the text of those files that fit in
    ``budget`` bytes, smallest first."""
    files: dict[CodeId, str] = {}
    for code in codes:
        for c in _walk(code):
            files[code_id(c)] = c.co_filename
    texts = {name: "".join(linecache.getlines(name)) for name in set(files.values())}
    lines: dict[str, str] = {}
    for name, text in sorted(texts.items(), key=lambda kv: (len(kv[1]), kv[0])):
        size = len(text.encode(errors="replace"))
        if text and size <= budget:
            lines[name] = text
            budget -= size
        elif text:
            log.debug("the source of %s (%d bytes) does not travel with the payload", name, size)
    return {"files": files, "lines": lines} if files else {}


def install(lines: dict[str, str]) -> None:
    """Put shipped source text in :mod:`linecache`, ahead of any file of that name here (the
    code was compiled from this text). No modification time: ``checkcache`` keeps them."""
    for name, text in lines.items():
        linecache.cache[name] = (len(text), None, text.splitlines(keepends=True), name)


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
