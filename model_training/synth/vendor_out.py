"""Write synthetic 12-lead signals as the vendor XML files ECG carts and management systems export.

Three families, each laid out the way real exports are (so the fixtures exercise what a hospital sends):

- GE MUSE `<RestingECG>` (restecg.dtd): base64 little-endian int16 per lead at 4.88 uV per bit, usually only
  the eight independent leads I, II, V1-V6 (readers derive III, aVR, aVL, aVF), a Median and a Rhythm waveform.
- Philips SierraECG / PhilipsECG `<restingecgdata>` 1.04: 5 uV per count, the twelve leads XLI-compressed
  (`model_training.synth.xli`) with III, aVR, aVL, aVF stored as residuals, UTF-16 with a BOM as PageWriter
  carts write them, or UTF-8, or UTF-8 under a declaration that names another encoding.
- HL7 aECG `<AnnotatedECG xmlns="urn:hl7-org:v3">`: SLIST_PQ digits per lead (2.5 uV scale), a TIME_ABSOLUTE
  GLIST_TS time base, and a REPRESENTATIVE_BEAT derived series.

Every writer takes `signals_mv` (12, n) in `ingest.render.STANDARD_LEADS` order, in millivolts, and `fs` in Hz,
and returns the file's bytes. Measurements left out are measured from the signal (`model_training.measure`).
"""

from __future__ import annotations

import base64
import math
import textwrap
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ingest.render import STANDARD_LEADS
from model_training.measure import measure, median_beat, qrs_locations
from model_training.synth.xli import xli_encode

MUSE_UV_PER_BIT = 4.88
PHILIPS_UV_PER_COUNT = 5.0
AECG_UV_PER_DIGIT = 2.5
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
MEASUREMENT_KEYS = ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "p_axis_deg", "qrs_axis_deg",
                    "t_axis_deg")
ACQUIRED = datetime(2024, 1, 1, 12, 0, 0)  # fixed, so a writer's bytes depend only on its arguments
PHILIPS_ENCODINGS = ("utf-16", "utf-8")
PHILIPS_COMPRESSIONS = ("XLI", "Uncompressed")


# ── shared ───────────────────────────────────────────────────────────


def check_signals(signals_mv: np.ndarray, fs: float) -> np.ndarray:
    signals = np.asarray(signals_mv, dtype=np.float64)
    if signals.ndim != 2 or signals.shape[0] != len(STANDARD_LEADS) or signals.shape[1] < 2:
        raise ValueError(f"signals_mv must be (12, samples) in {STANDARD_LEADS} order, got {signals.shape}")
    if not fs or fs <= 0 or not math.isfinite(fs):
        raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs!r}")
    if not np.isfinite(signals).all():
        raise ValueError("signals_mv holds NaN or infinite samples")
    return signals


def to_counts(signals_mv: np.ndarray, uv_per_count: float) -> np.ndarray:
    """Millivolts to int16 counts of `uv_per_count` microvolts (rounded, clipped to the int16 range)."""
    return np.clip(np.round(signals_mv * 1000.0 / uv_per_count), -32768, 32767).astype(np.int16)


def plausible_measurements(signals_mv: np.ndarray, fs: float) -> dict[str, int]:
    """Global measurements as an ECG cart would print them, measured from the signal by `model_training.measure`.

    `measure` gives rate, PR, QRS, QTc (Bazett) and the QRS axis; QT comes back from QTc and the RR interval.
    P and T axes are not measured, so they are left out. A signal that cannot be measured gives {}.
    """
    try:
        m = measure(np.asarray(signals_mv, dtype=np.float64), round(fs))
    except (ValueError, IndexError):
        return {}
    values = {"heart_rate_bpm": m.heart_rate, "pr_ms": m.pr_ms, "qrs_ms": m.qrs_ms,
              "qt_ms": m.qtc_ms * math.sqrt(60.0 / m.heart_rate) if m.heart_rate > 0 else float("nan"),
              "qtc_ms": m.qtc_ms, "qrs_axis_deg": m.axis_deg}
    return {k: round(v) for k, v in values.items() if math.isfinite(v)}


