"""The trainer on real (tiny) data: a bundle that serves, a reproducible run, resume, and every data source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from model_training.bundle import load_model
from model_training.config import TrainConfig, load_config
from model_training.manifest import load_manifest
from model_training.pages import Source, load_pages
from model_training.synth.dataset import write_dataset
from model_training.train import Trainer, train

SIZE = (64, 128)


def _config(tmp_path: Path, name: str, **overrides: object) -> TrainConfig:
    return TrainConfig.model_validate({
        "name": name, "input_size": SIZE, "batch_size": 8, "total_pages": 32, "warmup_pages": 8,
        "eval_every_pages": 16, "checkpoint_every_pages": 16, "workers": 1, "threads": 2, "export": False,
        "out_dir": tmp_path / "runs", "cache_dir": tmp_path / "cache",
        "data": [{"kind": "synthetic", "n": 24, "seed": 41, "artifacts": "light", "dpi": 50}],
        "validation": [{"kind": "synthetic", "n": 16, "seed": 42, "artifacts": "light", "dpi": 50}],
        **overrides})


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_training_writes_a_bundle_that_serves_and_reproduces(tmp_path: Path) -> None:
    first = train(_config(tmp_path, "a", export=True, operating_points={"MI": {"sensitivity": 0.9}}))
    assert first["finished"] and first["pages"] == 32
    bundle = Path(first["bundle"])
    manifest = load_manifest(bundle)
    assert manifest.trained and manifest.input_size == SIZE and set(manifest.thresholds) == set(manifest.labels)
    assert all(0.0 < t < 1.0 for t in manifest.thresholds.values())
    assert manifest.metrics["validation"]["n"] == 16 and "macro_auroc" in manifest.metrics["validation"]
    assert "synthetic n=24 seed=41" in manifest.data
    assert set(manifest.calibration) == set(manifest.operating_points) == set(manifest.labels)
    assert manifest.operating_points["MI"]["policy"] == "sensitivity >= 0.9"
    assert manifest.operating_points["AF"]["policy"] == "Youden's J"  # a label the policy does not name
    if manifest.operating_points["MI"]["sensitivity"] is not None:  # MI present in the 16 validation pages
        assert manifest.operating_points["MI"]["sensitivity"] >= 0.9
        assert manifest.metrics["validation"]["sensitivity"]["MI"] >= 0.9  # the same pages, calibrated alike
    events = [e["event"] for e in _events(tmp_path / "runs" / "a")]
    assert events[0] == "start" and events.count("eval") == 2 and events[-1] == "bundle"

    model, _ = load_model(bundle)
    assert (bundle / manifest.program).exists() and (bundle / manifest.onnx).exists()
    import onnxruntime
    import torch

    pages = torch.rand(3, 1, *SIZE)
    session = onnxruntime.InferenceSession(str(bundle / manifest.onnx), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"pages": pages.numpy()})[0]
    np.testing.assert_allclose(onnx_logits, model(pages).detach().numpy(), atol=1e-4)

    # same seed, same data, same budget, same policy: the same weights
    again = train(_config(tmp_path, "b", operating_points={"MI": {"sensitivity": 0.9}}))
    assert again["model_version"].split("@")[1] == first["model_version"].split("@")[1]


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    train(_config(tmp_path, "r", total_pages=16))
    resumed = train(_config(tmp_path, "r", total_pages=40))
    assert resumed["pages"] == 40
    events = _events(tmp_path / "runs" / "r")
    assert {"event": "resumed", "pages": 16} in [{k: e[k] for k in ("event", "pages") if k in e} for e in events]
    assert [e["pages"] for e in events if e["event"] == "eval"] == [16, 32, 40]


def test_stage_two_starts_from_stage_one_weights(tmp_path: Path) -> None:
    """Before its first step, stage two's model holds exactly stage one's weights (not its own seed's)."""
    import torch

    stage1 = train(_config(tmp_path, "s1"))
    data = tmp_path / "target"
    write_dataset(data, 16, ("png",), "heavy", seed=43, dpi=50, workers=1)
    config = _config(tmp_path, "s2", stage=2, init=stage1["bundle"], lr=1e-4, seed=7,
                     data=[{"kind": "folder", "path": str(data)}])
    trainer = Trainer(config)
    stage1_weights = load_model(Path(stage1["bundle"]))[0].state_dict()
    start = trainer.model.state_dict()
    assert set(start) == set(stage1_weights)
    differing = [name for name, tensor in start.items() if not torch.equal(tensor.cpu(), stage1_weights[name])]
    assert not differing, f"{len(differing)} of {len(start)} tensors are not stage one's, e.g. {differing[:3]}"
    stage2 = trainer.run(resume=True)
    assert load_manifest(Path(stage2["bundle"])).metrics["stage"] == 2


def test_ptbxl_and_folder_sources_carry_their_labels(tmp_path: Path) -> None:
    out = tmp_path / "set"
    write_dataset(out, 8, ("png", "wfdb"), "light", seed=44, dpi=50, workers=1)
    with open(out / "labels.csv") as handle:
        expected = np.array([[int(r[k]) for k in ("MI", "AF", "STTC", "CD", "HYP")] for r in csv.DictReader(handle)])
    for source in (Source(kind="ptbxl", path=out / "ptbxl", dpi=50), Source(kind="folder", path=out)):
        pages = load_pages(source, SIZE, ("grid", "crop"), tmp_path / "cache", workers=1)
        assert pages.images.shape == (8, *SIZE) and pages.images.dtype == np.uint8
        assert (pages.images < 128).mean() > 0.005  # ink, not blank pages
        np.testing.assert_array_equal(pages.labels, expected)
    cached = load_pages(Source(kind="folder", path=out), SIZE, ("grid", "crop"), tmp_path / "cache", workers=1)
    assert isinstance(cached.images, np.memmap)  # the second call reads the cache


def test_presets_are_valid_configs() -> None:
    stage1, stage2 = load_config(Path("stage1")), load_config(Path("stage2"))
    assert stage1.stage == 1 and stage1.data[0].kind == "synthetic"
    assert stage2.stage == 2 and stage2.init is not None
    with pytest.raises(ValueError):
        TrainConfig.model_validate({"name": "x", "data": [{"kind": "mystery"}], "validation": []})


def _truth(folder: Path) -> list[list[int]]:
    with open(folder / "labels.csv") as handle:
        return [[int(row[label]) for label in ("MI", "AF", "STTC", "CD", "HYP")] for row in csv.DictReader(handle)]


def test_evaluate_command_reports_auroc_with_intervals(cli, tmp_path: Path, bundle_dir: Path) -> None:
    data = tmp_path / "test-set"
    write_dataset(data, 12, ("png",), "light", seed=45, dpi=50, workers=1)
    shown = cli("evaluate", "--data", str(data), "--json", str(tmp_path / "report.json"), "--bootstrap", "50").stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["per_class_auroc"]) == {"MI", "AF", "STTC", "CD", "HYP"}
    assert "ECE" in shown and f"normal ECGs with no flag: {report['normal_no_flag']:.3f}" in shown
    assert report["normal_pages"] == sum(not any(row) for row in _truth(data))
    assert "macro_auroc" in report and len(report["macro_auroc_ci"]) == 2
    assert all(Path(p).exists() for p in report["plots"])
    _check_report_values(report, _truth(data), n_bootstrap=50)


