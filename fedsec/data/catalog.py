"""Every dataset by the name configs use (FedML's spelling where FedML has one)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cifar, corpus, idx, leaf, text_classes
from .dataset import DataError, Dataset, LoadRequest
from .digits import load_digits
from .plays import load_shakespeare_plays
from .text import TARGETS, check_text_options


@dataclass(frozen=True)
class _Entry:
    description: str
    kind: str  # image | text | labelled text (a class per window: target "last" only)
    # What data_dir must hold; None for the datasets shipped with fedsec.
    expects: str | None
    load: Callable[[LoadRequest], Dataset]
    # Where a system package installs the files, used when no data_dir is given.
    installed: tuple[Path, str] | None = None


_ENTRIES: dict[str, _Entry] = {
    "digits": _Entry("10,000 MNIST digits shipped with fedsec (8,000 train / 2,000 test), "
                     "no download", "image", None, load_digits),
    "shakespeare_plays": _Entry("9 Shakespeare plays shipped with fedsec, next-character "
                                "prediction, one group per speaking role", "text", None,
                                load_shakespeare_plays),
    "shakespeare_play_classes": _Entry("the 9 shipped Shakespeare plays, which play a window "
                                       "of a speaking role comes from (9 classes), one group "
                                       "per role; the offline stand-in for 20news",
                                       "labelled text", None, text_classes.load_play_classes),
    "20news": _Entry("20 Newsgroups posts, which newsgroup (20 classes), scikit-learn's "
                     "bydate train/test split", "labelled text", text_classes.NEWS_EXPECTS,
                     text_classes.load_20news),
    "mnist": _Entry("MNIST from its IDX files", "image", idx.EXPECTS, idx.load_idx_dataset),
    "fashion_mnist": _Entry("Fashion-MNIST from its IDX files (found without data_dir where "
                            "Debian's dataset-fashion-mnist package is installed)", "image",
                            idx.EXPECTS, idx.load_idx_dataset,
                            (Path("/usr/share/datasets/fashion-mnist"),
                             "apt install dataset-fashion-mnist")),
    "cifar10": _Entry("CIFAR-10 from its python-version batches", "image", cifar.EXPECTS,
                      cifar.load_cifar10),
    "femnist": _Entry("LEAF FEMNIST (62 classes), one group per writer", "image", leaf.EXPECTS,
                      leaf.load_femnist),
    "shakespeare": _Entry("LEAF Shakespeare, next-character prediction, one group per role",
                          "text", leaf.EXPECTS, leaf.load_leaf_shakespeare),
    "text": _Entry("a character corpus: a .txt file or a folder of them (one group per file)",
                   "text", corpus.EXPECTS, corpus.load_text_corpus),
}

DATASETS: dict[str, str] = {name: entry.description for name, entry in _ENTRIES.items()}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, target: str = "last",
                 sequence_length: int = 80, seed: int = 0) -> Dataset:
    """Load dataset ``name`` (a key of DATASETS).

    ``data_dir`` is where a dataset that is not shipped with fedsec lives (the DataError raised
    without it says what it must hold); the shipped ones (digits, shakespeare_plays) ignore it.
    Text datasets take ``target`` ("last": the next character, labels [N]; "sequence": each
    window shifted by one, labels [N, L]) and ``sequence_length`` (characters per sample);
    images accept only ``target="last"``. ``seed`` draws the train/test split of the corpora
    that come without one (digits, shakespeare_plays, text).
    """
    if name not in _ENTRIES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(_ENTRIES)}")
    entry = _ENTRIES[name]
    check_text_options(target, sequence_length)
    if entry.kind != "text" and target != "last":
        raise ValueError(f"{name} is an {entry.kind} dataset: target must be 'last' (a class "
                         f"per sample); got {target!r} (valid for text: {TARGETS})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed={seed!r} must be an integer")
    folder = None
    if entry.expects is not None:
        if data_dir is None and entry.installed is not None and entry.installed[0].is_dir():
            data_dir = entry.installed[0]
        if data_dir is None:
            package = (f", or install it ({entry.installed[1]}, into {entry.installed[0]})"
                       if entry.installed else "")
            raise DataError(f"{name} is not shipped with fedsec: pass data_dir "
                            f"(data_args.data_cache_dir in a config){package}; expected "
                            f"{entry.expects}")
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir={data_dir!r} must be a path (str or os.PathLike)")
        folder = Path(data_dir).expanduser()
    return entry.load(LoadRequest(name=name, data_dir=folder, target=target,
                                  sequence_length=sequence_length, seed=seed))
