"""Client-side serialisation: payloads in, outcomes out, and cache keys."""
from __future__ import annotations

import hashlib
import pickle
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import cloudpickle

from .errors import CacheError, PayloadError, RemoteTraceback

Call = tuple[tuple, dict]


def _describe_unpicklable(fn: Callable, calls: Sequence[Call]) -> str:
    try:
        cloudpickle.dumps(fn)
    except Exception as e:
        return f"the callable {getattr(fn, '__qualname__', fn)!r} cannot be pickled ({e})"
    for args, kwargs in calls:
        for i, a in enumerate(args):
            try:
                cloudpickle.dumps(a)
            except Exception as e:
                return f"positional argument {i} ({type(a).__name__}) cannot be pickled ({e})"
        for k, v in kwargs.items():
            try:
                cloudpickle.dumps(v)
            except Exception as e:
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


def dumps_payload(fn: Callable, calls: Sequence[Call], *, kind: str,
                  sys_path: Sequence[str] = (), refs: bool = False,
                  by_value: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """(file bytes, body bytes) of a payload: a plain header, then the cloudpickled work.
    The body bytes are what the cache key hashes. Functions and classes of the modules named
    in ``by_value`` travel by value (for a host that cannot import them)."""
    if not callable(fn):
        raise PayloadError(f"{fn!r} is not callable: submit a function, lambda or callable object")
    try:
        with _by_value(by_value):
            body = cloudpickle.dumps({"kind": kind, "fn": fn, "calls": list(calls),
                                      "refs": refs}, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        raise PayloadError(
            _describe_unpicklable(fn, calls)
            + ". Pass picklable values (e.g. a path instead of an open file or lock)."
        ) from None
    header = pickle.dumps({"sys_path": list(sys_path)}, protocol=pickle.HIGHEST_PROTOCOL)
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
        raise CacheError(f"the result file {where} is damaged ({e}); resubmit with force=True") from e


def outcome_value(item: bytes, where: str) -> Any:
    """The value of one outcome, or raise the job's exception with its remote traceback."""
    try:
        outcome = pickle.loads(item)
    except Exception as e:
        raise CacheError(
            f"a result in {where} cannot be unpickled here ({type(e).__name__}: {e}); "
            "is the module it needs importable in this process?"
        ) from e
    if outcome[0] == "ok":
        return outcome[1]
    exc, tb = outcome[1], outcome[2]
    exc.__cause__ = RemoteTraceback(tb)
    raise exc
