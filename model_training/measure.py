"""Measure an ECG the way a cardiologist's calipers would, from the signal alone.

Used to check that generated records really meet the criteria their labels claim (the generator's own
parameters are never consulted), to train the feature baseline that proves the classes are learnable, and to
measure every stored page's waveform (`measure_page`: leads drawn only in part, as a paper page shows them).
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


def qrs_energy(signals: np.ndarray, fs: int) -> np.ndarray:
    """The summed squared slope of the 5-30 Hz signals across leads, smoothed over 40 ms (one sample shorter)."""
    filtered = _bandpass(signals, fs, 5.0, 30.0)
    energy = (np.diff(filtered, axis=1) ** 2).sum(axis=0)
    width = max(1, int(0.04 * fs))
    return np.convolve(energy, np.ones(width) / width, mode="same")


def energy_peaks(energy: np.ndarray, fs: int) -> np.ndarray:
    """The QRS complexes in a `qrs_energy` trace: its peaks at least 250 ms apart and a quarter of its top."""
    peaks, _ = find_peaks(energy, distance=int(0.25 * fs), height=0.25 * np.percentile(energy, 99.5))
    return peaks


def qrs_locations(signals: np.ndarray, fs: int) -> np.ndarray:
    """Sample indices of QRS complexes: peaks of the summed squared slope across all leads."""
    return energy_peaks(qrs_energy(signals, fs), fs)


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
T_DELAY_S = 0.06  # the T wave is looked for from this long after the QRS ends


def t_search_s(rr_s: float) -> float:
    """How long after `T_DELAY_S` the T wave's end is looked for: not into the next beat."""
    return min(0.55, 0.8 * rr_s)


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

    t_start = offset + int(T_DELAY_S * fs)
    t_mag = np.sqrt((centred[:, t_start : t_start + int(t_search_s(rr_mean) * fs)] ** 2).sum(axis=0))
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


GAP_S = 0.1  # a gap this short inside a read trace is bridged by a straight line (a faint stretch of ink)
MIN_RHYTHM_S = 2.0  # the shortest stretch of time beats are counted on
MIN_INTERVAL_LEADS = 3  # fewer leads with a median beat give no intervals: one lead's QRS can hide its onset


@dataclass(frozen=True)
class PageMeasurements:
    """The calipers' global measurements of a page whose leads may be only partly drawn; a value the page does
    not allow (too few beats or leads) is None, never a guess. `leads` names the leads that had a median beat."""

    heart_rate: float | None
    pr_ms: float | None
    qrs_ms: float | None
    qt_ms: float | None
    qtc_ms: float | None
    axis_deg: float | None
    beats: int
    leads: tuple[str, ...]

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: v for k, v in asdict(self).items() if k != "leads"}


def _bridged(lead: np.ndarray, fs: int) -> tuple[int, int, np.ndarray]:
    """The longest stretch of `lead` with no gap over `GAP_S`, its short gaps filled: (start, stop, values)."""
    seen = np.flatnonzero(np.isfinite(lead))
    if seen.size < 2:
        return 0, 0, lead[:0]
    breaks = np.flatnonzero(np.diff(seen) > GAP_S * fs)
    firsts, lasts = np.r_[seen[0], seen[breaks + 1]], np.r_[seen[breaks], seen[-1]]
    longest = int(np.argmax(lasts - firsts))
    start, stop = int(firsts[longest]), int(lasts[longest]) + 1
    inside = seen[(seen >= start) & (seen < stop)]
    return start, stop, np.interp(np.arange(start, stop), inside, lead[inside])


def _page_peaks(windows: list[tuple[int, int, np.ndarray]], samples: int, fs: int) -> np.ndarray:
    """QRS complexes in the longest stretch of time some lead was read: `qrs_energy` of each lead over its own
    window, averaged over the leads read at each moment. One lead alone places a beat on whichever of its R and
    S slopes is steeper, which shifts from beat to beat and smears the median beats."""
    total, count = np.zeros(samples), np.zeros(samples)
    for start, stop, values in windows:
        if stop - start > 3 * int(0.04 * fs):
            total[start : stop - 1] += qrs_energy(values[None], fs)
            count[start : stop - 1] += 1
    covered = np.r_[False, count > 0, False]
    edges = np.flatnonzero(np.diff(covered.astype(np.int8)))
    if not edges.size:
        return np.zeros(0, int)
    firsts, lasts = edges[::2], edges[1::2]
    longest = int(np.argmax(lasts - firsts))
    start, stop = int(firsts[longest]), int(lasts[longest])
    if stop - start < MIN_RHYTHM_S * fs:
        return np.zeros(0, int)
    return energy_peaks(total[start:stop] / count[start:stop], fs) + start


def measure_page(signals: np.ndarray, fs: int, leads: tuple[str, ...] = tuple(LEAD_INDEX)) -> PageMeasurements:
    """`measure` for a digitised page (leads x samples, mV, NaN where a lead was not drawn or not read).

    A 3x4 page shows every lead for 2.5 s only, at the same time as its rhythm strip: beats are found on the
    leads read at each moment, and each lead's median beat is built from the beats inside its own window. The
    median beats, zero where a lead has none, then go through `measure_filtered`: a missing lead adds nothing
    to the spatial velocity that places the QRS and the T end.
    """
    if signals.ndim != 2 or signals.shape[0] != len(leads):
        raise ValueError(f"signals shape {signals.shape} does not match {len(leads)} leads")
    windows = [_bridged(np.asarray(lead, np.float64), fs) for lead in signals]
    peaks = _page_peaks(windows, signals.shape[1], fs)
    if peaks.size < 2:
        return PageMeasurements(None, None, None, None, None, None, int(peaks.size), ())
    before, after = int(BEAT_BEFORE_S * fs), int(BEAT_AFTER_S * fs)
    x = np.zeros((len(LEAD_INDEX), signals.shape[1]))
    beat = np.zeros((len(LEAD_INDEX), before + after))
    measured = []
    for name, (start, stop, values) in zip(leads, windows, strict=True):
        local = peaks[(peaks - before >= start) & (peaks + after <= stop)] - start
        if name not in LEAD_INDEX or not local.size:
            continue
        filtered = _bandpass(values[None], fs, 0.5, 40.0)
        x[LEAD_INDEX[name], start:stop] = filtered[0]
        beat[LEAD_INDEX[name]] = median_beat(filtered, local, fs)[0]
        measured.append(name)
    rate = 60.0 * fs / float(np.diff(peaks).mean())
    if len(measured) < MIN_INTERVAL_LEADS:
        return PageMeasurements(rate, None, None, None, None, None, int(peaks.size), tuple(measured))
    found = measure_filtered(x, peaks, beat, fs)
    has_p = bool({"II", "V1", "aVF"} & set(measured))
    has_axis = {"I", "aVF"} <= set(measured)
    qt_ms = float(found.qtc_ms * np.sqrt(60.0 / rate))
    # a T wave still above threshold where the search stops has no end on this page (too few beats, wander)
    t_found = qt_ms < found.qrs_ms + 1000 * (T_DELAY_S + t_search_s(60.0 / rate)) - 4000 / fs
    return PageMeasurements(rate, found.pr_ms if has_p else None, found.qrs_ms, qt_ms if t_found else None,
                            found.qtc_ms if t_found else None, found.axis_deg if has_axis else None,
                            int(peaks.size), tuple(measured))
