"""Mail about a job: the address the scheduler writes to and the events it writes on,
parsed and checked once (the ``mail`` resource of :mod:`hpcexec.resources`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ADDRESS_RE = re.compile(r"^[A-Za-z0-9._%+-]+(?:@[A-Za-z0-9.-]+)?$")
#: mail events, in the order backends render them; "all" means every one
MAIL_EVENTS = ("begin", "end", "fail")


@dataclass(frozen=True)
class Mail:
    """Where the scheduler sends mail about a job, and on which events."""

    to: str
    on: tuple[str, ...] = ("end",)

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "on": list(self.on)}


def parse_mail(value: Any) -> Mail:
    """``"me@x.org"`` (mail when the job ends), ``"me@x.org:begin,fail"``, or
    ``{"to": "me@x.org", "on": ["end", "fail"]}``; events are begin, end, fail and all."""
    if isinstance(value, Mail):
        value = value.to_dict()
    if isinstance(value, str):
        address, sep, events = value.partition(":")
        value = {"to": address, "on": events.split(",")} if sep else {"to": address}
    if not isinstance(value, Mapping):
        raise ValueError(
            "an address such as 'me@example.org', 'me@example.org:end,fail', "
            "or {'to': 'me@example.org', 'on': ['end', 'fail']}"
        )
    extra = set(value) - {"to", "on"}
    if extra:
        raise ValueError(
            f"unknown mail field(s) {', '.join(sorted(map(str, extra)))}: use 'to' and 'on'"
        )
    to = value.get("to")
    if not isinstance(to, str) or not _ADDRESS_RE.match(to.strip()):
        raise ValueError(
            f"'to' must be one address such as 'me@example.org' or a user name, not {to!r}"
        )
    on = value.get("on", ("end",))
    words = [on] if isinstance(on, str) else on
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"'on' takes event names ({', '.join(MAIL_EVENTS)}, all), not {on!r}")
    wanted = {w.strip().lower() for w in words if w.strip()}
    bad = wanted - {*MAIL_EVENTS, "all"}
    if bad:
        raise ValueError(
            f"unknown mail event(s) {', '.join(sorted(bad))}: use {', '.join(MAIL_EVENTS)} or all"
        )
    if not wanted:
        raise ValueError("no mail events given: name at least one, or leave mail unset")
    if "all" in wanted:
        wanted = set(MAIL_EVENTS)
    return Mail(to.strip(), tuple(e for e in MAIL_EVENTS if e in wanted))
