"""What the server-side data-reconstruction attacks share (DLG, inverting gradients, label
leakage): the attacked client's update as the server sees it, reconstructions matched to the
client's true batch and scored, and PNG images of them.

- ``ReconstructionParams`` / ``ReconstructionAttack``: the keys every such attack takes
  (``attack_client_index``, FedML's ``attack_round_list``) and its base: the stage, what the
  server knows, the validation, ``observe`` (the attacked client of an attacked round) and
  ``reconstruct_data`` calling the subclass's ``reconstruct`` with it;
  ``BatchReconstructionParams`` / ``BatchReconstructionAttack``: those that rebuild the batch
  itself (dlg, inverting_gradients): its shape when the true batch is not given, the data's
  range, ``last_reconstruction``.
- ``check_client_index``: ``attack_client_index`` against the clients of a round;
  ``check_input_shape``, ``check_data_range``: the other shared keys.
- ``in_attack_rounds``: whether ``attack_round_list`` (FedML's key) lets the round be attacked.
- ``observe_client``: the global model rebuilt by the attack's ``setting.model_factory``, its
  trainable weights and the client's update w_global - w_local on each, with the client's sample count and its
  true first batch (ground truth, for scoring only).
- ``output_layer``: the update of the model's output layer, [classes, features].
- ``match_images``: each true image paired with a distinct reconstruction (Hungarian).
- ``psnr``, ``label_accuracy``: the scores; ``image_scores``: a reconstruction matched and
  scored against the true batch.
- ``displayable`` / ``save_image_grid``: images as PNG.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict, client_id
from ..schedule import AttackWindow
from ._common import doc


@dataclass
class ObservedClient:
    """One client's update as the server sees it."""

    client_id: int
    sample_count: int
    model: torch.nn.Module        # setting.model_factory() holding the global weights, eval mode
    names: list[str]              # the trainable parameters, in the model's order
    weights: list[torch.Tensor]   # the model's own parameters (differentiable)
    update: list[torch.Tensor]    # w_global - w_local per parameter, detached
    truth: tuple[torch.Tensor, torch.Tensor] | None  # its first batch, only to score


def check_client_index(index: int | None, federation: Federation) -> None:
    if index is not None and index >= federation.client_num_per_round:
        raise ValueError(f"attack_client_index={index} must be between 0 and "
                         f"client_num_per_round - 1 = {federation.client_num_per_round - 1}")


def in_attack_rounds(round_list: list[int] | None, round_index: int) -> bool:
    return round_list is None or round_index in round_list


def check_input_shape(input_shape: list[int] | None) -> None:
    if input_shape is not None and not input_shape:
        raise ValueError("input_shape=[] must list one input's sizes")


def check_data_range(data_min: float, data_max: float) -> None:
    if data_min >= data_max:
        raise ValueError(f"data_min={data_min} must be below data_max={data_max}")


@dataclass
class ReconstructionParams(AttackWindow):
    """The keys of every server-side reconstruction attack."""

    attack_client_index: int | None = doc(None, "position in the round of the attacked "
                                          "client; default 0 (the first)", ge=0)
    attack_round_list: list[int] | None = doc(None, "rounds (ctx.round_index) attacked; "
                                              "default every round", ge=0)


class ReconstructionAttack(Attack):
    """Base of the attacks that reconstruct a client's data (or labels) at the server: they
    observe only, and the models go on unchanged."""

    stages = frozenset({Stage.DATA_RECONSTRUCTION})
    knowledge = "the server's view: a client's update, the global model, the architecture"
    Params = ReconstructionParams

    @classmethod
    def validate(cls, params: ReconstructionParams, federation: Federation) -> None:
        check_client_index(params.attack_client_index, federation)

    def observe(self, models: list[ClientModel], global_model: StateDict, ctx: RoundContext
                ) -> ObservedClient | None:
        """The attacked client (``attack_client_index``, default the first) as the server sees
        it, or None in a round outside ``attack_round_list``."""
        p = self.params
        if not in_attack_rounds(p.attack_round_list, ctx.round_index):
            return None
        return observe_client(self, models, global_model, ctx, p.attack_client_index or 0)

    def reconstruct_data(self, models: list[ClientModel], global_model: StateDict,
                         ctx: RoundContext) -> None:
        seen = self.observe(models, global_model, ctx)
        if seen is not None:
            self.reconstruct(seen, ctx)

    def reconstruct(self, seen: ObservedClient, ctx: RoundContext) -> None:
        """The attack on the observed client of an attacked round; reports in ``ctx.metrics``."""
        raise NotImplementedError


@dataclass
class BatchReconstructionParams(ReconstructionParams):
    """The keys of the attacks that rebuild the client's batch."""

    input_shape: list[int] | None = doc(None, "shape of one input, when the true batch is "
                                        "not in ctx.client_batches", ge=1)
    batch_size: int = doc(1, "the clients' batch size, when the true batch is not in "
                             "ctx.client_batches", ge=1)
    data_min: float = doc(0.0, "lowest input value (fedsec's images: 0); data_max - data_min "
                               "is the PSNR's peak (and the box, where the attack keeps one)")
    data_max: float = doc(1.0, "highest input value (fedsec's images: 1)")
    seed: int = doc(0, "seed of the dummy data")


