"""The learned half of digitising: a small U-Net that tells the pen's trace from everything else on a cleaned
sheet (grid remnants, lead names, separators, axes and frames, stamps, handwriting, shadows), so the column
reading and the layout search see the signal alone.

Its input is the cleaned full-page sheet (`ingest.preprocess.clean`'s last full-page stage, at about 4 px/mm)
beside the original colour page carried into the same pixels by the cleaning's `sheet_transform`: the sheet
has the grid suppressed, the colour keeps a thin blue or red pen that grayscale cleaning fades. Its truth is
exact: every drawing family draws its page's trace mask at the page's own pixels
(`model_training.synth.families.drawing_with_mask`), and the same homography carries it onto the sheet.
Geometric damage (a photo's perspective, a partial crop) is applied to page and mask together; every other
artifact is applied to the page alone.

The weights ship in `models/digitiser/` (made by `ecg-intake train-digitiser`); nothing is downloaded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ingest.preprocess import STEPS, Cleaned, clean, downscale_matrix

SEGMENTER_DIR = Path(__file__).resolve().parents[2] / "models" / "digitiser"
SHEET_STAGES = ("grid", "creases", "deskew", "illumination", "page", "input")  # the first one present is read
CHANNELS = 4  # the sheet, and the page's colour carried onto it
WIDTHS = (8, 16, 32, 64)
TRACE_LEVEL = 0.5
MASK_FLOOR = 30  # of 255: the least pen coverage that is trace (a 1 px pen after a 3x downscale covers ~85)


def sheet_of(cleaned: Cleaned) -> np.ndarray:
    """The cleaning's last full-page stage (needs `keep_stages`)."""
    stages = dict(cleaned.stages)
    return next(stages[name] for name in SHEET_STAGES if name in stages)


