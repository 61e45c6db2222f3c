"""Decoding straight to the working copy: the page `clean` would make, the same model input, the same limits."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import ingest.decode.image as image_decoder
from ingest.decode import DecodeLimits, decode
from ingest.preprocess import preprocess, work_factor
from ingest.reasons import IngestError, Reason
from tests.helpers.inputs import pixel_bomb_png, reference_page
from worker.bench.decode import DECODE_KINDS, WAVEFORM_KINDS
from worker.bench.inputs import synth_inputs

MODEL_SIZE = (256, 352)
# Mean absolute difference (0-255) between the model inputs from full and working-copy decoding. Raster kinds
# come out within 1.7; a waveform drawn at 100 DPI instead of 200 within 5.3 (its one-pixel lines move by a
# pixel). Cleaning a page one step too small (factor 3 for a 200-DPI A4 page) gives 4.6 or more, 7.3 for a
# waveform.
RASTER_BOUND = 2.5
WAVEFORM_BOUND = 6.5


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_inputs(tmp_path_factory.mktemp("synth"), 2, tuple(DECODE_KINDS), "light", seed=990, dpi=200)


def _expected_width(full: np.ndarray) -> float:
    return full.shape[1] / work_factor(full.shape[1])


def _model_input_gap(full: np.ndarray, working: np.ndarray) -> float:
    return float(np.abs(preprocess(full, MODEL_SIZE).astype(float) - preprocess(working, MODEL_SIZE)).mean())


@pytest.mark.parametrize("kind", list(DECODE_KINDS))
def test_working_copy_is_what_clean_would_make(synth: Path, kind: str) -> None:
    files = sorted(p for p in synth.iterdir() if p.name.endswith(DECODE_KINDS[kind]))
    assert files
    for path in files:
        full_type, full = decode(path)
        working_type, working = decode(path, working_copy=True)
        assert working_type is full_type and len(working) == len(full)
        for big, small in zip(full, working, strict=True):
            assert work_factor(big.image.shape[1]) >= 2  # a 200-DPI page: the working copy is smaller
            assert small.image.dtype == np.uint8 and small.image.ndim == 3
            assert small.image.shape[1] == pytest.approx(_expected_width(big.image), rel=0.02)
            assert work_factor(small.image.shape[1]) == 1
            assert small.metadata == big.metadata and small.page_no == big.page_no
            bound = WAVEFORM_BOUND if kind in WAVEFORM_KINDS else RASTER_BOUND
            assert _model_input_gap(big.image, small.image) < bound


def _rotated_jpeg(path: Path, width: int) -> np.ndarray:
    """An upright page `width` wide stored sideways with EXIF orientation 6; returns the upright page."""
    page = reference_page(width)
    stored = Image.fromarray(cv2.cvtColor(cv2.rotate(page, cv2.ROTATE_90_COUNTERCLOCKWISE), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", exif=exif, quality=90)
    return page


def test_exif_rotated_jpeg_is_reduced_by_its_upright_width(tmp_path: Path) -> None:
    """Stored 1697 wide (factor 1) but shown 2400 wide (factor 2): the factor must come from the shown width."""
    upright = _rotated_jpeg(tmp_path / "photo.jpg", 2400)
    _, (full,) = decode(tmp_path / "photo.jpg")
    _, (small,) = decode(tmp_path / "photo.jpg", working_copy=True)
    assert full.image.shape[:2] == upright.shape[:2]
    assert small.image.shape[:2] == ((upright.shape[0] + 1) // 2, 1200)
    assert _model_input_gap(full.image, small.image) < RASTER_BOUND


@pytest.mark.parametrize("depth", ["png16", "tiff16"])
def test_sixteen_bit_scans_reduce(tmp_path: Path, depth: str) -> None:
    gray = cv2.cvtColor(reference_page(2400), cv2.COLOR_BGR2GRAY).astype(np.uint16) * 16  # 12 bits in 16
    path = tmp_path / f"scan.{depth[:-2]}"
    if depth == "png16":
        cv2.imwrite(str(path), gray)
    else:
        Image.fromarray(gray).save(path, format="TIFF")
    _, (full,) = decode(path)
    _, (small,) = decode(path, working_copy=True)
    assert small.image.shape[1] == pytest.approx(_expected_width(full.image), rel=0.02)
    assert small.image.max() == 255  # stretched to 8 bits, not black
    assert _model_input_gap(full.image, small.image) < RASTER_BOUND


def test_bomb_is_refused_before_any_pixels_with_working_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    def no_decode(*_args: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(image_decoder.cv2, "imdecode", no_decode)
    with pytest.raises(IngestError) as refused:
        decode(pixel_bomb_png(tmp_path / "bomb.png"), working_copy=True)
    assert refused.value.reason is Reason.TOO_LARGE


@pytest.mark.parametrize("kind", ["jpg", "png", "tiff", "pdf", "dicom-sc", "dicom-pdf"])
def test_pixel_limit_holds_for_the_full_size(synth: Path, kind: str) -> None:
    """A 200-DPI A4 page is 3.9 megapixels, its working copy 1: a 2-megapixel limit still refuses it."""
    path = next(p for p in sorted(synth.iterdir()) if p.name.endswith(DECODE_KINDS[kind]))
    with pytest.raises(IngestError) as refused:
        decode(path, DecodeLimits(max_page_pixels=2_000_000), working_copy=True)
    assert refused.value.reason is Reason.TOO_LARGE


def test_small_pages_are_left_as_they_are(tmp_path: Path) -> None:
    """Below 1,800 pixels across the work factor is 1: the working copy is the page itself."""
    path = tmp_path / "scan.png"
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(reference_page(1400), cv2.COLOR_BGR2RGB)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    _, (full,) = decode(path)
    _, (small,) = decode(path, working_copy=True)
    assert np.array_equal(full.image, small.image)
