"""What the generator knows about each page's signal, and the trainer's losses that use it, on real records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from model_training.bundle import load_model
from model_training.config import TrainConfig
from model_training.measure import LEAD_INDEX, measure
from model_training.model import create_model
from model_training.pages import Source, load_pages, load_targets
from model_training.signal_targets import BEAT_SAMPLES, LEADS, WIDTH, measurement_columns, record_targets
from model_training.synth.dataset import item_seed, write_dataset
from model_training.synth.signals import generate_record
from model_training.train import Trainer, train

SIZE = (64, 128)


def _config(tmp_path: Path, name: str, **overrides: object) -> TrainConfig:
    return TrainConfig.model_validate({
        "name": name, "backbone": "convnext_ecg", "input_size": SIZE, "batch_size": 8, "total_pages": 32,
        "warmup_pages": 8, "eval_every_pages": 16, "checkpoint_every_pages": 16, "workers": 1, "threads": 2,
        "export": False, "out_dir": tmp_path / "runs", "cache_dir": tmp_path / "cache", "teacher_records": 300,
        "data": [{"kind": "synthetic", "n": 24, "seed": 51, "artifacts": "light", "dpi": 50}],
        "validation": [{"kind": "synthetic", "n": 16, "seed": 52, "artifacts": "light", "dpi": 50}],
        **overrides})


def test_signal_targets_are_the_records_median_beats_and_measurements() -> None:
    record = generate_record(item_seed(51, 3))
    row = record_targets(record)
    assert row.shape == (WIDTH,) and row.dtype == np.float32 and np.isfinite(row).all()
    expected = np.nan_to_num(measure(record.signals, record.fs).vector(), nan=0.0, posinf=0.0, neginf=0.0)
    np.testing.assert_allclose(measurement_columns(row), expected, rtol=1e-5, atol=1e-5)
    beats = row[: LEADS * BEAT_SAMPLES].reshape(LEADS, BEAT_SAMPLES)
    qrs = round(0.4 / 1.05 * BEAT_SAMPLES)  # the QRS sits at 0.4 s of the 1.05 s window
    window = slice(qrs - 2, qrs + 2)
    # the QRS is the beat's largest deflection, and aVR mirrors the sum of I and II (Einthoven, Goldberger)
    assert np.abs(beats[:, window]).max() == np.abs(beats).max()
    avr = beats[LEAD_INDEX["aVR"]]
    np.testing.assert_allclose(avr, -(beats[LEAD_INDEX["I"]] + beats[LEAD_INDEX["II"]]) / 2, atol=0.05)


def test_targets_follow_the_records_not_the_drawing_and_folder_pages_have_none(tmp_path: Path) -> None:
    ours = Source(kind="synthetic", n=6, seed=53, artifacts="heavy", dpi=50)
    other = ours.model_copy(update={"family": "ecgplot", "artifacts": "none"})
    first = load_targets(ours, tmp_path, workers=1)
    assert first.shape == (6, WIDTH)
    np.testing.assert_array_equal(load_targets(other, tmp_path, workers=1), first)  # one cache file, same records
    assert len(list(tmp_path.glob("*-targets.npy"))) == 1
    expected = record_targets(generate_record(item_seed(53, 4)))
    np.testing.assert_array_equal(first[4], expected)

    folder = tmp_path / "scans"
    write_dataset(folder, 4, ("png",), "light", seed=54, dpi=50, workers=1)
    assert np.isnan(load_targets(Source(kind="folder", path=folder), tmp_path, workers=1)).all()


def test_the_signal_teacher_softens_labels_towards_what_the_signal_says(tmp_path: Path) -> None:
    config = _config(tmp_path, "teacher", distill_weight=0.5, teacher_records=600)
    trainer = Trainer(config)
    train_pages = trainer._load(config.data, "train")
    soft, signal = trainer._morphology_targets(train_pages)
    assert signal is None  # no signal head asked for
    assert soft.shape == train_pages.labels.shape and (soft >= 0).all() and (soft <= 1).all()
    hard = train_pages.labels
    assert not np.array_equal(soft, hard)
    assert (soft[hard == 1] >= 0.5).all() and (soft[hard == 0] <= 0.5).all()  # half the target stays the label
    teacher = [json.loads(line) for line in (config.run_dir / "log.jsonl").read_text().splitlines()][-1]
    assert teacher["event"] == "teacher" and teacher["macro_auroc_on_train"] > 0.75


def test_signal_head_trains_resumes_and_stays_out_of_the_bundle(tmp_path: Path) -> None:
    first = train(_config(tmp_path, "head", total_pages=16, signal_weight=0.5, distill_weight=0.3))
    assert first["finished"] and first["pages"] == 16
    checkpoint = torch.load(tmp_path / "runs" / "head" / "checkpoint.pt", weights_only=False)
    assert checkpoint["signal_head"] is not None
    config = _config(tmp_path, "head", total_pages=32, signal_weight=0.5, distill_weight=0.3)
    same_pages = load_pages(config.validation[0], SIZE, config.preprocess_steps, config.cache_dir, workers=1)
    resumed = train(config, monitor={"again": same_pages})
    events = [json.loads(line) for line in (tmp_path / "runs" / "head" / "log.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["pages"] for e in evals] == [16, 32]
    assert evals[-1]["monitor"]["again"]["macro_auroc"] == evals[-1]["macro_auroc"]  # the same pages, scored alike
    assert all(np.isfinite(e["signal_loss"]) and e["signal_loss"] > 0 for e in evals)
    model, manifest = load_model(Path(resumed["bundle"]))
    plain = create_model("convnext_ecg", len(manifest.labels), 1)
    assert set(model.state_dict()) == set(plain.state_dict())  # the head was dropped at export


def test_a_third_stem_pool_keeps_the_feature_grid_at_twice_the_pixels() -> None:
    base, hires = create_model("convnext_ecg", 5, 1), create_model("convnext_ecg", 5, 1, stem_pools=3)
    with torch.no_grad():
        small = base.forward_features(torch.zeros(1, 1, 128, 176))
        large = hires.forward_features(torch.zeros(1, 1, 256, 352))
    assert small.shape == large.shape
    assert sum(p.numel() for p in hires.parameters()) - sum(p.numel() for p in base.parameters()) < 2_000
