"""PNG plots of evaluation and training results.

Every function draws on its own ``matplotlib.figure.Figure`` (Agg canvas, no pyplot), so nothing touches
global matplotlib state or needs a display, writes one PNG at a fixed size and lets the figure go.
Parent folders are created as needed; each function returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

from utils.metrics import integrate_pro_curve

DPI = 100  # figure sizes below are in inches, so pixel size = inches × 100
PREDICTED_COLOR = "red"
GROUND_TRUTH_COLOR = "lime"
# Keras logs these alongside the metrics; they are settings, not results worth a curve.
NOT_METRICS = ("learning_rate", "lr")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    figure.clear()  # releases the artists now rather than at garbage collection
    return path


def _binary_labels_and_scores(labels: Sequence, scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"labels and scores must be 1-D of one length, got {labels.shape} and {scores.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if unknown:
        raise ValueError(f"labels must be 0 (good) or 1 (defective), got {unknown[:5]}")
    return labels, scores


def save_roc_curve(labels: Sequence, scores: Sequence[float], path: str | Path) -> Path:
    """Image-level ROC curve (defective = positive) with its AUROC in the legend; 600×500 px.

    Raises ValueError when only one class is present (no ROC curve exists then).
    """
    labels, scores = _binary_labels_and_scores(labels, scores)
    if labels.min() == labels.max():
        raise ValueError(f"an ROC curve needs good and defective images, got only label {labels[0]}")
    fpr, tpr, _ = roc_curve(labels, scores)
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, color="tab:blue", label=f"AUROC = {roc_auc_score(labels, scores):.3f}")
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (good images flagged NOK)",
             ylabel="true-positive rate (defective images flagged NOK)", title="Image-level ROC")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def save_pro_curve(fpr: np.ndarray, pro: np.ndarray, path: str | Path, *, fpr_limit: float = 0.3) -> Path:
    """Per-region overlap curve (from ``utils.metrics.pro_curve``), area up to ``fpr_limit`` shaded; 600×500 px."""
    score = integrate_pro_curve(fpr, pro, fpr_limit=fpr_limit)  # also validates the curve
    fpr, pro = np.asarray(fpr, np.float64), np.asarray(pro, np.float64)
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    axes.plot(fpr, pro, color="tab:blue", label=f"AUPRO (FPR ≤ {fpr_limit:g}) = {score:.3f}")
    inside = fpr <= fpr_limit
    axes.fill_between(fpr[inside], pro[inside], color="tab:blue", alpha=0.2)
    axes.axvline(fpr_limit, color="gray", linestyle="--", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (pixels)",
             ylabel="per-region overlap", title="Per-region overlap (PRO) curve")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def save_score_histogram(
    labels: Sequence, scores: Sequence[float], threshold: float | None, path: str | Path
) -> Path:
    """Histograms of image scores, good vs defective, on shared bins, threshold as a line; 700×450 px."""
    labels, scores = _binary_labels_and_scores(labels, scores)
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite or None, got {threshold!r}")
    edges = np.histogram_bin_edges(scores if threshold is None else np.append(scores, threshold), bins=30)
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for label, name, color in ((0, "good", "tab:green"), (1, "defective", "tab:red")):
        subset = scores[labels == label]
        axes.hist(subset, bins=edges, alpha=0.6, color=color, label=f"{name} ({subset.size})")
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.4g}")
    axes.set(xlabel="anomaly score", ylabel="images", title="Image scores")
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def _draw_boxes(axes, boxes: Sequence[Sequence[float]], color: str) -> None:
    for x0, y0, x1, y1 in boxes:
        # Pixel centres sit on integers, so a pixel's outer edge is at -0.5.
        axes.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0,
                                 fill=False, edgecolor=color, linewidth=1.5))


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image, "gray"
    if image.ndim == 3 and image.shape[2] == 3:
        return image, None
    raise ValueError(f"image must be H×W, H×W×1 or H×W×3, got shape {image.shape}")


def save_overlay_grid(
    items: Sequence[Mapping], path: str | Path, *, title: str = "", columns: int = 4
) -> Path:
    """Grid of images with predicted boxes in red and ground-truth boxes in green; 3×3 inches per cell.

    Args:
        items: dicts with ``image`` (H×W×C float in [0, 1], C = 1 or 3, or H×W), ``predicted_boxes`` and
            ``ground_truth_boxes`` (lists of ``[x0, y0, x1, y1]``, may be empty or missing) and an optional
            ``caption`` (str, e.g. file name and verdict).
        title: figure title.
        columns: cells per row, >= 1.
    """
    if not items:
        raise ValueError("items must hold at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns!r}")
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    figure = Figure(figsize=(3 * columns, 3 * rows + (0.4 if title else 0)))
    for index, item in enumerate(items):
        axes = figure.add_subplot(rows, columns, index + 1)
        image, colormap = _display_image(item["image"])
        axes.imshow(image, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest")
        _draw_boxes(axes, item.get("ground_truth_boxes", ()), GROUND_TRUTH_COLOR)
        _draw_boxes(axes, item.get("predicted_boxes", ()), PREDICTED_COLOR)
        axes.set_title(str(item.get("caption", "")), fontsize=8)
        axes.set_axis_off()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def _curve_figure(history: Mapping[str, Sequence[float]], names: list[str]) -> Figure:
    """One subplot per name, each with the training and (where logged) validation curve; 7×4 in per row."""
    figure = Figure(figsize=(7, 4 * len(names)))
    for row, name in enumerate(names):
        axes = figure.add_subplot(len(names), 1, row + 1)
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                values = np.asarray(history[key], dtype=np.float64)
                axes.plot(np.arange(1, values.size + 1), values, style, marker=".", label=key)
        axes.set(xlabel="epoch", ylabel=name, title=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
    figure.tight_layout()
    return figure


def save_training_curves(
    history: Mapping[str, Sequence[float]], path_loss: str | Path, path_metric: str | Path
) -> list[Path]:
    """Loss curve (``loss`` and ``val_loss``) and one metric subplot per other logged quantity.

    Args:
        history: Keras ``History.history``-style dict, key -> per-epoch values; ``val_<name>`` keys are
            drawn dashed beside ``<name>``. ``learning_rate``/``lr`` are skipped.
        path_loss: PNG for the loss (700×400 px).
        path_metric: PNG for the metrics (700×400 px per metric); not written when only the loss is logged.

    Returns:
        The paths written.
    """
    if "loss" not in history:
        raise ValueError(f"history must contain 'loss', got keys {sorted(history)}")
    metric_names = [key for key in history
                    if key != "loss" and not key.startswith("val_") and key not in NOT_METRICS]
    written = [_save(_curve_figure(history, ["loss"]), path_loss)]
    if metric_names:
        written.append(_save(_curve_figure(history, metric_names), path_metric))
    return written


def _save_single_image(image: np.ndarray, path: Path, *, cmap: str | None = None) -> Path:
    """One picture as a PNG at its own resolution (no axes), via matplotlib's image writer."""
    from matplotlib.image import imsave

    shown, default_cmap = _display_image(image) if cmap is None else (np.asarray(image, np.float32), cmap)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shown.ndim == 2:
        vmin, vmax = (0.0, 1.0) if cmap is None else (float(shown.min()), float(shown.max()) or 1.0)
        imsave(path, shown, cmap=cmap or default_cmap, vmin=vmin, vmax=vmax)
    else:
        imsave(path, shown)
    return path


