"""Progress lines a workload prints on stdout for the host (and a person) to follow:
`@dlbench {"event": ..., ...}`, one JSON object per line after a fixed prefix."""
from __future__ import annotations

import json

EVENT_PREFIX = "@dlbench "


def format_event(event: str, **fields) -> str:
    return EVENT_PREFIX + json.dumps({"event": event, **fields})


def parse_event(line: str) -> dict | None:
    """The event of one output line, or None for any other line (or a garbled event)."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None