def _undefined(value: float | None) -> bool:
    return value is None or value != value  # JSON null or NaN


def _check_report_values(report: dict, truth: list[list[int]], n_bootstrap: int) -> None:
    """The numbers agree with the pages and with each other, not just the keys: counts, prevalences, ranges."""
    labels = ("MI", "AF", "STTC", "CD", "HYP")
    columns = {label: [row[i] for row in truth] for i, label in enumerate(labels)}
    assert report["n"] == len(truth) and report["n_bootstrap"] == n_bootstrap
    single_valued = sorted(label for label, column in columns.items() if len(set(column)) < 2)
    assert sorted(report["undefined_classes"]) == single_valued
    for label, column in columns.items():
        assert report["prevalence"][label] == pytest.approx(sum(column) / len(column), abs=1e-3)
        auroc, sensitivity = report["per_class_auroc"][label], report["sensitivity"][label]
        assert _undefined(auroc) == (label in single_valued), (label, auroc)
        assert _undefined(auroc) or 0.0 <= auroc <= 1.0
        assert _undefined(sensitivity) == (sum(column) == 0)  # no positive page: no sensitivity
        assert _undefined(sensitivity) or 0.0 <= sensitivity <= 1.0
        assert 0.0 <= report["ece"][label] <= 1.0
    defined = [report["per_class_auroc"][label] for label in labels if label not in single_valued]
    assert report["macro_auroc"] == pytest.approx(sum(defined) / len(defined), abs=2e-3)  # the mean of the classes
    low, high = report["macro_auroc_ci"]
    assert 0.0 <= low <= high <= 1.0
    normal, share = report["normal_pages"], report["normal_no_flag"]
    if normal:  # a share of the normal pages: a whole number of them, between none and all
        assert 0.0 <= share <= 1.0 and share * normal == pytest.approx(round(share * normal), abs=1e-2)


