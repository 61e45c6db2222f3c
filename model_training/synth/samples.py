"""Sample ECG files for the demo and for tests, drawn from the real 12-lead recording that pydicom ships."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

from ingest.decode.dicom import decode_dicom
from model_training.synth.paper import perspective, shadow


def reference_dicom() -> Path:
    """pydicom's 12-lead ECG waveform object (10 s, 1000 Hz, 12 leads)."""
    return Path(get_testdata_file("waveform_ecg.dcm", download=False))


def _photo_like(page: np.ndarray, seed: int = 0) -> np.ndarray:
    """A slightly warped page with a soft shadow, as a phone photo of a printout looks."""
    rng = np.random.default_rng(seed)
    return shadow(perspective(page, 0.35, rng), 0.5, rng)


def write_samples(folder: Path, with_bad: bool = True) -> list[Path]:
    """Write a DICOM waveform, PNG scan, JPEG photo and two-page PDF (and optionally a broken file)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = reference_dicom()
    page = decode_dicom(source.read_bytes())[0].image
    second = _photo_like(page, seed=1)
    written = [folder / "ecg-waveform.dcm", folder / "ecg-scan.png", folder / "ecg-photo.jpg",
               folder / "ecg-report.pdf"]
    shutil.copyfile(source, written[0])
    cv2.imwrite(str(written[1]), page)
    cv2.imwrite(str(written[2]), _photo_like(page), [cv2.IMWRITE_JPEG_QUALITY, 88])
    rgb = [Image.fromarray(img[:, :, ::-1]) for img in (page, second)]
    rgb[0].save(written[3], save_all=True, append_images=rgb[1:], resolution=200.0)
    if with_bad:
        bad = folder / "bad-random-bytes.pdf"  # sorts first: the worker must go on after it
        bad.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        written.append(bad)
    return written
