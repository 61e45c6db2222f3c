"""`bench decode` end to end: a row for every input kind, the XML pre-pass cost, and one answer per recording
whatever format carried it (the synthetic generator writes every waveform kind of a record from one signal)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import Cli
from worker.bench.decode import DECODE_KINDS, WAVEFORM_KINDS, XML_KINDS


def test_bench_decode_rows_and_format_agreement(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bench-decode.json"
    printed = cli("bench", "decode", "--n", "2", "--json", str(out)).stdout
    result = json.loads(out.read_text())
    rows = {row["kind"]: row for row in result["kinds"]}
    assert set(rows) == set(DECODE_KINDS)
    for kind, row in rows.items():
        assert row["pages"] >= 2, kind
        assert row["working_decode_ms"] > 0 and row["working_clean_ms"] > 0, kind
        assert abs(row["working_total_ms"] - row["working_decode_ms"] - row["working_clean_ms"]) <= 0.2, kind
    prepass = {row["kind"]: row for row in result["xml_prepass"]}
    assert set(prepass) == set(XML_KINDS)
    assert all(0 < row["prepass_ms"] < row["decode_ms"] for row in prepass.values()), prepass
    agreement = result["format_agreement"]
    assert agreement["kinds"] == list(WAVEFORM_KINDS) and agreement["recordings"] == 2
    assert agreement["max_spread_within_recording"] < 0.05, agreement
    assert "probabilities spread by at most" in printed and "XML safety pre-pass" in printed
