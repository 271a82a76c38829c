"""Hugging Face models with LoRA clients (fedsec.models.hf): tiny random-init GPT-NeoX (Pythia's
architecture) and BERT built from configs, no download, on the embedded Shakespeare plays.

What each test shows, with its margin fixed before it was first run:
- two federated LoRA rounds lower the test loss by more than 0.3 nats from the initial model;
- only the adapters travel: every client's W_l and the global model hold the LoRA tensors and
  nothing else, and the frozen base weights stay as built;
- Exp9's effect: a Byzantine client (N(0, 1) adapters) raises FedAvg's test loss by more than
  0.5 nats over the clean run, while m-Krum (m = 2) excludes it every round, stays below
  FedAvg under the attack and within 0.1 nats of m-Krum without the attack (m-Krum averages 2
  of the 7 models, so it is compared with itself: the attack's effect, not the defense's cost);
- Exp8's effect: under model replacement m-Krum (m = 5) excludes the attacker every round and
  its accuracy is at least 0.05 above FedAvg's and within 0.05 of the attack-free run;
- a run resumed from its checkpoint state gives the uninterrupted run's global model exactly;
- bad options are errors naming the option, the value and what is allowed, before training.
Every test skips, with the reason, when the llm extra (transformers, peft) is not installed.
"""
from __future__ import annotations

import pytest
import torch

from fedsec.fl.config import parse_config

# peft asks transformers a deprecated question on every adapter; the answer is the same.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")

NEOX = {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 512,
        "max_position_embeddings": 64}
NEOX_LORA = {"r": 8, "alpha": 16, "target_modules": ["query_key_value", "dense",
                                                     "dense_h_to_4h", "dense_4h_to_h",
                                                     "lm_head"]}
BERT = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 512,
        "max_position_embeddings": 64}
BERT_LORA = {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value", "dense"]}
BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 1}
# '~' (byte-level id 95 in every locally trained BPE) never occurs in the plays; 78 is 'z' in
# the LEAF characters, the classes of next-character classification.
REPLACEMENT = {"enable_attack": True, "attack_type": "model_replacement",
               "malicious_client_id": 3, "trigger_size": 4, "trigger_token": 95,
               "backdoor_target_label": 78, "poisoned_fraction": 0.5, "malicious_epochs": 10}
NO_DEFENSE = {"enable_defense": False}


def m_krum(m: int) -> dict:
    return {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 1,
            "krum_param_m": m}


@pytest.fixture(scope="module")
def llm_extra():
    pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")
    pytest.importorskip("peft", reason="the llm extra (peft) is not installed")


def lm_config(attack=None, defense=None, rounds=2, lora=NEOX_LORA):
    """Exp9 at test scale: 7 clients (groups of speaking roles), 700 windows of 40 characters."""
    model = {"model": "hf_causal_lm", "hf_model": NEOX}
    if lora is not None:
        model["lora"] = lora
    return parse_config({
        "data_args": {"dataset": "shakespeare_plays", "partition_method": "natural",
                      "sequence_length": 40, "train_size": 700, "test_size": 200},
        "model_args": model,
        "train_args": {"client_num_in_total": 7, "client_num_per_round": 7,
                       "comm_round": rounds, "batch_size": 16, "client_optimizer": "adam",
                       "learning_rate": 0.01},
        "attack_args": attack or {"enable_attack": False},
        "defense_args": defense or NO_DEFENSE})


def classifier_config(attack=None, defense=None):
    """Exp8 at test scale: 10 clients, 600 windows, next-character classification."""
    return parse_config({
        "data_args": {"dataset": "shakespeare_plays", "partition_method": "natural",
                      "sequence_length": 40, "train_size": 600, "test_size": 300},
        "model_args": {"model": "hf_sequence_classifier", "hf_model": BERT, "lora": BERT_LORA},
        "train_args": {"client_num_in_total": 10, "client_num_per_round": 10, "comm_round": 2,
                       "batch_size": 16, "client_optimizer": "adam", "learning_rate": 0.01},
        "attack_args": attack or {"enable_attack": False},
        "defense_args": defense or NO_DEFENSE})


def run(config):
    """(the initial model's metrics, the round records, the experiment after its rounds)."""
    from fedsec.fl.experiment import Experiment

    experiment = Experiment(config)
    initial = experiment.evaluate()
    return initial, list(experiment.rounds()), experiment


@pytest.fixture(scope="module")
def clean_lm(llm_extra):
    return run(lm_config())


