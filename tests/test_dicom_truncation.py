"""A DICOM file cut off anywhere inside its data is `truncated`, never `corrupt` (the soak found 19 of 50 wrong).

pydicom keeps a value cut short by the end of the file without complaint, so the reason must come from
the bytes read, not from whatever fails later. Decode only, no pipeline: every cut takes milliseconds.
"""

from __future__ import annotations

import io

import pydicom
import pytest

from ingest.decode.dicom import decode_dicom
from ingest.reasons import IngestError, Reason
from tests.helpers.inputs import local_dicom

PREAMBLE_AND_MAGIC = 132  # a cut before this is not recognisable as DICOM at all


def _cuts(size: int) -> list[int]:
    """Every byte of the headers region, then about 400 cuts spread over the rest, and the last byte."""
    dense = range(PREAMBLE_AND_MAGIC + 1, min(size, 2_000))
    spread = range(2_000, size, max(1, size // 400))
    return sorted({*dense, *spread, size // 2, size - 1})


# The 12-lead recording and an image object; a cut exactly between two elements of a file that needs none
# of the later ones (a CT's trailing tags) is a whole, shorter file, so those are not among them.
@pytest.mark.parametrize("name", ["waveform_ecg.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_dcmtk.dcm:raw"])
def test_every_cut_inside_the_data_is_truncated(name: str) -> None:
    data = local_dicom(name.removesuffix(":raw")).read_bytes()
    if name.endswith(":raw"):  # uncompressed pixels, as scanners write captures: a cut leaves too few pixel bytes
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.decompress()
        buffer = io.BytesIO()
        ds.save_as(buffer)
        data = buffer.getvalue()
    assert decode_dicom(data)  # the whole file decodes
    wrong: dict[int, str] = {}
    for cut in _cuts(len(data)):
        try:
            decode_dicom(data[:cut])
            wrong[cut] = "decoded"
        except IngestError as error:
            if error.reason is not Reason.TRUNCATED:
                wrong[cut] = f"{error.reason.value}: {error.message}"
    assert not wrong, f"{len(wrong)} cuts of {name} not `truncated`, e.g. {list(wrong.items())[:3]}"
