"""What the generator knows for free about every page's record, for the trainer's morphology losses.

A synthetic or PTB-XL page is drawn from a known 12-lead signal. From that signal come
  beats         each lead's median beat (QRS at 0.4 s of a 1.05 s window) averaged to `BEAT_SAMPLES`
                points of 25 ms, in mV: the Q waves, ST levels and voltages the findings live in
  measurements  the caliper measurements of `model_training.measure` (rate, intervals, axis, voltages, ST, Q)
The auxiliary head regresses both from the image, and the signal teacher reads the measurements.
A page without a signal (a scanned folder page) has a row of NaN and takes no part in either loss.
"""

from __future__ import annotations

import numpy as np

from model_training.measure import BEAT_AFTER_S, BEAT_BEFORE_S, Measurements, filtered_beat, measure_filtered
from model_training.synth.signals import Record

LEADS = 12
BEAT_SAMPLES = 42  # 1.05 s in 25 ms steps
MEASUREMENTS = len(Measurements.names())
WIDTH = LEADS * BEAT_SAMPLES + MEASUREMENTS


def record_targets(record: Record) -> np.ndarray:
    """One row: 12 x `BEAT_SAMPLES` beat values (mV), then the measurements (float32, NaN-free)."""
    x, peaks, median = filtered_beat(record.signals, record.fs)
    width = int(BEAT_BEFORE_S * record.fs) + int(BEAT_AFTER_S * record.fs)
    beat = median[:LEADS, :width]
    if beat.shape != (LEADS, width):
        raise ValueError(f"record has a beat of shape {beat.shape}, expected {(LEADS, width)}")
    edges = np.linspace(0, width, BEAT_SAMPLES + 1).astype(int)
    coarse = np.add.reduceat(beat, edges[:-1], axis=1) / np.diff(edges)
    values = np.concatenate([coarse.ravel(), measure_filtered(x, peaks, median, record.fs).vector()])
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def measurement_columns(targets: np.ndarray) -> np.ndarray:
    """The measurements part of target rows: the signal teacher's input."""
    return targets[..., LEADS * BEAT_SAMPLES :]


def missing() -> np.ndarray:
    """The row of a page whose signal is not known."""
    return np.full(WIDTH, np.nan, np.float32)
