"""Where an incremental materialization starts reading again, on any offline engine.

Rows with event time >= the watermark's (or, with a created timestamp, created time >= its)
are read again: the boundary instant is re-read so rows that share the last event time but
arrived after the previous run are not missed (rewriting an equal value is a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

NO_CREATED = -(2**63)  # "no created timestamp": older than any real one
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat()


def from_iso(text: str) -> int:
    ts = datetime.fromisoformat(text)
    delta = (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)) - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Watermark:
    """Rows with event time >= ``event_us`` (or created time >= ``created_us``) are read again."""

    event_us: int
    created_us: int = NO_CREATED

    def to_dict(self) -> dict:
        return {"event_timestamp": iso(self.event_us),
                "created_timestamp": iso(self.created_us) if self.created_us != NO_CREATED else None}

    @classmethod
    def from_dict(cls, d: dict) -> Watermark:
        created = d.get("created_timestamp")
        return cls(from_iso(d["event_timestamp"]), from_iso(created) if created else NO_CREATED)

    def merge(self, other: Watermark | None) -> Watermark:
        if other is None:
            return self
        return Watermark(max(self.event_us, other.event_us), max(self.created_us, other.created_us))
