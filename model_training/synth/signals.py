"""Synthetic 12-lead ECGs from a moving cardiac dipole, with the five BHF findings built into the physiology.

Each beat is a sum of wave components (P, septal q, R, S, T, ST plateau), each an asymmetric Gaussian in
time times a 3-D dipole vector (x: patient's left, y: inferior, z: anterior). The 12 leads are projections
of that one dipole, so Einthoven's and Goldberger's relations hold as they do in real recordings, and a
finding changes the heart's electrical vector the way the disease does, not the picture of one lead.
Labels come only from these physiological parameters; nothing in the rendering knows them.

Normal and pathological ranges follow adult reference values (PR 120-200 ms, QRS < 110-120 ms, QTc
350-450 ms, frontal axis -30..+90 degrees, Sokolow-Lyon < 3.5 mV); every criterion is sampled on both
sides near its threshold so the classes are not separable at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_training.manifest import LABELS

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Roughly PTB-XL's superclass prevalences (MI 25%, STTC 24%, CD 22%, HYP 12%) and AFIB+AFLT (7%).
DEFAULT_PREVALENCE = {"MI": 0.25, "AF": 0.08, "STTC": 0.24, "CD": 0.22, "HYP": 0.13}
DEFAULT_NORMAL_FRACTION = 0.40

SUBTYPES = {
    "MI": ("anterior_old", "inferior_old", "lateral_old", "anterior_acute", "inferior_acute", "lateral_acute"),
    "AF": ("fibrillation", "flutter"),
    "STTC": ("st_depression", "t_inversion", "t_flattening", "long_qt"),
    "CD": ("lbbb", "rbbb", "avb1", "lafb", "lpfb", "wpw"),
    "HYP": ("lvh", "lvh_strain", "rvh", "lae", "rae"),
}
NORMAL_VARIANTS = ("plain", "sinus_arrhythmia", "early_repolarisation", "athlete_voltage", "brady", "tachy")

_TERRITORY = {  # unit vectors pointing at the injured wall
    "anterior": np.array([-0.15, 0.05, 1.0]),
    "inferior": np.array([0.0, 1.0, 0.1]),
    "lateral": np.array([1.0, -0.35, -0.1]),
}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _frontal(axis_deg: float, z: float = 0.0) -> np.ndarray:
    a = np.deg2rad(axis_deg)
    return np.array([np.cos(a), np.sin(a), z])


@dataclass
class Wave:
    """One component of a beat: time relative to QRS onset (s), left/right widths (s), dipole (mV)."""

    center: float
    sigma_left: float
    sigma_right: float
    vector: np.ndarray
    plateau_to: float | None = None  # an ST segment: a step from `center` that decays at `plateau_to`


@dataclass
class Physiology:
    """Per-record parameters; intervals in seconds, amplitudes in millivolts."""

    heart_rate: float
    pr: float
    p_duration: float
    p_amplitude: float
    p_axis: float
    p_la_shift: np.ndarray
    qrs: float
    qrs_axis: float
    r_amplitude: float
    r_posterior: float
    septal: float
    s_amplitude: float
    qtc: float
    t_amplitude: float
    t_axis_offset: float
    st_vector: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rhythm: str = "sinus"
    sinus_arrhythmia: float = 0.02
    rbbb_terminal: float = 0.0
    lbbb: bool = False
    delta: float = 0.0
    q_vector: np.ndarray | None = None
    q_width: float = 0.0
    r_loss: np.ndarray | None = None
    t_shift: np.ndarray = field(default_factory=lambda: np.zeros(3))
    qrs_scale: float = 1.0
    flutter_rate: float = 0.0
    f_amplitude: float = 0.0


@dataclass
class Record:
    signals: np.ndarray  # (12, samples), mV
    fs: int
    labels: dict[str, int]
    subtypes: list[str]
    variant: str
    seed: int
    params: dict[str, Any]
    leads: tuple[str, ...] = LEADS

    def multi_hot(self, labels: tuple[str, ...] = LABELS) -> np.ndarray:
        return np.array([self.labels[name] for name in labels], dtype=np.int8)


# Lead vectors: I and II span the frontal plane; precordial leads sit around the chest in the
# horizontal plane (angle from patient's left towards anterior), with a little inferior component.
_PRECORDIAL_DEG = np.array([118.0, 96.0, 78.0, 58.0, 32.0, 8.0])
_PRECORDIAL_GAIN = np.array([1.3, 2.0, 2.1, 1.9, 1.6, 1.3])


def _lead_matrix(rng: np.random.Generator) -> np.ndarray:
    """(8, 3) independent lead vectors I, II, V1..V6, with electrode-placement and body-shape jitter."""
    rows = [np.array([1.0, 0.0, 0.0]), _frontal(60.0)]
    angles = np.deg2rad(_PRECORDIAL_DEG + rng.normal(0, 5, 6))
    gains = _PRECORDIAL_GAIN * rng.uniform(0.85, 1.15, 6)
    for angle, gain in zip(angles, gains, strict=True):
        rows.append(gain * np.array([np.cos(angle), rng.uniform(0.05, 0.2), np.sin(angle)]))
    return np.stack(rows)


def _limb_and_precordial(independent: np.ndarray) -> np.ndarray:
    """I, II, V1..V6 -> the 12 standard leads via Einthoven's and Goldberger's equations."""
    lead_i, lead_ii = independent[0], independent[1]
    return np.stack([
        lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2,
        *independent[2:],
    ])


def _normal_physiology(rng: np.random.Generator, variant: str) -> Physiology:
    hr = {"brady": rng.uniform(42, 58), "tachy": rng.uniform(100, 140)}.get(variant, rng.uniform(55, 98))
    axis = float(np.clip(rng.normal(50, 25), -25, 88))  # adult frontal QRS axis
    physiology = Physiology(
        heart_rate=hr,
        pr=rng.uniform(0.122, 0.198),
        p_duration=rng.uniform(0.075, 0.11),
        p_amplitude=rng.uniform(0.07, 0.2),
        p_axis=rng.uniform(20, 75),
        p_la_shift=np.array([0.4, -0.1, -0.5]),
        qrs=rng.uniform(0.072, 0.108),
        qrs_axis=axis,
        r_amplitude=rng.uniform(0.7, 1.6),
        r_posterior=rng.uniform(0.35, 0.75),
        septal=rng.uniform(0.08, 0.2),
        s_amplitude=rng.uniform(0.2, 0.5),
        qtc=rng.uniform(0.37, 0.445),
        t_amplitude=rng.uniform(0.2, 0.45),
        t_axis_offset=rng.normal(0, 15),
        sinus_arrhythmia=rng.uniform(0.005, 0.03),
    )
    if variant == "sinus_arrhythmia":
        physiology.sinus_arrhythmia = rng.uniform(0.06, 0.12)
    elif variant == "early_repolarisation":  # concave J-point elevation in V2-V4 and inferior leads
        physiology.st_vector = rng.uniform(0.04, 0.09) * _unit(np.array([0.2, 0.5, 0.8]))
    elif variant == "athlete_voltage":
        physiology.r_amplitude = rng.uniform(1.5, 2.0)
        physiology.heart_rate = rng.uniform(42, 60)
    return physiology


def _apply(physiology: Physiology, label: str, subtype: str, rng: np.random.Generator) -> None:
    """Change the normal physiology the way the finding does; ranges straddle each criterion's threshold."""
    p = physiology
    if label == "MI":
        wall, phase = subtype.split("_")
        u = _unit(_TERRITORY[wall])
        if phase == "old":  # necrosis: initial forces point away from the wall, its R is lost, T may invert
            p.q_vector = -u * rng.uniform(0.12, 0.45)
            p.q_width = rng.uniform(0.03, 0.045)
            p.r_loss = u * rng.uniform(0.3, 0.8)
            if rng.random() < 0.5:
                p.t_shift = p.t_shift - u * rng.uniform(0.1, 0.3)
        else:  # injury current: ST elevation towards the wall (reciprocal depression follows), hyperacute T
            p.st_vector = p.st_vector + u * rng.uniform(0.07, 0.35)
            p.t_shift = p.t_shift + u * rng.uniform(0.05, 0.3)
            if rng.random() < 0.4:
                p.q_vector = -u * rng.uniform(0.08, 0.25)
                p.q_width = rng.uniform(0.025, 0.04)
    elif label == "AF":
        p.rhythm = subtype
        p.heart_rate = rng.uniform(60, 150) if subtype == "fibrillation" else p.heart_rate
        p.f_amplitude = rng.uniform(0.015, 0.12) if subtype == "fibrillation" else rng.uniform(0.08, 0.22)
        p.flutter_rate = rng.uniform(240, 340) / 60 if subtype == "flutter" else 0.0
    elif label == "STTC":
        lateral_inferior = _unit(np.array([0.8, 0.6, -0.1]))
        if subtype == "st_depression":
            p.st_vector = p.st_vector - lateral_inferior * rng.uniform(0.05, 0.2)
            p.t_amplitude *= rng.uniform(0.5, 1.0)
        elif subtype == "t_inversion":
            p.t_shift = p.t_shift - lateral_inferior * rng.uniform(0.25, 0.6) - _unit(np.array([0.3, 0.2, 0.4])) * 0.05
        elif subtype == "t_flattening":
            p.t_amplitude *= rng.uniform(0.05, 0.3)
        else:
            p.qtc = rng.uniform(0.47, 0.56)
    elif label == "CD":
        if subtype == "lbbb":
            p.qrs, p.lbbb = rng.uniform(0.12, 0.17), True
        elif subtype == "rbbb":
            p.qrs = rng.uniform(0.12, 0.15)
            p.rbbb_terminal = rng.uniform(0.3, 0.9)
        elif subtype == "avb1":
            p.pr = rng.uniform(0.205, 0.32)
        elif subtype == "lafb":
            p.qrs_axis = rng.uniform(-80, -47)
            p.qrs = max(p.qrs, rng.uniform(0.09, 0.115))
        elif subtype == "lpfb":
            p.qrs_axis = rng.uniform(105, 140)
            p.qrs = max(p.qrs, rng.uniform(0.09, 0.115))
        else:  # WPW: short PR to the delta wave, slurred upstroke that widens the QRS
            p.pr = rng.uniform(0.13, 0.16)
            p.delta = rng.uniform(0.04, 0.06)
    elif label == "HYP":
        if subtype in ("lvh", "lvh_strain"):
            p.qrs_scale = rng.uniform(1.0, 1.3)  # rescaled to meet Sokolow-Lyon in `_enforce_voltage`
            p.r_posterior = rng.uniform(0.5, 0.8)
            p.qrs = min(p.qrs + rng.uniform(0.0, 0.015), 0.118) if p.qrs < 0.12 else p.qrs
            if subtype == "lvh_strain":
                p.st_vector = p.st_vector - _unit(np.array([0.9, 0.3, -0.3])) * rng.uniform(0.05, 0.15)
                p.t_shift = p.t_shift - _unit(np.array([0.9, 0.3, -0.3])) * rng.uniform(0.2, 0.45)
        elif subtype == "rvh":
            p.qrs_axis = rng.uniform(100, 150)
            p.r_posterior = -rng.uniform(0.6, 1.2)  # anterior forces: tall R in V1
        elif subtype == "lae":
            p.p_duration = rng.uniform(0.122, 0.15)
            p.p_la_shift = np.array([0.5, -0.1, -1.0])
        else:
            p.p_amplitude = rng.uniform(0.26, 0.35)
            p.p_axis = rng.uniform(70, 85)


