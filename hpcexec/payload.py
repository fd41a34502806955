"""Client-side serialisation: payloads in, outcomes out, and cache keys."""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import cloudpickle

from . import codelines
from .errors import CacheError, PayloadError, RemoteError, RemoteTraceback

Call = tuple[tuple, dict]


def _describe_unpicklable(fn: Callable, calls: Sequence[Call]) -> str:
    try:
        cloudpickle.dumps(fn)
    except Exception as e:  # finding which part cannot be pickled  # noqa: BLE001
        return f"the callable {getattr(fn, '__qualname__', fn)!r} cannot be pickled ({e})"
    for args, kwargs in calls:
        for i, a in enumerate(args):
            try:
                cloudpickle.dumps(a)
            except Exception as e:  # finding which part cannot be pickled  # noqa: BLE001
                return f"positional argument {i} ({type(a).__name__}) cannot be pickled ({e})"
        for k, v in kwargs.items():
            try:
                cloudpickle.dumps(v)
            except Exception as e:  # finding which part cannot be pickled  # noqa: BLE001
                return f"keyword argument {k!r} ({type(v).__name__}) cannot be pickled ({e})"
    return "the job cannot be pickled"


# cloudpickle keeps one by-value registry per process: payloads take turns with it, so that
# one payload's modules are neither dropped from another's nor added to it.
_REGISTRY_LOCK = threading.Lock()


@contextmanager
def _by_value(modules: Sequence[str]) -> Iterator[None]:
    with _REGISTRY_LOCK:
        # A module registered before (by the user) stays registered; an alias is one module.
        seen = set(cloudpickle.list_registry_pickle_by_value())
        registered = []
        for name in modules:
            mod = sys.modules.get(name)
            if mod is None or mod.__name__ in seen:
                continue
            try:
                cloudpickle.register_pickle_by_value(mod)
            except ValueError:  # not in sys.modules under its own name
                continue
            seen.add(mod.__name__)
            registered.append(mod)
        try:
            yield
        finally:
            for mod in registered:
                cloudpickle.unregister_pickle_by_value(mod)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, noting the code of the functions it pickles by value."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.by_value: list[types.CodeType] = []

    def reducer_override(self, obj: Any) -> Any:
        reduced = super().reducer_override(obj)
        if reduced is not NotImplemented and isinstance(obj, types.FunctionType):
            self.by_value.append(obj.__code__)
        return reduced


def _dumps(obj: Any) -> tuple[bytes, list[types.CodeType]]:
    """cloudpickle's bytes of ``obj`` (the same as ``cloudpickle.dumps``), and the code
    objects of the functions in it pickled by value."""
    with io.BytesIO() as f:
        pickler = _Pickler(f)
        pickler.dump(obj)
        return f.getvalue(), pickler.by_value


def dumps_payload(
    fn: Callable,
    calls: Sequence[Call],
    *,
    kind: str,
    sys_path: Sequence[str] = (),
    refs: bool = False,
    by_value: Sequence[str] = (),
) -> tuple[bytes, bytes]:
    """(file bytes, body bytes) of a payload: a plain header, then the cloudpickled work.
    The body bytes are what the cache key hashes. Functions and classes of the modules named
    in ``by_value`` travel by value (for a host that cannot import them); the header says
    where the code sent by value came from, with its source lines, for the job's tracebacks."""
    if not callable(fn):
        raise PayloadError(f"{fn!r} is not callable: submit a function, lambda or callable object")
    try:
        with _by_value(by_value):
            body, codes = _dumps({"kind": kind, "fn": fn, "calls": list(calls), "refs": refs})
    except Exception:  # any pickling failure becomes a PayloadError  # noqa: BLE001
        raise PayloadError(
            _describe_unpicklable(fn, calls)
            + ". Pass picklable values (e.g. a path instead of an open file or lock)."
        ) from None
    header = pickle.dumps(
        {"sys_path": list(sys_path), **codelines.describe(codes)}, protocol=pickle.HIGHEST_PROTOCOL
    )
    return header + body, body


def cache_key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:32]


def load_outcomes(data: bytes, where: str) -> list[bytes]:
    try:
        items = pickle.loads(data)
        if not isinstance(items, list):
            raise TypeError("not a list")
        return items
    except Exception as e:
        raise CacheError(
            f"the result file {where} is damaged ({e}); resubmit with force=True"
        ) from e


def outcome_value(item: bytes, where: str) -> Any:
    """The value of one outcome, or raise the job's exception with its remote traceback (a
    :class:`RemoteError` in its place where it cannot be rebuilt here)."""
    try:
        outcome = pickle.loads(item)
    except Exception as e:
        raise CacheError(
            f"a result in {where} cannot be unpickled here ({type(e).__name__}: {e}); "
            "is the module it needs importable in this process?"
        ) from e
    if outcome[0] == "ok":
        return outcome[1]
    tb = outcome[2]
    exc = outcome[1] if len(outcome) == 3 else _exception(*outcome[1:5])  # 3: an older runner's
    exc.__cause__ = RemoteTraceback(tb)
    raise exc


def _exception(blob: bytes | None, tb: str, type_name: str, message: str) -> BaseException:
    """The job's exception from its pickle, or a stand-in naming it."""
    if blob is None:
        return RemoteError(type_name, message, tb, "it could not be pickled in the job")
    try:
        exc = pickle.loads(blob)
    except Exception as e:  # an exception that cannot be rebuilt here  # noqa: BLE001
        return RemoteError(
            type_name, message, tb, f"it cannot be rebuilt here: {type(e).__name__}: {e}"
        )
    if not isinstance(exc, BaseException):
        return RemoteError(type_name, message, tb, "it was not rebuilt as an exception")
    return exc
