"""The criteria each generated group must meet when measured blind, and the report of how often it does.

One table serves both the tests (which assert the required share on a small sample) and
`ecg-intake bench validity` (which reports the measured share on a larger one for the README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model_training.measure import Measurements, measure
from model_training.synth.signals import generate_record


@dataclass(frozen=True)
class Check:
    group: str
    findings: dict[str, str]
    criterion: str
    holds: Callable[[Measurements], bool]
    required: float
    base_seed: int


NORMAL = {}
CHECKS = (
    Check("normal", NORMAL, "QRS < 120 ms", lambda m: m.qrs_ms < 120, 0.95, 1000),
    Check("normal", NORMAL, "PR <= 200 ms", lambda m: m.pr_ms <= 200, 0.95, 1000),
    Check("normal", NORMAL, "Sokolow-Lyon < 3.5 mV", lambda m: m.sokolow_mv < 3.5, 0.95, 1000),
    # Marked sinus arrhythmia is irregular on purpose (an AF mimic) but keeps its P waves.
    Check("normal", NORMAL, "not irregular and P-less",
          lambda m: m.rr_irregularity < 0.08 or m.p_amplitude >= 0.08, 0.95, 1000),
    Check("normal", NORMAL, "axis -30..100", lambda m: -30 <= m.axis_deg <= 100, 0.9, 1000),
    Check("CD:lbbb", {"CD": "lbbb"}, "QRS >= 120 ms", lambda m: m.qrs_ms >= 120, 0.9, 2000),
    # QRS drawn from 120 ms; the measurement's tolerance is 15 ms.
    Check("CD:rbbb", {"CD": "rbbb"}, "QRS >= 120 ms", lambda m: m.qrs_ms >= 120, 0.85, 2000),
    # PR drawn from 205 ms; the measurement reads about 10 ms short.
    Check("CD:avb1", {"CD": "avb1"}, "PR > 200 ms", lambda m: m.pr_ms > 200, 0.85, 2000),
    Check("CD:lafb", {"CD": "lafb"}, "axis <= -45", lambda m: m.axis_deg <= -45, 0.9, 2000),
    Check("CD:lpfb", {"CD": "lpfb"}, "axis >= 100", lambda m: m.axis_deg >= 100, 0.9, 2000),
    Check("HYP:lvh", {"HYP": "lvh"}, "Sokolow-Lyon >= 3.5 or Cornell >= 2.8 mV",
          lambda m: m.sokolow_mv >= 3.5 or m.cornell_mv >= 2.8, 0.9, 3000),
    Check("HYP:lvh_strain", {"HYP": "lvh_strain"}, "voltage criterion and lateral T < 0.1 mV",
          lambda m: (m.sokolow_mv >= 3.5 or m.cornell_mv >= 2.8) and m.t_lateral_mv < 0.1, 0.9, 3000),
    Check("HYP:rvh", {"HYP": "rvh"}, "axis >= 100 and R/S V1 > 1",
          lambda m: m.axis_deg >= 100 and m.rs_ratio_v1 > 1, 0.9, 3000),
    Check("HYP:rae", {"HYP": "rae"}, "P >= 0.25 mV", lambda m: m.p_amplitude >= 0.25, 0.9, 3000),
    Check("AF:fibrillation", {"AF": "fibrillation"}, "median successive RR change > 8 %",
          lambda m: m.rr_irregularity > 0.08, 0.95, 4000),
)


def measured(findings: dict[str, str], base_seed: int, n: int) -> list[Measurements]:
    """Blind measurements of `n` records forced to `findings`, from consecutive seeds."""
    return [measure(r.signals, r.fs) for r in
            (generate_record(seed, findings=findings) for seed in range(base_seed, base_seed + n))]


def share(check: Check, values: list[Measurements]) -> float:
    return float(np.mean([bool(check.holds(m)) for m in values]))


def validity_report(n: int = 100) -> list[dict[str, object]]:
    """Each check's measured share on `n` records per group (groups are measured once)."""
    cache: dict[tuple[str, int], list[Measurements]] = {}
    rows = []
    for check in CHECKS:
        key = (check.group, check.base_seed)
        if key not in cache:
            cache[key] = measured(check.findings, check.base_seed, n)
        rows.append({"group": check.group, "criterion": check.criterion, "share": round(share(check, cache[key]), 3),
                     "required": check.required, "records": n})
    return rows