def _beat_waves(p: Physiology, rr: float, with_p: bool) -> list[Wave]:
    """The wave components of one beat, times relative to QRS onset."""
    d = p.qrs
    waves: list[Wave] = []
    if with_p:
        sigma = p.p_duration / 6
        ra = _frontal(p.p_axis, 0.25)
        la = _unit(_frontal(p.p_axis) + p.p_la_shift)
        start = -p.pr - p.delta
        waves.append(Wave(start + 2.3 * sigma, sigma, sigma, ra * p.p_amplitude * 0.75))
        waves.append(Wave(start + p.p_duration - 2.3 * sigma, sigma, sigma, la * p.p_amplitude * 0.6))

    main = _unit(_frontal(p.qrs_axis, -p.r_posterior))
    septal = _unit(np.array([-0.7, 0.1, 0.7]))
    terminal = _unit(np.array([-0.6, -0.5, -0.4]))
    scale = p.qrs_scale
    if p.lbbb:  # no septal q; slow, notched, leftward-posterior depolarisation
        main = _unit(np.array([0.75, 0.15, -0.7]))
        amp = p.r_amplitude * scale * 0.8
        waves.append(Wave(0.33 * d, 0.14 * d, 0.12 * d, main * amp))
        waves.append(Wave(0.66 * d, 0.13 * d, 0.14 * d, main * amp * 1.05))
    else:
        base = min(d, 0.1) if p.rbbb_terminal else d
        waves.append(Wave(0.14 * base, 0.07 * base, 0.07 * base, septal * p.septal * scale))
        r_vec = main * p.r_amplitude * scale
        if p.r_loss is not None:
            r_vec = r_vec - p.r_loss * max(0.0, float(r_vec @ _unit(p.r_loss))) / np.linalg.norm(p.r_loss)
        waves.append(Wave(0.45 * base, 0.13 * base, 0.12 * base, r_vec))
        waves.append(Wave(0.76 * base, 0.09 * base, 0.09 * base, terminal * p.s_amplitude * scale))
        if p.rbbb_terminal:  # late slow forces towards the right ventricle: R' in V1, wide S in I and V6
            rv = _unit(np.array([-0.7, 0.05, 0.75]))
            waves.append(Wave(base + 0.45 * (d - base) + 0.01, 0.25 * (d - base) + 0.006, 0.22 * (d - base) + 0.006,
                              rv * p.rbbb_terminal))
    if p.q_vector is not None:
        waves.append(Wave(0.5 * p.q_width, 0.3 * p.q_width, 0.3 * p.q_width, p.q_vector))
    if p.delta:
        waves.append(Wave(-0.35 * p.delta, 0.35 * p.delta, 0.3 * p.delta, main * p.r_amplitude * 0.28))

    qt = p.qtc * np.sqrt(rr)
    t_right = 0.05 + 0.05 * (qt - 0.3)
    t_peak = qt - 2.6 * t_right
    t_dir = _frontal(p.qrs_axis + p.t_axis_offset, -0.1)
    if p.lbbb or p.rbbb_terminal:
        t_dir = -main if p.lbbb else _unit(np.array([0.6, 0.4, -0.5]))
    t_vec = _unit(t_dir) * p.t_amplitude + p.t_shift
    waves.append(Wave(t_peak, 0.55 * (t_peak - d), t_right, t_vec))
    st = p.st_vector - (0.12 * main if p.lbbb else 0.0)
    if np.any(st):
        waves.append(Wave(d + 0.01, 0.012, 0.0, st, plateau_to=t_peak))
    return waves


