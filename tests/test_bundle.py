"""The model bundle contract: round trip, version by content, refusal of mismatched preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ingest.preprocess import PREPROCESS_VERSION, letterbox
from model_training.bundle import create_untrained_bundle, export_bundle, load_model
from model_training.manifest import MANIFEST, BundleError, load_manifest
from model_training.model import to_input
from worker.engine import load_engine


def test_round_trip_gives_the_same_outputs(tmp_path: Path, bundle_dir: Path) -> None:
    model, manifest = load_model(bundle_dir)
    assert manifest.labels == ["MI", "AF", "STTC", "CD", "HYP"]
    assert manifest.trained is False
    assert manifest.preprocess_version == PREPROCESS_VERSION
    pages = np.random.default_rng(0).integers(0, 256, (2, *manifest.input_size), dtype=np.uint8)
    with torch.inference_mode():
        expected = torch.sigmoid(model(to_input(pages))).numpy()
    engine = load_engine(bundle_dir, "cpu", batch_size=1)
    np.testing.assert_allclose(engine.predict(pages), expected, atol=1e-5)
    assert expected.shape == (2, 5)


def test_version_is_the_weights_hash(tmp_path: Path) -> None:
    a = create_untrained_bundle(tmp_path / "a", input_size=(64, 96), seed=1)
    b = create_untrained_bundle(tmp_path / "b", input_size=(64, 96), seed=1)
    c = create_untrained_bundle(tmp_path / "c", input_size=(64, 96), seed=2)
    assert a.version == b.version != c.version
    assert load_manifest(tmp_path / "a").model_version == a.model_version


def test_bundle_from_other_preprocessing_is_refused(tmp_path: Path) -> None:
    create_untrained_bundle(tmp_path, input_size=(64, 96))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["preprocess_version"] = "0-old"
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="preprocessing version"):
        load_model(tmp_path)


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json"):
        load_manifest(tmp_path)


def test_letterbox_keeps_aspect_ratio_with_white_padding() -> None:
    page = np.zeros((100, 400), np.uint8)  # a black 1:4 page into a 1:2 box
    out = letterbox(page, (64, 128))
    assert out.shape == (64, 128) and out.dtype == np.uint8
    assert (out[:16] == 255).all() and (out[-16:] == 255).all()
    assert (out[17:47] == 0).all()


def test_stage1_architecture_round_trips_and_exports(tmp_path: Path) -> None:
    """The shipped recipe's timm arguments survive the manifest, torch.export and ONNX."""
    from model_training.config import load_config

    config = load_config(Path("stage1"))
    create_untrained_bundle(tmp_path, config.backbone, (64, 128), **config.backbone_kwargs)
    _, manifest = load_model(tmp_path)
    assert manifest.backbone_kwargs == config.backbone_kwargs
    export_bundle(tmp_path)
    pages = np.random.default_rng(1).integers(0, 256, (3, 64, 128), dtype=np.uint8)
    expected = load_engine(tmp_path, "cpu").predict(pages)
    np.testing.assert_allclose(load_engine(tmp_path, "onnx").predict(pages), expected, atol=1e-4)



def test_numpy_input_conversion_is_the_torch_one_bit_for_bit() -> None:
    from model_training.manifest import to_input as numpy_to_input

    pages = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(2, axis=0)
    converted = numpy_to_input(pages)
    assert converted.dtype == np.float32 and converted.shape == (2, 1, 16, 16)
    assert np.array_equal(converted, to_input(pages).numpy())
    assert converted[0, 0, 0, 0] == 1.0 and converted[0, 0, -1, -1] == 0.0  # black ink 1, white paper 0
    with pytest.raises(ValueError, match="uint8"):
        numpy_to_input(pages.astype(np.float32))


def test_probabilities_and_the_labels_at_or_over_threshold() -> None:
    from model_training.manifest import LABELS, Manifest, findings, probabilities

    manifest = Manifest(name="t", thresholds={"MI": 0.5, "AF": 0.9})  # the others default to 0.5
    logits = np.array([[0.0, 2.0, -1.0, 1000.0, -1000.0],
                       [-3.0, 3.0, 0.5, 0.0, 0.0]], np.float32)
    probs = probabilities(logits, manifest)
    labels = findings(probs, manifest)
    assert probs.dtype == np.float32 and probs.shape == (2, len(LABELS)) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs, torch.sigmoid(torch.from_numpy(logits)).numpy(), atol=1e-7)
    assert labels == [["MI", "CD"], ["AF", "STTC", "CD", "HYP"]]  # 0.5 >= 0.5 counts; AF at 0.88 < 0.9 does not


def test_manifest_is_read_again_only_when_its_file_changes(tmp_path: Path, bundle_dir: Path) -> None:
    import os
    import shutil

    from model_training.manifest import current_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    first = current_manifest(bundle)
    assert current_manifest(bundle) is first  # not parsed again per file
    text = (bundle / MANIFEST).read_text().replace(f'"version": "{first.version}"', '"version": "fedcba987654"')
    (bundle / MANIFEST).write_text(text)
    written = os.stat(bundle / MANIFEST)
    os.utime(bundle / MANIFEST, ns=(written.st_atime_ns, written.st_mtime_ns + 10**9))  # a coarse-clock file system
    assert current_manifest(bundle).version == "fedcba987654"
