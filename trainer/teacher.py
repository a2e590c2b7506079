"""A teacher file for distillation (trainer/distill.py): a pretrained network's own embedding
of every bare crop under a folder, computed once and read by path.

Training that sees whole crops (a stem that is not frozen, masks as augmentation) then pulls
each face, masked or not, towards where the pretrained network puts its bare face, as stage 1
does with the teacher vectors of its map cache. The network runs in this project's
environment: no other toolkit, no separate virtualenv.

    python -m trainer.teacher ROOT OUT.npz --init ../shared/models/.../model-0000.params
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedder import pretrained
from embedder.inference import preprocess
from embedder.model import build_model
from trainer.folder_dataset import FolderDataset
from trainer.map_cache import PASS


@torch.inference_mode()
def write_teacher(root: Path, out: Path, init: Path, stem: str = "mobilefacenet_y1") -> int:
    """Writes `out` (npz: `paths` relative to `root`, `embeddings` L2-normalised, float16);
    returns the number of faces."""
    network = build_model(pretrained.native(stem))
    pretrained.load_into(network, init)
    network.eval()
    faces = FolderDataset(root, tensors=False)
    vectors = []
    for start in range(0, len(faces), PASS):
        crops = np.stack([faces.crop(i) for i in range(start, min(start + PASS, len(faces)))])
        embeddings = network(torch.from_numpy(preprocess(crops))).embedding
        vectors.append(F.normalize(embeddings, dim=1).half().numpy())
    names = np.array([str(Path(p).relative_to(root)) for p in faces.paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, paths=names, embeddings=np.concatenate(vectors))
    return len(faces)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.teacher", description=__doc__)
    parser.add_argument("root", type=Path, help="a folder per identity of aligned crops")
    parser.add_argument("out", type=Path, help="the teacher file to write (.npz)")
    parser.add_argument("--init", type=Path, required=True, help="the pretrained network's file")
    parser.add_argument("--stem", default="mobilefacenet_y1", choices=sorted(pretrained.NATIVE))
    args = parser.parse_args(argv)
    count = write_teacher(args.root, args.out, args.init, args.stem)
    print(f"{args.out}: {count} teacher vectors from {args.init}")


if __name__ == "__main__":
    main()
