"""The row statistics the detector uses instead of numpy's NaN functions give numpy's own bits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spendwatch.detect.robust import nanmedian_last


def _rows(width: int, seed: int) -> np.ndarray:
    """Costs with gaps, empty rows, rows of one value, ties and negatives (credits)."""
    rng = np.random.default_rng(seed)
    rows = rng.lognormal(3.0, 2.0, (2000, width))
    rows[rng.random(rows.shape) < 0.3] = np.nan
    rows[:5] = np.nan
    rows[5:10, 1:] = np.nan
    rows[10:20] = np.round(rows[10:20])
    rows[20:30] = -rows[20:30]
    return rows


@pytest.mark.parametrize("width", [1, 2, 3, 4, 7, 14, 28, 91])
def test_nanmedian_last_is_numpys_nanmedian_to_the_bit(width: int) -> None:
    rows = _rows(width, seed=100 + width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(rows, axis=1)
    assert np.array_equal(nanmedian_last(rows), expected, equal_nan=True)
