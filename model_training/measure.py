"""Measure an ECG the way a cardiologist's calipers would, from the signal alone.

Used to check that generated records really meet the criteria their labels claim (the generator's own
parameters are never consulted) and to train the feature baseline that proves the classes are learnable.
Method: band-pass, detect QRS complexes on the summed spatial slope, build a median beat, then find
QRS onset/offset, P wave and T end on the median beat's spatial velocity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

LEAD_INDEX = {name: i for i, name in enumerate(("I", "II", "III", "aVR", "aVL", "aVF",
                                                  "V1", "V2", "V3", "V4", "V5", "V6"))}
_Q_LEADS = [LEAD_INDEX[n] for n in ("I", "II", "aVL", "aVF", "V2", "V3", "V4", "V5", "V6")]
_LATERAL = [LEAD_INDEX[n] for n in ("I", "aVL", "V4", "V5", "V6")]


@dataclass
class Measurements:
    heart_rate: float
    rr_cv: float
    rr_successive: float
    rr_irregularity: float
    p_amplitude: float
    pr_ms: float
    qrs_ms: float
    qtc_ms: float
    axis_deg: float
    sokolow_mv: float
    cornell_mv: float
    r_v1_mv: float
    rs_ratio_v1: float
    st_max_mv: float
    st_min_mv: float
    st_lateral_mv: float
    q_depth_mv: float
    q_width_ms: float
    t_lateral_mv: float
    t_max_abs_mv: float
    atrial_power: float
    n_beats: int

    def vector(self) -> np.ndarray:
        return np.array([v for k, v in asdict(self).items() if k != "n_beats"], dtype=np.float64)

    @staticmethod
    def names() -> list[str]:
        return [k for k in Measurements.__dataclass_fields__ if k != "n_beats"]


def _bandpass(signals: np.ndarray, fs: int, low: float, high: float) -> np.ndarray:
    sos = butter(2, [low, high], btype="band", fs=fs, output="sos")
    return sosfiltfilt(sos, signals, axis=1)


def qrs_locations(signals: np.ndarray, fs: int) -> np.ndarray:
    """Sample indices of QRS complexes: peaks of the summed squared slope across all leads."""
    filtered = _bandpass(signals, fs, 5.0, 30.0)
    energy = (np.diff(filtered, axis=1) ** 2).sum(axis=0)
    width = max(1, int(0.04 * fs))
    energy = np.convolve(energy, np.ones(width) / width, mode="same")
    peaks, _ = find_peaks(energy, distance=int(0.25 * fs), height=0.25 * np.percentile(energy, 99.5))
    return peaks


def _first_below(values: np.ndarray, start: int, step: int, threshold: float, run: int) -> int:
    """From `start` walk by `step` until `run` consecutive samples are under `threshold`."""
    index, count = start, 0
    while 0 <= index < values.size:
        count = count + 1 if values[index] < threshold else 0
        if count >= run:
            return index - step * (run - 1)
        index += step
    return int(np.clip(index, 0, values.size - 1))


BEAT_BEFORE_S, BEAT_AFTER_S = 0.4, 0.65  # the median beat's window around each QRS


def median_beat(x: np.ndarray, peaks: np.ndarray, fs: int) -> np.ndarray:
    """The median of every complete beat (leads x samples), QRS at `BEAT_BEFORE_S`; the first window if none is."""
    before, after = int(BEAT_BEFORE_S * fs), int(BEAT_AFTER_S * fs)
    usable = peaks[(peaks > before) & (peaks < x.shape[1] - after)]
    if not usable.size:
        return x[:, : before + after]
    return np.median(np.stack([x[:, p - before : p + after] for p in usable]), axis=0)


def filtered_beat(signals: np.ndarray, fs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 0.5-40 Hz signals, their QRS locations and their median beat: what every measurement starts from."""
    x = _bandpass(signals.astype(np.float64), fs, 0.5, 40.0)
    peaks = qrs_locations(signals, fs)
    return x, peaks, median_beat(x, peaks, fs)


def measure(signals: np.ndarray, fs: int) -> Measurements:
    """All measurements of one 12-lead record (leads in standard order, mV)."""
    return measure_filtered(*filtered_beat(signals, fs), fs)


