"""The model bundle: a directory with `manifest.json` and weights, the contract between training and serving.

This is the torch half: saving, loading and exporting the network. The manifest itself (`Manifest`,
`load_manifest`, `check_compatible`, the file names, the labels) lives in the torch-free
`model_training.manifest`; import it from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import subprocess
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model_training.manifest import (
    LABELS,
    MANIFEST,
    MAX_BATCH,
    ONNX,
    PROGRAM,
    BundleError,
    Manifest,
    check_compatible,
    load_manifest,
)
from model_training.model import create_model

log = logging.getLogger(__name__)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def save_bundle(model: nn.Module, manifest: Manifest, directory: Path) -> Manifest:
    """Write weights and manifest; the version is the weights' content hash, so it names them exactly."""
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / manifest.weights
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path))
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()[:12]
    manifest = manifest.model_copy(update={
        "version": digest,
        "created": manifest.created or datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": manifest.git_commit or _git_commit(),
        "command": manifest.command or " ".join(sys.argv),
    })
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_model(directory: Path) -> tuple[nn.Module, Manifest]:
    """The model in eval mode on CPU, with its manifest, after the compatibility checks."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    check_compatible(manifest)
    model = create_model(manifest.backbone, len(manifest.labels), manifest.in_chans, **manifest.backbone_kwargs)
    weights = directory / manifest.weights
    if not weights.is_file():
        raise BundleError(f"bundle {directory} has no weights file {manifest.weights}")
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    if not manifest.trained:
        log.warning("bundle %s is UNTRAINED (random weights): its predictions mean nothing",
                    manifest.model_version)
    return model, manifest


def create_untrained_bundle(
    directory: Path, backbone: str = "convnext_atto", input_size: tuple[int, int] = (384, 512), seed: int = 0,
    labels: Sequence[str] = LABELS, **backbone_kwargs: Any,
) -> Manifest:
    """A randomly initialised bundle, marked `trained: false`, for plumbing, tests and speed benchmarks."""
    torch.manual_seed(seed)
    model = create_model(backbone, len(labels), **backbone_kwargs)
    manifest = Manifest(name=f"untrained-{backbone}", labels=list(labels), backbone=backbone,
                        backbone_kwargs=backbone_kwargs, input_size=input_size, trained=False,
                        data="none: random initialisation")
    return save_bundle(model, manifest, directory)


def _example(manifest: Manifest) -> torch.Tensor:
    return torch.rand(2, manifest.in_chans, *manifest.input_size)


def export_program(model: nn.Module, manifest: Manifest, directory: Path) -> Path:
    """A `torch.export` program with a dynamic batch (1..MAX_BATCH); the serving engines compile from it."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model.eval(), (_example(manifest),), dynamic_shapes=({0: batch},))
    path = Path(directory) / PROGRAM
    torch.export.save(program, path)
    return path


def export_onnx(model: nn.Module, manifest: Manifest, directory: Path) -> Path:
    """The same graph as ONNX (opset from the dynamo exporter), input `pages`, output `logits`.

    The exporter prints progress lines and warnings; they go to the debug log, so a command's stdout stays
    the JSON or table it promises.
    """
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path = Path(directory) / ONNX
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (_example(manifest),), str(path), dynamo=True, input_names=["pages"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), external_data=False)
    log.debug("ONNX export of %s: %s", manifest.model_version, chatter.getvalue())
    return path


def export_bundle(directory: Path) -> Manifest:
    """Add the exported program and ONNX file to a bundle and record them in its manifest."""
    directory = Path(directory)
    model, manifest = load_model(directory)
    program = export_program(model, manifest, directory)
    onnx_path = export_onnx(model, manifest, directory)
    manifest = manifest.model_copy(update={"program": program.name, "onnx": onnx_path.name})
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest
