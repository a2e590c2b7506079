"""From a DataConfig to what the loop consumes: training set, augmentation, validator.

A folder is split by identity (trainer.split) on the fly, deterministically; the main process
records the split and the validation pairs in the run folder. A `.rec` file trains on all of
its identities, without periodic validation.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedder.inference import Embedder
from embedder.model import CQAFace
from trainer.augment import Augment, AugmentConfig
from trainer.config import DataConfig, TrainConfig
from trainer.distill import Teacher
from trainer.evaluate import verify_pairs
from trainer.folder_dataset import FolderDataset
from trainer.map_cache import CacheKey, MapCache, MapSet, PickVariant
from trainer.pairs import list_identities, listing_resolver, read_lfw_pairs
from trainer.recordio import RecordIODataset
from trainer.split import PAIRS_FILE, Split, make_split, write_split
from trainer.train import TrainingSet, Validator


def augmentation(config: DataConfig) -> Augment:
    return Augment(
        AugmentConfig(
            p_flip=config.flip,
            p_color_jitter=config.color_jitter,
            p_low_resolution=config.low_resolution,
            p_blur=config.blur,
            p_mask=config.mask,
        )
    )


def training_set(config: DataConfig) -> TrainingSet:
    root = Path(config.root)
    if root.suffix == ".rec":
        return RecordIODataset(root, tensors=False)
    identities = identity_split(config).train if config.validation_identities else None
    if config.max_identities:
        identities = (identities or list_identities(root))[: config.max_identities]
    return FolderDataset(
        root,
        identities,
        preload=config.preload,
        workers=os.cpu_count() or 1,
        tensors=False,
        max_per_identity=config.max_per_identity,
    )


def identity_split(config: DataConfig) -> Split:
    """The folder's training and validation identities, as every run of this config sees them."""
    return make_split(
        list_identities(Path(config.root)),
        holdout=_holdout(config),
        n_validation=config.validation_identities,
        seed=config.split_seed,
    )


def training_inputs(
    config: TrainConfig,
) -> tuple[TrainingSet, Augment | PickVariant, Teacher | None]:
    """What the loop trains on: crops with their augmentation (and the offline teacher when
    distilling), or, for stage 1 on a pretrained stem, its cached maps with their variants and
    the pretrained network's own embeddings as the teacher. Stage 2 trains on the crops and
    keeps stage 1's teacher: the cache's embeddings of the bare faces."""
    faces = training_set(config.data)
    if config.data.maps:
        cache = map_cache(config, faces)
        target = cache.teacher if config.distill_weight else None
        if not config.data.train_on_maps:
            return faces, augmentation(config.data), target
        return MapSet(cache, faces), PickVariant(config.data.mask_maps), target
    teacher_vectors = teacher(config.data, faces) if config.distill_weight else None
    return faces, augmentation(config.data), teacher_vectors


def map_cache(config: TrainConfig, faces: FolderDataset) -> MapCache:
    """The pretrained stem's cached maps of the training faces, built on first use (resumably).

    The cache belongs to the stem's file and the face list: a config pointing at a cache built
    from anything else fails rather than training on the wrong maps.
    """
    from embedder import pretrained
    from embedder.model import build_model
    from trainer import map_cache as cache

    if not config.init:
        raise ValueError(f"{config.name}: data.maps needs `init`, the pretrained stem's file")
    key = CacheKey(config.model.stem, cache.file_digest(config.init), config.data.split_seed)
    network = build_model(pretrained.native(config.model.stem))
    pretrained.load_into(network, config.init)
    return cache.build(network, faces, Path(config.data.maps), key)


def teacher(config: DataConfig, data: TrainingSet) -> Teacher | None:
    """The offline teacher's vectors for the training samples, when the config names a file."""
    if not config.teacher:
        return None
    if not isinstance(data, FolderDataset):
        raise ValueError("distillation needs a folder dataset (its paths key the teacher file)")
    return Teacher.for_paths(Path(config.teacher), Path(config.root), data.paths)


def validator(config: DataConfig, run_dir: Path) -> Validator | None:
    """Verification on the held-out identities, plain and with one face of each pair masked."""
    root = Path(config.root)
    if root.suffix == ".rec" or not config.validation_identities:
        return None
    holdout = _holdout(config)
    out = run_dir / "split"
    write_split(
        root,
        out,
        holdout=holdout,
        n_validation=config.validation_identities,
        seed=config.split_seed,
        max_per_fold=config.val_pairs_per_fold,
    )
    pairs = read_lfw_pairs(out / PAIRS_FILE, listing_resolver(root))

    def validate(model: CQAFace) -> dict:
        embedder = Embedder(model, device=str(next(model.parameters()).device))
        normal = verify_pairs(embedder, pairs, "none")
        masked = verify_pairs(embedder, pairs, "one")
        return {
            "accuracy": normal["accuracy"],
            "tar_at_far": normal["tar_at_far"],
            "masked_accuracy": masked["accuracy"],
            "masked_tar_at_far": masked["tar_at_far"],
            "pairs": normal["pairs"],
        }

    return validate


def _holdout(config: DataConfig) -> list[str]:
    """Identities that must validate (never train): those of the `holdout` folder."""
    return list_identities(Path(config.holdout)) if config.holdout else []
