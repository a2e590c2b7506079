"""The data side of training: datasets, file formats (RecordIO, .bin, LFW pairs), the identity
split and augmentation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from embedder.inference import preprocess
from trainer.augment import Augment, AugmentConfig
from trainer.folder_dataset import FolderDataset, NotAlignedError
from trainer.pairs import (
    Pair,
    PairRef,
    PairsFormatError,
    lfw_resolver,
    list_identities,
    list_images,
    listing_resolver,
    parse_lfw_pairs,
    read_csv_pairs,
    read_lfw_pairs,
    write_csv_pairs,
    write_lfw_pairs,
)
from trainer.recordio import (
    MAGIC,
    RecordIODataset,
    RecordIOError,
    RecordWriter,
    read_index,
    read_record,
    unpack,
    write_face_records,
)
from trainer.split import PAIRS_FILE, SPLIT_FILE, Split, make_split, write_split


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def three_identities(celeba_aligned_dir: Path) -> list[str]:
    return list_identities(celeba_aligned_dir)[:3]


@pytest.fixture(scope="module")
def some_crops(celeba_aligned_dir: Path, three_identities: list[str]) -> list[Path]:
    return [p for name in three_identities for p in list_images(celeba_aligned_dir / name)]


# --- FolderDataset -------------------------------------------------------------------------


def test_labels_follow_sorted_identity_names_within_the_chosen_identities(
    celeba_aligned_dir: Path, three_identities: list[str]
) -> None:
    dataset = FolderDataset(celeba_aligned_dir, list(reversed(three_identities)))
    assert dataset.identities == three_identities
    assert dataset.num_classes == 3
    assert sorted(set(dataset.labels.tolist())) == [0, 1, 2]
    for path, label in zip(dataset.paths, dataset.labels, strict=True):
        assert path.parent.name == three_identities[label]
    assert len(dataset) == sum(len(list_images(celeba_aligned_dir / n)) for n in three_identities)


def test_items_are_tensors_scaled_exactly_as_at_inference(
    celeba_aligned_dir: Path, three_identities: list[str]
) -> None:
    dataset = FolderDataset(celeba_aligned_dir, three_identities)
    image, label = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 112, 112)
    assert label == 0
    expected = preprocess(_rgb(dataset.paths[0]))[0]
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-6)
    assert image.min() >= -1 and image.max() <= 1


def test_preloading_gives_the_same_items_and_a_read_only_cache(
    celeba_aligned_dir: Path, three_identities: list[str]
) -> None:
    lazy = FolderDataset(celeba_aligned_dir, three_identities)
    preloaded = FolderDataset(celeba_aligned_dir, three_identities, preload=True, workers=2)
    for index in range(len(lazy)):
        assert torch.equal(lazy[index][0], preloaded[index][0])
        assert lazy[index][1] == preloaded[index][1]
    with pytest.raises(ValueError, match="read-only"):
        preloaded.crop(0)[0, 0, 0] = 1


def test_the_transform_sees_the_uint8_crop_before_scaling(
    celeba_aligned_dir: Path, three_identities: list[str]
) -> None:
    seen = []

    def mirror(crop: np.ndarray) -> np.ndarray:
        seen.append((crop.dtype, crop.shape))
        return crop[:, ::-1]

    dataset = FolderDataset(celeba_aligned_dir, three_identities, transform=mirror)
    image, _ = dataset[0]
    assert seen == [(np.uint8, (112, 112, 3))]
    np.testing.assert_allclose(image.numpy(), preprocess(dataset.crop(0)[:, ::-1])[0])
    raw = FolderDataset(celeba_aligned_dir, three_identities, tensors=False)
    crop, label = raw[0]
    assert crop.dtype == np.uint8 and crop.shape == (112, 112, 3) and label == 0


def test_raw_photos_are_refused_with_a_hint_to_align_them_first(
    celeba_photos_dir: Path, orl_dir: Path
) -> None:
    for root in (celeba_photos_dir, orl_dir):
        with pytest.raises(NotAlignedError, match=r"not an aligned 112x112 crop.*align"):
            FolderDataset(root, list_identities(root)[:1])


def test_identities_missing_from_the_folder_are_refused(celeba_aligned_dir: Path) -> None:
    with pytest.raises(ValueError, match="not folders"):
        FolderDataset(celeba_aligned_dir, ["no-such-person"])


# --- RecordIO -------------------------------------------------------------------------------


def test_recordio_round_trip_keeps_labels_and_pixels(
    tmp_path: Path, some_crops: list[Path], three_identities: list[str]
) -> None:
    jpegs = [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in some_crops]
    labels = [three_identities.index(p.parent.name) for p in some_crops]
    write_face_records(tmp_path / "train.rec", list(zip(jpegs, labels, strict=True)))

    dataset = RecordIODataset(tmp_path / "train.rec", tensors=False)
    assert len(dataset) == len(some_crops) and dataset.num_classes == 3
    for index, (jpeg, label) in enumerate(zip(jpegs, labels, strict=True)):
        crop, got = dataset[index]
        assert got == label
        expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
        assert np.array_equal(crop, expected)
    tensor, _ = RecordIODataset(tmp_path / "train.rec")[0]
    assert tensor.shape == (3, 112, 112) and tensor.dtype == torch.float32


def test_recordio_reads_records_laid_out_as_the_format_documents(tmp_path: Path) -> None:
    # Built by hand from the format description, independently of RecordWriter.
    payload = struct.pack("<IfQQ", 0, 7.0, 1, 0) + b"abc"
    record = struct.pack("<II", MAGIC, len(payload)) + payload + b"\0"  # padded to 4 bytes
    header = struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 2.0, 3.0)
    first = struct.pack("<II", MAGIC, len(header)) + header
    (tmp_path / "a.rec").write_bytes(first + record)
    (tmp_path / "a.idx").write_text(f"0\t0\n1\t{len(first)}\n")
    with open(tmp_path / "a.rec", "rb") as f:
        head, rest = unpack(read_record(f, 0))
        assert head.flag == 2 and head.label == (2.0, 3.0) and rest == b""
        head, image = unpack(read_record(f, len(first)))
        assert (head.flag, head.label, head.id, image) == (0, 7.0, 1, b"abc")


def test_payloads_containing_the_magic_number_survive_splitting(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payloads = [magic + b"12345678" + magic + b"x" + magic, b"ab" + magic + b"cd", magic, b""]
    with RecordWriter(tmp_path / "m.rec", tmp_path / "m.idx") as writer:
        for key, payload in enumerate(payloads):
            writer.write(key, payload)
    written = (tmp_path / "m.rec").read_bytes()
    assert written.count(magic) > len(payloads)  # aligned magics made continuation records
    index = read_index(tmp_path / "m.idx")
    with open(tmp_path / "m.rec", "rb") as f:
        assert [read_record(f, index[key]) for key in range(len(payloads))] == payloads


def test_broken_recordio_files_get_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.idx").write_text("0\t0\nnot an index line\n")
    with pytest.raises(RecordIOError, match=r"bad\.idx:2"):
        read_index(tmp_path / "bad.idx")
    (tmp_path / "bad.rec").write_bytes(b"\0" * 16)
    with open(tmp_path / "bad.rec", "rb") as f, pytest.raises(RecordIOError, match="magic"):
        read_record(f, 0)


# --- LFW pairs and CSV pairs ---------------------------------------------------------------

LFW_SNIPPET = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1
Abdullah_Gul\t13\t14
Abdullah_Gul\t13\t16
Abdel_Aziz_Al-Hakim\t1\tFranco_Cangini\t1
Abdul_Majeed_Shobokshi\t1\tCharles_Cope\t1
"""


