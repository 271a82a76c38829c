"""Labelled text: a class per character window, for sequence classifiers (FedMLSecurity's Exp8,
BERT on 20 Newsgroups).

- ``20news``: the 20 Newsgroups posts in the layout of the "bydate" archive that scikit-learn's
  fetch_20newsgroups downloads (20news-bydate-train/<newsgroup>/<post> and
  20news-bydate-test/...), read from a local copy; its own train/test split. The header block
  (up to the first blank line) is dropped, since its "Newsgroups:" line names the class; each
  post's first ``sequence_length`` characters of body, white space collapsed, are a sample,
  right-padded with spaces. 20 classes, newsgroups in sorted order; no natural groups (clients
  are drawn by label, partition_method hetero, as FedML does).
- ``shakespeare_play_classes``, the offline stand-in: which of the nine shipped plays a passage
  comes from. Each speaking role's text is cut into disjoint windows of ``sequence_length``
  characters labelled by the role's play (9 classes, plays in file-name order), split 80/20
  within each role from ``seed``; one natural group per role, so a client holds a few plays as
  a 20 Newsgroups client holds a few newsgroups. It stands in for topic classification of
  documents: the classes differ in names, places and vocabulary, not in a marker a window
  always contains.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import DataError, Dataset, LoadRequest
from .plays import PLAYS_DIR, role_texts
from .splits import held_out_split, members
from .text import LEAF_FALLBACK, LEAF_VOCABULARY, corpus_vocabulary, encode

NEWS_SPLITS = ("20news-bydate-train", "20news-bydate-test")
NEWS_EXPECTS = (f"the folders {NEWS_SPLITS[0]}/ and {NEWS_SPLITS[1]}/ of scikit-learn's "
                f"20news-bydate archive, one folder per newsgroup holding one file per post")
PAD = " "


def windows_dataset(name: str, *, train: tuple[np.ndarray, np.ndarray],
                    test: tuple[np.ndarray, np.ndarray], classes: list[str], vocabulary: str,
                    groups: tuple[np.ndarray, ...] | None, source: str) -> Dataset:
    """A text Dataset of (windows int64 [N, L], labels int64 [N]) pairs."""
    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))

    (train_x, train_y), (test_x, test_y) = train, test
    return Dataset(name=name, kind="text", train_x=tensor(train_x), train_y=tensor(train_y),
                   test_x=tensor(test_x), test_y=tensor(test_y), num_classes=len(classes),
                   input_shape=(train_x.shape[1],), groups=groups, vocabulary=vocabulary,
                   source=f"{source}; classes 0..{len(classes) - 1}: {', '.join(classes)}")


# --- 20 Newsgroups -------------------------------------------------------------------------------

def _post_body(path: Path) -> str:
    """A post without its header block, white space collapsed; posts are Latin-1 text."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    head, _, body = text.partition("\n\n")
    return " ".join((body if body else head).split())


def load_20news(request: LoadRequest) -> Dataset:
    folder, length = request.data_dir, request.sequence_length
    missing = [s for s in NEWS_SPLITS if not (folder / s).is_dir()]
    if missing:
        raise DataError(f"{request.name}: {folder / missing[0]} is not a folder; data_dir "
                        f"must hold {NEWS_EXPECTS}")
    classes = sorted(p.name for p in (folder / NEWS_SPLITS[0]).iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{request.name}: {folder / NEWS_SPLITS[0]} holds no newsgroup folder; "
                        f"expected {NEWS_EXPECTS}")
    texts: dict[str, list[tuple[str, int]]] = {}
    for split in NEWS_SPLITS:
        found = sorted(p.name for p in (folder / split).iterdir() if p.is_dir())
        if found != classes:
            raise DataError(f"{request.name}: {folder / split} holds the newsgroups "
                            f"{sorted(set(found) ^ set(classes))} that the other split lacks")
        texts[split] = [(_post_body(post)[:length].ljust(length, PAD), label)
                        for label, group in enumerate(classes)
                        for post in sorted((folder / split / group).iterdir()) if post.is_file()]
        if not texts[split]:
            raise DataError(f"{request.name}: {folder / split} holds no post")
    vocabulary = corpus_vocabulary([t for split in texts.values() for t, _ in split] + [PAD])

    def encoded(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = texts[split]
        return (np.stack([encode(t, vocabulary) for t, _ in rows]),
                np.array([label for _, label in rows], dtype=np.int64))

    return windows_dataset(request.name, train=encoded(NEWS_SPLITS[0]),
                           test=encoded(NEWS_SPLITS[1]), classes=classes,
                           vocabulary=vocabulary, groups=None,
                           source=f"20 Newsgroups (bydate) in {folder}: each post's first "
                                  f"{length} characters of body")


# --- the shipped plays, by play --------------------------------------------------------------------

def load_play_classes(request: LoadRequest) -> Dataset:
    length = request.sequence_length
    plays = sorted(p.name.removesuffix("_gut.txt.gz") for p in PLAYS_DIR.glob("*.txt.gz"))
    windows, labels, role_of = [], [], []
    for role, (key, text) in enumerate(role_texts().items()):
        ids = encode(text, LEAF_VOCABULARY, LEAF_FALLBACK)
        count = len(ids) // length
        if count == 0:
            continue
        windows.append(ids[:count * length].reshape(count, length))
        labels.append(np.full(count, plays.index(key.split("/")[0].removesuffix("_gut")),
                              dtype=np.int64))
        role_of.append(np.full(count, role, dtype=np.int64))
    if not windows:
        raise DataError(f"{request.name}: no speaking role has {length} characters")
    x, y, roles = np.concatenate(windows), np.concatenate(labels), np.concatenate(role_of)
    train, test = held_out_split(roles, request.seed)
    return windows_dataset(request.name, train=(x[train], y[train]), test=(x[test], y[test]),
                           classes=plays, vocabulary=LEAF_VOCABULARY,
                           groups=tuple(members(roles[train])),
                           source=f"the {len(plays)} shipped Shakespeare plays ({PLAYS_DIR}): "
                                  f"windows of {length} characters of each speaking role, "
                                  f"labelled by play, one group per role")
