"""Each cleaning step against a distortion whose true value is known: rotation, shadow, grid, sheet, crease, margin."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.preprocess import (
    STEPS,
    _percentile_u8,
    _row_percentiles,
    brightest_channel,
    clean,
    estimate_skew,
    find_page,
    find_trace_area,
    flatten_creases,
    flatten_illumination,
    grid_spectra,
    preprocess,
    rotate,
    suppress_grid,
    thumbnail,
    to_gray,
)
from ingest.render import PaperStyle, render_paper
from model_training.bench.preprocess import deskew_errors, paper_unevenness
from model_training.synth.paper import ARTIFACTS
from model_training.synth.signals import generate_record

SIZE = (384, 768)


def _page(grid: str = "red", seed: int = 5, dpi: int = 150, **style: object) -> np.ndarray:
    record = generate_record(seed)
    return render_paper(record.signals, record.fs, record.leads, PaperStyle.named(grid, "a4", dpi=dpi, **style))


def test_rotation_is_recovered_within_half_a_degree() -> None:
    result = deskew_errors(n=12)
    assert result["max_error_deg"] < 0.5, result


def test_deskew_turns_a_rotated_page_back() -> None:
    page = brightest_channel(_page())
    for angle in (-6.5, 3.2):
        cleaned = clean(cv2.cvtColor(rotate(page, angle), cv2.COLOR_GRAY2BGR), SIZE, ("illumination", "deskew"))
        assert cleaned.skew_deg == pytest.approx(-angle, abs=0.5)


def test_skew_is_recovered_to_a_twentieth_of_a_degree_across_the_range() -> None:
    """Angles on the 0.05-degree grid come back exactly, as they did when each candidate rotated the whole copy."""
    luminance = to_gray(_page())
    for angle in (-8.3, -4.1, -1.7, 0.6, 2.45, 7.2):
        assert estimate_skew(flatten_illumination(rotate(luminance, angle))) == pytest.approx(-angle, abs=0.01), angle


def test_shadow_is_flattened() -> None:
    rng = np.random.default_rng(3)
    shadowed = brightest_channel(ARTIFACTS["shadow"](_page(), 1.0, rng))
    before = paper_unevenness(shadowed)
    after = paper_unevenness(flatten_illumination(shadowed))
    assert before > 0.15 and after < 0.03, (before, after)


def test_grid_is_removed_while_trace_pixels_survive() -> None:
    with_grid, without = _page("red"), _page("none")
    trace = brightest_channel(without) < 100  # where the pen drew, known from the grid-free twin
    grid_only = (brightest_channel(with_grid) < 250) & ~cv2.dilate(trace.astype(np.uint8), np.ones((5, 5))).astype(
        bool)
    cleaned = suppress_grid(flatten_illumination(brightest_channel(with_grid)))
    assert grid_only.mean() > 0.01  # the twin really has a grid
    assert (cleaned[grid_only] > 230).mean() > 0.98  # the grid is gone
    assert (cleaned[trace] < 128).mean() > 0.95  # the traces are not


@pytest.mark.parametrize("grid", ["grey", "green", "blue"])
def test_other_grid_colours_fade_too(grid: str) -> None:
    with_grid, without = _page(grid), _page("none")
    trace = brightest_channel(without) < 100
    cleaned = suppress_grid(flatten_illumination(brightest_channel(with_grid)))
    background = ~cv2.dilate(trace.astype(np.uint8), np.ones((5, 5))).astype(bool)
    assert (cleaned[background] > 200).mean() > 0.97
    assert (cleaned[trace] < 128).mean() > 0.95


def test_sheet_in_a_photo_is_found_and_warped_flat() -> None:
    page = brightest_channel(_page(dpi=100))
    h, w = page.shape
    desk = np.full((int(h * 1.5), int(w * 1.5)), 90, np.uint8)
    truth = np.float32([[180, 140], [w + 140, 190], [w + 190, h + 170], [150, h + 120]])
    matrix = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), truth)
    photo = cv2.warpPerspective(page, matrix, desk.shape[::-1], dst=desk, borderMode=cv2.BORDER_TRANSPARENT)
    corners = find_page(photo)
    assert corners is not None
    assert np.abs(corners - truth).max() < 0.02 * max(photo.shape)
    assert find_page(page) is None  # a flat scan has nothing to warp
    result = clean(cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR), SIZE)
    assert result.page_found and abs(result.skew_deg) < 1.0


def test_crease_division_touches_only_darker_rows_and_columns_and_matches_the_whole_division() -> None:
    """Dividing only the rows and columns below the paper level gives the same pixels as dividing them all."""
    rng = np.random.default_rng(4)
    page = flatten_illumination(brightest_channel(_page()))
    for seed in range(3):
        creased = flatten_illumination(brightest_channel(ARTIFACTS["crease"](cv2.cvtColor(page, cv2.COLOR_GRAY2BGR),
                                                                             1.0, rng)))
        creased[:, 5 + seed :: 97] = np.minimum(creased[:, 5 + seed :: 97], 200 - 20 * seed)  # darker columns too
        out = creased.astype(np.float32)
        for profile, shape in ((np.percentile(creased[:, ::8], 80, axis=1), (-1, 1)),
                               (np.percentile(creased[::8, :], 80, axis=0), (1, -1))):
            profile = profile.astype(np.float32)
            out /= np.clip(profile / max(float(np.median(profile)), 1.0), 0.3, 1.0).reshape(shape)
        assert np.array_equal(flatten_creases(creased), np.clip(out, 0, 255).astype(np.uint8)), seed


def test_percentiles_read_off_partitions_and_histograms_equal_numpy_to_the_bit() -> None:
    rng = np.random.default_rng(8)
    for rows, cols in ((1, 1), (3, 2), (40, 147), (17, 104)):
        values = rng.integers(0, 256, (rows, cols)).astype(np.uint8)
        paper = np.minimum(values // 16 + 240, 255).astype(np.uint8)
        for sample in (values, paper):
            for q in (0, 0.3, 50, 80, 99.9, 100):
                assert np.array_equal(_row_percentiles(sample, q), np.percentile(sample, q, axis=1))
                assert _percentile_u8(sample[::2, ::3], q) == float(np.percentile(sample[::2, ::3], q))


def test_grid_spectra_profiles_are_the_masked_darkness_means() -> None:
    """The uint8 path (min filter, lookup, integer sums) must give the float pipeline's spectra exactly."""
    flat = flatten_illumination(to_gray(_page("red", dpi=100)))[:-1, :-3]  # odd sides too
    pen = cv2.dilate((flat < 110).astype(np.uint8), np.ones((5, 5), np.uint8))
    darkness = np.clip(250.0 - flat.astype(np.float32), 0, 110)
    darkness[pen > 0] = 0
    columns, rows, _ = grid_spectra(flat)
    size = 8 * max(flat.shape)
    for spectrum, axis in ((columns, 0), (rows, 1)):
        profile = darkness.mean(axis=axis).reshape(1, -1)
        detrended = (profile - cv2.blur(profile, (61, 1), borderType=cv2.BORDER_REFLECT)).ravel()
        expected = np.abs(np.fft.rfft(detrended * np.hanning(profile.size), size)) ** 2
        assert np.array_equal(spectrum, expected), axis


