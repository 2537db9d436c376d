"""Kind codes stored in ``DetectionResult.kind``."""

from __future__ import annotations

import enum


class Kind(enum.IntEnum):
    """What a decided step looks like; stored as these small ints (int8)."""

    NONE = 0
    SPIKE = 1  # upward, the step before was normal
    SHIFT = 2  # upward and the level stayed up (daily)
    LEAK = 3  # upward and the level has been rising step after step (daily)
    BURST = 4  # upward and sustained for hours (hourly runaway)
    DROP = 5  # material downward deviation: reported, never an alert
