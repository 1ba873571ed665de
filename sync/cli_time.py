"""A time given on the command line (--as-of, --now): ISO 8601, naive read as UTC."""

from __future__ import annotations

from datetime import datetime, timezone

import click


def utc_time(text: str, option: str) -> datetime:
    """``text`` as an aware datetime; a naive time is UTC; a bad one is a usage error naming ``option``."""
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 timestamp (e.g. 2026-11-01T00:00:00Z)",
                                 param_hint=option) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