def test_crease_bands_are_divided_out() -> None:
    rng = np.random.default_rng(11)
    page = flatten_illumination(brightest_channel(_page()))
    creased = flatten_illumination(brightest_channel(ARTIFACTS["crease"](cv2.cvtColor(page, cv2.COLOR_GRAY2BGR),
                                                                         1.0, rng)))

    def worst_band(gray: np.ndarray) -> float:
        rows, cols = np.percentile(gray, 80, axis=1), np.percentile(gray, 80, axis=0)
        return float(min(rows.min(), cols.min()))

    assert worst_band(creased) < 215  # a visible fold
    assert worst_band(flatten_creases(creased)) > 240


def test_without_a_trace_stroke_the_crop_keeps_all_the_ink_and_drops_the_margin() -> None:
    """Scattered dots are ink but no trace: the crop falls back to the box around the ink."""
    rng = np.random.default_rng(0)
    page = np.full((1200, 1600), 255, np.uint8)
    for y, x in rng.integers((400, 500), (800, 1100), (400, 2)):
        cv2.circle(page, (int(x), int(y)), 3, 0, -1)
    area = find_trace_area(page)
    cropped = page[area.top : area.bottom, area.left : area.right]
    assert not area.found
    assert cropped.shape[0] < page.shape[0] - 600 and cropped.shape[1] < page.shape[1] - 800
    assert (cropped < 128).sum() >= 0.98 * (page < 128).sum()


