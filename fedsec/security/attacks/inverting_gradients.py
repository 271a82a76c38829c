"""Inverting gradients (Geiping, Bauermeister, Dröge, Moeller, NeurIPS 2020, "Inverting
gradients - how easy is it to break privacy in federated learning?"): a client's batch
recovered from its update by cosine-similarity gradient matching with a total-variation
prior."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.optim.adam import adam

from ..base import RoundContext
from ..registry import register_attack
from ._common import doc
from ._reconstruction import (BatchReconstructionAttack, BatchReconstructionParams,
                              ObservedClient, image_scores, label_accuracy, output_layer,
                              save_image_grid)
from .revealing_labels import llg_labels

# The step size falls tenfold after 3/8, 5/8 and 7/8 of the iterations (the paper's schedule).
DECAY_POINTS = (3 / 8, 5 / 8, 7 / 8)


def cosine_distance(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]
                    ) -> torch.Tensor:
    """1 - <trial, target> / (|trial| |target|), all parameters taken as one vector: the
    paper's matching term (Eq. 4), blind to the update's scale."""
    dot = sum((a * b).sum() for a, b in zip(trial, target))
    trial_norm = torch.sqrt(sum((a * a).sum() for a in trial))
    target_norm = torch.sqrt(sum((b * b).sum() for b in target))
    return 1 - dot / (trial_norm * target_norm)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of images [B, C, H, W]: the mean absolute difference of
    horizontal neighbours plus that of vertical neighbours (the paper's prior, as its code
    computes it)."""
    return ((x[..., :, 1:] - x[..., :, :-1]).abs().mean()
            + (x[..., 1:, :] - x[..., :-1, :]).abs().mean())


def simulated_update(observed: ObservedClient, x: torch.Tensor, y: torch.Tensor, steps: int,
                     lr: float) -> list[torch.Tensor]:
    """w_global - w after ``steps`` steps of plain SGD with step ``lr`` on the batch (x, y),
    each step on the whole batch with the mean cross-entropy, as the client trains;
    differentiable in x. One step gives lr times the gradient: the paper's gradient setting;
    more give its weight-update setting (Sec. 6), the local steps unrolled."""
    weights = dict(zip(observed.names, observed.weights))
    current = weights
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(observed.model, current, (x,)), y)
        grads = torch.autograd.grad(loss, list(current.values()), create_graph=True)
        current = {k: w - lr * g for (k, w), g in zip(current.items(), grads)}
    return [weights[k] - current[k] for k in observed.names]