def _ectopic_waves(p: Physiology, rng: np.random.Generator) -> list[Wave]:
    """A premature ventricular beat: no P wave, a wide QRS from an ectopic focus, discordant T."""
    focus = _unit(rng.normal(0, 1, 3))
    width = rng.uniform(0.13, 0.17)
    amp = p.r_amplitude * rng.uniform(1.1, 1.8)
    return [
        Wave(0.35 * width, 0.16 * width, 0.14 * width, focus * amp),
        Wave(0.7 * width, 0.14 * width, 0.16 * width, focus * amp * 0.5),
        Wave(width + 0.17, 0.09, 0.06, -focus * p.t_amplitude * 1.5),
    ]


def _beat_times(p: Physiology, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """QRS onset times of every beat (from before the strip starts to after it ends) and mean RR."""
    rr0 = 60.0 / p.heart_rate
    times, t = [], -rng.uniform(0.3, 1.0) * rr0
    if p.rhythm == "fibrillation":
        shape = 1.0 / rng.uniform(0.15, 0.35) ** 2  # gamma with CV 0.15-0.35: irregularly irregular
        while t < duration + 1.0:
            times.append(t)
            t += max(0.3, rng.gamma(shape, rr0 / shape))
    elif p.rhythm == "flutter":
        flutter_period = 1.0 / p.flutter_rate
        ratios = [2, 3, 4] if rng.random() < 0.7 else [2, 3, 4, 2, 4]
        fixed = rng.choice([2, 3, 4]) if rng.random() < 0.6 else None
        while t < duration + 1.0:
            times.append(t)
            t += flutter_period * (fixed or rng.choice(ratios))
        rr0 = float(np.mean(np.diff(times)))
    else:
        resp_period, phase = rng.uniform(3, 6), rng.uniform(0, 2 * np.pi)
        while t < duration + 1.0:
            times.append(t)
            t += rr0 * (1 + p.sinus_arrhythmia * np.sin(2 * np.pi * t / resp_period + phase) + rng.normal(0, 0.01))
    return np.array(times), rr0


def _synthesise(waves: list[tuple[float, Wave]], t: np.ndarray) -> np.ndarray:
    """Sum all wave components on the time axis -> dipole (3, samples)."""
    dipole = np.zeros((3, t.size))
    for onset, wave in waves:
        x = t - (onset + wave.center)
        if wave.plateau_to is None:
            sigma = np.where(x < 0, wave.sigma_left, wave.sigma_right)
            shape = np.exp(-0.5 * (x / sigma) ** 2)
        else:  # an ST segment: rises at J, fades into the T wave
            end = onset + wave.plateau_to
            shape = 0.25 * (1 + np.tanh(x / (2 * wave.sigma_left))) * (1 - np.tanh((t - end) / 0.08))
        dipole += wave.vector[:, None] * shape[None, :]
    return dipole


def _noise(rng: np.random.Generator, n: int, fs: int, level: float) -> np.ndarray:
    """Baseline wander, muscle noise and mains hum for the 8 independent leads."""
    t = np.arange(n) / fs
    wander = sum(rng.uniform(0, 0.15 * level, (8, 1)) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t
                                                                 + rng.uniform(0, 2 * np.pi, (8, 1)))
                 for _ in range(2))
    kernel = np.ones(3) / 3
    emg = rng.normal(0, 1, (8, n))
    emg = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, emg)
    emg *= rng.uniform(0.003, 0.03) * level
    mains = rng.uniform(0, 0.02) * level * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t + rng.uniform(0, 6.3))
    return wander + emg + mains