def given_or_measured(given: Mapping[str, float] | None, signals: np.ndarray, fs: float) -> dict[str, int]:
    if given is None:
        return plausible_measurements(signals, fs)
    unknown = set(given) - set(MEASUREMENT_KEYS)
    if unknown:
        raise ValueError(f"unknown measurements {sorted(unknown)}; known: {', '.join(MEASUREMENT_KEYS)}")
    return {k: round(float(v)) for k, v in given.items() if v is not None and math.isfinite(float(v))}


def _median_beat(signals: np.ndarray, fs: float) -> np.ndarray:
    """The median beat (12, ~1.05 s): the median of every complete beat, QRS 0.4 s into it."""
    rate = round(fs)
    return median_beat(signals, qrs_locations(signals, rate), rate)


def _rate_text(fs: float) -> str:
    return str(int(fs)) if float(fs).is_integer() else f"{fs:g}"


def _el(tag: str, text: object = "", indent: int = 0, **attrs: object) -> str:
    attributes = "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
    body = escape(str(text))
    return f"{' ' * indent}<{tag}{attributes}>{body}</{tag}>" if body else f"{' ' * indent}<{tag}{attributes} />"


# ── GE MUSE ──────────────────────────────────────────────────────────

_MUSE_MEASUREMENTS = (("heart_rate_bpm", "VentricularRate"), ("heart_rate_bpm", "AtrialRate"),
                      ("pr_ms", "PRInterval"), ("qrs_ms", "QRSDuration"), ("qt_ms", "QTInterval"),
                      ("qtc_ms", "QTCorrected"), ("p_axis_deg", "PAxis"), ("qrs_axis_deg", "RAxis"),
                      ("t_axis_deg", "TAxis"))


def _muse_waveform(kind: str, signals: np.ndarray, fs: float, leads: Iterable[str]) -> list[str]:
    chosen = list(leads)
    lines = ["  <Waveform>", _el("WaveformType", kind, 4), _el("WaveformStartTime", 0, 4),
             _el("NumberofLeads", len(chosen), 4), _el("SampleType", "CONTINUOUS_SAMPLES", 4),
             _el("SampleBase", _rate_text(fs), 4), _el("SampleExponent", 0, 4), _el("HighPassFilter", 5, 4),
             _el("LowPassFilter", 150, 4), _el("ACFilter", 50, 4)]
    counts = to_counts(signals, MUSE_UV_PER_BIT)
    for lead in chosen:
        payload = counts[STANDARD_LEADS.index(lead)].astype("<i2").tobytes()
        encoded = "\n".join(textwrap.wrap(base64.b64encode(payload).decode("ascii"), 76))
        lines += ["    <LeadData>", _el("LeadByteCountTotal", len(payload), 6), _el("LeadTimeOffset", 0, 6),
                  _el("LeadSampleCountTotal", counts.shape[1], 6),
                  _el("LeadAmplitudeUnitsPerBit", MUSE_UV_PER_BIT, 6), _el("LeadAmplitudeUnits", "MICROVOLTS", 6),
                  _el("LeadHighLimit", 32767, 6), _el("LeadLowLimit", -32768, 6), _el("LeadID", lead, 6),
                  _el("LeadOffsetFirstSample", 0, 6), _el("FirstSampleBaseline", 0, 6),
                  _el("LeadSampleSize", 2, 6), _el("LeadOff", "FALSE", 6), _el("BaselineSway", "FALSE", 6),
                  _el("LeadDataCRC32", zlib.crc32(payload) & 0xFFFFFFFF, 6),
                  f"      <WaveFormData>{encoded}\n      </WaveFormData>", "    </LeadData>"]
    return [*lines, "  </Waveform>"]


