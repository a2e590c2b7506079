"""Fine-tune O-Net's landmarks on masked faces: read by `embedder.mtcnn_retry`.

On a face with its lower half covered, the original O-Net puts the eyes up to half an eye
distance off at a score of 1.0, whatever box it is given (docs/detection.md). This copy of it
learns where the points are from celeba-112 training identities (never the validation ones,
which include every identity of celeba-photos: `trainer.split.make_split`), half of them with a
synthetic mask (`embedder.masks.apply_mask`), the other half bare so that it keeps O-Net's
points there. The targets are the reference landmarks of `celeba-112/landmarks.csv` (the
original MTCNN's on the bare photo), mapped into the aligned crop; each crop is turned, scaled
and shifted at random and cut by a jittered square around its reference box, the way the
cascade hands O-Net a candidate. Its face-score output is trained to say whether the face
wears a mask (the cue on which its points are taken); its box output is not used.

    python -m trainer.onet_masked --out embedder/weights/onet_masked.pt
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from embedder.align import similarity_transform, template
from embedder.masks import apply_mask
from embedder.mtcnn import ONet, _clip, _Integral, _square, load_nets
from trainer.config import shared_data
from trainer.split import make_split

POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
MIRROR = [1, 0, 2, 4, 3]  # the points' order in a mirrored photo
MASKED = 0.5  # share of samples with a mask
MASK_WEIGHT = 0.01  # of the mask's cross-entropy beside the points' loss (about 0.003 at the end)
TURN, SCALE, SHIFT = 20.0, (0.75, 1.1), 0.08  # degrees; crop scale; box jitter (box sides)


def reference_faces(root: Path) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Each training identity's crops with their reference landmarks and box, both mapped
    into the aligned crop's pixels."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    holdout = {p.name for p in Path(shared_data("celeba-photos")).iterdir() if p.is_dir()}
    train = set(make_split(names, holdout=holdout).train)
    faces = []
    with open(root / "landmarks.csv", newline="") as table:
        for row in csv.DictReader(table):
            if row["identity"] not in train:
                continue
            marks = np.array([[float(row[f"{p}_{a}"]) for a in "xy"] for p in POINTS])
            matrix = similarity_transform(marks, template())
            corners = np.array([[float(row["x1"]), float(row["y1"])],
                                [float(row["x2"]), float(row["y2"])]])  # fmt: skip
            mapped = np.hstack([np.vstack([marks, corners]), np.ones((7, 1))]) @ matrix.T
            path = root / row["identity"] / f"{row['image']}.webp"
            faces.append((path, mapped[:5], mapped[5:].reshape(4)))
    return faces


def sample(
    crop: np.ndarray, marks: np.ndarray, box: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One O-Net input (48x48x3, normalised) and its target (11: 5 x then 5 y in box units,
    then 1 where the face wears a mask)."""
    masked = rng.random() < MASKED
    if masked:
        crop = apply_mask(crop, rng=rng, landmarks=marks.astype(np.float32)).image
    if rng.random() < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
        marks = marks[MIRROR] * [-1, 1] + [crop.shape[1], 0]
        box = np.array([crop.shape[1] - box[2], box[1], crop.shape[1] - box[0], box[3]])
    size = 160  # room around the 112 crop for the box to reach outside it
    matrix = cv2.getRotationMatrix2D((56.0, 56.0), rng.uniform(-TURN, TURN), rng.uniform(*SCALE))
    matrix[:, 2] += (size - 112) / 2
    photo = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    marks = np.hstack([marks, np.ones((5, 1))]) @ matrix.T
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    centre = np.append((box[:2] + box[2:]) / 2, 1) @ matrix.T
    half = scale * (box[2:] - box[:2]) / 2
    square = _square(np.array([[*(centre - half), *(centre + half)]], np.float32))
    side = float(square[0, 2] - square[0, 0])
    square += np.tile(rng.uniform(-SHIFT, SHIFT, 2) * side, 2).astype(np.float32)
    pixels = _Integral.of(photo).resample(_clip(square, size, size), 48, 48)[0]
    origin = square[0, :2] - 1
    extent = square[0, 2:] - origin
    target = (marks - origin) / extent
    return pixels, np.concatenate([target[:, 0], target[:, 1], [masked]]).astype(np.float32)


def dataset(faces: list, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(faces), count, replace=count > len(faces))
    inputs, targets = [], []
    for index in pick:
        path, marks, box = faces[index]
        crop = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        pixels, target = sample(crop, marks, box, rng)
        inputs.append(pixels)
        targets.append(target)
    return torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2), torch.from_numpy(
        np.stack(targets)
    )


def train(onet: ONet, data: tuple, epochs: int, lr: float, seed: int) -> None:
    inputs, targets = data
    torch.manual_seed(seed)
    onet.train().requires_grad_(True)
    optimiser = torch.optim.Adam(onet.parameters(), lr=lr)
    steps = epochs * math.ceil(len(inputs) / 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps)
    for epoch in range(epochs):
        order, total = torch.randperm(len(inputs)), 0.0
        for start in range(0, len(inputs), 128):
            batch = order[start : start + 128]
            masked, _, marks = onet(inputs[batch])
            loss = F.smooth_l1_loss(marks, targets[batch, :10], beta=0.02)
            loss = loss + MASK_WEIGHT * F.binary_cross_entropy(
                masked.clamp(1e-6, 1 - 1e-6), targets[batch, 10]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}: loss {total / len(inputs):.5f}", flush=True)
    onet.eval().requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=40000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from these weights (default: O-Net's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    faces = reference_faces(Path(shared_data("celeba-112")))
    data = dataset(faces, args.samples, args.seed)
    print(f"{len(faces)} training faces, {args.samples} samples in {time.time() - start:.0f} s")
    onet = load_nets()[2]
    if args.init:
        onet.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    train(onet, data, args.epochs, args.lr, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(onet.state_dict(), args.out)
    print(f"saved {args.out} after {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