def onto_sheet(array: np.ndarray, cleaned: Cleaned, shape: tuple[int, ...], border: int) -> np.ndarray:
    """`array` (an image at the input's pixels) carried onto the sheet: area-downscaled as cleaning downscales,
    then warped by the rest of `sheet_transform`."""
    factor = cleaned.work_factor
    if factor >= 2:
        array = cv2.resize(array, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    rest = cleaned.sheet_transform @ np.linalg.inv(downscale_matrix(factor))
    fill = (border,) * (array.shape[2] if array.ndim == 3 else 1)
    return cv2.warpPerspective(array, rest, (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderValue=fill)


def sheet_input(image: np.ndarray, cleaned: Cleaned) -> np.ndarray:
    """The segmenter's input for `image` (uint8, channels x height x width at the sheet's pixels)."""
    sheet = sheet_of(cleaned)
    colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    colour = onto_sheet(np.ascontiguousarray(colour[:, :, :3]), cleaned, sheet.shape, 255)
    return np.concatenate([sheet[None], colour.transpose(2, 0, 1)], axis=0)


def _block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(convs):
        layers += [nn.Conv2d(c_in if index == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class TraceNet(nn.Module):
    """A four-level U-Net (about 0.1 M weights): enough context to tell a lead name from a QRS, full resolution
    at the output so a one-pixel trace keeps its row. The full-resolution level is narrow and one convolution
    deep, since it costs most: a page takes well under a second on one CPU core."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c_in = CHANNELS
        for level, width in enumerate(widths):
            self.down.append(_block(c_in, width, 1 if level == 0 else 2))
            c_in = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths[:-1]))):
            self.up.append(nn.ConvTranspose2d(c_in, width, 2, stride=2))
            self.merge.append(_block(2 * width, width, 1 if level == 0 else 2))
            c_in = width
        self.head = nn.Conv2d(c_in, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = 1.0 - x / 255.0  # ink high, paper 0
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)[:, 0]


@dataclass(frozen=True)
class Segmenter:
    """A trained TraceNet and what it was trained on."""

    net: TraceNet
    info: dict

    @classmethod
    def load(cls, directory: Path = SEGMENTER_DIR) -> Segmenter:
        info = json.loads((directory / "segmenter.json").read_text())
        net = TraceNet(tuple(info["widths"]))
        net.load_state_dict(load_file(str(directory / "segmenter.safetensors")))
        return cls(net.eval(), info)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()},
                  str(directory / "segmenter.safetensors"))
        (directory / "segmenter.json").write_text(json.dumps(self.info, indent=2) + "\n")

    @torch.inference_mode()
    def probabilities(self, sheet_input: np.ndarray) -> np.ndarray:
        """Per sheet pixel, the chance it is trace (float32, height x width)."""
        _, height, width = sheet_input.shape
        pad_h, pad_w = -height % 8, -width % 8
        x = torch.from_numpy(np.pad(sheet_input, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=255))
        return torch.sigmoid(self.net(x[None].float()))[0, :height, :width].numpy()


@cache
def shipped_segmenter() -> Segmenter | None:
    """The segmenter shipped with the code, or None where the models folder holds none."""
    if not (SEGMENTER_DIR / "segmenter.safetensors").is_file():
        return None
    return Segmenter.load()


# --- training data -------------------------------------------------------------------------------------------

GEOMETRIC = ("perspective", "partial_crop")  # applied to page and mask together here, not by the presets


def _joint_geometry(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A photo's or scanner's geometry on page and mask alike: a small rotation, a perspective on a desk, a cut."""
    height, width = mask.shape
    if rng.random() < 0.35:  # a phone photo: the sheet on a darker desk, seen at an angle
        pad = round(0.08 * width)
        desk = tuple(int(v) for v in rng.integers(40, 160, 3))
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=desk)
        mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        corners = np.float32([[pad, pad], [pad + width, pad], [pad + width, pad + height], [pad, pad + height]])
        moved = corners + rng.uniform(-0.6, 0.6, (4, 2)).astype(np.float32) * pad
        matrix = cv2.getPerspectiveTransform(corners, moved)
        size = (image.shape[1], image.shape[0])
        image = cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=desk)
        mask = cv2.warpPerspective(mask, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    elif rng.random() < 0.5:  # a scan fed askew
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), float(rng.uniform(-4, 4)), 1.0)
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
        mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    if rng.random() < 0.2:  # a cut edge
        h, w = mask.shape
        top, left = int(rng.uniform(0, 0.12) * h), int(rng.uniform(0, 0.08) * w)
        bottom, right = h - int(rng.uniform(0, 0.12) * h), w - int(rng.uniform(0, 0.08) * w)
        image, mask = image[top:bottom, left:right], mask[top:bottom, left:right]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def training_page(record, page_seed: int, family: str) -> tuple[np.ndarray, np.ndarray]:
    """One (input, target) pair at the sheet's pixels: the family's page, damaged as the heavy preset damages
    (geometry applied to its mask too), cleaned as intake cleans it."""
    from model_training.synth.families import drawing_with_mask
    from model_training.synth.paper import ARTIFACTS

    drawing = drawing_with_mask(record, page_seed, family)
    rng = np.random.default_rng([page_seed, 0x5E6])
    image = drawing.image
    for name, artifact in ARTIFACTS.items():
        if name not in GEOMETRIC and rng.random() < (0.12 if name == "binarise" else 0.35):
            image = artifact(image, float(rng.uniform(0.3, 1.0)), rng)
    image, mask = _joint_geometry(image, drawing.mask, rng)
    cleaned = clean(image, (256, 352), STEPS, keep_stages=True)
    x = sheet_input(image, cleaned)
    return x, trace_core(onto_sheet(mask, cleaned, x.shape[1:], 0))


def trace_core(coverage: np.ndarray) -> np.ndarray:
    """The pen's core: pixels covered at least half as much as the most covered pixel near them (and
    `MASK_FLOOR` at least). A thick pen's soft edge is left out, since a column's centre of a fat stroke rounds
    every peak off; a faint hairline keeps its one pixel."""
    nearby = cv2.dilate(coverage, np.ones((5, 5), np.uint8))
    return (coverage >= MASK_FLOOR) & (coverage.astype(np.int16) * 2 >= nearby)


def _crops(pages: list[tuple[np.ndarray, np.ndarray]], size: int, count: int, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` crops, most of them centred near the trace (the page is mostly paper)."""
    xs, ys = [], []
    for _ in range(count):
        x, y = pages[int(rng.integers(len(pages)))]
        _, height, width = x.shape
        if height < size or width < size:
            pad = ((0, max(0, size - height)), (0, max(0, size - width)))
            x = np.pad(x, ((0, 0), *pad), constant_values=255)
            y = np.pad(y, pad)
            _, height, width = x.shape
        rows, cols = np.nonzero(y[::4, ::4])
        if rows.size and rng.random() < 0.85:
            pick = int(rng.integers(rows.size))
            top = int(np.clip(rows[pick] * 4 - size // 2 + rng.integers(-size // 4, size // 4), 0, height - size))
            left = int(np.clip(cols[pick] * 4 - size // 2 + rng.integers(-size // 4, size // 4), 0, width - size))
        else:
            top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
        xs.append(x[:, top:top + size, left:left + size])
        ys.append(y[top:top + size, left:left + size])
    return torch.from_numpy(np.stack(xs)).float(), torch.from_numpy(np.stack(ys)).float()


def dice_score(probabilities: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Overlap of the predicted trace with the true one (1 is perfect)."""
    p = torch.as_tensor(probabilities, dtype=torch.float32) >= TRACE_LEVEL
    t = torch.as_tensor(target, dtype=torch.float32) > 0.5
    return float(2 * (p & t).sum() / max(1, int(p.sum() + t.sum())))


def train_segmenter(train_pages: list[tuple[np.ndarray, np.ndarray]], held_out: list[tuple[np.ndarray, np.ndarray]],
                    steps: int, info: dict, batch: int = 12, size: int = 192, seed: int = 0,
                    progress=None) -> Segmenter:
    """Train on crops of `train_pages`; dice on whole `held_out` pages is recorded in `info`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = TraceNet()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(4.0))
    started = time.perf_counter()
    net.train()
    for step in range(steps):
        x, y = _crops(train_pages, size, batch, rng)
        logits = net(x)
        p = torch.sigmoid(logits)
        soft_dice = 1 - 2 * (p * y).sum() / (p.sum() + y.sum() + 1)
        loss = loss_fn(logits, y) + soft_dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress is not None:
            progress(step, loss.item())
    segmenter = Segmenter(net.eval(), {})
    dice = [dice_score(segmenter.probabilities(x), y) for x, y in held_out]
    segmenter.info.update(info, widths=list(WIDTHS), steps=steps, batch=batch, crop=size,
                          train_seconds=round(time.perf_counter() - started),
                          held_out_dice=round(float(np.mean(dice)), 4) if dice else None)
    return segmenter


SEED_BASE = 7_700_000  # records and pages the segmenter trains on, apart from every benchmark's


def _page_for(item: tuple[int, str]) -> tuple[np.ndarray, np.ndarray]:
    from model_training.synth.signals import generate_record

    seed, family = item
    return training_page(generate_record(seed), seed, family)


def make_pages(families: tuple[str, ...], per_family: int, offset: int, workers: int
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """`per_family` training pairs of each family, seeds from `SEED_BASE + offset` (a held-out set takes another
    offset), made in `workers` processes."""
    from model_training.parallel import parallel_map

    items = [(SEED_BASE + offset + index * len(families) + f, family)
             for index in range(per_family) for f, family in enumerate(families)]
    return list(parallel_map(_page_for, items, workers, chunksize=2))
