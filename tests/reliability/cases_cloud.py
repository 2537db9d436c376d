"""Bad CUR / Data Export files and manifests in S3 (moto), and bad API answers (Cost Explorer, BigQuery)."""

from __future__ import annotations

from tests.reliability.corpus import Case

CASES: list[Case] = []