def _code_mosaic(code: np.ndarray) -> np.ndarray:
    """An encoder output (h×w×k feature maps, or a flat vector) tiled into one 2-D picture normalised to [0, 1]."""
    code = np.asarray(code, np.float32)
    if code.ndim == 1:
        side = int(np.ceil(np.sqrt(code.size)))
        code = np.pad(code, (0, side * side - code.size)).reshape(side, side, 1)
    height, width, channels = code.shape
    columns = int(np.ceil(np.sqrt(channels)))
    rows = int(np.ceil(channels / columns))
    mosaic = np.zeros((rows * (height + 1), columns * (width + 1)), np.float32)
    for index in range(channels):
        row, column = divmod(index, columns)
        mosaic[row * (height + 1):row * (height + 1) + height, column * (width + 1):column * (width + 1) + width] = \
            code[:, :, index]
    low, high = float(mosaic.min()), float(mosaic.max())
    return (mosaic - low) / (high - low) if high > low else mosaic * 0.0


def save_inspection_images(result, folder: str | Path, *, code: np.ndarray | None = None,
                           noisy: np.ndarray | None = None, title: str = "") -> list[Path]:
    """Everything test.py shows about one inspected image, one PNG per view plus panel.png with all of them.

    `result` is a utils.inspector.InspectionResult; `code` the encoder output for the image; `noisy` the
    denoising-style noisy input (only for runs trained with --noise).
    """
    folder = Path(folder)
    views = [("input", result.input, None), ("reconstruction", result.reconstruction, None)]
    if noisy is not None:
        views.insert(1, ("noisy", noisy, None))
    if code is not None:
        views.append(("code", _code_mosaic(code), "gray"))
    written = [_save_single_image(image, folder / f"{name}.png", cmap=cmap) for name, image, cmap in views]
    written.append(_save_single_image(result.defect_mask.astype(np.float32), folder / "defect.png"))
    written.append(_save_residual(result.residual_map, folder / "residual.png"))
    written.append(_save_overlay(result, folder / "overlay.png"))
    written.append(_save_panel(result, views, folder / "panel.png", title=title))
    return written


