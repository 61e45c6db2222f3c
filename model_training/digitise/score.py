"""How close a digitised lead is to the true one: signal-to-noise ratio in dB, as the PhysioNet/CinC 2024
challenge scored digitisers, over the samples the page showed.

A page shows each lead for a few seconds, so only the samples a reading has (not NaN) are scored. Before the
noise is measured the reading may move by a constant (the baseline of a row is a matter of where the pen was
put, not of the heart) and by up to `MAX_SHIFT_S` in time (where a segment starts is known to a pixel or two).
The signal's power is the true lead's own over those samples, offset included, as the challenge counted it.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT_S = 0.04  # one small box at 25 mm/s


def snr_db(truth: np.ndarray, reading: np.ndarray, fs: float, max_shift_s: float = MAX_SHIFT_S) -> float:
    """One lead's SNR; NaN when the reading has no sample of it, +inf when it is exact."""
    truth = np.asarray(truth, dtype=np.float64)
    reading = np.asarray(reading, dtype=np.float64)
    best = np.inf
    signal = 0.0
    limit = round(max_shift_s * fs)
    for shift in range(-limit, limit + 1):
        moved = np.full_like(reading, np.nan)
        if shift >= 0:
            moved[shift:] = reading[: reading.size - shift]
        else:
            moved[:shift] = reading[-shift:]
        seen = np.isfinite(moved) & np.isfinite(truth)
        if seen.sum() < 2:
            continue
        error = moved[seen] - truth[seen]
        noise = float(np.sum((error - error.mean()) ** 2))
        if noise < best:
            best, signal = noise, float(np.sum(truth[seen] ** 2))
    if not np.isfinite(best):
        return float("nan")
    return float("inf") if best == 0 else float(10 * np.log10(signal / best))


def snr_per_lead(truth: np.ndarray, reading: np.ndarray, fs: float, leads: tuple[str, ...]) -> dict[str, float]:
    """`snr_db` of every lead (rows of both arrays, in `leads` order)."""
    return {lead: snr_db(truth[i], reading[i], fs) for i, lead in enumerate(leads)}
