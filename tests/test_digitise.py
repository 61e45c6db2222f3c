"""Paper back to signal: the page geometry the renderer draws by, the SNR score, and the classical digitiser
reading pages of ours back against the true signal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ingest.render import LAYOUTS, STANDARD_LEADS, PaperStyle, paper_geometry, render_paper
from model_training.digitise.classical import FS, digitise_known, ink_mask
from model_training.digitise.page import digitise_image
from model_training.digitise.score import snr_db, snr_per_lead
from model_training.synth.signals import generate_record
from tests.helpers.cli import Cli

DPI = 200
PX_PER_MM = DPI / 25.4


@pytest.fixture(scope="module")
def record():
    return generate_record(11)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_geometry_names_every_segment_the_renderer_draws(record, layout: str) -> None:
    style = PaperStyle(dpi=DPI, layout=layout, rhythm_leads=("II", "V1"))
    geometry = paper_geometry(style, record.fs, record.leads)
    rhythm = 0 if layout == "12x1" else 2
    assert len(geometry.boxes) == 12 + rhythm
    assert {box.lead for box in geometry.boxes} == set(STANDARD_LEADS)
    page = render_paper(record.signals, record.fs, record.leads, style)
    ink = ink_mask(page)
    for box in geometry.boxes:
        # the trace is drawn where its box says: at its first sample, in its row, near value x gain
        x = round(box.x0_mm * PX_PER_MM) + 2
        value = record.signals[record.leads.index(box.lead), box.start + round(2 / PX_PER_MM / 25 * record.fs)]
        y = round((box.baseline_mm - value * style.gain_mm_mv) * PX_PER_MM)
        assert ink[y - 4: y + 5, x].any(), (layout, box)
    rows = sorted({box.row for box in geometry.boxes})
    assert rows == list(range(len(LAYOUTS[layout]) + rhythm))


def test_snr_is_exact_for_a_perfect_reading_and_forgives_offset_and_a_small_shift() -> None:
    t = np.arange(FS * 10) / FS
    truth = np.sin(2 * np.pi * 1.3 * t) + 0.3 * np.sin(2 * np.pi * 7 * t)
    assert snr_db(truth, truth, FS) == math.inf
    moved = np.roll(truth, 10) + 0.4  # 20 ms late and 0.4 mV up: where the pen was put, not the heart
    moved[:10] = np.nan
    assert snr_db(truth, moved, FS) > 100  # exact but for rounding
    assert snr_db(truth, np.roll(truth, 100), FS) < 3  # 200 ms is a different signal
    noise = np.random.default_rng(0).normal(0, 0.1, truth.size)
    expected = 10 * np.log10(np.sum(truth**2) / np.sum((noise - noise.mean()) ** 2))
    assert snr_db(truth, truth + noise, FS) == pytest.approx(expected, abs=0.2)


def test_snr_scores_only_the_samples_the_page_showed() -> None:
    truth = np.sin(np.linspace(0, 20, FS * 10))
    reading = np.full_like(truth, np.nan)
    assert math.isnan(snr_db(truth, reading, FS))
    reading[1000:2250] = truth[1000:2250]
    assert snr_db(truth, reading, FS) == math.inf
    scores = snr_per_lead(np.vstack([truth, truth]), np.vstack([reading, np.zeros_like(truth)]), FS, ("I", "II"))
    assert scores["I"] == math.inf and scores["II"] == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("layout", ["3x4", "6x2", "2x6"])
def test_classical_digitiser_reads_a_clean_page_back(record, layout: str) -> None:
    style = PaperStyle(dpi=DPI, layout=layout, rhythm_leads=("II",))
    page = render_paper(record.signals, record.fs, record.leads, style)
    reading = digitise_known(page, paper_geometry(style, record.fs, record.leads), PX_PER_MM, record.fs, record.leads)
    assert reading.signals.shape == (12, FS * 10) and reading.fs == FS
    assert min(reading.read.values()) > 0.98
    scores = snr_per_lead(record.signals, reading.signals, FS, reading.leads)
    assert np.median(list(scores.values())) > 12, scores
    assert min(scores.values()) > 5, scores  # a low lead (III here) has little signal to set against the noise
    # each lead is shown for its column's share of the 10 s; II, the rhythm strip, for all of it
    seen = dict(zip(reading.leads, np.isfinite(reading.signals).mean(axis=1), strict=True))
    assert seen["II"] > 0.99
    assert seen["V1"] == pytest.approx(1 / len(LAYOUTS[layout][0]), abs=0.01)


def test_an_erased_lead_is_unread_never_flat(record) -> None:
    style = PaperStyle(dpi=DPI, layout="3x4", rhythm_leads=())
    geometry = paper_geometry(style, record.fs, record.leads)
    page = render_paper(record.signals, record.fs, record.leads, style)
    (box,) = [box for box in geometry.boxes if box.lead == "V2"]
    half = box.row_height_mm / 2 * PX_PER_MM
    y0, y1 = round(box.baseline_mm * PX_PER_MM - half), round(box.baseline_mm * PX_PER_MM + half)
    x0, x1 = round(box.x0_mm * PX_PER_MM) - 2, round((box.x0_mm + 2.5 * 25) * PX_PER_MM) + 2
    page[y0:y1, x0:x1] = 255
    reading = digitise_known(page, geometry, PX_PER_MM, record.fs, record.leads)
    assert reading.read["V2"] == 0 and np.isnan(reading.signals[reading.leads.index("V2")]).all()
    assert reading.read["V1"] > 0.98


def test_bench_digitise_reports_snr_per_layout_and_lead(cli: Cli, tmp_path) -> None:
    out = tmp_path / "digitise.json"
    cli("bench", "digitise", "--n", "2", "--family-pages", "1", "--families", "ours,wfdbplot", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "digitise" and result["records"] == 2
    assert set(result["layout_found"]) == {"classical", "learned"}
    assert set(result["layout_found"]["learned"]) == {"clean", "photometric"}
    assert result["segmenter"]["held_out_family"] == "wfdbplot"
    for method in ("known", "classical", "learned"):
        clean = result[method]["overall"]["clean"]
        assert clean["leads"] == 24 and set(result[method]["per_lead"]["clean"]) == set(STANDARD_LEADS)
        assert sum(row["leads"] for row in result[method]["per_layout"]["clean"].values()) == 24
    assert result["known"]["overall"]["clean"]["median_db"] > 5
    assert set(result["families"]) == {"ours", "wfdbplot"}
    assert result["families"]["wfdbplot"]["held_out"] and not result["families"]["ours"]["held_out"]
    for levels in result["families"].values():
        for level in ("none", "heavy"):
            assert set(levels[level]) == {"classical", "learned", "learned+einthoven"}
            assert all(reading["leads"] == 12 for reading in levels[level].values())


@pytest.mark.parametrize(("layout", "rhythm"), [("3x4", ("II",)), ("3x4", ()), ("6x2", ()), ("12x1", ()),
                                                ("2x6", ("II",)), ("3x4", ("II", "V1", "V5"))])
def test_the_layout_is_found_on_the_page(record, layout: str, rhythm: tuple[str, ...]) -> None:
    style = PaperStyle(dpi=DPI, layout=layout, rhythm_leads=rhythm)
    reading = digitise_image(render_paper(record.signals, record.fs, record.leads, style))
    assert reading.layout.name == layout
    assert len(reading.layout.rows) == len(LAYOUTS[layout]) + (0 if layout == "12x1" else len(rhythm))
    assert reading.layout.unnamed_rows == 0
    rhythm_boxes = [box.lead for box in reading.layout.boxes if box.stop_s - box.start_s > 9]
    assert rhythm_boxes == (list(STANDARD_LEADS) if layout == "12x1" else list(rhythm))
    scores = snr_per_lead(record.signals, reading.digitised.signals, FS, reading.digitised.leads)
    assert np.median(list(scores.values())) > 8, scores


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, object]:
    """`ecg-intake samples`: a real 12-lead recording (pydicom's) as DICOM, and drawn as a scan, photo and PDF."""
    from model_training.synth.samples import write_samples

    folder = tmp_path_factory.mktemp("samples")
    return {path.name: path for path in write_samples(folder, with_bad=True)}


def test_digitise_writes_a_waveform_files_own_recording_and_reads_a_scan_of_it(cli: Cli, samples, tmp_path) -> None:
    import wfdb

    out = tmp_path / "out"
    cli("digitise", str(samples["ecg-waveform.dcm"]), "--out", str(out))
    recording = wfdb.rdrecord(str(out / "ecg-waveform-p1"))
    assert recording.fs == FS and recording.sig_name == list(STANDARD_LEADS)
    assert any("recording" in comment for comment in recording.comments)
    truth = recording.p_signal.T
    assert np.isfinite(truth).all() and np.ptp(truth, axis=1).min() > 0.1  # every lead, never flat
    table = cli("digitise", str(samples["ecg-scan.png"]), "--out", str(out)).stdout
    assert "3x4" in table and "12 of 12" in table
    scan = wfdb.rdrecord(str(out / "ecg-scan-p1")).p_signal.T
    scores = snr_per_lead(truth, scan, FS, STANDARD_LEADS)  # a real recording, drawn and read back
    assert np.median(list(scores.values())) > 8, scores
    cli("digitise", str(samples["ecg-scan.png"]), "--out", str(out), "--format", "csv")
    rows = (out / "ecg-scan-p1.csv").read_text().splitlines()
    assert rows[0].split(",") == ["time_s", *STANDARD_LEADS] and len(rows) == 1 + 10 * FS
    assert ",," in rows[1]  # a 3x4 page shows V1 only from 5 s: empty, not zero
    refused = cli("digitise", str(samples["bad-random-bytes.pdf"]), "--out", str(out), check=False)
    assert refused.returncode == 1 and "unsupported_type" in refused.stdout + refused.stderr


def test_digitised_dicom_keeps_the_source_study_and_marks_unshown_samples(cli: Cli, samples, tmp_path) -> None:
    """A derived 12-lead waveform object: the source's patient and study, unshown samples as the padding value,
    which our own decoder reads back as gaps (drawn as gaps, never as 0 mV)."""
    import pydicom

    from ingest.decode import decode

    out = tmp_path / "out"
    cli("digitise", str(samples["ecg-waveform.dcm"]), "--out", str(out), "--format", "dicom")
    cli("digitise", str(samples["ecg-scan.png"]), "--out", str(out), "--format", "dicom")
    source = pydicom.dcmread(samples["ecg-waveform.dcm"])
    derived = pydicom.dcmread(out / "ecg-waveform-p1.dcm")
    assert derived.PatientID == source.PatientID and derived.StudyInstanceUID == source.StudyInstanceUID
    assert derived.SeriesInstanceUID != source.SeriesInstanceUID
    assert derived.WaveformSequence[0].WaveformOriginality == "DERIVED"
    scan = pydicom.dcmread(out / "ecg-scan-p1.dcm")
    assert "WaveformPaddingValue" in scan.WaveformSequence[0] and "3x4" in scan.SeriesDescription
    _, (page,) = decode(out / "ecg-scan-p1.dcm")
    unshown = dict(zip(STANDARD_LEADS, np.isnan(page.signals).mean(axis=1), strict=True))
    assert unshown["II"] == 0 and unshown["V1"] == pytest.approx(0.75, abs=0.01)
    assert np.nanmax(np.abs(page.signals)) < 10  # no padding value read as -81.92 mV
    assert (page.image < 128).any()  # drawn, with its gaps
