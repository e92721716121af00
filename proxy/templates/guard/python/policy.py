"""The guard's policy, free of imports from the host, so that `python3 -m unittest` can run it."""

import json
import math

FIELDS = ("per_minute", "burst")


class Limit:
    """The checked configuration."""

    def __init__(self, per_minute, burst):
        self.per_minute = per_minute
        self.burst = burst

    def retry_after_secs(self, wait_ms):
        """The `Retry-After` for a client that must wait `wait_ms` milliseconds."""
        return math.ceil(wait_ms / 1000)


def parse_config(text):
    """Parses the guard's JSON configuration; a ValueError names the field."""
    try:
        raw = json.loads(text or "{}")
    except ValueError as e:
        raise ValueError(f"config: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("config: must be an object")
    for key in raw:
        if key not in FIELDS:
            raise ValueError(f"unknown field `{key}`, expected per_minute or burst")
    if "per_minute" not in raw:
        raise ValueError("per_minute: required")
    per_minute = raw["per_minute"]
    if isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)) or not 0 < per_minute <= 1e6:
        raise ValueError("per_minute: must be a number from 0 to 1000000")
    burst = raw.get("burst", 5)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10000:
        raise ValueError("burst: must be an integer from 1 to 10000")
    return Limit(per_minute, burst)
