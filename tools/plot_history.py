"""Training curve of a bundle run: loss and validation Dice per epoch, from its ``history.json``.

    python tools/plot_history.py bench/runs/default/history.json bundles/hipposeg/docs/training_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot_history(history_path: str | Path, out_png: str | Path, title: str = "") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = json.loads(Path(history_path).read_text())["epochs"]
    x = [e["epoch"] for e in epochs]
    fig = Figure(figsize=(8, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    ax_loss, ax_dice = fig.subplots(1, 2)
    ax_loss.plot(x, [e["loss"] for e in epochs], "o-", color="tab:blue", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="loss")
    val = [(e["epoch"], e["val_whole_dice"], e.get("val_mean_dice")) for e in epochs if "val_whole_dice" in e]
    if val:
        ax_dice.plot([v[0] for v in val], [v[1] for v in val], "o-", ms=3, label="whole hippocampus")
        if all(v[2] is not None for v in val):
            ax_dice.plot([v[0] for v in val], [v[2] for v in val], "s--", ms=3, label="mean of anterior, posterior")
        ax_dice.axhline(0.88, color="gray", lw=0.8, ls=":")
        ax_dice.set_ylim(max(0.0, min(v[1] for v in val) - 0.05), 1.0)
        ax_dice.legend(loc="lower right", fontsize=8)
    minutes = epochs[-1]["elapsed_s"] / 60 if epochs else 0
    ax_dice.set(xlabel="epoch", ylabel="validation Dice (fold 0, per volume)",
                title=f"validation ({minutes:.0f} min of training)")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)
    return Path(out_png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("history")
    parser.add_argument("out_png")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    print(plot_history(args.history, args.out_png, args.title))


if __name__ == "__main__":
    main()
