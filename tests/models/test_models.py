"""fedsec.models: every name builds the documented architecture (output shapes, parameter
counts computed by hand from the papers' layer sizes, the bi-LSTM against the LSTM equations
written out, the transformer's causality), trains with plain SGD, initialises
deterministically, and rejects bad names, options and sizes with errors that name them."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedsec.models import MODELS, build_model, model_task

IMAGE_28 = ((1, 28, 28), 10)
IMAGE_32 = ((3, 32, 32), 10)
TEXT_80 = ((80,), 80)  # LEAF Shakespeare: 80 characters of context, a vocabulary of 80

# Every name and alias -> (canonical name, the documented input the docstring counts on).
NAMES = {
    "lr": ("lr", IMAGE_28), "logistic_regression": ("lr", IMAGE_28),
    "cnn": ("cnn", IMAGE_28), "cnn_fedavg": ("cnn", IMAGE_28),
    "lenet5": ("lenet5", IMAGE_28),
    "resnet20": ("resnet20", IMAGE_32), "resnet56": ("resnet56", IMAGE_32),
    "bilstm": ("bilstm", TEXT_80), "lstm": ("bilstm", TEXT_80), "rnn": ("bilstm", TEXT_80),
    "transformer": ("transformer", TEXT_80), "gpt": ("transformer", TEXT_80),
}
CANONICAL = sorted({canonical for canonical, _ in NAMES.values()})
# Built from a config or a local directory: tested in tests/models/test_hf_models.py.
HF_MODELS = ["hf_causal_lm", "hf_sequence_classifier"]
TEXT_MODELS = ("bilstm", "transformer")


def build(name: str, shape_and_classes=None, seed: int = 0, **options):
    shape, classes = shape_and_classes or NAMES[name][1]
    torch.manual_seed(seed)
    return build_model(name, input_shape=shape, num_classes=classes, **options)


def sample_batch(name: str, n: int, shape_and_classes=None, seed: int = 1):
    """Inputs of the model's kind and labels of its task: images in [0, 1] and class labels
    [n], or token ids [n, L] and next-token labels [n] (bi-LSTM) or [n, L] (transformer)."""
    canonical, (shape, classes) = NAMES[name][0], shape_and_classes or NAMES[name][1]
    gen = torch.Generator().manual_seed(seed)
    if canonical in TEXT_MODELS:
        x = torch.randint(0, classes, (n, *shape), generator=gen)
    else:
        x = torch.rand((n, *shape), generator=gen)
    label_shape = (n, *shape) if model_task(name) == "language_model" else (n,)
    return x, torch.randint(0, classes, label_shape, generator=gen)


def loss_of(model, x, y) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, -2), y.flatten())


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --- names, shapes and parameter counts -----------------------------------------------------------

def test_models_lists_every_canonical_name_with_a_description():
    assert sorted(MODELS) == sorted(CANONICAL + HF_MODELS)
    assert all(isinstance(text, str) and text and "\n" not in text for text in MODELS.values())


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_name_builds_and_returns_logits_of_its_task(name):
    canonical, (shape, classes) = NAMES[name]
    model = build(name)
    assert type(model) is type(build(canonical))
    x, _ = sample_batch(name, 3)
    expected = (3, shape[0], classes) if model_task(name) == "language_model" else (3, classes)
    assert model(x).shape == expected


@pytest.mark.parametrize("name, task", [("transformer", "language_model"),
                                        ("gpt", "language_model"), ("rnn", "classification"),
                                        ("cnn", "classification"), ("lr", "classification")])
def test_model_task(name, task):
    assert model_task(name) == task


# Hand counts, (weights + biases) per layer from the architectures as documented:
#   lr:      784*10 + 10 = 7,850
#   cnn:     conv 1*32*25+32 = 832, conv 32*64*25+64 = 51,264, dense (64*7*7)*512+512
#            = 1,606,144, output 512*10+10 = 5,130 -> 1,663,370 (28x28x1); on 32x32x3 conv1 is
#            3*32*25+32 = 2,432 and the dense layer (64*8*8)*512+512 = 2,097,664 -> 2,156,490
#   lenet5:  1*6*25+6 = 156, 6*16*25+16 = 2,416, 400*120+120 = 48,120, 120*84+84 = 10,164,
#            84*10+10 = 850 -> 61,706
#   resnet:  3x3 convs without bias, a norm of 2c per c-channel conv: stem 432+32; a block
#            c->c 2*9c^2 + 4c (16: 4,672, 32: 18,560, 64: 73,984); a stage's first block
#            16->32: 4,608+9,216+128 = 13,952, 32->64: 18,432+36,864+256 = 55,552; fc 650.
#            n = 3: 464 + 3*4,672 + 13,952 + 2*18,560 + 55,552 + 2*73,984 + 650 = 269,722;
#            n = 9: 464 + 9*4,672 + 13,952 + 8*18,560 + 55,552 + 8*73,984 + 650 = 853,018
#   bilstm:  an LSTM direction with input i, hidden h has 4h(i+h) + 8h: embedding 80*8 = 640,
#            layer 1 2*(4*256*264 + 2,048) = 544,768, layer 2 (input 512) 2*(4*256*768 +
#            2,048) = 1,576,960, fc 512*80+80 = 41,040 -> 2,163,408; one direction:
#            640 + 272,384 + 526,336 + 20,560 = 819,920
#   transformer (d = 128, ff = 512): embeddings 2 * 80*128 = 20,480; a block: 2 LayerNorms
#            512, qkv 128*384+384 = 49,536, out 16,512, MLP 66,048 + 65,664 -> 198,272; final
#            norm 256 -> 417,280; untied adds the 80*128 head -> 427,520
PARAMETER_COUNTS = [
    ("lr", IMAGE_28, {}, 7_850),
    ("cnn", IMAGE_28, {}, 1_663_370),
    ("cnn", IMAGE_32, {}, 2_156_490),
    ("lenet5", IMAGE_28, {}, 61_706),
    ("resnet20", IMAGE_32, {}, 269_722),
    ("resnet20", IMAGE_32, {"norm": "group"}, 269_722),
    ("resnet56", IMAGE_32, {}, 853_018),
    ("bilstm", TEXT_80, {}, 2_163_408),
    ("bilstm", TEXT_80, {"bidirectional": False}, 819_920),
    ("transformer", TEXT_80, {}, 417_280),
    ("transformer", TEXT_80, {"tie_weights": False}, 427_520),
]


@pytest.mark.parametrize("name, inputs, options, count", PARAMETER_COUNTS)
def test_parameter_count_matches_the_hand_count_and_the_docstring(name, inputs, options, count):
    model = build(name, inputs, **options)
    assert parameter_count(model) == count
    assert f"{count:,}" in " ".join(type(model).__doc__.split())


@pytest.mark.parametrize("name, inputs", [("cnn", ((3, 28, 28), 10)), ("cnn", ((1, 4, 4), 10)),
                                          ("lenet5", ((3, 32, 32), 10)),
                                          ("lenet5", ((1, 12, 12), 10)),
                                          ("resnet20", ((1, 28, 28), 10)),
                                          ("resnet56", ((1, 28, 28), 62)),
                                          ("lr", ((5,), 3))])
def test_image_models_take_other_sizes_and_channel_counts(name, inputs):
    model = build(name, inputs)
    x, _ = sample_batch(name, 2, inputs)
    assert model(x).shape == (2, inputs[1])


def test_transformer_accepts_shorter_sequences_and_rejects_longer_ones():
    model = build("transformer", ((16,), 11))
    assert model(torch.randint(0, 11, (2, 5))).shape == (2, 5, 11)
    with pytest.raises(ValueError, match=r"(?s)17.*context length 16"):
        model(torch.randint(0, 11, (2, 17)))


def test_transformer_is_causal():
    model = build("transformer", ((16,), 11)).eval()
    tokens = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(5))
    changed = tokens.clone()
    t = 9
    changed[:, t] = (tokens[:, t] + 1) % 11
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-6)
    assert (after[:, t:] - before[:, t:]).abs().amax(dim=(0, 2)).min() > 1e-4


def lstm_by_the_equations(model, tokens: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """The documented architecture written out: embedding, each layer's directions by the LSTM
    equations (gates i, f, g, o: torch's weight layout), the next layer reading both
    directions' outputs, the linear layer on [forward final h, backward final h]."""
    lstm = model.lstm
    n, length = tokens.shape
    layer_input = model.embedding.weight[tokens]
    directions = [("", list(range(length))), ("_reverse", list(reversed(range(length))))]
    for layer in range(lstm.num_layers):
        outputs, finals = [], []
        for suffix, order in directions[:2 if bidirectional else 1]:
            w_ih, w_hh, b_ih, b_hh = (getattr(lstm, f"{kind}_l{layer}{suffix}")
                                      for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            h = c = torch.zeros(n, lstm.hidden_size)
            steps = [None] * length
            for t in order:
                i, f, g, o = (layer_input[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                steps[t] = h
            outputs.append(torch.stack(steps, 1))
            finals.append(h)
        layer_input = torch.cat(outputs, -1)
    return torch.cat(finals, -1) @ model.fc.weight.T + model.fc.bias


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bilstm_is_the_documented_lstm_stack(bidirectional):
    options = dict(embedding_dim=3, hidden_size=5, num_layers=2, bidirectional=bidirectional)
    model = build("bilstm", ((6,), 7), **options)
    tokens = torch.randint(0, 7, (4, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), lstm_by_the_equations(model, tokens,
                                                                        bidirectional))
    assert model.fc.in_features == (10 if bidirectional else 5)


# --- training, determinism, state_dicts -----------------------------------------------------------

# A step size each model trains with on a batch of 4 (the deeper ResNet needs a smaller one).
LEARNING_RATES = {"lr": 0.1, "cnn": 0.05, "lenet5": 0.2, "resnet20": 0.05, "resnet56": 0.02,
                  "bilstm": 0.5, "transformer": 0.1}


@pytest.mark.parametrize("name", CANONICAL)
def test_a_few_sgd_steps_overfit_a_tiny_batch(name):
    model = build(name)
    x, y = sample_batch(name, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATES[name])
    first = loss_of(model, x, y).item()
    for _ in range(10):
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
    assert loss_of(model, x, y).item() < 0.9 * first


@pytest.mark.parametrize("name, options", [("lr", {}), ("cnn", {}), ("lenet5", {}),
                                           ("lenet5", {"activation": "sigmoid"})])
def test_gradient_is_differentiable_for_deep_leakage(name, options):
    """DLG (Zhu et al. 2019) minimises ||grad_w loss(x') - g||^2 over x': the gradient must
    itself be differentiable with respect to the input."""
    model = build(name, **options).eval()
    x, y = sample_batch(name, 2)
    x.requires_grad_(True)
    grads = torch.autograd.grad(loss_of(model, x, y), list(model.parameters()),
                                create_graph=True)
    sum((g ** 2).sum() for g in grads).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", CANONICAL)
def test_same_seed_same_initial_state(name):
    first, again, other = build(name, seed=3), build(name, seed=3), build(name, seed=4)
    a, b, c = first.state_dict(), again.state_dict(), other.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("name, options", [(n, {}) for n in CANONICAL]
                         + [("resnet20", {"norm": "group"})])
def test_state_dict_holds_float_parameters_and_batch_norm_buffers_only(name, options):
    model = build(name, **options)
    parameters = dict(model.named_parameters())
    for key, value in model.state_dict().items():
        if key in parameters:
            assert value.is_floating_point(), key
        else:
            assert key.rsplit(".", 1)[-1] in BATCH_NORM_BUFFERS, key
    if options.get("norm") == "group":
        assert set(model.state_dict()) == set(parameters)


# --- errors ---------------------------------------------------------------------------------------

def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"(?s)'vgg16'.*cnn.*cnn_fedavg.*resnet20.*transformer"):
        build_model("vgg16", input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match="'vgg16'"):
        model_task("vgg16")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"(?s)'hidden'.*embedding_dim.*hidden_size.*num_layers"
                                         r".*bidirectional"):
        build("rnn", hidden=10)
    with pytest.raises(ValueError, match=r"'norm'.*valid options: none"):
        build("cnn", norm="group")


@pytest.mark.parametrize("name, inputs, options, message", [
    ("bilstm", None, {"hidden_size": 0}, r"hidden_size=0"),
    ("bilstm", None, {"hidden_size": "big"}, r"hidden_size must be an integer; got 'big'"),
    ("bilstm", None, {"bidirectional": 1}, r"bidirectional must be true or false; got 1"),
    ("transformer", None, {"num_layers": -1}, r"num_layers=-1"),
    ("transformer", None, {"d_model": 130, "num_heads": 4}, r"num_heads=4.*d_model=130"),
    ("transformer", None, {"dropout": 1.5}, r"dropout=1.5"),
    ("transformer", None, {"dim_feedforward": 0}, r"dim_feedforward=0"),
    ("resnet20", None, {"norm": "layer"}, r"norm='layer'.*batch, group"),
    ("resnet20", None, {"norm": "group", "num_groups": 3}, r"num_groups=3"),
    ("lenet5", None, {"activation": "gelu"}, r"activation='gelu'.*relu, tanh, sigmoid"),
    ("cnn", ((1, 3, 3), 10), {}, r"\(1, 3, 3\).*>= 4"),
    ("lenet5", ((1, 11, 11), 10), {}, r"\(1, 11, 11\).*>= 12"),
    ("cnn", ((80,), 80), {}, r"images.*\(C, H, W\).*\(80,\)"),
    ("resnet56", ((28, 28), 10), {}, r"images.*\(28, 28\)"),
    ("transformer", ((1, 28, 28), 10), {}, r"sequences.*\(L,\).*\(1, 28, 28\)"),
    ("cnn", ((1, 0, 28), 10), {}, r"input_shape.*\(1, 0, 28\)"),
    ("lr", ((), 10), {}, r"input_shape.*\(\)"),
    ("cnn", ((1, 28, 28), 0), {}, r"num_classes.*got 0"),
    ("gpt", ((80,), True), {}, r"num_classes.*got True"),
])
def test_bad_values_are_errors_naming_them(name, inputs, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, inputs, **options)
