"""DICOM objects through pydicom: 12-lead waveforms are drawn as paper ECGs with `ingest.render`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.render import STANDARD_LEADS, render_paper

_UNIT_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3}


def _lead_name(channel) -> str:
    meaning = str(channel.ChannelSourceSequence[0].CodeMeaning)
    for name in sorted(STANDARD_LEADS, key=len, reverse=True):
        if meaning == f"Lead {name}" or meaning.startswith(f"Lead {name} "):
            return name
    return meaning


def _waveform_page(ds: pydicom.Dataset) -> Page:
    groups = [(i, w) for i, w in enumerate(ds.WaveformSequence) if int(w.NumberOfWaveformChannels) >= 12]
    if not groups:
        raise IngestError(Reason.NOT_ECG, "no waveform group with 12 channels")
    # Prefer the original full-length recording over derived median beats.
    index, group = max(groups, key=lambda g: (g[1].get("WaveformOriginality") == "ORIGINAL",
                                              int(g[1].NumberOfWaveformSamples)))
    samples = ds.waveform_array(index).T  # channels x samples, sensitivity and baseline applied
    channels = group.ChannelDefinitionSequence
    leads = [_lead_name(c) for c in channels]
    scale = np.array([_UNIT_TO_MV.get(str(c.ChannelSensitivityUnitsSequence[0].CodeValue), 1e-3)
                      for c in channels])[:, None]
    keep = [i for i, name in enumerate(leads) if name in STANDARD_LEADS]
    if len(keep) < 12:
        raise IngestError(Reason.NOT_ECG, f"waveform has {len(keep)} of the 12 standard leads")
    fs = float(group.SamplingFrequency)
    image = render_paper(samples[keep] * scale[keep], fs, [leads[i] for i in keep])
    return Page(image=image, page_no=1, source="dicom-waveform", metadata={"sampling_frequency": fs})


def decode_dicom(path: Path) -> list[Page]:
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise IngestError(Reason.CORRUPT, "not a valid DICOM file") from exc
    except (EOFError, OSError) as exc:
        raise IngestError(Reason.TRUNCATED, "the DICOM data ends early") from exc
    if "WaveformSequence" in ds:
        return [_waveform_page(ds)]
    raise IngestError(Reason.UNSUPPORTED_TYPE, f"DICOM {ds.get('SOPClassUID', 'object')!s} is not a waveform "
                                               "(image DICOM support is not built yet)")