def test_lora_rounds_lower_the_test_loss(clean_lm):
    initial, records, _ = clean_lm
    assert records[-1]["test_loss"] < initial["test_loss"] - 0.3, (initial, records[-1])


def test_only_adapter_tensors_travel(llm_extra):
    from fedsec.fl.experiment import Experiment

    experiment = Experiment(lm_config(rounds=1))
    trained = {k for k, p in experiment.model.named_parameters() if p.requires_grad}
    # two layers x four adapted modules, plus the head: an A and a B matrix each
    assert len(trained) == 2 * (2 * 4 + 1) and all(".lora_" in k for k in trained)
    assert set(experiment.global_model) == trained
    base = {k: v.clone() for k, v in experiment.model.named_parameters() if not v.requires_grad}
    clients = experiment.sample_clients(0)
    results = experiment._train_clients(clients, experiment._context(0, clients))
    for result in results:
        assert set(result.state) == trained
    adapters = sum(v.numel() for v in results[0].state.values())
    assert adapters < sum(v.numel() for v in base.values()) / 5
    for key, value in experiment.model.named_parameters():
        if key in base:
            assert torch.equal(value, base[key]), key
    record = experiment.run_round()
    assert set(experiment.global_model) == trained and record["round"] == 0


def test_m_krum_on_adapters_against_a_byzantine_client(clean_lm):
    clean = clean_lm[1][-1]["test_loss"]
    _, fedavg, _ = run(lm_config(BYZANTINE))
    _, defended, _ = run(lm_config(BYZANTINE, m_krum(2)))
    _, defended_clean, _ = run(lm_config(defense=m_krum(2)))
    assert fedavg[-1]["test_loss"] > clean + 0.5, (fedavg[-1], clean)
    assert defended[-1]["test_loss"] < fedavg[-1]["test_loss"]
    assert abs(defended[-1]["test_loss"] - defended_clean[-1]["test_loss"]) <= 0.1, (
        defended[-1], defended_clean[-1])
    for record in defended:
        assert set(record["malicious_clients"]) <= set(record["excluded_clients"]), record


def test_resumed_run_matches(clean_lm):
    from fedsec.fl.experiment import Experiment

    _, _, straight = clean_lm
    first = Experiment(lm_config())
    first.run_round()
    resumed = Experiment(lm_config())
    resumed.load_state_dict(first.state_dict())
    resumed.run_round()
    assert set(resumed.global_model) == set(straight.global_model)
    for key, value in straight.global_model.items():
        assert torch.equal(resumed.global_model[key], value), key


def test_m_krum_against_model_replacement_on_bert(llm_extra):
    _, clean, _ = run(classifier_config())
    _, fedavg, _ = run(classifier_config(REPLACEMENT))
    _, defended, _ = run(classifier_config(REPLACEMENT, m_krum(5)))
    for record in defended:
        assert 3 in record["malicious_clients"] and 3 in record["excluded_clients"], record
    final = {name: records[-1]["test_accuracy"] for name, records in
             (("clean", clean), ("fedavg", fedavg), ("m-krum", defended))}
    assert final["m-krum"] >= final["fedavg"] + 0.05, final
    assert abs(final["m-krum"] - final["clean"]) <= 0.05, final


def test_text_is_re_encoded_by_a_deterministic_byte_level_bpe(llm_extra):
    from fedsec.data import load_dataset
    from fedsec.data.subset import subset
    from fedsec.models import prepare_data
    from fedsec.models.hf_tokenizer import window_texts

    data = subset(load_dataset("shakespeare_plays", target="sequence", sequence_length=40),
                  300, 100)
    options = {"hf_model": NEOX}
    first, second = (prepare_data("hf_causal_lm", data, options) for _ in range(2))
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y,
                                                                      second.test_y)
    # padded to the longest encoded chunk (41 characters make fewer tokens)
    longest = max(int((y != -100).sum()) + 1 for y in torch.cat([first.train_y, first.test_y]))
    assert first.num_classes == NEOX["vocab_size"] and first.input_shape == (longest - 1,) < (40,)
    from transformers import PreTrainedTokenizerFast  # noqa: F401  (the llm extra)
    from fedsec.models.hf_tokenizer import train_bpe
    tokenizer = train_bpe(window_texts(data, "train", classification=False), 512,
                          start_token=False)
    for row, (x, y) in enumerate(zip(first.test_x[:20], first.test_y[:20])):
        scored = y != -100
        assert torch.equal(x[1:][scored[:-1]], y[:-1][scored[:-1]])  # labels: inputs shifted
        ids = torch.cat([x[:1], y[scored]]).tolist()
        assert tokenizer.decode(ids) == window_texts(data, "test", classification=False)[row]