@register_attack("inverting_gradients", "invert_gradient", "geiping")
class InvertingGradientsAttack(BatchReconstructionAttack):
    """Data reconstruction at the server (observes only; the models go on unchanged), after
    Geiping et al. 2020.

    For the client at position ``attack_client_index`` of the round (default the first), the
    server takes its update Delta = w_global - w_local and recovers its batch x by

        min_{x in [data_min, data_max]^n}  1 - <U(x), Delta> / (|U(x)| |Delta|) + tv_weight TV(x)

    where U(x) is the update that training on x would have sent (``simulated_update``) and TV
    the anisotropic total variation. As in the paper: Adam (step ``step_size``) on the sign
    of the objective's gradient, the step cut tenfold after 3/8, 5/8 and 7/8 of
    ``max_iterations``, each step followed by projection onto the box (the data's range),
    dummy data drawn from N(0, 1), and ``restarts`` runs from fresh draws of which the one
    with the smallest matching term (without TV) is kept: the server can measure the match,
    not the truth.

    What is supported: the client's local data is one batch of n samples (n = its sample
    count, at most the batch size) trained on by plain SGD for ``local_steps`` full-batch
    steps (train_args.epochs). One step is the paper's gradient setting; several its
    weight-update setting, the steps unrolled with setting.client_learning_rate. A client whose
    update mixes several batches is refused (the server would have to guess the batches'
    composition and order).

    Labels: the client's true ones with ``known_labels`` (the paper's assumption), else read
    from the output layer's update by LLG (Wainakh et al. 2022, ``llg_labels``: exact for
    distinct labels and non-negative features while the model is not confident; repeated
    labels are estimated).

    Reports ``ctx.metrics["inverting_gradients"]``: client id, round, the matching term of
    the kept run and of every run, the labels used and where from; when the true batch is in
    ``ctx.client_batches``, the reconstructions matched to the true images (Hungarian on the
    squared error, reconstructions being unordered), their MSE, their PSNR (per image, peak =
    data_max - data_min, as the paper reports it: mean and minimum) and the label accuracy.
    The reconstruction is kept in ``self.last_reconstruction``; with ``save_dir`` a PNG grid
    (true batch above, matched reconstructions below) is written there per attacked round.
    """

    @dataclass
    class Params(BatchReconstructionParams):
        max_iterations: int = doc(4800, "Adam steps per run (the paper's code default; its "
                                        "experiments run up to 24,000)", ge=1)
        step_size: float = doc(0.1, "Adam's step size before the decay", gt=0)
        restarts: int = doc(1, "runs from fresh dummy data; the best match is kept", ge=1)
        tv_weight: float = doc(1e-4, "weight of the total-variation prior (the paper uses "
                                     "1e-6 to 1e-1 by experiment; 0 turns it off)", ge=0)
        known_labels: bool = doc(False, "use the client's true labels (the paper's setting) "
                                        "instead of recovering them by LLG")
        local_steps: int = doc(1, "full-batch SGD steps the client made (train_args.epochs "
                                  "when its data is one batch)", ge=1)
        save_dir: str | None = doc(None, "folder for a PNG grid of the reconstruction per "
                                         "attacked round")

    def reconstruct(self, seen: ObservedClient, ctx: RoundContext) -> None:
        p = self.params
        shape = self._batch_shape(seen)
        if p.tv_weight > 0 and len(shape) != 4:
            raise ValueError(f"{self.name}: tv_weight={p.tv_weight} needs image inputs "
                             f"[batch, channels, height, width]; the batch is {list(shape)} "
                             f"(set tv_weight: 0)")
        lr = 1.0  # one step: the cosine does not see the step's scale
        if p.local_steps > 1:
            lr = float(self.needs("client_learning_rate", f"the clients' SGD step, for "
                                                          f"local_steps={p.local_steps}"))
        if p.known_labels:
            if seen.truth is None:
                raise ValueError(f"{self.name}: known_labels needs the client's true batch "
                                 f"in ctx.client_batches")
            labels, source = sorted(seen.truth[1].tolist()), "known"
        else:
            labels, source = llg_labels(output_layer(seen), shape[0]), "llg"
        y = torch.tensor(labels, dtype=torch.long, device=seen.weights[0].device)

        gen = torch.Generator().manual_seed(p.seed)
        runs = [self._invert(seen, shape, y, lr, gen) for _ in range(p.restarts)]
        loss, x = min(runs, key=lambda run: run[0])
        self.last_reconstruction = (x, y)
        report = {"client_id": seen.client_id, "round": ctx.round_index, "matching_loss": loss,
                  "restart_losses": [r[0] for r in runs], "iterations": p.max_iterations,
                  "local_steps": p.local_steps, "labels": labels, "label_source": source}
        truth_x = None
        if seen.truth is not None:
            truth_x = seen.truth[0].detach().to(x)
            order, scores = image_scores(x, truth_x, p.data_max - p.data_min)
            report.update(scores, label_accuracy=label_accuracy(labels, seen.truth[1].tolist()))
            x = x[order]
        ctx.metrics[self.name] = report
        if p.save_dir is not None:
            rows = ([("true", truth_x)] if truth_x is not None else []) + [("reconstructed", x)]
            save_image_grid(Path(p.save_dir) / f"{self.name}_round{ctx.round_index}_client"
                                               f"{seen.client_id}.png", rows)

    def _batch_shape(self, seen: ObservedClient) -> tuple[int, ...]:
        """The shape of the client's batch: its n samples, if they are one batch."""
        p = self.params
        if seen.truth is not None:
            batch, one_input = seen.truth[0].shape[0], tuple(seen.truth[0].shape[1:])
        elif p.input_shape is not None:
            batch, one_input = p.batch_size, tuple(p.input_shape)
        else:
            raise ValueError(f"{self.name}: client {seen.client_id}'s batch is not in "
                             f"ctx.client_batches; set input_shape (and batch_size)")
        if seen.sample_count > batch:
            raise ValueError(f"{self.name}: client {seen.client_id} trained on "
                             f"{seen.sample_count} samples in batches of {batch}, so its "
                             f"update mixes several batches; supported: a client whose data "
                             f"is one batch (sample count <= train_args.batch_size)")
        return (seen.sample_count, *one_input)

    def _invert(self, seen: ObservedClient, shape: tuple[int, ...], y: torch.Tensor, lr: float,
                gen: torch.Generator) -> tuple[float, torch.Tensor]:
        """One run from fresh N(0, 1) dummy data: (matching term, reconstruction)."""
        p = self.params
        weight = seen.weights[0]
        x = torch.randn(shape, generator=gen, dtype=weight.dtype).to(weight.device)
        x.requires_grad_(True)
        moments = [torch.zeros_like(x)], [torch.zeros_like(x)]
        step = [torch.tensor(0.0)]
        decays = [math.floor(f * p.max_iterations) for f in DECAY_POINTS]

        def objective() -> tuple[torch.Tensor, torch.Tensor]:
            match = cosine_distance(simulated_update(seen, x, y, p.local_steps, lr),
                                    seen.update)
            prior = p.tv_weight * total_variation(x) if p.tv_weight > 0 else 0.0
            return match, match + prior

        for it in range(p.max_iterations):
            _, total = objective()
            (grad,) = torch.autograd.grad(total, [x])
            with torch.no_grad():
                size = p.step_size * 0.1 ** sum(it >= d for d in decays)
                adam([x], [grad.sign()], *moments, [], step, amsgrad=False, beta1=0.9,
                     beta2=0.999, lr=size, weight_decay=0.0, eps=1e-8, maximize=False)
                x.clamp_(p.data_min, p.data_max)
        match, _ = objective()
        final = float(match.detach())
        return (final if math.isfinite(final) else math.inf), x.detach()
