"""The nightly job: fine-tune the champion on reviewed pages; promote the challenger only when it is measurably
better on pages it never saw.

One run, in order:
1. take the `retrain` lock (`worker.locks`), or stop: two runs never overlap;
2. skip, with the reason logged and recorded, when fewer than `retrain_min_reviews` reviews came in since
   the champion was promoted;
3. split reviewed pages by a stable hash of their document: a fixed holdout (never trained on), a validation
   share (picks the challenger's thresholds) and the rest; train on the rest reviewed since the champion,
   mixed with a replay of stage 1's synthetic pages;
4. fine-tune from the champion with the stage 2 preset (`model_training.train`);
5. score champion and challenger on the holdout (paired bootstrap) and the synthetic benchmark, decide, and
   record the challenger in `model_versions` as champion or rejected, with its numbers.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_training.manifest import load_manifest
from worker import metrics
from worker.db.models import ModelStatus
from worker.db.queries import ReviewedPage, champion, record_event, reviewed_pages, reviews_since
from worker.db.session import session_scope
from worker.locks import LockHeld, lease
from worker.registry import champion_bundle, promote, register
from worker.settings import Settings
from worker.training_set import write_labelled_folder

if TYPE_CHECKING:
    from model_training.config import TrainConfig
    from model_training.manifest import Manifest

log = logging.getLogger(__name__)

LOCK = "retrain"
SPLIT_SALT = "ecg-intake-split-v1"  # changing it would move pages between holdout and training: never do


def split_of(document_sha256: str, holdout_percent: float, validation_percent: float) -> str:
    """`holdout`, `validation` or `train` for a document, the same on every run and machine.

    All pages of a document fall on one side, so a page never sits in training while its twin is held out.
    """
    digest = hashlib.sha256(f"{SPLIT_SALT}:{document_sha256}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * 100
    if point < holdout_percent:
        return "holdout"
    if point < holdout_percent + (100 - holdout_percent) * validation_percent / 100:
        return "validation"
    return "train"


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(comparison: dict[str, Any], challenger_synthetic: float | None, settings: Settings) -> Decision:
    """The promotion rule: a holdout gain of at least `retrain_margin` whose paired 95% interval excludes zero,
    no class losing more than `retrain_class_tolerance`, and the synthetic benchmark at or above its floor."""
    reasons = []
    gain, (low, _high) = comparison["macro_auroc_diff"], comparison["macro_auroc_diff_ci"]
    if not np.isfinite(gain):
        reasons.append("the holdout has no class with both positive and negative pages")
    else:
        if gain < settings.retrain_margin:
            reasons.append(f"holdout macro AUROC gain {gain:+.4f} is below the margin {settings.retrain_margin}")
        if low is None or not np.isfinite(low) or low <= 0:
            reasons.append(f"the gain's paired 95% interval reaches {low} (not above zero): it may be luck")
    for label, diff in comparison["per_class_auroc_diff"].items():
        if diff < -settings.retrain_class_tolerance:
            reasons.append(f"{label} AUROC drops by {-diff:.4f} (tolerance {settings.retrain_class_tolerance})")
    if challenger_synthetic is not None and not challenger_synthetic >= settings.retrain_synthetic_floor:
        reasons.append(f"synthetic benchmark macro AUROC {challenger_synthetic:.4f} is below the floor "
                       f"{settings.retrain_synthetic_floor}")
    return Decision(promote=not reasons, reasons=reasons)


class _Refresher:
    """Keeps the lock alive from the trainer's callbacks, at most every 30 s."""

    def __init__(self, refresh: Callable[[], None]) -> None:
        self.refresh, self.last = refresh, time.monotonic()

    def __call__(self, *_: Any) -> None:
        if time.monotonic() - self.last > 30:
            self.refresh()
            self.last = time.monotonic()


