"""Hugging Face transformers as federated models, fine-tuned fully or through LoRA adapters
(Hu et al. 2022, "LoRA: low-rank adaptation of large language models", ICLR; the peft
library's implementation), as FedMLSecurity's Exp8 (BERT) and Exp9 (Pythia) train them.

``model_args.hf_model`` is where the model comes from, and nothing is ever downloaded:

- a local directory (``config.json`` and weights, as ``save_pretrained`` or a hub download
  writes them), loaded with ``local_files_only``; its tokenizer, when it has one, encodes the
  text;
- or an architecture with sizes, a mapping of ``model_type`` and fields of that transformers
  config class (``{model_type: gpt_neox, hidden_size: 64, num_hidden_layers: 2, ...}``),
  built with random weights drawn from ``base_seed`` (the same in every instance, as a
  checkpoint on disk would be; torch's global generator is left as it was).

``model_args.lora: {r, alpha, dropout, target_modules}`` wraps the model in peft's LoRA
adapters (the classifier's head trains too, as peft does for sequence classification);
without it every weight trains. Either way the model's ``state_dict`` holds only the weights
that train, so a client's W_l, the global model, checkpoints and every defense and attack see
the adapters alone, and the frozen base weights never travel. The global adapters are applied
(not merged) for evaluation: peft computes W x + (alpha / r) B A x, the same function as the
merged weights.

Text reaches the model re-encoded by ``prepare_data`` (fedsec.models.hf_tokenizer): with the
directory's tokenizer, else with a byte-level BPE of the model's ``vocab_size`` trained on the
training windows.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from torch import nn

from ..data import Dataset
from ..params import Bounds, doc, parse_fields
from . import hf_tokenizer
from ._checks import sequence_length
from .registry import register_model

# Config fields a mapping may not set: they name the model or are fedsec's to choose.
_RESERVED_FIELDS = ("model_type", "architectures", "dtype", "transformers_version")


@dataclass(frozen=True)
class LoraArgs:
    """``model_args.lora``: peft's LoraConfig."""

    r: int = doc(8, "rank of each adapter", ge=1)
    alpha: float = doc(16.0, "scale numerator: an adapter adds (alpha / r) B A", gt=0)
    dropout: float = doc(0.0, "dropout on each adapter's input", ge=0, lt=1)
    target_modules: list[str] | None = doc(None, "modules that get adapters (a name or its "
                                                 "last dotted parts); default peft's choice "
                                                 "for the architecture")