PEAK_QRS_MV = 4.5


def _enforce_voltage(p: Physiology, lead_vectors: np.ndarray, hyp_subtype: str | None, sex: str,
                     rng: np.random.Generator) -> None:
    """Scale QRS forces so Sokolow-Lyon / Cornell sit on the right side of their thresholds."""
    t = np.arange(0, 0.25, 0.002)
    waves = [(0.0, w) for w in _beat_waves(p, 0.8, with_p=False) if w.center < p.qrs + 0.02 and w.plateau_to is None]
    leads = _limb_and_precordial(lead_vectors @ _synthesise(waves, t))
    sokolow = -leads[6].min() + max(leads[10].max(), leads[11].max())
    cornell = leads[4].max() - leads[8].min()
    cornell_limit = 2.8 if sex == "M" else 2.0
    if hyp_subtype in ("lvh", "lvh_strain"):
        target = rng.uniform(3.55, 5.5)
        # An axis that points the forces away from V1/V5/V6 (e.g. with LPFB) would need a huge scale to
        # reach the target there; no lead of a real heart goes past about 4.5 mV, so stop at that.
        peak = max(float(np.abs(leads).max()), 1e-3)
        p.qrs_scale *= max(1.0, min(target / max(sokolow, 1e-3), PEAK_QRS_MV / peak))
    else:
        ceiling = min(3.4 / max(sokolow, 1e-3), 0.97 * cornell_limit / max(cornell, 1e-3))
        if ceiling < 1.0:
            p.qrs_scale *= ceiling