def write_muse(signals_mv: np.ndarray, fs: float, *, eight_leads: bool = True, median_beat: bool = True,
               measurements: Mapping[str, float] | None = None, statements: Iterable[str] | None = None,
               patient_id: str = "SYNTH-0001") -> bytes:
    """A GE MUSE `<RestingECG>` export: ISO-8859-1, restecg.dtd, 4.88 uV per bit, Median then Rhythm waveform.

    `eight_leads` stores only I, II, V1-V6 as MUSE does (readers derive the other four); `median_beat` adds
    the ~1 s median beat as `WaveformType` Median.
    """
    signals = check_signals(signals_mv, fs)
    values = given_or_measured(measurements, signals, fs)
    leads = EIGHT_LEADS if eight_leads else STANDARD_LEADS
    date, time = ACQUIRED.strftime("%m-%d-%Y"), ACQUIRED.strftime("%H:%M:%S")
    lines = ['<?xml version="1.0" encoding="ISO-8859-1"?>', '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">',
             "<RestingECG>", "  <MuseInfo>", _el("MuseVersion", "9.0.10.18365", 4), "  </MuseInfo>",
             "  <PatientDemographics>", _el("PatientID", patient_id, 4), _el("PatientLastName", "SYNTHETIC", 4),
             _el("PatientFirstName", "", 4), "  </PatientDemographics>",
             "  <TestDemographics>", _el("DataType", "RESTING", 4), _el("Site", 1, 4),
             _el("SiteName", "ecg-intake synthetic", 4), _el("AcquisitionDevice", "MAC5K", 4),
             _el("Status", "UNCONFIRMED", 4), _el("Priority", "NORMAL", 4), _el("CartNumber", 1, 4),
             _el("AcquisitionSoftwareVersion", "ecg-intake synth", 4), _el("AcquisitionTime", time, 4),
             _el("AcquisitionDate", date, 4), _el("XMLSourceVersion", 39, 4), "  </TestDemographics>"]
    for section in ("RestingECGMeasurements", "OriginalRestingECGMeasurements"):
        lines.append(f"  <{section}>")
        lines += [_el(tag, values[key], 4) for key, tag in _MUSE_MEASUREMENTS if key in values]
        if "heart_rate_bpm" in values and values["heart_rate_bpm"] > 0:
            lines.append(_el("QRSCount", round(values["heart_rate_bpm"] * signals.shape[1] / fs / 60), 4))
        lines += [_el("ECGSampleBase", _rate_text(fs), 4), _el("ECGSampleExponent", 0, 4), f"  </{section}>"]
    texts = [s for s in (statements or []) if s]
    for section in ("Diagnosis", "OriginalDiagnosis"):
        lines += [f"  <{section}>", _el("Modality", "RESTING", 4)]
        for text in texts:
            lines += ["    <DiagnosisStatement>", _el("StmtFlag", "ENDSLINE", 6), _el("StmtText", text, 6),
                      "    </DiagnosisStatement>"]
        lines.append(f"  </{section}>")
    if median_beat:
        lines += _muse_waveform("Median", _median_beat(signals, fs), fs, leads)
    lines += _muse_waveform("Rhythm", signals, fs, leads)
    lines.append("</RestingECG>")
    return ("\r\n".join(lines) + "\r\n").encode("iso-8859-1", errors="replace")


# ── Philips SierraECG ────────────────────────────────────────────────

_PHILIPS_MEASUREMENTS = (("heart_rate_bpm", "heartrate"), ("pr_ms", "print"), ("qrs_ms", "qrsdur"),
                         ("qt_ms", "qtint"), ("qtc_ms", "qtcb"), ("p_axis_deg", "pfrontaxis"),
                         ("qrs_axis_deg", "qrsfrontaxis"), ("t_axis_deg", "tfrontaxis"))


def limb_residuals(counts: np.ndarray) -> np.ndarray:
    """What Philips stores for the twelve leads: I, II, the residuals of III, aVR, aVL, aVF against what
    I and II predict (the inverse of the readers' limb-lead rebuild, in integer counts), then V1-V6."""
    x = counts.astype(np.int64)
    lead_i, lead_ii, lead_iii, avr, avl, avf = x[:6]
    out = x.copy()
    out[2] = lead_ii - lead_i - lead_iii
    out[3] = -avr - (lead_i + lead_ii) // 2
    out[4] = (lead_i - lead_iii) // 2 - avl
    out[5] = (lead_ii + lead_iii) // 2 - avf
    return out