@pytest.mark.parametrize("dpi", [100, 150, 200, 300])
def test_millimetre_is_measured_from_the_grid(dpi: int) -> None:
    page = _page("red", dpi=dpi)
    result = clean(page, SIZE)
    truth = dpi / 25.4 / result.work_factor
    assert result.scale_source == "grid" and abs(result.px_per_mm / truth - 1) < 0.03, (result.px_per_mm, truth)


def test_without_a_grid_the_trace_width_gives_the_scale() -> None:
    result = clean(_page("none", dpi=200), SIZE)
    assert result.scale_source == "trace_width"
    assert abs(result.px_per_mm / (200 / 25.4 / result.work_factor) - 1) < 0.1


def test_model_input_geometry_does_not_depend_on_dpi_or_paper() -> None:
    """The same record at 100 and 300 DPI, on A4 and on letter, lands on the same pixels of the model input."""
    record = generate_record(5)
    size = (256, 352)  # the shipped model's input: 280 x 204 mm of paper, room for a whole trace area
    inputs = [preprocess(render_paper(record.signals, record.fs, record.leads,
                                      PaperStyle.named("red", paper, dpi=dpi, header=("ID 1234567  54 y  F",))), size)
              for paper, dpi in (("a4", 100), ("a4", 300), ("letter", 200))]
    ink = [(image < 128).astype(np.float32) for image in inputs]
    boxes = [cv2.boundingRect((mask > 0).astype(np.uint8)) for mask in ink]
    for left, top, width, height in boxes[1:]:  # x is time at 25 mm/s; letter paper spreads its rows 6 mm more
        assert abs(left - boxes[0][0]) <= 2 and abs(width - boxes[0][2]) <= 3, boxes
        assert abs(top - boxes[0][1]) <= 3 and abs(height - boxes[0][3]) <= 8, boxes
    blurred = [cv2.GaussianBlur(mask, (0, 0), 2) for mask in ink]
    assert np.corrcoef(blurred[0].ravel(), blurred[1].ravel())[0, 1] > 0.8


@pytest.mark.parametrize("shape", [(900, 1200), (827, 1169), (851, 1170)])
def test_trace_area_is_the_box_of_the_drawn_strokes(shape: tuple[int, int]) -> None:
    """Long wavy strokes inside a known box, text-sized blobs outside it: the box comes back, padded by 3 mm."""
    strokes = np.full(shape, 255, np.uint8)
    xs = np.arange(150, 1001)
    for base in (300, 420, 560):
        ys = base + (12 * np.sin(xs / 9.0)).astype(int)
        cv2.polylines(strokes, [np.stack([xs, ys], axis=1).astype(np.int32)], False, 0, 1)
    pulse = np.int32([[95, 335], [100, 335], [100, 295], [120, 295], [120, 335], [125, 335]])  # 5 mm by 10 mm
    cv2.polylines(strokes, [pulse], False, 0, 1)
    page = strokes.copy()
    for x in range(150, 900, 40):
        cv2.putText(page, "Ab", (x, 120), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 0, 2)  # header text: short strokes
    left, top, width, height = cv2.boundingRect((strokes < 128).astype(np.uint8))
    area = find_trace_area(page, px_per_mm=4.0)
    pad = 3.0 * 4.0
    assert area.found and left == 95
    assert (area.left, area.top) == (int(left - pad), int(top - pad))
    assert (area.right, area.bottom) == (int(left + width + pad), int(top + height + pad))