def draw_labels(rng: np.random.Generator, prevalence: dict[str, float] | None = None,
                normal_fraction: float = DEFAULT_NORMAL_FRACTION) -> dict[str, str]:
    """Label -> subtype for one record; an empty dict is a normal ECG."""
    prevalence = prevalence or DEFAULT_PREVALENCE
    if rng.random() < normal_fraction:
        return {}
    scale = 1.0 / (1.0 - normal_fraction)
    while True:
        chosen = {name: str(rng.choice(SUBTYPES[name])) for name in LABELS
                  if rng.random() < min(0.95, prevalence[name] * scale * 0.8)}
        if chosen:
            break
    if "AF" in chosen and chosen.get("CD") in ("avb1", "wpw"):  # no PR interval without P waves
        chosen["CD"] = str(rng.choice(("lbbb", "rbbb", "lafb", "lpfb")))
    if chosen.get("CD") in ("lafb", "lpfb") and chosen.get("HYP") == "rvh":  # both set the frontal axis
        chosen["CD"] = "rbbb"
    return chosen


def generate_record(seed: int, fs: int = 500, duration: float = 10.0, noise: float | None = None,
                    findings: dict[str, str] | None = None, prevalence: dict[str, float] | None = None,
                    normal_fraction: float | None = None) -> Record:
    """One 12-lead record, deterministic in `seed`; `findings` (label -> subtype) overrides the random draw.

    `prevalence` (label -> share, missing labels keep the default) and `normal_fraction` steer the draw;
    the realised shares are close to, not exactly, the requested ones because labels overlap.
    """
    rng = np.random.default_rng(seed)
    wanted = {**DEFAULT_PREVALENCE, **(prevalence or {})}
    chosen = dict(findings) if findings is not None else draw_labels(
        rng, wanted, DEFAULT_NORMAL_FRACTION if normal_fraction is None else normal_fraction)
    variant = "pathological" if chosen else str(rng.choice(NORMAL_VARIANTS, p=[0.5, 0.1, 0.12, 0.1, 0.09, 0.09]))
    physiology = _normal_physiology(rng, variant if not chosen else "plain")
    order = ["CD", "HYP", "MI", "STTC", "AF"]
    for label in order:
        if label in chosen:
            _apply(physiology, label, chosen[label], rng)
    sex = str(rng.choice(["M", "F"]))
    lead_vectors = _lead_matrix(rng)
    _enforce_voltage(physiology, lead_vectors, chosen.get("HYP"), sex, rng)
    if chosen.get("HYP") == "rvh":  # keep the V1 R dominant after any rescale
        physiology.septal *= 0.5

    n = round(duration * fs)
    t = np.arange(n) / fs
    onsets, rr = _beat_times(physiology, duration, rng)
    with_p = physiology.rhythm == "sinus"
    ectopic: set[int] = set()
    if physiology.rhythm != "flutter" and rng.random() < 0.1:  # occasional PVCs, early with a compensatory pause
        ectopic = {int(i) for i in rng.choice(np.arange(2, len(onsets) - 1), size=rng.integers(1, 3), replace=False)}
        for index in sorted(ectopic):
            onsets[index] = onsets[index - 1] + rng.uniform(0.55, 0.75) * (onsets[index] - onsets[index - 1])
    events = []
    for index, onset in enumerate(onsets):
        if index in ectopic:
            events += [(onset, wave) for wave in _ectopic_waves(physiology, rng)]
            continue
        beat_rr = float(onsets[index + 1] - onset) if index + 1 < len(onsets) else rr
        events += [(onset, wave) for wave in _beat_waves(physiology, beat_rr if not with_p else rr, with_p)]
    dipole = _synthesise(events, t)
    if physiology.rhythm == "fibrillation":
        freqs = rng.uniform(4.5, 9.0, 4)
        f = sum(np.sin(2 * np.pi * fr * t + rng.uniform(0, 6.3)) * rng.uniform(0.5, 1.0) for fr in freqs) / 2.5
        dipole += np.outer(_unit(np.array([-0.3, 0.6, 0.75])), physiology.f_amplitude * f)
    elif physiology.rhythm == "flutter":
        phase = (t * physiology.flutter_rate + rng.uniform()) % 1.0
        saw = np.where(phase < 0.8, phase / 0.8, (1 - phase) / 0.2) - 0.5
        dipole += np.outer(_unit(np.array([0.0, -1.0, 0.35])), physiology.f_amplitude * saw)

    independent = lead_vectors @ dipole
    level = float(rng.uniform(0.3, 1.6)) if noise is None else noise
    independent += _noise(rng, n, fs, level)
    signals = _limb_and_precordial(independent)

    params = {
        "heart_rate": round(60.0 / rr, 1),
        "pr_ms": round((physiology.pr - physiology.delta) * 1000, 1) if with_p else None,
        "qrs_ms": round((physiology.qrs + physiology.delta) * 1000, 1), "qtc_ms": round(physiology.qtc * 1000, 1),
        "qrs_axis": round(physiology.qrs_axis, 1), "rhythm": physiology.rhythm, "sex": sex,
        "age": int(rng.integers(18, 90)), "noise": round(level, 2), "ectopic_beats": len(ectopic),
    }
    return Record(signals=signals.astype(np.float32), fs=fs, labels={k: int(k in chosen) for k in LABELS},
                  subtypes=[f"{k}:{v}" for k, v in chosen.items()] or [f"NORM:{variant}"], variant=variant,
                  seed=seed, params=params)
