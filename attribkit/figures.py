"""The evaluation's figures, as PNG bytes: what the paper shows, for any run
(and ``per_cell``, the attack × victim table behind them and evaluate's tables).

Per head (each head's ``report_figures`` calls these, so a plugin head gets
them or draws its own): confusion matrix, accuracy per attack × victim cell,
hyperparameter RMSE per true value. Per model: t-SNE of the attack and victim
features (paper Fig. 2), the perturbations per attack and per victim (Figs.
3–4) and the training curves of the signatures (Fig. 7).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import torch

MAX_CONFUSION_CLASSES = 30  # beyond this a confusion matrix is unreadable (single-label's 300 classes)
TSNE_POINTS = 500


@dataclass
class Figure:
    """One picture of the report: a file name, a title, a caption and its PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def per_cell(values: torch.Tensor, labels, label_spaces, rmse: bool = False) -> dict[str, dict[str, float | None]]:
    """Mean (or root mean square) of per-example ``values`` in each attack × victim cell; None where empty."""
    table = {}
    for i, attack in enumerate(label_spaces.attacks):
        table[attack] = {}
        for j, victim in enumerate(label_spaces.victims):
            v = values[(labels.attack == i) & (labels.victim == j)]
            v = v[torch.isfinite(v)]
            table[attack][victim] = None if not len(v) else math.sqrt(float(v.pow(2).mean())) if rmse else float(v.mean())
    return table


def confusion(truth: torch.Tensor, predicted: torch.Tensor, classes: list[str], title: str) -> bytes | None:
    if not 2 <= len(classes) <= MAX_CONFUSION_CLASSES:
        return None
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ConfusionMatrixDisplay.from_predictions(truth.numpy(), predicted.numpy(), labels=list(range(len(classes))),
                                            display_labels=classes, ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    return _png(fig)


def cell_heatmap(table: dict[str, dict[str, float | None]], title: str, percent: bool) -> bytes:
    """attack × victim table (rows × columns) as a heat map with the values written in."""
    plt = _pyplot()
    rows, cols = list(table), list(next(iter(table.values())))
    values = [[math.nan if table[r][c] is None else table[r][c] * (100 if percent else 1) for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 0.7 * len(rows) + 1.8))
    image = ax.imshow(values, cmap="viridis" if percent else "magma_r", aspect="auto",
                      vmin=0 if percent else None, vmax=100 if percent else None)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "–" if math.isnan(v) else f"{v:.1f}", ha="center", va="center", color="white",
                    fontsize=9, path_effects=_outline())
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    return _png(fig)


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="black")]


def rmse_per_value(per_attack: dict[str, list[tuple[float, float, int]]], units: dict[str, str], title: str) -> bytes:
    """For each attack, RMSE of the attributed value against the true value: (value, rmse, examples) points."""
    plt = _pyplot()
    attacks = [a for a, pts in per_attack.items() if pts]
    fig, axes = plt.subplots(1, max(1, len(attacks)), figsize=(3.6 * max(1, len(attacks)), 3.2), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        xs, ys, ns = zip(*per_attack[attack])
        ax.plot(xs, ys, marker="o")
        ax.set_title(f"{attack} ({sum(ns)} examples)")
        ax.set_xlabel(f"true value ({units.get(attack, '')})")
        ax.set_ylabel("RMSE")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _png(fig)


def tsne(features: torch.Tensor, groups: list[str], title: str, seed: int = 0) -> bytes | None:
    """2-D t-SNE of the features, coloured by group (attack × victim)."""
    if len(features) < 5:
        return None
    from sklearn.manifold import TSNE

    plt = _pyplot()
    keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:TSNE_POINTS].sort().values
    x = features[keep].double().numpy()
    labels = [groups[i] for i in keep.tolist()]
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for k, name in enumerate(names):
        sel = [i for i, lab in enumerate(labels) if lab == name]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=cmap(k % cmap.N), label=name)
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _png(fig)


def perturbations(grid: dict[tuple[str, str], tuple[torch.Tensor, str]], attacks: list[str], victims: list[str],
                  clean: torch.Tensor, title: str) -> bytes:
    """Adversarial minus clean for one clean image, attack (rows) × victim (columns), on one colour scale."""
    plt = _pyplot()
    bound = max([float(d.abs().max()) for d, _ in grid.values()] + [1e-8])
    fig, axes = plt.subplots(len(attacks), len(victims) + 1, figsize=(1.9 * (len(victims) + 1), 2.0 * len(attacks)),
                             squeeze=False)
    for i, attack in enumerate(attacks):
        axes[i][0].imshow(_hwc(clean).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i][0].set_ylabel(attack)
        axes[i][0].set_title("clean" if i == 0 else "", fontsize=9)
        for j, victim in enumerate(victims):
            ax = axes[i][j + 1]
            if (attack, victim) in grid:
                delta, label = grid[attack, victim]
                ax.imshow(delta.mean(0).numpy(), cmap="seismic", vmin=-bound, vmax=bound)  # channels averaged
                ax.set_xlabel(label, fontsize=8)
            if i == 0:
                ax.set_title(victim, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title} (red +, blue −, ±{bound:.2f})")
    return _png(fig)


def _hwc(image: torch.Tensor) -> torch.Tensor:
    return image.permute(1, 2, 0) if image.shape[0] > 1 else image[0]


def training_curves(history: list[dict], title: str) -> bytes | None:
    """Each signature's metric per epoch, one line per member (Fig. 7), and the training loss."""
    found = {k for row in history for k in row if k.endswith(("_accuracy", "_rmse"))}
    metrics = sorted(found, key=lambda k: (not k.endswith("_accuracy"), k))  # accuracies, then errors
    if not history or not metrics:
        return None
    plt = _pyplot()
    panels = metrics + ["train_loss"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for member in dict.fromkeys(row["member"] for row in history):
            pts = [(r["epoch"], r[metric]) for r in history if r["member"] == member and r.get(metric) is not None]
            if pts:
                xs, ys = zip(*pts)
                scale = 100 if metric.endswith("_accuracy") else 1
                ax.plot(xs, [scale * y for y in ys], marker=".", label=member)
        ax.set_title(metric.replace("_", " ") + (" (%)" if metric.endswith("_accuracy") else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    split = history[-1].get("split", "test")
    fig.suptitle(f"{title} (metrics on the {split} split)")
    return _png(fig)