def test_thumbnail_is_the_asked_width_at_the_page_aspect() -> None:
    page = _page(dpi=200)
    for width in (480, 120, 600):
        thumb = thumbnail(page, width)
        assert thumb.shape[1] == width and thumb.dtype == np.uint8
        assert abs(thumb.shape[0] - page.shape[0] * width / page.shape[1]) <= 1
        reference = cv2.resize(page, thumb.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(thumb.astype(int) - reference).mean() < 6


def test_trace_area_leaves_out_the_header() -> None:
    header = ("ID SYN-1234567   54 y  F   01-02-2020", "Vent rate 72 bpm   PR 160 ms   QRS 90 ms   QT/QTc 380/400 ms")
    gray = suppress_grid(brightest_channel(_page("red", dpi=200, header=header)))
    area = find_trace_area(gray)
    header_bottom = round(15.0 * 200 / 25.4)  # the second header line's baseline is 14 mm down
    assert area.found and area.top > header_bottom, (area, header_bottom)
    below = gray[area.bottom :, :] < 128
    assert below.sum() < 0.03 * (gray < 128).sum()  # only the footer text (25 mm/s, 10 mm/mV) is left below


def test_steps_switch_and_unknown_steps_are_refused() -> None:
    page = _page()
    everything, nothing = preprocess(page, SIZE), preprocess(page, SIZE, ())
    assert everything.shape == nothing.shape == SIZE and everything.dtype == np.uint8
    assert not np.array_equal(everything, nothing)
    assert np.array_equal(everything, preprocess(page, SIZE))  # deterministic
    with pytest.raises(ValueError, match="unknown preprocessing steps"):
        preprocess(page, SIZE, ("grid", "sharpen"))
    stages = [name for name, _ in clean(page, SIZE, STEPS, keep_stages=True).stages]
    assert stages[0] == "input" and stages[-1] == "model_input" and {"illumination", "grid", "crop"} <= set(stages)


def test_preprocess_command_writes_each_stage(cli, tmp_path: Path) -> None:
    from model_training.contact_sheet import BORDER, LABEL_BAND
    from model_training.synth.samples import write_samples

    photo = next(p for p in write_samples(tmp_path / "src", with_bad=False) if p.suffix == ".jpg")
    result = cli("preprocess", str(photo), "--steps", str(tmp_path / "stages"), "--out", str(tmp_path / "in.png"),
                 "--sheet", str(tmp_path / "sheet.png"))
    written = sorted(p.name for p in (tmp_path / "stages").iterdir())
    assert written[0] == "page01-00-input.png" and written[-1].endswith("model_input.png")
    assert len(written) >= 6 and "sheet found" in result.stderr
    assert cv2.imread(str(tmp_path / "in.png"), cv2.IMREAD_GRAYSCALE).shape == (192, 256)
    sheet = cv2.imread(str(tmp_path / "sheet.png"), cv2.IMREAD_GRAYSCALE)
    assert sheet.shape[1] == 4 * (480 + 2 * BORDER) and sheet.shape[0] > 2 * LABEL_BAND  # four 480 px stages a row


def test_scale_benchmark_scores_clean_pages_of_both_families() -> None:
    from model_training.bench.preprocess import scale_errors

    ours, ecgplot = scale_errors(n=16, family="ours", artifacts="none"), scale_errors(n=16, family="ecgplot",
                                                                                   artifacts="none")
    assert ours["trace_area_found"] == 1.0 and ours["share_under_3pct"] >= 0.9, ours
    assert ecgplot["trace_area_found"] >= 0.9 and ecgplot["share_under_10pct"] >= 0.5, ecgplot


def test_cleaning_keeps_the_traces_through_creased_crumpled_and_wrinkled_paper() -> None:
    from model_training.bench.preprocess import paper_survival

    result = paper_survival(n=3)
    for damage in ("crease", "crumple", "wrinkle"):
        assert result[damage]["recall"] >= 0.9 and result[damage]["precision"] >= 0.9, (damage, result)
    assert set(result["all"]) == {"recall", "precision", "mad", "same_scale"}