def write_philips(signals_mv: np.ndarray, fs: float, *, encoding: str = "utf-16", declared_encoding: str | None = None,
                  compression: str = "XLI", measurements: Mapping[str, float] | None = None,
                  statements: Iterable[str] | None = None, patient_id: str = "SYNTH-0001") -> bytes:
    """A Philips PhilipsECG 1.04 `<restingecgdata>` export: 5 uV per count, leads I..V6, the median beats as
    `<repbeats>`.

    `encoding` is "utf-16" (with a BOM, as PageWriter carts write) or "utf-8"; `declared_encoding` is what
    the XML declaration claims (default: the true encoding), so a file can lie as some exports do.
    `compression` "XLI" stores the leads XLI-compressed with the limb leads III, aVR, aVL, aVF as residuals;
    "Uncompressed" stores base64 little-endian int16, lead after lead.
    """
    signals = check_signals(signals_mv, fs)
    if encoding.lower() not in PHILIPS_ENCODINGS:
        raise ValueError(f"encoding must be one of {PHILIPS_ENCODINGS}, got {encoding!r}")
    if compression not in PHILIPS_COMPRESSIONS:
        raise ValueError(f"compression must be one of {PHILIPS_COMPRESSIONS}, got {compression!r}")
    values = given_or_measured(measurements, signals, fs)
    counts = to_counts(signals, PHILIPS_UV_PER_COUNT)
    n = counts.shape[1]
    duration_ms = n * 1000.0 / fs
    duration = str(int(duration_ms)) if duration_ms.is_integer() else f"{duration_ms:.6f}".rstrip("0")
    rate = _rate_text(fs)
    labels = " ".join(STANDARD_LEADS)
    if compression == "XLI":
        blob = xli_encode(limb_residuals(counts))
        flags = {"compressflag": "True", "compressmethod": "XLI", "compression": "XLI"}
    else:
        blob = counts.astype("<i2").tobytes()
        flags = {"compressflag": "False", "compressmethod": "Uncompressed", "compression": "Uncompressed"}
    data = "\n".join(textwrap.wrap(base64.b64encode(blob).decode("ascii"), 76))
    date, time = ACQUIRED.strftime("%Y-%m-%d"), ACQUIRED.strftime("%H:%M:%S")
    declared = declared_encoding or ("UTF-16" if encoding.lower() == "utf-16" else "UTF-8")

    lines = [f'<?xml version="1.0" encoding="{declared}"?>',
             '<restingecgdata xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             'xmlns="http://www3.medical.philips.com" '
             'xsi:schemaLocation="http://www3.medical.philips.com PhilipsECG.xsd">',
             "  <documentinfo>", _el("documentname", f"{patient_id}_{ACQUIRED:%Y%m%d%H%M%S}.XML", 4),
             _el("documenttype", "PhilipsECG", 4), _el("documentversion", "1.04", 4), _el("editor", "", 4),
             _el("comments", "", 4), "  </documentinfo>",
             f'  <dataacquisition date="{date}" time="{time}">',
             _el("machine", "PageWriter TC50", 4, machineid="1",
                 detaildescription="Philips Medical Products:860315:A.07.07.07"),
             "    <acquirer>", _el("operatorid", "", 6), _el("institutionname", "ecg-intake synthetic", 6),
             "    </acquirer>",
             "    <signalcharacteristics>", _el("acquisitiontype", "STD-12", 6), _el("bandwidth", "0.05-150", 6),
             _el("samplingrate", rate, 6), _el("resolution", _rate_text(PHILIPS_UV_PER_COUNT), 6),
             _el("signalsigned", "True", 6), _el("numberchannelsvalid", 12, 6),
             _el("numberchannelsallocated", 12, 6), _el("acsetting", 50, 6), _el("hipass", "0.05", 6),
             _el("lowpass", 150, 6), _el("notchfiltered", "False", 6), "    </signalcharacteristics>",
             "  </dataacquisition>",
             "  <patient>", "    <generalpatientdata>", _el("patientid", patient_id, 6),
             "      <name>", _el("lastname", "SYNTHETIC", 8), _el("firstname", "", 8), "      </name>",
             "    </generalpatientdata>", "  </patient>",
             "  <interpretations>", f'    <interpretation date="{date}" time="{time}" criteriaversion="0E">',
             "      <globalmeasurements>"]
    lines += [_el(tag, values[key], 8) for key, tag in _PHILIPS_MEASUREMENTS if key in values]
    if values.get("heart_rate_bpm", 0) > 0:
        lines.append(_el("rrint", round(60000 / values["heart_rate_bpm"]), 8))
    lines.append("      </globalmeasurements>")
    for text in (s for s in (statements or []) if s):
        lines += ["      <statement>", _el("statementcode", "", 8), _el("leftstatement", text, 8),
                  _el("rightstatement", "", 8), "      </statement>"]
    lines += ["    </interpretation>", "  </interpretations>", "  <waveforms>"]
    beat = to_counts(_median_beat(signals, fs), PHILIPS_UV_PER_COUNT)
    beat_ms = beat.shape[1] * 1000.0 / fs
    lines.append(f'    <repbeats samplespersec="{rate}" resolution="{_rate_text(PHILIPS_UV_PER_COUNT)}" '
                 'repbeatmethod="MEDIAN" dataencoding="Base64">')
    for index, lead in enumerate(STANDARD_LEADS):
        encoded = base64.b64encode(beat[index].astype("<i2").tobytes()).decode("ascii")
        lines += [f'      <repbeat leadname="{lead}">',
                  _el("waveform", encoded, 8, duration=f"{beat_ms:g}"), "      </repbeat>"]
    attributes = {"durationperchannel": duration, "samplespersecond": rate, "modifiedflag": "False",
                  "upsampledflag": "False", "downsampledflag": "False",
                  "resolution": _rate_text(PHILIPS_UV_PER_COUNT), "signaloffset": 0, "signalsigned": "True",
                  "numberofleads": 12, "leadlabels": labels, "filterflag": "False", **flags,
                  "dataencoding": "Base64"}
    attrs = "".join(f" {k}={quoteattr(str(v))}" for k, v in attributes.items())
    lines += ["    </repbeats>", f"    <parsedwaveforms{attrs}>{data}</parsedwaveforms>", "  </waveforms>",
              "</restingecgdata>"]
    text = "\r\n".join(lines) + "\r\n"
    return text.encode("utf-16") if encoding.lower() == "utf-16" else text.encode("utf-8")