def test_reads_lfw_pairs_exactly_as_published(tmp_path: Path) -> None:
    (tmp_path / "pairs.txt").write_text(LFW_SNIPPET)
    pairs = read_lfw_pairs(tmp_path / "pairs.txt", lfw_resolver(Path("/lfw")))
    assert len(pairs) == 8
    assert pairs[0] == Pair(
        Path("/lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"),
        Path("/lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"),
        True,
        0,
    )
    assert pairs[3] == Pair(
        Path("/lfw/Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg"),
        Path("/lfw/Giancarlo_Fisichella/Giancarlo_Fisichella_0001.jpg"),
        False,
        0,
    )
    expected = [(same, fold) for fold in (0, 1) for same in (True, True, False, False)]
    assert [(p.same, p.fold) for p in pairs] == expected
    assert pairs[5].path2.name == "Abdullah_Gul_0016.jpg"


def test_reads_the_single_fold_dev_files(tmp_path: Path) -> None:
    (tmp_path / "pairsDevTest.txt").write_text("1\nA\t1\t2\nA\t1\tB\t3\n")
    folds = parse_lfw_pairs(tmp_path / "pairsDevTest.txt")
    assert folds == [[PairRef("A", 1, "A", 2), PairRef("A", 1, "B", 3)]]


def test_lfw_pairs_write_then_read_round_trip(tmp_path: Path) -> None:
    folds = [
        [PairRef("x", 1, "x", 3), PairRef("x", 1, "y", 2)],
        [PairRef("z", 2, "z", 1), PairRef("z", 1, "w", 1)],
    ]
    write_lfw_pairs(tmp_path / "p.txt", folds)
    assert parse_lfw_pairs(tmp_path / "p.txt") == folds
    # Matched pairs go first in each fold, whatever order they come in.
    write_lfw_pairs(tmp_path / "q.txt", [folds[0][::-1]])
    assert (tmp_path / "q.txt").read_text() == "1\t1\nx\t1\t3\nx\t1\ty\t2\n"