def run_retrain(settings: Settings, actor: str = "schedule",
                on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One nightly run; returns its report (`status`: skipped, promoted or rejected). Raises `LockHeld`
    when another run holds the lock. Every outcome, refused and failed too, is counted here."""
    try:
        report = _run_retrain(settings, actor, on_log)
    except LockHeld:
        metrics.retrain_outcome("refused")
        raise
    except Exception:
        metrics.retrain_outcome("failed")
        raise
    metrics.retrain_outcome(report["status"])
    return report


def _run_retrain(settings: Settings, actor: str, on_log: Callable[[dict[str, Any]], None] | None
                 ) -> dict[str, Any]:
    url = settings.sqlalchemy_url
    with lease(url, LOCK, settings.retrain_lock_seconds) as refresh:
        champion_bundle(url, settings.bundle_dir)  # an empty registry gets the configured bundle as champion
        with session_scope(url) as session:
            current = champion(session)
            assert current is not None
            since = current.promoted_at
            new_reviews = reviews_since(session, since)
            pages = reviewed_pages(session)
            champion_name, champion_dir = current.name, Path(current.bundle_path)
        if new_reviews < settings.retrain_min_reviews:
            return _skip(url, actor, f"{new_reviews} new review(s) since {champion_name} was promoted; "
                                     f"at least {settings.retrain_min_reviews} are needed", new_reviews)
        return _train_and_decide(settings, actor, pages, since, champion_name, champion_dir, new_reviews,
                                 _Refresher(refresh), on_log or (lambda _: None))


def _skip(url: str, actor: str, reason: str, new_reviews: int) -> dict[str, Any]:
    log.info("nightly retraining skipped: %s", reason)
    with session_scope(url) as session:
        record_event(session, actor, "retrain_skipped", details={"reason": reason, "new_reviews": new_reviews})
    return {"status": "skipped", "reason": reason, "new_reviews": new_reviews}


def split_reviewed_pages(settings: Settings, pages: list[ReviewedPage],
                         since: datetime | None) -> dict[str, list[ReviewedPage]]:
    """Reviewed pages as `train`, `validation` and `holdout` by `split_of` their document.

    Training takes only pages reviewed after `since` (the champion's promotion): the champion learnt the older
    ones already. Validation and holdout keep every reviewed page: they measure, they never teach.
    """
    parts: dict[str, list[ReviewedPage]] = {"train": [], "validation": [], "holdout": []}
    for page in pages:
        part = split_of(page.document_sha256, settings.retrain_holdout_percent, settings.retrain_validation_percent)
        if part == "train" and since is not None and _aware(page.reviewed_at) <= _aware(since):
            continue  # the champion has learnt these already
        parts[part].append(page)
    return parts


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def challenger_config(settings: Settings, name: str, champion_dir: Path, manifest: Manifest, work: Path,
                      train_pages: int) -> TrainConfig:
    """The stage 2 fine-tuning the nightly job hands the trainer: from the champion, on `work`/train (the new
    reviews) plus a replay of stage 1's synthetic pages, with `work`/validation as its validation split, on
    which the trainer chooses the challenger's thresholds. The holdout folder is never named here."""
    from model_training.config import load_config
    from model_training.pages import Source

    stage1 = load_config("stage1")
    replay_total = round(settings.retrain_replay_pages)
    synthetic = [s for s in stage1.data if s.kind == "synthetic"]
    stage1_pages = sum(s.n or 0 for s in synthetic)
    shares = [round(replay_total * (s.n or 0) / stage1_pages) for s in synthetic[:-1]] if stage1_pages else []
    shares.append(replay_total - sum(shares))
    # The first n pages of each stage 1 set: the very pages it learnt on.
    replay = [s.model_copy(update={"n": n}) for s, n in zip(synthetic, shares, strict=False) if n > 0]
    mixed = train_pages + sum(s.n or 0 for s in replay)
    total = max(round(settings.retrain_epochs * mixed), 8)
    batch = 32 if mixed >= 128 else 8
    return load_config("stage2", {
        "name": name, "init": str(champion_dir), "input_size": list(manifest.input_size),
        "preprocess_steps": list(manifest.preprocess_steps),
        "data": [Source(kind="folder", path=work / "train", preprocessed=True), *replay],
        "validation": [Source(kind="folder", path=work / "validation", preprocessed=True)],
        "total_pages": total, "batch_size": batch, "warmup_pages": max(total // 10, batch),
        "eval_every_pages": total, "checkpoint_every_pages": max(total // 4, batch),
        "out_dir": settings.retrain_dir / "runs", "cache_dir": work / "cache",
        "bundle_dir": settings.models_dir / name, "threads": settings.torch_threads,
    })


def _train_and_decide(settings: Settings, actor: str, pages: list[ReviewedPage], since: datetime | None,
                      champion_name: str, champion_dir: Path, new_reviews: int, keep_lock: _Refresher,
                      on_log: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from model_training.evaluate import json_safe
    from model_training.train import train

    url = settings.sqlalchemy_url
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"nightly-{stamp}"
    work = settings.retrain_dir / name
    manifest = load_manifest(champion_dir)
    parts = split_reviewed_pages(settings, pages, since)
    counts = {part: write_labelled_folder(rows, work / part, manifest) for part, rows in parts.items()}
    counts["new_reviews"] = new_reviews
    if counts["holdout"] < 10 or counts["validation"] < 2 or counts["train"] < 8:
        shutil.rmtree(work, ignore_errors=True)
        return _skip(url, actor, f"too few reviewed pages on one side of the split {counts}", new_reviews)

    config = challenger_config(settings, name, champion_dir, manifest, work, counts["train"])
    counts["replay"] = sum(source.n or 0 for source in config.data if source.kind == "synthetic")
    log.info("nightly retraining %s: from %s on %s", name, champion_name, counts)
    started = time.monotonic()
    summary = train(config, resume=False, on_log=lambda entry: (keep_lock(), on_log(entry)),
                    progress=lambda *_: keep_lock())
    train_minutes = (time.monotonic() - started) / 60
    scores = _score(settings, champion_dir, config.final_bundle_dir, work / "holdout", keep_lock)
    decision = decide(scores["comparison"], scores["challenger_synthetic"], settings)
    report: dict[str, Any] = {
              "status": "promoted" if decision.promote else "rejected", "challenger": summary["model_version"],
              "champion": champion_name, "counts": counts, "train_minutes": round(train_minutes, 2),
              "decision": asdict(decision), **scores,
              "rule": {"margin": settings.retrain_margin, "class_tolerance": settings.retrain_class_tolerance,
                       "synthetic_floor": settings.retrain_synthetic_floor}}
    with session_scope(url) as session:
        challenger = register(session, load_manifest(config.final_bundle_dir), config.final_bundle_dir,
                              metrics=json_safe({"validation": summary["validation"], "retrain": report}))
        if decision.promote:
            promote(session, challenger, actor, f"holdout macro AUROC {scores['comparison']['macro_auroc_diff']:+.4f}")
        else:
            challenger.status = ModelStatus.REJECTED
            record_event(session, actor, "model_rejected", details={"model": challenger.name,
                                                                    "reasons": decision.reasons})
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(config.run_dir, ignore_errors=True)  # checkpoint and copies; the bundle and its numbers stay
    log.info("nightly retraining %s: %s (%s)", name, report["status"],
             "; ".join(decision.reasons) or "all checks met")
    return json_safe(report)


def _score(settings: Settings, champion_dir: Path, challenger_dir: Path, holdout: Path,
           keep_lock: _Refresher) -> dict[str, Any]:
    """Both models on the holdout (metrics and the paired comparison) and on the synthetic benchmark."""
    import torch

    from model_training.bundle import load_model
    from model_training.config import load_config
    from model_training.evaluate import metrics, paired_comparison
    from model_training.pages import Source, load_pages
    from model_training.train import predict

    device = torch.device("cpu")
    champion_model, manifest = load_model(champion_dir)
    challenger_model, challenger_manifest = load_model(challenger_dir)
    labels = list(manifest.labels)
    size, steps = tuple(manifest.input_size), tuple(manifest.preprocess_steps)
    held = load_pages(Source(kind="folder", path=holdout, preprocessed=True), size, steps, holdout / "cache")
    truth = held.labels.astype(int)
    probs = {"champion": predict(champion_model, held.images, device, manifest),
             "challenger": predict(challenger_model, held.images, device, challenger_manifest)}
    keep_lock()
    result: dict[str, Any] = {
        "holdout": {who: metrics(truth, p, labels, {lb: m.threshold(lb) for lb in labels}, n_bootstrap=200)
                    for (who, p), m in zip(probs.items(), (manifest, challenger_manifest), strict=True)},
        "comparison": paired_comparison(truth, probs["champion"], probs["challenger"], labels,
                                        n_bootstrap=settings.retrain_bootstrap),
        "champion_synthetic": None, "challenger_synthetic": None,
    }
    if settings.retrain_synthetic_pages:
        benchmark = load_config("stage1").validation[0].model_copy(update={"n": settings.retrain_synthetic_pages})
        pages = load_pages(benchmark, size, steps, settings.retrain_dir / "benchmark-cache")
        keep_lock()
        for who, model in (("champion", champion_model), ("challenger", challenger_model)):
            scored = metrics(pages.labels.astype(int), predict(model, pages.images, device), labels,
                             dict.fromkeys(labels, 0.5), n_bootstrap=0)
            result[f"{who}_synthetic"] = scored["macro_auroc"]
        result["synthetic_benchmark"] = benchmark.describe()
    return result