def _save_residual(residual_map: np.ndarray, path: Path) -> Path:
    figure = Figure(figsize=(4.2, 3.6))
    axes = figure.add_subplot()
    shown = axes.imshow(residual_map, cmap="inferno", vmin=0.0, vmax=max(1.0, float(residual_map.max())))
    figure.colorbar(shown, ax=axes, label="1 − SSIM")
    axes.set_axis_off()
    axes.set_title("residual map")
    figure.tight_layout()
    return _save(figure, path)


def _overlay_axes(axes, result) -> None:
    """Input with defect contours (red) and the box of every blob of at least min_area (yellow)."""
    image, cmap = _display_image(result.input)
    axes.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
    if result.defect_mask.any():
        axes.contour(result.defect_mask.astype(np.float32), levels=[0.5], colors=PREDICTED_COLOR, linewidths=1.0)
    large = [blob.bbox for blob in result.blobs if blob.area >= result.min_area] or [b.bbox for b in result.blobs[:1]]
    _draw_boxes(axes, large, "yellow")
    axes.set_axis_off()


def _save_overlay(result, path: Path) -> Path:
    figure = Figure(figsize=(4, 4))
    axes = figure.add_subplot()
    _overlay_axes(axes, result)
    axes.set_title(f"{result.verdict}  score {result.score:.3g}")
    figure.tight_layout()
    return _save(figure, path)


def _save_panel(result, views: list, path: Path, *, title: str) -> Path:
    """All views side by side; verdict, score and threshold in the title."""
    panels = len(views) + 3
    figure = Figure(figsize=(2.6 * panels, 3.2))
    for index, (name, image, cmap) in enumerate(views):
        axes = figure.add_subplot(1, panels, index + 1)
        shown, default_cmap = _display_image(image) if cmap is None else (image, cmap)
        axes.imshow(shown, cmap=cmap or default_cmap, vmin=0.0, vmax=1.0)
        axes.set_title(name)
        axes.set_axis_off()
    residual_axes = figure.add_subplot(1, panels, len(views) + 1)
    residual_axes.imshow(result.residual_map, cmap="inferno", vmin=0.0, vmax=max(1.0, float(result.residual_map.max())))
    residual_axes.set_title("residual")
    residual_axes.set_axis_off()
    defect_axes = figure.add_subplot(1, panels, len(views) + 2)
    defect_axes.imshow(result.defect_mask, cmap="gray", vmin=0, vmax=1)
    defect_axes.set_title("defect")
    defect_axes.set_axis_off()
    _overlay_axes(figure.add_subplot(1, panels, panels), result)
    figure.suptitle(f"{title}  {result.verdict}: score {result.score:.4g} (threshold {result.threshold:.4g}, "
                    f"largest blob {result.max_blob_area:.0f} px, min {result.min_area} px, {result.rule} rule)")
    figure.tight_layout()
    return _save(figure, path)
