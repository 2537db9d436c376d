"""The statsmodels reference the vectorised model is measured against (not used in production).

A per-series, per-step robust STL (MSTL for hourly data) on the same trailing window is the
textbook way to build this detector. It is ~1000x slower than :mod:`seasonal`, which is why
the hot path uses the vectorised median decomposition; this module is kept so the benchmark
can time the naive loop and the tests can check both give the same expectation on clean data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import MSTL, STL

from spendwatch.detect.robust import MAD_TO_SIGMA, FloatArray


def stl_expected(history: FloatArray, periods: tuple[int, ...]) -> tuple[float, float]:
    """Expected next value and robust sigma of the remainder from a robust (M)STL fit.

    ``history`` is the trailing window (NaN gaps are interpolated, as STL needs a full grid);
    the forecast is the last trend value plus the seasonal value one period back.
    """
    filled = pd.Series(history).interpolate(limit_direction="both").to_numpy()
    if len(periods) == 1:
        fit = STL(filled, period=periods[0], robust=True).fit()
        seasonal = np.asarray(fit.seasonal)
        season_next = seasonal[-periods[0]]
    else:
        fit = MSTL(filled, periods=periods, stl_kwargs={"robust": True}).fit()
        seasonal = np.asarray(fit.seasonal)
        season_next = float(sum(seasonal[-p, i] for i, p in enumerate(periods)))
    remainder = np.asarray(fit.resid)
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(remainder - np.median(remainder))))
    return float(np.asarray(fit.trend)[-1] + season_next), sigma


def naive_walk_forward(
    values: FloatArray, periods: tuple[int, ...], window: int, steps: np.ndarray
) -> tuple[FloatArray, FloatArray]:
    """Expected value and robust z for each (series, step): one STL fit per point."""
    expected = np.full((values.shape[0], len(steps)), np.nan)
    score = np.full_like(expected, np.nan)
    for i, series in enumerate(values):
        for j, step in enumerate(steps):
            history = series[max(0, step - window) : step]
            if np.count_nonzero(~np.isnan(history)) < 2 * max(periods) or np.isnan(series[step]):
                continue
            expected[i, j], sigma = stl_expected(history, periods)
            score[i, j] = (series[step] - expected[i, j]) / max(sigma, 1e-9)
    return expected, score
