"""PNG panels of `explain_run` (matplotlib, Agg backend).

- one panel per explained example: each modality's input with its
  attribution (image: the picture with the integrated-gradients heatmap
  over it; audio: the spectrogram beside its saliency; sensor: the
  channels' lines over a heat strip of the per-time-step scores; tabular:
  a bar per numeric column; text: a bar per token; video: the mean frame
  with the mean heatmap), then a bar chart of the modality Shapley values;
- `attribution_per_class.png`: the mean Shapley value of each modality per
  class.
"""

import os

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _show_image(ax, image):
    image = np.asarray(image, "float32")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    lo, hi = float(np.min(image)), float(np.max(image))
    image = (image - lo) / (hi - lo) if hi > lo else image * 0
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)


def _heat(attr):
    """`[H, W]` signed heat of an `[H, W, C]` (or `[H, W]`) map."""
    attr = np.asarray(attr, "float32")
    return attr.sum(axis=-1) if attr.ndim == 3 else attr


def _signed_limits(values):
    bound = float(np.max(np.abs(values))) if np.size(values) else 0.0
    return -(bound or 1.0), bound or 1.0


def _modality_axes(ax, name, modality, value, attr, summary):
    ax.set_title(f"{name} ({modality})", fontsize=9)
    if attr is None:
        ax.text(0.5, 0.5, (summary or {}).get("note", "not attributed"),
                ha="center", va="center", wrap=True, fontsize=7)
        ax.axis("off")
        return
    if modality == "image":
        _show_image(ax, value)
        lo, hi = _signed_limits(_heat(attr))
        ax.imshow(_heat(attr), cmap="bwr", alpha=0.55, vmin=lo, vmax=hi)
        ax.axis("off")
    elif modality == "video":
        _show_image(ax, np.mean(value, axis=0))
        heat = _heat(np.mean(attr, axis=0))
        lo, hi = _signed_limits(heat)
        ax.imshow(heat, cmap="bwr", alpha=0.55, vmin=lo, vmax=hi)
        ax.axis("off")
    elif modality == "audio":
        spec = np.asarray(value, "float32")
        heat = np.asarray(attr, "float32")
        if spec.ndim == 3:
            spec, heat = spec[..., 0], heat.sum(axis=-1)
        lo, hi = _signed_limits(heat)
        # Time along x: the spectrogram on top, its saliency below.
        ax.imshow(np.concatenate([(spec - spec.min()) /
                                  max(float(np.ptp(spec)), 1e-12) * 2 - 1,
                                  heat / hi], axis=1).T,
                  aspect="auto", origin="lower", cmap="bwr", vmin=-1,
                  vmax=1)
        ax.set_xlabel("time (upper: spectrogram, lower: saliency)",
                      fontsize=7)
    elif modality == "sensor":
        series = np.asarray(value, "float32")
        per_step = np.asarray(attr, "float32").sum(axis=1)
        lo, hi = _signed_limits(per_step)
        top = float(np.max(series)) if series.size else 1.0
        bottom = float(np.min(series)) if series.size else 0.0
        ax.imshow(per_step[None, :], aspect="auto", cmap="bwr", vmin=lo,
                  vmax=hi, alpha=0.5,
                  extent=(0, len(per_step), bottom, top or 1.0))
        for channel in range(series.shape[1]):
            ax.plot(np.arange(len(series)) + 0.5, series[:, channel],
                    lw=0.8, label=f"ch{channel}")
        ax.legend(fontsize=6, loc="upper right")
    elif modality == "text":
        tokens = summary.get("tokens") or [str(i) for i in summary["ids"]]
        scores = np.asarray(attr, "float32")
        used = [i for i, t in enumerate(summary["ids"]) if t != 0]
        ax.barh(range(len(used)), scores[used],
                color=["tab:red" if scores[i] > 0 else "tab:blue"
                       for i in used])
        ax.set_yticks(range(len(used)))
        ax.set_yticklabels([tokens[i] for i in used], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("occlusion score", fontsize=7)
    else:   # tabular numeric columns
        scores = np.asarray(attr, "float32")
        ax.bar(range(len(scores)), scores,
               color=["tab:red" if s > 0 else "tab:blue" for s in scores])
        ax.set_xlabel("numeric column", fontsize=7)


def plot_example(report, index, features, maps, spec, path):
    """One example's panel: its modalities and their Shapley bar."""
    plt = _plt()
    entry = report["examples"][index]
    names = list(spec["inputs"])
    fig, axes = plt.subplots(1, len(names) + 1,
                             figsize=(3.2 * (len(names) + 1), 3.2))
    for ax, name in zip(axes, names):
        modality = spec["inputs"][name]["modality"]
        summary = entry["within"].get(name) or {}
        key = summary.get("input", name)
        value = features[key][index] if key in features else None
        attr = maps[name][index] if name in maps else None
        _modality_axes(ax, name, modality, value, attr, summary)
    values = [entry["shapley"][m] for m in report["modalities"]]
    ax = axes[-1]
    ax.bar(report["modalities"], values,
           color=["tab:red" if v > 0 else "tab:blue" for v in values])
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(f"Shapley (full {entry['full']:.3f}, empty "
                 f"{entry['empty']:.3f})", fontsize=9)
    fig.suptitle(f"head {report['head']}, example {entry['key']}: label "
                 f"{entry['label']}, predicted {entry['predicted']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_per_class(report, path):
    """Grouped bars: mean Shapley value per modality, per class."""
    plt = _plt()
    classes = list(report["per_class"])
    modalities = report["modalities"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * len(classes)), 3.2))
    width = 0.8 / len(modalities)
    for j, modality in enumerate(modalities):
        ax.bar(np.arange(len(classes)) + j * width - 0.4 + width / 2,
               [report["per_class"][c][modality] for c in classes], width,
               label=modality)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=30, fontsize=8)
    ax.set_ylabel("mean Shapley value")
    ax.set_title(f"{report['head']}: modality Shapley values per "
                 f"{'class' if report['per_class_by'] == 'label' else 'run'}",
                 fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_plots(run_dir, report, features, maps, spec, suffix=""):
    """The panels of `report` (one head) into `run_dir`; returns paths."""
    paths = []
    for i in range(len(report["examples"])):
        paths.append(plot_example(
            report, i, features, maps, spec,
            os.path.join(run_dir, f"attribution{suffix}_example_{i}.png")))
    paths.append(plot_per_class(
        report, os.path.join(run_dir, f"attribution_per_class{suffix}.png")))
    return paths