class BatchReconstructionAttack(ReconstructionAttack):
    """Base of the attacks that rebuild the client's batch; the last reconstruction (inputs,
    labels) is kept in ``last_reconstruction``."""

    Params = BatchReconstructionParams

    @classmethod
    def validate(cls, params: BatchReconstructionParams, federation: Federation) -> None:
        super().validate(params, federation)
        check_data_range(params.data_min, params.data_max)
        check_input_shape(params.input_shape)

    def __init__(self, params=None):
        super().__init__(params)
        self.last_reconstruction: tuple[torch.Tensor, torch.Tensor] | None = None


def observe_client(attack: Attack, models: list[ClientModel], global_model: StateDict,
                   ctx: RoundContext, index: int) -> ObservedClient:
    """The client at position ``index`` of the round, seen by the server."""
    model_factory = attack.needs("model_factory", "the model the updates belong to")
    if index >= len(models):
        raise ValueError(f"attack_client_index={index} but the round has {len(models)} "
                         f"clients")
    cid = client_id(ctx, index)
    count, local = models[index]
    model = model_factory()
    model.load_state_dict(global_model)
    model.eval()
    trainable = [(k, w) for k, w in model.named_parameters() if w.requires_grad]
    update = [(global_model[k] - local[k]).detach().to(w) for k, w in trainable]
    return ObservedClient(cid, int(round(count)), model, [k for k, _ in trainable],
                          [w for _, w in trainable], update,
                          (ctx.client_batches or {}).get(cid))


def output_layer(observed: ObservedClient) -> torch.Tensor:
    """The update of the output layer's weight, [classes, features]: the model's last
    trainable matrix (a Linear layer's weight, one row per class)."""
    for u in reversed(observed.update):
        if u.dim() == 2:
            return u
    raise ValueError(f"the model has no trainable matrix to read labels from (parameters: "
                     f"{observed.names})")


def match_images(reconstruction: torch.Tensor, truth: torch.Tensor
                 ) -> tuple[list[int], torch.Tensor]:
    """Reconstructions are unordered: pair each true image i with a distinct reconstruction
    ``order[i]`` so that the total squared error is least (the Hungarian algorithm, scipy's
    ``linear_sum_assignment``; there may be more reconstructions than true images). Returns
    ``order`` and the per-image MSE of the pairs, in float64."""
    rec = reconstruction.detach().reshape(reconstruction.shape[0], -1).to(torch.float64).cpu()
    true = truth.detach().reshape(truth.shape[0], -1).to(torch.float64).cpu()
    if rec.shape[0] < true.shape[0]:
        raise ValueError(f"{rec.shape[0]} reconstructions cannot be matched to "
                         f"{true.shape[0]} true images")
    errors = ((true[:, None, :] - rec[None, :, :]) ** 2).mean(-1)  # [true, reconstruction]
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: only when attacked

    rows, cols = linear_sum_assignment(errors.numpy())
    order = [int(c) for _, c in sorted(zip(rows, cols))]
    return order, errors[torch.arange(true.shape[0]), torch.tensor(order)]


def psnr(mse: torch.Tensor, peak: float) -> torch.Tensor:
    """10 log10(peak^2 / MSE) per entry, +inf where the MSE is 0."""
    return 10 * torch.log10(peak ** 2 / mse)


def image_scores(reconstruction: torch.Tensor, truth: torch.Tensor, peak: float
                 ) -> tuple[list[int], dict[str, float | list[int]]]:
    """``reconstruction`` matched to the true images (``match_images``) and scored: the
    matching ``order`` and a report of it (``matched_reconstruction``), the MSE of the pairs
    (mean over the images) and their PSNR with ``peak`` (the data's range, as Geiping et al.
    report it: mean and minimum over the images)."""
    order, mse = match_images(reconstruction, truth)
    scores = psnr(mse, peak)
    return order, {"matched_reconstruction": order, "mse": float(mse.mean()),
                   "psnr": float(scores.mean()), "psnr_min": float(scores.min())}


def label_accuracy(predicted: list[int], true: list[int]) -> float:
    """The fraction of the true labels that the predicted multiset contains (each prediction
    counts once), as Wainakh et al. score label leakage."""
    hits = Counter(predicted) & Counter(true)
    return sum(hits.values()) / len(true)


def displayable(image: torch.Tensor) -> np.ndarray:
    """One input as a picture in [0, 1]: [C, H, W] with 3 or 4 channels as colour, one channel
    (or a flat square vector) as grey."""
    img = image.detach().cpu().float()
    if img.dim() == 1:
        side = math.isqrt(img.numel())
        img = img.reshape(side, -1) if side * side == img.numel() else img[None]
    elif img.dim() == 3:
        img = img.permute(1, 2, 0) if img.shape[0] in (3, 4) else img[0]
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
    return img.numpy()


def save_image_grid(path: Path, rows: list[tuple[str, torch.Tensor]]) -> None:
    """A PNG with one row of images per (title, batch) pair. Drawn on a matplotlib Figure
    directly (no pyplot), so the caller's plotting backend is left alone."""
    from matplotlib.figure import Figure

    columns = max(len(batch) for _, batch in rows)
    fig = Figure(figsize=(1.2 * columns, 1.4 * len(rows)))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for (title, batch), line in zip(rows, axes):
        for j, ax in enumerate(line):
            ax.set_axis_off()
            if j < len(batch):
                img = displayable(batch[j])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        line[0].set_title(title, loc="left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
