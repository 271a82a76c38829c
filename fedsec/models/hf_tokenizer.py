"""Text as a Hugging Face model reads it: fedsec's character windows re-encoded with the model's
own tokenizer, or with a byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant,
Radford et al. 2019) trained on the training windows when the model comes without one.

The locally trained tokenizer is deterministic (the same windows give the same merges in every
process) and its first ids are its special tokens: ``<pad>`` 0, then ``<s>`` 1, which starts
every classifier input (BERT's [CLS] role: the pooler reads the first position). Its vocabulary
has the model's ``vocab_size`` entries at most; the 256 bytes are always in it, so no text is
out of vocabulary.

A language model's sample is one chunk of ``L + 1`` characters encoded (at most ``L + 1``
tokens) and right-padded to the longest encoded chunk of the dataset: inputs all its tokens but
the last, labels the chunk shifted by one, the padded positions labelled IGNORE_LABEL (not
scored). A classifier's sample is its window encoded (with the tokenizer's special tokens, at
most ``L`` tokens) and padded the same way; its label is kept. Byte-level BPE never makes more
tokens than characters of ASCII text, so nothing is cut from the shipped corpora, and English
text takes about a token per four characters, so padding to the longest sample keeps the
model's sequences short.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..data.text import decode
from ..security.base import IGNORE_LABEL

PAD, START = "<pad>", "<s>"
# What a model directory holds when it ships a tokenizer (any one of them is enough).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved with the model in ``directory``, never fetched from a hub; a causal
    model's tokenizer without a padding token pads with its end-of-text token (the usual
    practice for GPT-style models: padded positions are never scored)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer in {directory} has neither a padding nor an "
                             f"end-of-text token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def train_bpe(texts: list[str], vocab_size: int, *, start_token: bool) -> Any:
    """A byte-level BPE of at most ``vocab_size`` tokens trained on ``texts``; with
    ``start_token`` every encoding begins with ``<s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < 2 + len(alphabet):
        raise ValueError(f"a byte-level BPE needs vocab_size >= {2 + len(alphabet)} (two special "
                         f"tokens and the {len(alphabet)} bytes); got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, START], initial_alphabet=alphabet,
        show_progress=False))
    if start_token:
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{START} $A", special_tokens=[(START, bpe.token_to_id(START))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, bos_token=START)


def window_texts(dataset: Dataset, split: str, *, classification: bool) -> list[str]:
    """The text of each sample of ``split`` ("train" or "test"): a classifier's window, or a
    language model's whole chunk (the window and the character after it)."""
    x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
    rows = x if classification else torch.cat([x, y[:, -1:]], dim=1)
    return [decode(row, dataset.vocabulary) for row in rows.numpy()]


def retokenized(dataset: Dataset, tokenizer: Any, *, classification: bool,
                vocab_size: int | None, described: str) -> Dataset:
    """``dataset`` (character windows of length L) with its samples re-encoded by
    ``tokenizer`` (module docstring); a language model's labels are then token ids, of
    ``vocab_size`` classes. ``described`` names the tokenizer in ``source``."""
    limit = dataset.input_shape[0] + (0 if classification else 1)
    encoded = {split: tokenizer(window_texts(dataset, split, classification=classification),
                                truncation=True, max_length=limit)["input_ids"]
               for split in ("train", "test")}
    width = max(len(ids) for split in encoded.values() for ids in split)
    splits = {}
    for split, rows in encoded.items():
        ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
        padded = np.zeros((len(rows), width), dtype=bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
            padded[i, len(row):] = True
        if classification:
            splits[split] = (torch.from_numpy(ids), getattr(dataset, f"{split}_y"))
        else:
            labels = np.where(padded[:, 1:], IGNORE_LABEL, ids[:, 1:])
            splits[split] = (torch.from_numpy(np.ascontiguousarray(ids[:, :-1])),
                             torch.from_numpy(labels))
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return dataclasses.replace(
        dataset, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=dataset.num_classes if classification else vocab_size,
        input_shape=tuple(train_x.shape[1:]),
        source=f"{dataset.source}; re-encoded by {described} (token ids of that tokenizer; "
               f"the vocabulary names the characters they were decoded from)")
