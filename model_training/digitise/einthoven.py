"""Einthoven's and Goldberger's laws: the six limb leads are two signals seen six ways (III = II - I,
aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2). Where a page shows three or more limb leads at one instant,
their readings over-determine those two signals, and the least-squares pair carried back to every lead read
there averages out each reading's own error. A lead not read at that instant stays unread: the pair is never
used to invent a lead the page did not show.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from model_training.digitise.classical import Digitised

# each limb lead as (weight of I, weight of II)
LIMB_BASIS = {"I": (1.0, 0.0), "II": (0.0, 1.0), "III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5),
              "aVF": (-0.5, 1.0)}


def einthoven(digitised: Digitised) -> Digitised:
    """`digitised` with its limb leads made consistent wherever three or more were read at the same time."""
    rows = [digitised.leads.index(lead) for lead in LIMB_BASIS if lead in digitised.leads]
    if len(rows) < 3:
        return digitised
    basis = np.array([LIMB_BASIS[digitised.leads[row]] for row in rows])
    limb = digitised.signals[rows]
    seen = np.isfinite(limb)
    # a row's baseline is where the pen was put, not the heart: each reading keeps its own level
    level = np.array([np.median(lead[ok]) if ok.any() else 0.0 for lead, ok in zip(limb, seen, strict=True)])
    limb = limb - level[:, None]
    corrected = limb.copy()
    patterns = seen.T @ (1 << np.arange(len(rows)))  # which limb leads each sample shows, as a bit pattern
    for pattern in np.unique(patterns):
        shown = np.flatnonzero((pattern >> np.arange(len(rows))) & 1)
        if shown.size < 3:
            continue
        samples = patterns == pattern
        pair, *_ = np.linalg.lstsq(basis[shown], limb[np.ix_(shown, samples)], rcond=None)
        corrected[np.ix_(shown, samples)] = basis[shown] @ pair
    signals = digitised.signals.copy()
    signals[rows] = corrected + level[:, None]
    return replace(digitised, signals=signals)
