"""Every accepted input kind through the real decoders, and every configured limit as its quarantine reason."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ingest.decode import DecodeLimits, decode
from ingest.decode.isolated import Decoder
from ingest.preprocess import STEPS, Preparation, preprocess
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType
from tests.helpers.inputs import (
    copy_local_dicom,
    encrypted_pdf,
    exif_rotated_jpeg,
    pixel_bomb_png,
    reference_page,
    scan_pdf,
    tiff_pages,
    vector_pdf,
)


def _reason(path: Path, limits: DecodeLimits | None = None) -> Reason:
    with pytest.raises(IngestError) as caught:
        decode(path, limits)
    assert caught.value.message
    return caught.value.reason


def _is_page(image: np.ndarray) -> bool:
    """A decoded ECG page: 8-bit BGR, mostly paper, with dark trace pixels."""
    return image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.mean() > 150 and \
        (image.min(axis=2) < 100).mean() > 0.002


def test_vector_and_scanned_pdf_pages_both_decode_with_their_metadata(tmp_path: Path) -> None:
    _, vector = decode(vector_pdf(tmp_path / "vector.pdf", title="Resting ECG 12-lead"))
    _, scanned = decode(scan_pdf(tmp_path / "scan.pdf", pages=2))
    assert len(vector) == 1 and len(scanned) == 2
    assert all(_is_page(p.image) for p in vector + scanned)
    assert vector[0].image.shape[:2] == (1654, 2338)  # A4 landscape at the default 200 DPI
    assert vector[0].metadata["pdf_title"] == "Resting ECG 12-lead"
    assert {"pdf_producer", "pdf_creationdate"} <= set(vector[0].metadata)


def test_password_protected_pdf_is_encrypted(tmp_path: Path) -> None:
    assert _reason(encrypted_pdf(tmp_path / "locked.pdf", user_password="s3cret")) is Reason.ENCRYPTED


def test_permission_only_encryption_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = encrypted_pdf(tmp_path / "restricted.pdf", user_password="")
    assert _reason(path) is Reason.ENCRYPTED
    _, pages = decode(path, DecodeLimits(allow_permission_only_pdf=True))
    assert len(pages) == 1 and _is_page(pages[0].image)


def test_multipage_16bit_tiff_gives_one_stretched_page_per_frame(tmp_path: Path) -> None:
    file_type, pages = decode(tiff_pages(tmp_path / "scan.tif", pages=3, deep=True))
    assert file_type is FileType.TIFF and [p.page_no for p in pages] == [1, 2, 3]
    assert [p.image.shape[1] for p in pages] == [1000, 1050, 1100]
    for page in pages:
        assert _is_page(page.image)  # 12 bits in 16 would read as black if taken as plain 8-bit
        assert page.image.max() == 255


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    path, upright = exif_rotated_jpeg(tmp_path / "photo.jpg")
    _, (page,) = decode(path)
    assert page.image.shape[:2] == upright


def test_bmp_decodes(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "scan.bmp"
    cv2.imwrite(str(path), reference_page(900))
    file_type, (page,) = decode(path)
    assert file_type is FileType.BMP and page.image.shape[1] == 900 and _is_page(page.image)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_gdcm.dcm", "SC_rgb_jls_lossy_sample.dcm", "SC_rgb_gdcm_KY.dcm",
                                  "SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "image_dfl.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm"])
def test_compressed_dicom_transfer_syntaxes_decode(name: str, tmp_path: Path) -> None:
    """JPEG lossless, JPEG-LS, JPEG 2000 (pylibjpeg wheels), RLE and deflate (pydicom itself)."""
    _, pages = decode(copy_local_dicom(name, tmp_path / name))
    assert pages and all(p.image.dtype == np.uint8 and p.image.ndim == 3 for p in pages)
    assert all(p.image.std() > 5 for p in pages)


def test_palette_colour_dicom_goes_through_its_lookup_table(tmp_path: Path) -> None:
    path = copy_local_dicom("examples_palette.dcm", tmp_path / "palette.dcm")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Modality = "OT"  # the shipped file is ultrasound; as a secondary capture it is a picture we read
    ds.save_as(path)
    _, (page,) = decode(path)
    assert page.image.shape == (*ds.pixel_array.shape, 3)
    assert not np.array_equal(page.image[:, :, 0], page.image[:, :, 2])  # colours came from the LUT


def test_file_size_limit(tmp_path: Path) -> None:
    path = scan_pdf(tmp_path / "big.pdf")
    assert _reason(path, DecodeLimits(max_file_bytes=path.stat().st_size - 1)) is Reason.TOO_LARGE


@pytest.mark.parametrize("kind", ["pdf", "tiff", "dicom"])
def test_page_limit(kind: str, tmp_path: Path) -> None:
    if kind == "pdf":
        path = scan_pdf(tmp_path / "three.pdf", pages=3)
    elif kind == "tiff":
        path = tiff_pages(tmp_path / "three.tif", pages=3)
    else:
        path = copy_local_dicom("SC_rgb_rle_2frame.dcm", tmp_path / "two-frames.dcm")
    assert _reason(path, DecodeLimits(max_pages=1)) is Reason.TOO_MANY_PAGES


def test_pixel_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = pixel_bomb_png(tmp_path / "bomb.png", side=12000)
    assert path.stat().st_size < 100_000
    started = time.perf_counter()
    assert _reason(path) is Reason.TOO_LARGE  # 144 megapixels claimed; nothing was inflated
    assert time.perf_counter() - started < 2


def test_pdf_page_pixels_are_checked_before_rasterising(tmp_path: Path) -> None:
    path = vector_pdf(tmp_path / "vector.pdf")
    assert _reason(path, DecodeLimits(max_page_pixels=2_000_000)) is Reason.TOO_LARGE  # A4 at 200 DPI: 3.9 MP
    _, pages = decode(path, DecodeLimits(max_page_pixels=2_000_000, pdf_dpi=100))
    assert pages[0].image.shape[:2] == (827, 1169)


def test_isolated_decoder_times_out_and_recovers(tmp_path: Path) -> None:
    slow = scan_pdf(tmp_path / "three.pdf", pages=3)
    quick = tiff_pages(tmp_path / "one.tif", pages=1)
    with Decoder(DecodeLimits(timeout_s=0.5, pdf_dpi=600), isolated=True) as decoder:
        decoder.decode(quick)  # the child is up
        with pytest.raises(IngestError) as caught:
            decoder.decode(slow)
        assert caught.value.reason is Reason.DECODE_TIMEOUT
    with Decoder(DecodeLimits(timeout_s=30), isolated=True) as decoder:
        file_type, pages = decoder.decode(slow)  # a fresh child after the killed one
        assert file_type is FileType.PDF and len(pages) == 3
        with pytest.raises(IngestError) as caught:
            decoder.decode(encrypted_pdf(tmp_path / "locked.pdf", "pw"))
        assert caught.value.reason is Reason.ENCRYPTED  # reasons cross the process boundary intact


def test_isolated_decoder_survives_a_child_that_dies(tmp_path: Path) -> None:
    quick = tiff_pages(tmp_path / "one.tif", pages=1)
    with Decoder(DecodeLimits(), isolated=True) as decoder:
        decoder.decode(quick)
        decoder._process.kill()  # as a segfaulting C decoder would
        decoder._process.join()
        _, pages = decoder.decode(quick)  # replaced transparently
        assert len(pages) == 1


@pytest.mark.parametrize("isolated", [True, False])
def test_prepared_pages_match_preprocessing_here(tmp_path: Path, isolated: bool) -> None:
    """Intake's pages come cleaned from the decoder process; they must equal cleaning the decoded page here."""
    path = tiff_pages(tmp_path / "two.tif", pages=2)
    preparation = Preparation((96, 192), STEPS, thumbnail_width=120)
    _, decoded = decode(path)
    with Decoder(DecodeLimits(), isolated=isolated) as decoder:
        file_type, prepared = decoder.decode_prepared(path, preparation)
    assert file_type is FileType.TIFF and [p.page_no for p in prepared] == [p.page_no for p in decoded]
    for page, original in zip(prepared, decoded, strict=True):
        np.testing.assert_array_equal(page.model_input, preprocess(original.image, (96, 192), STEPS))
        assert page.thumbnail.shape[1] == 120 and page.source == original.source