def test_listing_resolver_counts_in_each_folders_sorted_listing(tmp_path: Path) -> None:
    for name in ("b.webp", "a.webp", "notes.txt", "c.png"):
        (tmp_path / "id1" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "id1" / name).write_bytes(b"")
    resolve = listing_resolver(tmp_path)
    assert [resolve("id1", i).name for i in (1, 2, 3)] == ["a.webp", "b.webp", "c.png"]
    (tmp_path / "p.txt").write_text("1\t1\nid1\t1\t4\nid1\t1\tid2\t1\n")
    with pytest.raises(PairsFormatError, match=r"p.txt:2: 'id1' has 3 images"):
        read_lfw_pairs(tmp_path / "p.txt", resolve)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", ":1: empty file"),
        ("ten\t300\n", ":1: expected 'folds pairs_per_fold'"),
        ("1\t1\nA\t1\nA\t1\tB\t1\n", ":2: expected a matched pair 'name i j'"),
        ("1\t1\nA\t1\t2\nA\tone\tB\t1\n", ":3: expected a mismatched pair"),
        ("1\t1\nA\t0\t2\nA\t1\tB\t1\n", ":2: image indices start at 1"),
        ("1\t1\nA\t1\t2\nA\t1\tA\t3\n", ":3: a mismatched pair names one person twice"),
        (
            "1\t2\nA\t1\t2\nA\t1\tB\t1\n",
            "announces 1 folds x 2 x 2 pairs = 4 lines, the file has 2",
        ),
    ],
)
def test_malformed_lfw_pairs_are_reported_with_their_line(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(PairsFormatError, match=message):
        read_lfw_pairs(tmp_path / "pairs.txt", lfw_resolver(tmp_path))


def test_the_writer_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n matched and n mismatched"):
        write_lfw_pairs(tmp_path / "p.txt", [[PairRef("a", 1, "a", 2)]])
    with pytest.raises(ValueError, match="cannot hold the name"):
        write_lfw_pairs(
            tmp_path / "p.txt", [[PairRef("a b", 1, "a b", 2), PairRef("a b", 1, "c", 1)]]
        )


def test_csv_pairs_round_trip_and_report_bad_lines(tmp_path: Path) -> None:
    pairs = [
        Pair(tmp_path / "a.jpg", tmp_path / "b.jpg", True, 0),
        Pair(Path("/x/c.jpg"), tmp_path / "d.jpg", False, 3),
    ]
    write_csv_pairs(tmp_path / "pairs.csv", pairs)
    assert read_csv_pairs(tmp_path / "pairs.csv") == pairs
    (tmp_path / "plain.csv").write_text("path1,path2,same\na.jpg,b.jpg,1\nc.jpg,d.jpg,maybe\n")
    with pytest.raises(PairsFormatError, match=r"plain\.csv:3"):
        read_csv_pairs(tmp_path / "plain.csv")
    (tmp_path / "plain.csv").write_text("path1,path2,same\na.jpg,b.jpg,true\n")
    assert read_csv_pairs(tmp_path / "plain.csv") == [
        Pair(tmp_path / "a.jpg", tmp_path / "b.jpg", True, 0)
    ]


# --- the identity split ---------------------------------------------------------------------


def test_the_split_tool_links_the_validation_people_as_a_folder_of_identities(
    tmp_path: Path, celeba_aligned_dir: Path, celeba_photos_dir: Path
) -> None:
    from trainer.split import main

    out, linked = tmp_path / "split", tmp_path / "val-faces"
    args = [str(celeba_aligned_dir), str(out), "--holdout", str(celeba_photos_dir)]
    assert main([*args, "--link-validation", str(linked)]) == 0
    split = Split.load(out / SPLIT_FILE)
    assert sorted(p.name for p in linked.iterdir()) == sorted(split.validation)
    first = split.validation[0]
    assert list_images(linked / first) == [
        linked / first / p.name for p in list_images(celeba_aligned_dir / first)
    ]
    assert main([*args, "--link-validation", str(linked)]) == 0  # again: the links stand


def test_split_by_identity_holds_out_the_test_photo_people_and_writes_usable_pairs(
    tmp_path: Path, celeba_aligned_dir: Path, celeba_photos_dir: Path
) -> None:
    holdout = list_identities(celeba_photos_dir)
    split = write_split(celeba_aligned_dir, tmp_path / "a", holdout=holdout, seed=3)
    assert not set(split.train) & set(split.validation)
    assert set(split.train) | set(split.validation) == set(list_identities(celeba_aligned_dir))
    assert len(split.validation) == 400 and set(holdout) <= set(split.validation)
    assert Split.load(tmp_path / "a" / SPLIT_FILE) == split
    counts = json.loads((tmp_path / "a" / SPLIT_FILE).read_text())["counts"]
    assert counts["train_identities"] == len(split.train) and counts["folds"] == 10

    again = write_split(celeba_aligned_dir, tmp_path / "b", holdout=holdout, seed=3)
    assert again == split
    pairs_file = (tmp_path / "a" / PAIRS_FILE).read_bytes()
    assert (tmp_path / "b" / PAIRS_FILE).read_bytes() == pairs_file
    other = make_split(list_identities(celeba_aligned_dir), holdout=holdout, seed=4)
    assert other.validation != split.validation

    pairs = read_lfw_pairs(tmp_path / "a" / PAIRS_FILE, listing_resolver(celeba_aligned_dir))
    fold_people = [set() for _ in range(10)]
    for pair in pairs:
        assert pair.path1.is_file() and pair.path2.is_file()
        assert pair.path1 != pair.path2
        assert (pair.path1.parent == pair.path2.parent) == pair.same
        assert {pair.path1.parent.name, pair.path2.parent.name} <= set(split.validation)
        fold_people[pair.fold] |= {pair.path1.parent.name, pair.path2.parent.name}
    assert sum(len(people) for people in fold_people) == len(set().union(*fold_people))
    for fold in range(10):
        same = [p.same for p in pairs if p.fold == fold]
        assert len(same) >= 600 and sum(same) * 2 == len(same)


def test_split_refuses_holdout_identities_absent_from_the_data() -> None:
    with pytest.raises(ValueError, match="not in the data"):
        make_split(["a", "b", "c"], holdout=["z"], n_validation=2)


# --- augmentation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face(some_crops: list[Path]) -> np.ndarray:
    return _rgb(some_crops[0])


EVERYTHING = AugmentConfig(p_flip=1, p_color_jitter=1, p_low_resolution=1, p_blur=1, p_mask=1)


def test_augmentation_keeps_shape_and_type_and_never_touches_its_input(face: np.ndarray) -> None:
    before = face.copy()
    out = Augment(EVERYTHING)(face, np.random.default_rng(0))
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert np.array_equal(face, before) and not np.array_equal(out, face)


def test_augmentation_is_determined_by_the_generator_seed(face: np.ndarray) -> None:
    augment = Augment(EVERYTHING)
    first = augment(face, np.random.default_rng(5))
    assert np.array_equal(first, augment(face, np.random.default_rng(5)))
    assert not np.array_equal(first, augment(face, np.random.default_rng(6)))


def test_zero_probabilities_leave_the_crop_as_it_is(face: np.ndarray) -> None:
    nothing = Augment(AugmentConfig(p_flip=0))
    assert all(np.array_equal(nothing(face, np.random.default_rng(s)), face) for s in range(20))


def test_flip_with_probability_one_mirrors_the_face(face: np.ndarray) -> None:
    out = Augment(AugmentConfig(p_flip=1))(face, np.random.default_rng(0))
    assert np.array_equal(out, face[:, ::-1])


def test_low_resolution_and_blur_remove_detail(face: np.ndarray) -> None:
    def detail(image: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())

    for config in (AugmentConfig(p_flip=0, p_low_resolution=1), AugmentConfig(p_flip=0, p_blur=1)):
        for seed in range(5):
            assert detail(Augment(config)(face, np.random.default_rng(seed))) < detail(face)


def test_masks_appear_when_p_mask_is_one(face: np.ndarray) -> None:
    augment = Augment(AugmentConfig(p_flip=0, p_mask=1, mask_styles=("kn95",)))
    for seed in range(5):
        out = augment(face, np.random.default_rng(seed))
        assert np.abs(out[75:100, 40:72].astype(int) - face[75:100, 40:72]).mean() > 10
        assert np.array_equal(out[:45], face[:45])  # the eyes untouched


def test_impossible_augmentation_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="p_blur must be a probability"):
        AugmentConfig(p_blur=1.5)
    with pytest.raises(ValueError, match="mask_styles"):
        AugmentConfig(mask_styles=("scarf",))


def test_folds_too_small_for_mismatched_pairs_are_refused_not_looped_on() -> None:
    from trainer.split import make_pairs

    # Ten folds of one person each: matched pairs exist, mismatched ones cannot.
    with pytest.raises(ValueError, match="too few identities"):
        make_pairs({f"p{i}": 5 for i in range(10)}, folds=10)