def measure_filtered(x: np.ndarray, peaks: np.ndarray, beat: np.ndarray, fs: int) -> Measurements:
    """`measure` from what `filtered_beat` returned, for a caller that needs the beat as well."""
    rr = np.diff(peaks) / fs
    rr_mean = float(rr.mean()) if rr.size else 1.0
    centre = int(BEAT_BEFORE_S * fs)
    ms = 1000.0 / fs

    velocity = np.sqrt((np.gradient(beat, axis=1) ** 2).sum(axis=0))
    peak_v = velocity[centre - int(0.06 * fs) : centre + int(0.06 * fs)].max()
    run = max(2, int(0.008 * fs))
    onset = _first_below(velocity, centre, -1, 0.12 * peak_v, run)
    offset = _first_below(velocity, centre, 1, 0.15 * peak_v, run)
    baseline = np.median(beat[:, max(0, onset - int(0.03 * fs)) : max(1, onset - int(0.008 * fs))], axis=1)
    centred = beat - baseline[:, None]

    # P wave: the largest slow deflection before the QRS, after the previous T wave has ended; the line
    # between the window's ends is removed so a T tail or wander does not pass for a P wave.
    window_start = max(0, onset - int(min(0.3, 0.5 * rr_mean) * fs))
    p_region = centred[:, window_start : max(window_start + 2, onset - int(0.02 * fs))]
    p_region = p_region - np.linspace(p_region[:, :1], p_region[:, -1:], p_region.shape[1], axis=1)[..., 0]
    p_mag = np.sqrt((p_region[[LEAD_INDEX["II"], LEAD_INDEX["V1"], LEAD_INDEX["aVF"]]] ** 2).sum(axis=0))
    p_amplitude = float(p_mag.max()) if p_mag.size else 0.0
    p_peak = int(np.argmax(p_mag)) if p_mag.size else 0
    p_onset = _first_below(p_mag, p_peak, -1, 0.25 * p_amplitude, run) if p_mag.size else 0
    pr_ms = (onset - (window_start + p_onset)) * ms

    qrs = centred[:, onset : offset + 1]
    r_amp, s_amp = qrs.max(axis=1), -qrs.min(axis=1)
    v1, v3, v5, v6, avl = (LEAD_INDEX[n] for n in ("V1", "V3", "V5", "V6", "aVL"))
    area = qrs.sum(axis=1)
    axis = float(np.degrees(np.arctan2(area[LEAD_INDEX["aVF"]], area[LEAD_INDEX["I"]])))

    st_index = min(beat.shape[1] - 1, offset + int(0.06 * fs))
    st = centred[:, st_index]

    early = centred[:, onset : onset + int(0.05 * fs)]
    q_depth, q_width = 0.0, 0.0
    for lead in _Q_LEADS:
        trough = int(np.argmin(early[lead]))
        depth = -float(early[lead, trough])
        if depth > 0.03 and early[lead, : trough + 1].max() < 0.04:  # the first deflection is negative
            back = np.flatnonzero(centred[lead, onset + trough : offset] > 0)
            width = min((back[0] if back.size else offset - onset - trough) + trough, offset - onset) * ms
            if depth > q_depth:
                q_depth, q_width = depth, width

    t_start = offset + int(0.06 * fs)
    t_mag = np.sqrt((centred[:, t_start : t_start + int(min(0.55, 0.8 * rr_mean) * fs)] ** 2).sum(axis=0))
    t_peak = int(np.argmax(t_mag[: int(0.45 * fs)]))
    t_end = _first_below(t_mag, t_peak, 1, 0.15 * t_mag[t_peak], run)
    qt_s = (t_start + t_end - onset) / fs
    t_values = centred[:, t_start + t_peak]

    masked = x[[LEAD_INDEX["II"], LEAD_INDEX["V1"]]].copy()
    for p in peaks:
        masked[:, max(0, p - int(0.08 * fs)) : p + int(0.45 * fs)] = 0.0
    spectrum = np.abs(np.fft.rfft(masked, axis=1)) ** 2
    freqs = np.fft.rfftfreq(masked.shape[1], 1 / fs)
    band = spectrum[:, (freqs >= 3.5) & (freqs <= 10)].sum()
    total = spectrum[:, (freqs >= 0.5) & (freqs <= 30)].sum() + 1e-12

    return Measurements(
        heart_rate=60.0 / rr_mean,
        rr_cv=float(rr.std() / rr_mean) if rr.size > 1 else 0.0,
        rr_successive=float(np.abs(np.diff(rr)).mean() / rr_mean) if rr.size > 2 else 0.0,
        # Median successive change: "irregularly irregular" without being fooled by one ectopic beat.
        rr_irregularity=float(np.median(np.abs(np.diff(rr))) / np.median(rr)) if rr.size > 2 else 0.0,
        p_amplitude=p_amplitude,
        pr_ms=float(pr_ms),
        qrs_ms=float((offset - onset) * ms),
        qtc_ms=float(qt_s / np.sqrt(rr_mean) * 1000),
        axis_deg=axis,
        sokolow_mv=float(s_amp[v1] + max(r_amp[v5], r_amp[v6])),
        cornell_mv=float(r_amp[avl] + s_amp[v3]),
        r_v1_mv=float(r_amp[v1]),
        rs_ratio_v1=float(r_amp[v1] / max(s_amp[v1], 0.05)),
        st_max_mv=float(st.max()),
        st_min_mv=float(st.min()),
        st_lateral_mv=float(st[_LATERAL].mean()),
        q_depth_mv=q_depth,
        q_width_ms=q_width,
        t_lateral_mv=float(t_values[_LATERAL].mean()),
        t_max_abs_mv=float(np.abs(t_values).max()),
        atrial_power=float(band / total),
        n_beats=int(peaks.size),
    )
