"""Deep leakage from gradients (Zhu et al. 2019, NeurIPS) with the iDLG label trick (Zhao et
al. 2020, "iDLG: improved deep leakage from gradients"), FedML's ``dlg``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..base import RoundContext
from ..registry import register_attack
from ._common import doc
from ._reconstruction import (BatchReconstructionAttack, BatchReconstructionParams,
                              ObservedClient, displayable, image_scores, label_accuracy)


@register_attack("dlg", "deep_leakage_from_gradients")
class DLGAttack(BatchReconstructionAttack):
    """Data reconstruction at the server (observes only; the models go on unchanged).

    For the client at position ``attack_client_index`` of the round (default the first), the
    server recovers the gradient of its local step as g = (w_g - w_l) / lr, lr =
    ``setting.client_learning_rate`` (exact when the client made one step of plain SGD on one
    batch, loss = mean cross-entropy). It loads w_g into ``setting.model_factory()`` and optimises
    dummy inputs x' (and soft labels y', or with ``use_idlg`` the label inferred from the sign
    of the last layer's weight gradient, batch of 1) with L-BFGS to minimise

        || grad_w CE(model(x'), softmax(y')) - g ||^2        (Zhu et al. 2019, Eq. 4).

    The objective has poor local minima (e.g. where the dummy input saturates the softmax and
    its gradient vanishes), so ``dlg_restarts`` runs start from fresh dummy data and the best
    match is kept: the server can measure the gradient distance, not the truth.

    The dummy batch has the shape of ``ctx.client_batches[client]``'s features when given, else
    ``input_shape`` (with ``batch_size``). Reports ``ctx.metrics["dlg"]``: client id, final
    gradient distance, and when the true batch is known, the reconstructions matched to the
    true images (Hungarian on the squared error: a reconstructed batch is unordered), their
    MSE, their PSNR (per image, 10 log10(range^2 / MSE) with range = data_max - data_min, the
    data's range: mean and minimum) and the label accuracy (the share of the true labels the
    reconstructed ones contain). The reconstruction is kept in ``self.last_reconstruction``;
    with ``save_dir`` the true and the matched reconstructed images are saved there as PNG.
    """

    @dataclass
    class Params(BatchReconstructionParams):
        dlg_iterations: int = doc(300, "L-BFGS iterations", ge=1)
        dlg_lr: float = doc(1.0, "L-BFGS learning rate", gt=0)
        use_idlg: bool = doc(False, "infer the label from the last layer's gradient (iDLG); "
                                    "needs a batch of 1")
        save_dir: str | None = doc(None, "folder for PNGs of the reconstruction")
        dlg_restarts: int = doc(1, "L-BFGS runs from fresh dummy data; the one that matches "
                                   "the gradient best is kept", ge=1)
        dlg_init: str = doc("uniform", "dummy data: uniform (U[0, 1), the range of fedsec's "
                                       "images) | normal (N(0, 1), Zhu et al.'s)",
                                   choices=("uniform", "normal"))

    def reconstruct(self, seen: ObservedClient, ctx: RoundContext) -> None:
        p = self.params
        lr = float(self.needs("client_learning_rate", "the clients' SGD step"))
        cid, truth = seen.client_id, seen.truth
        if truth is not None:
            shape = tuple(truth[0].shape)
        elif p.input_shape is not None:
            shape = (p.batch_size, *p.input_shape)
        else:
            raise ValueError("dlg: set input_shape (the true batch is not in ctx.client_batches)")

        model, weights = seen.model, seen.weights
        target = [u / lr for u in seen.update]

        gen = torch.Generator().manual_seed(p.seed)
        with torch.no_grad():
            num_classes = model(self._dummy(shape, gen, weights[0].dtype)[:1]).shape[-1]
        label = None
        if p.use_idlg:
            if shape[0] != 1:
                raise ValueError(f"dlg: use_idlg needs a batch of 1; got {shape[0]}")
            label = self._idlg_label(weights, target, num_classes)
        final, x, y = min((self._invert(model, weights, target, shape, num_classes, label, gen)
                           for _ in range(p.dlg_restarts)), key=lambda r: r[0])
        self.last_reconstruction = (x, y)
        report = {"client_id": cid, "round": ctx.round_index, "gradient_distance": final,
                  "iterations": p.dlg_iterations}
        if label is not None:
            report["idlg_label"] = int(label[0])
        matched = x
        if truth is not None:
            order, scores = image_scores(x, truth[0].detach().to(x), p.data_max - p.data_min)
            report.update(scores)
            matched = x[order]
            true_y = truth[1].detach().reshape(-1)
            if true_y.dtype in (torch.int64, torch.int32) and true_y.numel() == y.numel():
                report["label_accuracy"] = label_accuracy(y.reshape(-1).tolist(),
                                                          true_y.tolist())
        ctx.metrics["dlg"] = report
        if p.save_dir is not None:
            self._save(matched, truth[0] if truth is not None else None, cid, ctx.round_index)

    def _dummy(self, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype
               ) -> torch.Tensor:
        if self.params.dlg_init == "uniform":
            return torch.rand(shape, generator=gen, dtype=dtype)
        return torch.randn(shape, generator=gen, dtype=dtype)

    def _invert(self, model: torch.nn.Module, weights: list[torch.Tensor],
                target: list[torch.Tensor], shape: tuple[int, ...], num_classes: int,
                label: torch.Tensor | None, gen: torch.Generator
                ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One L-BFGS run from a fresh dummy batch: (gradient distance, x', labels)."""
        p = self.params
        dtype = weights[0].dtype
        dummy_x = self._dummy(shape, gen, dtype).requires_grad_(True)
        variables = [dummy_x]
        if label is None:
            dummy_y = torch.randn((shape[0], num_classes), generator=gen,
                                  dtype=dtype).requires_grad_(True)
            variables.append(dummy_y)

        def gradient_distance() -> torch.Tensor:
            out = model(dummy_x)
            if label is not None:
                loss = F.cross_entropy(out, label)
            else:
                loss = -(F.softmax(dummy_y, -1) * F.log_softmax(out, -1)).sum(-1).mean()
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            return sum(((g - t) ** 2).sum() for g, t in zip(grads, target))

        opt = torch.optim.LBFGS(variables, lr=p.dlg_lr, max_iter=p.dlg_iterations,
                                history_size=100, tolerance_grad=1e-12,
                                tolerance_change=1e-15, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            dist = gradient_distance()
            dist.backward()
            return dist

        opt.step(closure)
        final = float(gradient_distance().detach())
        if not math.isfinite(final):
            final = math.inf
        y = label if label is not None else dummy_y.detach().argmax(-1)
        return final, dummy_x.detach(), y

    @staticmethod
    def _idlg_label(weights, target, num_classes: int) -> torch.Tensor:
        """iDLG (Zhao et al. 2020): with cross-entropy and a batch of 1, the gradient of the last
        layer's weight row c is (p_c - y_c) h; only the true class has p_c - y_c < 0, so with
        non-negative features h its row sums to the smallest (negative) value."""
        for w, g in zip(reversed(weights), reversed(target)):
            if w.dim() == 2 and w.shape[0] == num_classes:
                return g.sum(-1).argmin().reshape(1)
        raise ValueError("dlg: use_idlg needs a last linear layer with one row per class")

    def _save(self, x: torch.Tensor, truth: torch.Tensor | None, cid: int, round_index: int
              ) -> None:
        from matplotlib.image import imsave

        folder = Path(self.params.save_dir)
        folder.mkdir(parents=True, exist_ok=True)
        pairs = [("reconstructed", x)] + ([("true", truth)] if truth is not None else [])
        for tag, images in pairs:
            for j, image in enumerate(images):
                img = displayable(image)
                imsave(folder / f"dlg_round{round_index}_client{cid}_{j}_{tag}.png", img,
                       cmap="gray" if img.ndim == 2 else None)
