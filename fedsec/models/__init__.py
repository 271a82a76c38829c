"""The models an FL experiment trains, chosen by name in YAML (``model:``, options in
``model_args:``).

    build_model("cnn", input_shape=(1, 28, 28), num_classes=10)
    build_model("transformer", input_shape=(64,), num_classes=vocab_size, num_layers=4)

``input_shape`` is one sample's shape: images (C, H, W), float32 in [0, 1]; text (L,), int64
token ids in [0, num_classes) (num_classes is then the vocabulary size). Classification
models return logits [N, num_classes] (labels [N]); the language model returns logits
[N, L, vocab] (labels [N, L]): ``model_task`` says which. Names accept FedML's spellings
(``rnn``, ``cnn_fedavg``, ...). Every model initialises from torch's global generator only
(seed it before building for a reproducible model) and its state_dict holds only float
parameters and BatchNorm buffers. One model family per file; ``@register_model(name,
*aliases, task=...)`` adds one (see registry.py).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from . import cnn, hf, lenet, linear, lstm, resnet, transformer  # noqa: F401  (registrations)
from ..data import Dataset
from .registry import Task, build, families, family, register_model

MODELS: dict[str, str] = {f.name: f.description for f in families()}


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int,
                **options: Any) -> nn.Module:
    """The model registered as ``name`` (or an alias) for samples of ``input_shape`` and
    ``num_classes`` classes (the vocabulary size for text), with ``options`` (the YAML's
    ``model_args``). An unknown name or option, a wrongly typed or impossible value is a
    ValueError naming it (and listing the valid names or options)."""
    return build(name, input_shape, num_classes, options)


def prepare_data(name: str, dataset: Dataset, options: dict[str, Any]) -> Dataset:
    """``dataset`` as the model registered as ``name`` reads it, given its ``options``: models
    with a tokenizer of their own (hf_causal_lm, hf_sequence_classifier) re-encode the text
    (a family's ``prepare_data`` classmethod); every other model takes the dataset as it is."""
    prepare = getattr(family(name).cls, "prepare_data", None)
    if prepare is not None:
        return prepare(dataset, options)
    if dataset.kind == "text" and dataset.num_classes != len(dataset.vocabulary):
        # fedsec's character models embed ids and predict over the same num_classes
        raise ValueError(f"model {name!r} reads characters and predicts one of them; dataset "
                         f"{dataset.name!r} labels its {len(dataset.vocabulary)}-character "
                         f"windows with {dataset.num_classes} classes: use a model with a "
                         f"tokenizer of its own (hf_sequence_classifier)")
    return dataset


def model_task(name: str) -> Task:
    """``"classification"`` (logits [N, C], labels [N]) or ``"language_model"`` (logits
    [N, L, vocab], labels [N, L]) for the model registered as ``name`` (or an alias)."""
    return family(name).task


__all__ = ["MODELS", "build_model", "model_task", "prepare_data", "register_model"]
