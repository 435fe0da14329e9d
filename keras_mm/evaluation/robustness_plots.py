"""PNG plots of a robustness report (matplotlib, Agg backend)."""

import os


def plot_head(entry, head, out_dir):
    """Writes `robustness_<head>_noise.png` (one line per modality) and,
    when the report has subsets, `robustness_<head>_subsets.png` (bars);
    returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    better = "higher" if entry["higher_is_better"] else "lower"
    ylabel = f"{entry['metric']} ({better} is better)"
    if entry["noise"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for mod, noise in entry["noise"].items():
            ax.plot(noise["levels"], noise["metric"], marker="o", label=mod)
        ax.set_xlabel("noise level (0 = clean)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{head}: noise per modality")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"robustness_{head}_noise.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    bars = entry.get("subsets") or entry.get("removed")
    if bars:
        labels = list(bars) if "subsets" in entry else [
            f"without {m}" for m in bars]
        fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(bars) + 2), 3.5))
        ax.bar(range(len(bars)), list(bars.values()))
        ax.set_xticks(range(len(bars)), labels, rotation=45, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{head}: modalities present")
        fig.tight_layout()
        path = os.path.join(out_dir, f"robustness_{head}_subsets.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