# ── HL7 aECG ─────────────────────────────────────────────────────────

_MDC = 'codeSystem="2.16.840.1.113883.6.24" codeSystemName="MDC"'
_ACTCODE = 'codeSystem="2.16.840.1.113883.5.4" codeSystemName="ActCode"'
_AECG_MEASUREMENTS = (("heart_rate_bpm", "MDC_ECG_HEART_RATE", "bpm"), ("pr_ms", "MDC_ECG_TIME_PD_PR", "ms"),
                      ("qrs_ms", "MDC_ECG_TIME_PD_QRS", "ms"), ("qt_ms", "MDC_ECG_TIME_PD_QT", "ms"),
                      ("qtc_ms", "MDC_ECG_TIME_PD_QTcB", "ms"), ("p_axis_deg", "MDC_ECG_ANGLE_P_FRONT", "deg"),
                      ("qrs_axis_deg", "MDC_ECG_ANGLE_QRS_FRONT", "deg"),
                      ("t_axis_deg", "MDC_ECG_ANGLE_T_FRONT", "deg"))


def _aecg_lead_code(lead: str) -> str:
    return f"MDC_ECG_LEAD_{lead.upper()}"


def _aecg_sequence_set(signals: np.ndarray, fs: float, absolute: bool, pad: str) -> list[str]:
    step = f"{1.0 / fs:.12g}"
    if absolute:
        time = (f'{pad}  <component><sequence><code code="TIME_ABSOLUTE" {_ACTCODE}/>'
                f'<value xsi:type="GLIST_TS"><head value="{ACQUIRED:%Y%m%d%H%M%S}.000"/>'
                f'<increment value="{step}" unit="s"/></value></sequence></component>')
    else:
        time = (f'{pad}  <component><sequence><code code="TIME_RELATIVE" {_ACTCODE}/>'
                f'<value xsi:type="GLIST_PQ"><head value="0" unit="s"/>'
                f'<increment value="{step}" unit="s"/></value></sequence></component>')
    lines = [f"{pad}<component>", f"{pad}<sequenceSet>", time]
    counts = to_counts(signals, AECG_UV_PER_DIGIT)
    for index, lead in enumerate(STANDARD_LEADS):
        digits = " ".join(map(str, counts[index].tolist()))
        lines += [f"{pad}  <component>", f"{pad}    <sequence>",
                  f'{pad}      <code code="{_aecg_lead_code(lead)}" {_MDC}/>',
                  f'{pad}      <value xsi:type="SLIST_PQ">', f'{pad}        <origin value="0" unit="uV"/>',
                  f'{pad}        <scale value="{AECG_UV_PER_DIGIT:g}" unit="uV"/>',
                  f"{pad}        <digits>{digits}</digits>", f"{pad}      </value>", f"{pad}    </sequence>",
                  f"{pad}  </component>"]
    return [*lines, f"{pad}</sequenceSet>", f"{pad}</component>"]