def test_evaluate_against_another_bundle_gives_paired_differences(cli, tmp_path: Path, bundle_dir: Path) -> None:
    """The shipped model against an untrained one ranks the same pages far better, and against itself not at all."""
    from worker.settings import SHIPPED_BUNDLE

    data = tmp_path / "test-set"
    write_dataset(data, 32, ("png",), "light", seed=46, dpi=100, workers=1)
    shown = cli("evaluate", "--data", str(data), "--bundle", str(SHIPPED_BUNDLE), "--against", str(bundle_dir),
                "--json", str(tmp_path / "diff.json"), "--bootstrap", "200").stdout
    diff = json.loads((tmp_path / "diff.json").read_text())
    assert diff["baseline"] == str(bundle_dir) and diff["n"] == 32 and "paired 95% CI" in shown
    assert diff["macro_auroc_diff"] > 0.15 and diff["macro_auroc_diff_ci"][0] > 0, diff
    cli("evaluate", "--data", str(data), "--bundle", str(SHIPPED_BUNDLE), "--against", str(SHIPPED_BUNDLE),
        "--json", str(tmp_path / "same.json"), "--bootstrap", "50")
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["macro_auroc_diff"] == 0 and same["macro_auroc_diff_ci"] == [0, 0]


def test_recalibrated_batchnorm_statistics_match_the_data() -> None:
    """After recalibration, eval mode on the calibration batch gives what train mode (batch statistics) gives."""
    import torch

    from model_training.model import create_model, to_input
    from model_training.train import recalibrate_bn

    torch.manual_seed(0)
    model = create_model("convnext_atto", 5, norm_layer="batchnorm2d", conv_mlp=True)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # stale statistics, as an EMA leaves them
            module.running_mean.fill_(0.5)
            module.running_var.fill_(50.0)
    pages = np.random.default_rng(0).integers(0, 256, (16, *SIZE), dtype=np.uint8)
    with torch.no_grad():
        stale = model.eval()(to_input(pages))
        batch_statistics = model.train()(to_input(pages))
    assert recalibrate_bn(model, pages, torch.device("cpu"), pages=16, batch_size=16)
    with torch.no_grad():
        recalibrated = model(to_input(pages))
    assert not model.training
    # equal up to the unbiased variance the running statistics keep (16 pooled values in the head's norm)
    before, after = (stale - batch_statistics).abs().max(), (recalibrated - batch_statistics).abs().max()
    assert after < 0.05 < before and after < before / 10, (before, after)
    assert not recalibrate_bn(create_model("convnext_atto", 5), pages, torch.device("cpu"))  # LayerNorm: nothing
