"""Labelled text (fedsec/data/text_classes.py): 20 Newsgroups from a bydate layout written here
(header dropped, labels by newsgroup, padding, its own split; a missing or mismatched folder
named), and the shipped plays by play (every window is its role's text, labelled by the role's
play; roles are the groups and are never split between classes)."""
from __future__ import annotations

import numpy as np
import pytest

from fedsec.data import DataError, load_dataset
from fedsec.data.plays import role_texts
from fedsec.data.text import decode

POSTS = {"alt.atheism": ["God is not.", "Reason rules."],
         "comp.graphics": ["Render the mesh in OpenGL, then shade it."],
         "sci.space": ["The orbit decays.", "Launch at dawn.", "Mars is red."]}


def write_bydate(root, posts=POSTS, test_groups=None):
    for split, groups in (("20news-bydate-train", posts), ("20news-bydate-test",
                                                           test_groups or posts)):
        for group, texts in groups.items():
            folder = root / split / group
            folder.mkdir(parents=True)
            for i, text in enumerate(texts):
                (folder / f"{1000 + i}").write_bytes(
                    (f"From: someone@example.org\nNewsgroups: {group}\nSubject: re\n\n"
                     f"{text}\n\n  -- sig\n").encode("latin-1"))
    return root


def test_20news_reads_the_bydate_layout_without_headers(tmp_path):
    data = load_dataset("20news", write_bydate(tmp_path), sequence_length=24)
    assert data.num_classes == 3 and data.input_shape == (24,)
    assert data.groups is None and data.kind == "text"
    texts = [decode(row, data.vocabulary) for row in data.train_x.numpy()]
    assert texts[0] == "God is not. -- sig".ljust(24)
    assert texts[2] == "Render the mesh in OpenG"  # cut at sequence_length
    assert all("Newsgroups" not in t and "From:" not in t for t in texts)
    assert data.train_y.tolist() == [0, 0, 1, 2, 2, 2]
    assert data.num_test == 6 and "alt.atheism, comp.graphics, sci.space" in data.source


def test_20news_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="20news-bydate-train is not a folder"):
        load_dataset("20news", tmp_path)
    with pytest.raises(DataError, match="pass data_dir"):
        load_dataset("20news")
    write_bydate(tmp_path, test_groups={"alt.atheism": ["x"]})
    with pytest.raises(DataError, match=r"20news-bydate-test holds the newsgroups "
                                        r"\['comp.graphics', 'sci.space'\]"):
        load_dataset("20news", tmp_path)
    with pytest.raises(ValueError, match="labelled text dataset: target must be 'last'"):
        load_dataset("20news", tmp_path, target="sequence")


def test_play_classes_label_each_role_window_with_its_play():
    data = load_dataset("shakespeare_play_classes", sequence_length=64, seed=3)
    roles = list(role_texts().items())
    plays = sorted({key.split("/")[0].removesuffix("_gut") for key, _ in roles})
    assert data.num_classes == len(plays) == 9
    # every training window is a substring of exactly the roles of its labelled play
    labels = data.train_y.numpy()
    for group in data.groups[:40]:
        assert len(set(labels[group])) == 1  # a role belongs to one play
    sample = np.random.default_rng(0).choice(data.num_train, 50, replace=False)
    for i in sample:
        window = decode(data.train_x[i], data.vocabulary)
        owners = {key.split("/")[0].removesuffix("_gut") for key, text in roles
                  if window in text}
        assert plays[labels[i]] in owners, window
    # the split is within roles, 80/20, and windows are disjoint
    assert abs(data.num_test / (data.num_train + data.num_test) - 0.2) < 0.02
    again = load_dataset("shakespeare_play_classes", sequence_length=64, seed=3)
    assert np.array_equal(again.train_x.numpy(), data.train_x.numpy())


def test_a_linear_model_on_character_bigrams_learns_the_play_classes():
    """The stand-in is a learnable task: logistic regression on each window's character-bigram
    counts beats the majority class on held-out windows by 15 points."""
    import torch

    data = load_dataset("shakespeare_play_classes", sequence_length=128, seed=0)
    v = len(data.vocabulary)

    def bigrams(x: torch.Tensor) -> torch.Tensor:
        pairs = x[:, :-1] * v + x[:, 1:]
        counts = torch.zeros(len(x), v * v).scatter_add_(1, pairs, torch.ones(pairs.shape))
        return counts / counts.sum(1, keepdim=True)

    train, test = bigrams(data.train_x), bigrams(data.test_x)
    torch.manual_seed(0)
    model = torch.nn.Linear(v * v, data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(train * 100), data.train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(test * 100).argmax(1) == data.test_y).float().mean().item()
    majority = np.bincount(data.test_y.numpy()).max() / data.num_test
    assert accuracy > majority + 0.15, (accuracy, majority)


def test_character_models_refuse_labelled_text():
    from fedsec.models import prepare_data

    data = load_dataset("shakespeare_play_classes", sequence_length=32)
    with pytest.raises(ValueError, match="model 'bilstm' reads characters and predicts one of "
                                         "them; dataset 'shakespeare_play_classes' labels its "
                                         "80-character windows with 9 classes"):
        prepare_data("bilstm", data, {})
