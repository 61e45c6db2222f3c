"""Builders for real input files of every kind the decoders accept, and for the ways they go wrong."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ingest.decode.dicom import decode_dicom
from model_training.synth.samples import reference_dicom


def reference_page(width: int = 1400) -> np.ndarray:
    """pydicom's real 12-lead recording drawn as a paper page (BGR), scaled to `width` pixels."""
    page = decode_dicom(reference_dicom().read_bytes())[0].image
    return cv2.resize(page, (width, round(page.shape[0] * width / page.shape[1])), interpolation=cv2.INTER_AREA)


def vector_pdf(path: Path, title: str = "Resting ECG") -> Path:
    """A PDF whose page is drawn with vector paths (grid and traces), as ECG carts export them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pydicom

    ds = pydicom.dcmread(reference_dicom())
    signals = ds.waveform_array(0).T[:12, :5000] / 1000.0
    figure, axes = plt.subplots(figsize=(11.69, 8.27))
    axes.set_xticks(np.arange(0, 10.01, 0.2))
    axes.set_yticks(np.arange(-13, 1.01, 0.5))
    axes.grid(color="#f4a0a0", linewidth=0.6)
    t = np.arange(signals.shape[1]) / float(ds.WaveformSequence[0].SamplingFrequency)
    for lead, signal in enumerate(signals):
        axes.plot(t, signal - lead, color="black", linewidth=0.7)
    axes.set_xlim(0, 10)
    axes.set_ylim(-12.5, 1)
    axes.tick_params(labelbottom=False, labelleft=False)
    figure.savefig(path, format="pdf", metadata={"Title": title, "Producer": "ecg-intake tests"})
    plt.close(figure)
    return path


def scan_pdf(path: Path, pages: int = 1) -> Path:
    """A PDF whose pages are embedded raster scans."""
    images = [Image.fromarray(cv2.cvtColor(reference_page(), cv2.COLOR_BGR2RGB)) for _ in range(pages)]
    images[0].save(path, format="PDF", save_all=True, append_images=images[1:], resolution=150)
    return path


def encrypted_pdf(path: Path, user_password: str) -> Path:
    """`user_password=""` opens without a password but carries permission restrictions."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(scan_pdf(path.with_suffix(".plain.pdf"))))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    writer.write(path)
    path.with_suffix(".plain.pdf").unlink()
    return path


def tiff_pages(path: Path, pages: int, deep: bool = False) -> Path:
    """A multi-page TIFF; `deep` stores 12-bit values in 16-bit samples, as some scanners do."""
    frames = []
    for i in range(pages):
        gray = cv2.cvtColor(reference_page(1000 + 50 * i), cv2.COLOR_BGR2GRAY)
        frames.append((gray.astype(np.uint16) * 16) if deep else gray)  # 0..4080: 12 bits used
    ok = cv2.imwritemulti(str(path), frames)
    assert ok
    return path


def exif_rotated_jpeg(path: Path) -> tuple[Path, tuple[int, int]]:
    """A landscape page stored sideways with EXIF orientation 6; returns the upright (height, width)."""
    page = reference_page(800)
    stored = Image.fromarray(cv2.cvtColor(cv2.rotate(page, cv2.ROTATE_90_COUNTERCLOCKWISE), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    stored.save(path, format="JPEG", exif=exif, quality=90)
    return path, page.shape[:2]


def pixel_bomb_png(path: Path, side: int = 12000) -> Path:
    """A tiny file that claims side x side pixels: the header says it all before anything inflates."""
    buffer = io.BytesIO()
    Image.new("1", (side, side), 1).save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())
    return path


def local_dicom(name: str) -> Path:
    """One of the test files pydicom ships (never downloaded)."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    assert found, name
    return Path(str(found))


def copy_local_dicom(name: str, dest: Path) -> Path:
    shutil.copy(local_dicom(name), dest)
    return dest
