"""How long a test waits for something that should happen, on a shared, loaded CI machine.

A bound on waiting is not a speed check (speed is measured in ``benchmarks/``): it only stops a test
that would otherwise hang. So it is generous — a run of the suite with both cores taken by another
process is 3-6x slower than a quiet one, and a loopback call that takes 50 ms quietly can take
seconds then. Set ``SPENDWATCH_TEST_PATIENCE`` to change it everywhere at once.
"""

from __future__ import annotations

import os

PATIENCE = float(os.environ.get("SPENDWATCH_TEST_PATIENCE", "120"))
