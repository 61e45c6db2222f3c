"""The learned half of digitising: exact trace truth from every drawing family, the cleaning's sheet transform
that carries it onto the cleaned page, the segmenter that learns from it, what the shipped segmenter reads on a
family it never saw, the peak-aware column reading and Einthoven's correction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ingest.preprocess import STEPS, brightest_channel, clean
from ingest.render import STANDARD_LEADS, PaperStyle, render_paper, trace_mask
from model_training.digitise.classical import FS, TIMES, Digitised, PixelBox, read_box
from model_training.digitise.einthoven import LIMB_BASIS, einthoven
from model_training.digitise.page import digitise_image
from model_training.digitise.score import snr_per_lead
from model_training.digitise.segment import (
    Segmenter,
    TraceNet,
    dice_score,
    make_pages,
    onto_sheet,
    sheet_of,
    shipped_segmenter,
    train_segmenter,
)
from model_training.synth.families import FAMILIES, drawing_with_mask, render_family
from model_training.synth.signals import generate_record

DPI = 100


@pytest.fixture(scope="module")
def record():
    return generate_record(23)


def test_the_trace_mask_is_the_pen_alone(record) -> None:
    style = PaperStyle.named("red", dpi=DPI, header=("PATIENT 123456", "Ward 4"))
    page = render_paper(record.signals, record.fs, record.leads, style)
    mask = trace_mask(record.signals, record.fs, record.leads, style)
    assert mask.shape == page.shape[:2]
    dark = page.max(axis=2) < 160  # the pen; the red grid is bright in its red channel
    assert dark[mask > 128].mean() > 0.97
    near_trace = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert (dark & ~near_trace)[: round(20 / 25.4 * DPI)].sum() > 100  # the header's text is ink, not trace


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_draws_its_page_with_an_exact_trace_mask(record, family: str) -> None:
    drawing = drawing_with_mask(record, 40, family, DPI)
    page, _ = render_family(record, 40, family, "none", DPI)
    assert np.array_equal(drawing.image, page)  # the mask is of the very page the family draws
    trace = drawing.mask > 128
    assert 0.003 < trace.mean() < 0.2
    assert (drawing.image.min(axis=2)[trace] < 160).mean() > 0.95
    near_trace = cv2.dilate((drawing.mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert ((drawing.image.min(axis=2) < 100) & ~near_trace).sum() > 200  # labels, frames, ticks: not trace


def test_the_sheet_transform_carries_the_page_onto_the_cleaned_sheet(record) -> None:
    """A photo of a page on a desk, at an angle: the original's pixels, carried by `sheet_transform`, land where
    cleaning put them."""
    page = render_paper(record.signals, record.fs, record.leads, PaperStyle.named("red", dpi=300))
    h, w = page.shape[:2]
    desk = np.full((h + 400, w + 400, 3), 60, np.uint8)
    desk[200:200 + h, 200:200 + w] = page
    corners = np.float32([[200, 200], [200 + w, 200], [200 + w, 200 + h], [200, 200 + h]])
    moved = corners + np.float32([[30, 10], [-20, 40], [10, -30], [-25, 5]])
    photo = cv2.warpPerspective(desk, cv2.getPerspectiveTransform(corners, moved), desk.shape[1::-1],
                                borderValue=(60, 60, 60))
    cleaned = clean(photo, (256, 352), STEPS, keep_stages=True)
    assert cleaned.page_found and cleaned.work_factor == 3
    sheet = sheet_of(cleaned)
    carried = onto_sheet(brightest_channel(photo), cleaned, sheet.shape, 255) < 100
    ink = sheet < 128
    assert (carried & ink).sum() / carried.sum() > 0.9
    assert (np.roll(carried, 2, axis=0) & ink).sum() / carried.sum() < 0.7  # two pixels off is clearly worse


def test_a_few_steps_teach_the_segmenter_the_trace() -> None:
    pages = make_pages(("ours", "dicomplot"), 1, 0, 1)
    x, y = pages[0]
    assert x.shape[0] == 4 and x.shape[1:] == y.shape and 0.005 < y.mean() < 0.2
    torch.manual_seed(0)
    untrained = Segmenter(TraceNet().eval(), {})
    trained = train_segmenter(pages, pages, 40, {"what": "test"}, batch=6, size=96)
    assert trained.info["what"] == "test" and trained.info["steps"] == 40
    assert dice_score(trained.probabilities(x), y) > max(0.3, dice_score(untrained.probabilities(x), y) + 0.15)


def test_the_shipped_segmenter_reads_a_family_it_never_saw(record) -> None:
    segmenter = shipped_segmenter()
    assert segmenter is not None, "models/digitiser ships with the code"
    held_out = segmenter.info["held_out_family"]
    assert held_out == "wfdbplot" and held_out not in segmenter.info["families"]
    page, _ = render_family(record, 41, held_out, "none", 150)
    learned = digitise_image(page)
    classical = digitise_image(page, None)
    assert learned.method == "learned" and classical.method == "classical"
    assert learned.layout.name == "12x1"
    scores = snr_per_lead(record.signals, learned.digitised.signals, FS, learned.digitised.leads)
    baseline = snr_per_lead(record.signals, classical.digitised.signals, FS, classical.digitised.leads)
    learned_db = np.median(np.nan_to_num(list(scores.values())))
    assert learned_db > 5 and learned_db > np.median(np.nan_to_num(list(baseline.values()))) + 3, (scores, baseline)


@pytest.mark.parametrize(("family", "seed", "layout"), [("ecgplot", 42, "3x4"), ("ecgplot", 45, "3x4"),
                                                     ("dicomplot", 41, "3x4"), ("dicomplot", 47, "6x2")])
def test_other_printers_pages_are_laid_out_and_read(record, family: str, seed: int, layout: str) -> None:
    """ecg_plot prints each lead in a panel of its own, with blank gaps between; dicom-ecg-plot prints contiguous
    rows with no calibration pulse: both are found and read."""
    page, style = render_family(record, seed, family, "none", 150)
    reading = digitise_image(page)
    assert reading.layout.name == layout, style
    scores = snr_per_lead(record.signals, reading.digitised.signals, FS, reading.digitised.leads)
    assert np.median(np.nan_to_num(list(scores.values()))) > 7, scores


def test_a_sharp_peak_is_read_at_its_apex_not_cut_short() -> None:
    """A thick pen rounds a sharp R wave's columns: the column at the apex holds the apex, not the middle of the
    run the pen left there."""
    mask = np.zeros((200, 300), np.uint8)
    apex_mv, px_per_mv, baseline = 1.5, 40.0, 150
    xs = np.arange(60, 240)
    ys = baseline - np.clip(apex_mv - np.abs(xs - 150) * 0.1, 0, None) * px_per_mv  # a 1.5 mV triangle
    cv2.polylines(mask, [np.stack([xs, ys], axis=1).round().astype(np.int32)], False, 1, 5)
    box = PixelBox("II", 0.0, 2.0, 50.0, 100.0, baseline, px_per_mv, 0, 200)
    reading = read_box(mask.astype(bool), box, TIMES)
    assert np.nanmax(reading) == pytest.approx(apex_mv, abs=0.05)
    assert np.nanmin(reading) == pytest.approx(0.0, abs=0.05)


def test_einthoven_makes_the_limb_leads_agree_and_invents_nothing(record) -> None:
    rng = np.random.default_rng(0)
    truth = record.signals[:, : TIMES.size]
    noisy = truth + rng.normal(0, 0.05, truth.shape)
    shown = np.zeros(truth.shape, bool)
    shown[:3, :1250] = True  # I, II, III together in the first column
    shown[3:6, 1250:2500] = True  # aVR, aVL, aVF in the second
    shown[1] = True  # the II rhythm strip
    shown[6:] = True
    reading = Digitised(np.where(shown, noisy, np.nan), STANDARD_LEADS, dict.fromkeys(STANDARD_LEADS, 1.0))
    corrected = einthoven(reading).signals
    assert np.array_equal(np.isnan(corrected), ~shown)  # no lead appears where the page did not show it
    first = corrected[:, :1250]
    assert np.ptp(first[0] + first[2] - first[1]) < 1e-9  # I + III = II, but for each row's own level
    second = corrected[:, 1250:2500]
    assert np.ptp(second[3] + second[4] + second[5]) < 1e-9  # aVR + aVL + aVF = 0, as above
    assert np.array_equal(corrected[6:], reading.signals[6:])  # chest leads untouched
    limb = [STANDARD_LEADS.index(lead) for lead in LIMB_BASIS]
    error_before = np.nanstd(reading.signals[limb] - truth[limb])
    error_after = np.nanstd(corrected[limb] - truth[limb])
    assert error_after < 0.85 * error_before  # independent reading errors average out
