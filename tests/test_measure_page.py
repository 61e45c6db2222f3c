"""`measure_page` measures a digitised page as `measure` measures the whole recording, from leads drawn only in
part (a 3x4 page: each lead for 2.5 s beside a 10 s rhythm strip), and says None where the page does not allow
a measurement."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.render import LAYOUT_3X4, STANDARD_LEADS
from model_training.measure import LEAD_INDEX, measure, measure_page
from model_training.synth.signals import generate_record

TOLERANCE = {"heart_rate": 2.0, "pr_ms": 20.0, "qrs_ms": 15.0, "qtc_ms": 30.0, "axis_deg": 15.0}


def as_3x4(signals: np.ndarray) -> np.ndarray:
    """What a 3x4 page with a lead II rhythm strip shows of a 10 s record; NaN elsewhere."""
    shown = np.full_like(signals, np.nan)
    quarter = signals.shape[1] // 4
    for row in LAYOUT_3X4:
        for column, name in enumerate(row):
            window = slice(column * quarter, (column + 1) * quarter)
            shown[LEAD_INDEX[name], window] = signals[LEAD_INDEX[name], window]
    shown[LEAD_INDEX["II"]] = signals[LEAD_INDEX["II"]]
    return shown


def _angle(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


@pytest.mark.parametrize("seed", [2, 3, 4, 7, 9, 11])
def test_a_3x4_page_measures_as_the_whole_record(seed: int) -> None:
    record = generate_record(seed)
    whole = measure(record.signals, record.fs)
    page = measure_page(as_3x4(record.signals), record.fs)
    assert page.leads == STANDARD_LEADS
    assert abs(page.heart_rate - whole.heart_rate) <= TOLERANCE["heart_rate"]
    assert abs(page.pr_ms - whole.pr_ms) <= TOLERANCE["pr_ms"]
    assert abs(page.qrs_ms - whole.qrs_ms) <= TOLERANCE["qrs_ms"]
    assert abs(page.qtc_ms - whole.qtc_ms) <= TOLERANCE["qtc_ms"]
    assert _angle(page.axis_deg, whole.axis_deg) <= TOLERANCE["axis_deg"]
    assert page.qt_ms == pytest.approx(page.qtc_ms * np.sqrt(60 / page.heart_rate))


def test_a_whole_record_measures_exactly_as_measure() -> None:
    record = generate_record(3)
    whole, page = measure(record.signals, record.fs), measure_page(record.signals, record.fs)
    assert (page.heart_rate, page.pr_ms, page.qrs_ms, page.qtc_ms, page.axis_deg) == pytest.approx(
        (whole.heart_rate, whole.pr_ms, whole.qrs_ms, whole.qtc_ms, whole.axis_deg))
    assert page.beats == whole.n_beats


def test_nothing_read_measures_nothing() -> None:
    page = measure_page(np.full((12, 5000), np.nan), 500)
    assert page.as_dict() == {"heart_rate": None, "pr_ms": None, "qrs_ms": None, "qt_ms": None, "qtc_ms": None,
                              "axis_deg": None, "beats": 0}
    assert page.leads == ()


def test_a_rhythm_strip_alone_gives_the_rate_and_no_intervals() -> None:
    record = generate_record(3)
    strip = np.full_like(record.signals, np.nan)
    strip[LEAD_INDEX["II"]] = record.signals[LEAD_INDEX["II"]]
    page = measure_page(strip, record.fs)
    assert abs(page.heart_rate - measure(record.signals, record.fs).heart_rate) <= TOLERANCE["heart_rate"]
    assert (page.pr_ms, page.qrs_ms, page.qtc_ms, page.axis_deg) == (None, None, None, None)
    assert page.leads == ("II",)