def write_aecg(signals_mv: np.ndarray, fs: float, *, median_beat: bool = True,
               measurements: Mapping[str, float] | None = None, statements: Iterable[str] | None = None,
               patient_id: str = "SYNTH-0001") -> bytes:
    """An HL7 aECG `<AnnotatedECG>` (urn:hl7-org:v3): a RHYTHM series of twelve SLIST_PQ leads at 2.5 uV per
    digit on a TIME_ABSOLUTE GLIST_TS (increment 1/fs s), the median beat as a REPRESENTATIVE_BEAT derived
    series, measurements and statements as machine annotations."""
    signals = check_signals(signals_mv, fs)
    values = given_or_measured(measurements, signals, fs)
    start = f"{ACQUIRED:%Y%m%d%H%M%S}.000"
    finish = ACQUIRED + timedelta(seconds=signals.shape[1] / fs)
    end = f"{finish:%Y%m%d%H%M%S}.{finish.microsecond // 1000:03d}"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:voc="urn:hl7-org:v3/voc" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             'xsi:schemaLocation="urn:hl7-org:v3 ../schema/PORT_MT020001.xsd" classCode="OBS" moodCode="EVN">',
             '  <id root="2.25.0.1.2024.1"/>',
             '  <code code="93000" codeSystem="2.16.840.1.113883.6.12" codeSystemName="CPT-4"/>',
             f'  <effectiveTime><low value="{start}" inclusive="true"/><high value="{end}" inclusive="false"/>'
             "</effectiveTime>",
             "  <componentOf><timepointEvent><componentOf><subjectAssignment>",
             "    <subject><trialSubject>",
             f"      <id root=\"2.25.0.1.2024.2\" extension={quoteattr(patient_id)}/>",
             "      <subjectDemographicPerson><name>SYNTHETIC</name></subjectDemographicPerson>",
             "    </trialSubject></subject>",
             "    <componentOf><clinicalTrial><id root=\"2.25.0.1.2024.3\" extension=\"ECG-INTAKE-SYNTH\"/>"
             "</clinicalTrial></componentOf>",
             "  </subjectAssignment></componentOf></timepointEvent></componentOf>",
             "  <component>", "  <series>", '    <id root="2.25.0.1.2024.4"/>',
             f'    <code code="RHYTHM" {_ACTCODE}/>',
             f'    <effectiveTime><low value="{start}"/><high value="{end}"/></effectiveTime>',
             "    <author><seriesAuthor><manufacturedSeriesDevice><manufacturerModelName>ecg-intake synth"
             "</manufacturerModelName></manufacturedSeriesDevice><manufacturerOrganization><name>ecg-intake"
             "</name></manufacturerOrganization></seriesAuthor></author>"]
    lines += _aecg_sequence_set(signals, fs, True, "    ")
    if median_beat:
        lines += ["    <derivation>", "    <derivedSeries>", '      <id root="2.25.0.1.2024.5"/>',
                  f'      <code code="REPRESENTATIVE_BEAT" {_ACTCODE}/>']
        lines += _aecg_sequence_set(_median_beat(signals, fs), fs, False, "      ")
        lines += ["    </derivedSeries>", "    </derivation>"]
    texts = [s for s in (statements or []) if s]
    if values or texts:
        lines += ["    <subjectOf>", "    <annotationSet>", f'      <activityTime value="{start}"/>']
        for key, code, unit in _AECG_MEASUREMENTS:
            if key in values:
                lines.append(f'      <component><annotation><code code="{code}" {_MDC}/>'
                             f'<value xsi:type="PQ" value="{values[key]}" unit="{unit}"/></annotation></component>')
        if texts:
            lines += ["      <component><annotation>", f'        <code code="MDC_ECG_INTERPRETATION" {_MDC}/>']
            for text in texts:
                lines.append(f'        <component><annotation><code code="MDC_ECG_INTERPRETATION_STATEMENT" '
                             f'{_MDC}/><value xsi:type="ST">{escape(text)}</value></annotation></component>')
            lines.append("      </annotation></component>")
        lines += ["    </annotationSet>", "    </subjectOf>"]
    lines += ["  </series>", "  </component>", "</AnnotatedECG>"]
    return ("\n".join(lines) + "\n").encode("utf-8")