def test_a_local_directory_with_its_tokenizer(llm_extra, tmp_path):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    from fedsec.data import load_dataset
    from fedsec.data.subset import subset
    from fedsec.models import build_model, prepare_data
    from fedsec.models.hf_tokenizer import train_bpe, window_texts

    data = subset(load_dataset("shakespeare_plays", target="sequence", sequence_length=40),
                  200, 50)
    tokenizer = train_bpe(window_texts(data, "train", classification=False), 400,
                          start_token=False)
    torch.manual_seed(1)
    saved = AutoModelForCausalLM.from_config(GPTNeoXConfig(**{**NEOX, "vocab_size": 400}))
    saved.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    options = {"hf_model": str(tmp_path), "lora": {"r": 4}}
    encoded = prepare_data("hf_causal_lm", data, options)
    expected = tokenizer(window_texts(data, "test", classification=False)[:1])["input_ids"][0]
    assert encoded.test_x[0, :len(expected) - 1].tolist() == expected[:-1]
    model = build_model("hf_causal_lm", input_shape=encoded.input_shape,
                        num_classes=encoded.num_classes, **options)
    # peft's default for gpt_neox: adapters on query_key_value only; the base is the saved one
    assert all("query_key_value.lora_" in k for k in model.state_dict())
    base = dict(model.network.get_base_model().named_parameters())
    for key, value in saved.named_parameters():
        if "query_key_value" not in key:
            assert torch.equal(base[key], value), key
    full = build_model("hf_causal_lm", input_shape=encoded.input_shape,
                       num_classes=encoded.num_classes, hf_model=str(tmp_path))
    assert set(full.state_dict()) == {k for k, _ in full.named_parameters()}


@pytest.mark.parametrize("options, message", [
    ({"hf_model": NEOX, "lora": {"target_modules": ["attn_proj"]}},
     r"option lora.target_modules: 'attn_proj' matches no layer of this gpt_neox model; its "
     r"layers: dense, dense_4h_to_h, dense_h_to_4h, embed_in, lm_head, query_key_value"),
    ({"hf_model": "/nonexistent/pythia-1b"},
     r"option hf_model='/nonexistent/pythia-1b': the directory does not exist; fedsec never "
     r"downloads"),
    ({"hf_model": {**NEOX, "hiden_size": 32}},
     r"option hf_model: unknown gpt_neox config field 'hiden_size'; valid: .*hidden_size"),
    ({"hf_model": {**NEOX, "model_type": "gpt_neo_x"}},
     r"option hf_model.model_type='gpt_neo_x' is not valid; valid: .*gpt_neox"),
    ({"hf_model": NEOX, "lora": {"rank": 8}},
     r"option lora: unknown key 'rank'; valid keys: r, alpha, dropout, target_modules"),
    ({"hf_model": NEOX, "lora": {"r": 0}}, r"model_args.lora.r=0 must be >= 1"),
    ({"hf_model": NEOX, "lora": {"dropout": 1.0}}, r"model_args.lora.dropout=1.0 must be in "
                                                   r"\[0, 1\)"),
    ({}, r"option hf_model is required"),
])
def test_bad_options_are_named(llm_extra, options, message):
    from fedsec.models import build_model

    with pytest.raises(ValueError, match=message):
        build_model("hf_causal_lm", input_shape=(40,), num_classes=512, **options)


def test_a_sequence_classifier_directory_is_no_causal_model(llm_extra, tmp_path):
    from transformers import BertConfig

    from fedsec.models import build_model

    BertConfig(**{k: v for k, v in BERT.items() if k != "model_type"},
               architectures=["BertForSequenceClassification"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds a sequence classifier \(config.json "
                                         r"architectures: BertForSequenceClassification\); use "
                                         r"model hf_sequence_classifier"):
        build_model("hf_causal_lm", input_shape=(40,), num_classes=512,
                    hf_model=str(tmp_path))


def test_bad_options_stop_the_experiment_before_training(llm_extra):
    from fedsec.fl.experiment import Experiment

    config = lm_config(lora={"target_modules": ["nothing_here"]})
    with pytest.raises(ValueError, match="'nothing_here' matches no layer"):
        Experiment(config)
    from fedsec.data import load_dataset
    from fedsec.models import prepare_data
    with pytest.raises(ValueError, match="model 'hf_causal_lm' reads text; dataset 'digits' "
                                         "holds images"):
        prepare_data("hf_causal_lm", load_dataset("digits"), {"hf_model": NEOX})