def _libraries() -> Any:
    """transformers, imported offline (a name that is no local path is then never looked up
    on a hub), or a clear error naming the extra to install."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import peft  # noqa: F401
        import transformers
    except ImportError as exc:
        raise ImportError(f"the Hugging Face models need the llm extra: pip install "
                          f"'fedsec[llm]' ({exc})") from None
    return transformers


class HuggingFaceModel(nn.Module):
    """Shared by the causal language model and the sequence classifier: where the model comes
    from, its adapters, and a state_dict of the weights that train."""

    name: str
    auto_class: str        # the transformers Auto class of the family's head
    mapping_names: str     # transformers' model_type -> class table of that head
    classification: bool

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 hf_model: str | dict | None = None, lora: dict | None = None,
                 base_seed: Annotated[int, Bounds(ge=0)] = 0):
        super().__init__()
        length = sequence_length(self.name, input_shape)
        transformers = _libraries()
        config, directory = self.config(hf_model)
        self.pad_id = self.padding_id(hf_model)
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            raise ValueError(f"model {self.name!r}: sequences of {length} tokens exceed the "
                             f"model's max_position_embeddings={limit}")
        auto = getattr(transformers, self.auto_class)
        if self.classification:
            config.num_labels, config.pad_token_id = num_classes, self.pad_id
        elif num_classes != config.vocab_size:
            raise ValueError(f"model {self.name!r}: the data has {num_classes} token ids but "
                             f"the model's vocabulary has {config.vocab_size}; read the text "
                             f"through fedsec.models.prepare_data")
        if directory is not None:
            network = auto.from_pretrained(str(directory), config=config, local_files_only=True,
                                           dtype=torch.float32)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(base_seed)
                network = auto.from_config(config, dtype=torch.float32)
        if lora is not None:
            network = self._with_adapters(network, config.model_type, lora)
        self.network = network
        self.trained = frozenset(k for k, p in self.named_parameters() if p.requires_grad)
        self.frozen = frozenset(self.state_dict()) - self.trained
        self.register_state_dict_post_hook(_only_trained)
        self.register_load_state_dict_post_hook(_frozen_not_missing)

    # --- where the model comes from --------------------------------------------------------------

    @classmethod
    def config(cls, hf_model: Any) -> tuple[Any, Path | None]:
        """The transformers config of ``hf_model`` and its directory (None for an
        architecture mapping)."""
        transformers = _libraries()
        where = f"model {cls.name!r}: option hf_model"
        if hf_model is None:
            raise ValueError(f"{where} is required: a local model directory or a mapping "
                             f"{{model_type: ..., <config fields>}} for random weights")
        if isinstance(hf_model, str):
            directory = Path(hf_model).expanduser()
            if not (directory / "config.json").is_file():
                what = "has no config.json" if directory.is_dir() else "does not exist"
                raise ValueError(f"{where}={hf_model!r}: the directory {what}; fedsec never "
                                 f"downloads a model: save one there first (save_pretrained, "
                                 f"or a hub download with --local-dir)")
            config = transformers.AutoConfig.from_pretrained(str(directory),
                                                             local_files_only=True)
            cls._check_head(where, hf_model, config)
            return config, directory
        if not isinstance(hf_model, Mapping):
            raise ValueError(f"{where} must be a directory or a mapping; got {hf_model!r}")
        fields = dict(hf_model)
        model_type = fields.pop("model_type", None)
        heads = getattr(transformers.models.auto.modeling_auto, cls.mapping_names)
        if model_type not in heads:
            raise ValueError(f"{where}.model_type={model_type!r} is not valid; valid: "
                             f"{', '.join(sorted(heads))}")
        config_class = transformers.CONFIG_MAPPING[model_type]
        valid = sorted(k for k in config_class().to_dict()
                       if not k.startswith("_") and k not in _RESERVED_FIELDS)
        for key in fields:
            if key not in valid:
                raise ValueError(f"{where}: unknown {model_type} config field {key!r}; "
                                 f"valid: {', '.join(valid)}")
        return config_class(**fields), None

    @classmethod
    def _check_head(cls, where: str, hf_model: str, config: Any) -> None:
        heads = getattr(_libraries().models.auto.modeling_auto, cls.mapping_names)
        if config.model_type not in heads:
            raise ValueError(f"{where}={hf_model!r} is a {config.model_type} model, which has "
                             f"no {cls.auto_class} in transformers")
        saved = list(getattr(config, "architectures", None) or [])
        if not cls.classification and saved and all(
                a.endswith("ForSequenceClassification") for a in saved):
            raise ValueError(f"{where}={hf_model!r} holds a sequence classifier "
                             f"(config.json architectures: {', '.join(saved)}); use model "
                             f"hf_sequence_classifier")

    @classmethod
    def padding_id(cls, hf_model: Any) -> int:
        """The padding token's id: the directory's tokenizer's, else the local BPE's (0)."""
        directory = Path(hf_model).expanduser() if isinstance(hf_model, str) else None
        if directory is not None and hf_tokenizer.has_tokenizer(directory):
            return int(hf_tokenizer.load_tokenizer(directory).pad_token_id)
        return 0

    def _with_adapters(self, network: nn.Module, model_type: str, lora: Any) -> nn.Module:
        from peft import LoraConfig, TaskType, get_peft_model
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        where = f"model {self.name!r}: option lora"
        if not isinstance(lora, Mapping):
            raise ValueError(f"{where} must be a mapping of r, alpha, dropout, "
                             f"target_modules; got {lora!r}")
        args = parse_fields(LoraArgs, lora, "model_args.lora", lambda key, valid: (
            f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}"))
        targets = args.target_modules
        if targets is None:
            targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
            if targets is None:
                raise ValueError(f"{where}.target_modules: peft has no default for "
                                 f"{model_type} models; name the modules")
        layers = [n for n, m in network.named_modules()
                  if isinstance(m, (nn.Linear, nn.Embedding, nn.Conv1d))]
        for target in targets:
            if not any(n == target or n.endswith("." + target) for n in layers):
                names = sorted({n.rsplit(".", 1)[-1] for n in layers})
                raise ValueError(f"{where}.target_modules: {target!r} matches no layer of "
                                 f"this {model_type} model; its layers: {', '.join(names)}")
        task = TaskType.SEQ_CLS if self.classification else TaskType.CAUSAL_LM
        return get_peft_model(network, LoraConfig(
            r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
            target_modules=list(targets), task_type=task))

    # --- text ----------------------------------------------------------------------------------

    @classmethod
    def prepare_data(cls, dataset: Dataset, options: Mapping[str, Any]) -> Dataset:
        """``dataset``'s character windows re-encoded for this model (hf_tokenizer): with the
        directory's tokenizer, else with a BPE of the model's vocab_size trained on the
        training windows."""
        if dataset.kind != "text":
            raise ValueError(f"model {cls.name!r} reads text; dataset {dataset.name!r} holds "
                             f"{dataset.kind}s")
        hf_model = options.get("hf_model")
        config, directory = cls.config(hf_model)
        if directory is not None and hf_tokenizer.has_tokenizer(directory):
            tokenizer = hf_tokenizer.load_tokenizer(directory)
            described = f"the tokenizer in {directory}"
        else:
            texts = hf_tokenizer.window_texts(dataset, "train", classification=cls.classification)
            tokenizer = hf_tokenizer.train_bpe(texts, config.vocab_size,
                                               start_token=cls.classification)
            described = (f"a byte-level BPE of {len(tokenizer)} tokens trained on the "
                         f"{len(texts)} training windows")
        return hf_tokenizer.retokenized(
            dataset, tokenizer, classification=cls.classification,
            vocab_size=None if cls.classification else config.vocab_size, described=described)


def _only_trained(module: HuggingFaceModel, state: dict, prefix: str, _metadata: Any) -> None:
    """state_dict post-hook: keep the weights that train (frozen base weights and constant
    buffers such as position ids stay out)."""
    for key in [k for k in state if k.startswith(prefix)]:
        if key[len(prefix):] not in module.trained:
            del state[key]


def _frozen_not_missing(module: HuggingFaceModel, incompatible: Any) -> None:
    """load_state_dict post-hook: a state_dict of the trained weights is complete."""
    missing = incompatible.missing_keys
    missing[:] = [k for k in missing if not any(k == name or k.endswith("." + name)
                                                for name in module.frozen)]


@register_model("hf_causal_lm", task="language_model")
class HFCausalLM(HuggingFaceModel):
    """A Hugging Face causal language model (e.g. GPT-NeoX, Pythia's architecture), fully
    fine-tuned or through LoRA adapters.

    Input [N, L] token ids of its tokenizer (``prepare_data``), output logits [N, L, vocab]:
    position t predicts token t + 1. Right padding needs no attention mask (a causal model's
    position t never sees the later ones) and padded positions are not scored. Options:
    ``hf_model`` (a local directory, or a mapping ``{model_type, <config fields>}`` for random
    weights from ``base_seed``), ``lora`` (``{r, alpha, dropout, target_modules}``; none: full
    fine-tuning). See fedsec/models/hf.py and docs/llm.md.
    """

    auto_class = "AutoModelForCausalLM"
    mapping_names = "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"
    classification = False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.network(input_ids=tokens).logits


@register_model("hf_sequence_classifier", task="classification")
class HFSequenceClassifier(HuggingFaceModel):
    """A Hugging Face sequence classifier (e.g. BERT), fully fine-tuned or through LoRA
    adapters (the classification head trains too).

    Input [N, L] token ids of its tokenizer (``prepare_data``), right-padded, output logits
    [N, num_classes]; padding is masked out of attention. Options as ``hf_causal_lm``'s.
    """

    auto_class = "AutoModelForSequenceClassification"
    mapping_names = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    classification = True

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.network(input_ids=tokens, attention_mask=tokens != self.pad_id).logits
