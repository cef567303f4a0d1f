#!/usr/bin/python3
"""Draws facevec's evaluation and training figures to a PNG.

Usage: plot.py DATA.json OUT.png

DATA.json is written by facevec (train/plot.h): "kind" is "verification"
(ROC curve and same/different distance histograms) or "training" (loss
and validation figures per epoch, from the training report).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HIST_BINS = 60
FIG_SIZE = (11, 4.5)
DPI = 100
SMALLEST_FAR = 1e-4


def plot_verification(data, out):
    fig, (roc, hist) = plt.subplots(1, 2, figsize=FIG_SIZE)
    far = [max(f, SMALLEST_FAR) for f in data["roc"]["far"]]
    roc.plot(far, data["roc"]["tar"])
    roc.set_xscale("log")
    roc.set_xlim(SMALLEST_FAR, 1)
    roc.set_ylim(0, 1.01)
    roc.set_xlabel("false accept rate")
    roc.set_ylabel("true accept rate")
    roc.set_title("ROC (AUC %.4f)" % data["auc"])
    roc.grid(True, which="both", alpha=0.3)

    hist.hist(data["same"], bins=HIST_BINS, alpha=0.6, label="same person")
    hist.hist(data["different"], bins=HIST_BINS, alpha=0.6,
              label="different people")
    hist.axvline(data["threshold"], color="k", linestyle="--",
                 label="threshold %.4g" % data["threshold"])
    hist.set_xlabel("distance")
    hist.set_ylabel("pairs")
    hist.set_title("distances (accuracy %.4f)" % data["accuracy"])
    hist.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)


def plot_training(data, out):
    epochs = [e["epoch"] for e in data["epochs"]]
    fig, (loss, val) = plt.subplots(1, 2, figsize=FIG_SIZE)
    loss.plot(epochs, [e["loss"] for e in data["epochs"]], marker="o")
    loss.set_xlabel("epoch")
    loss.set_ylabel("triplet loss")
    loss.set_title("training loss")
    loss.grid(True, alpha=0.3)

    for key, label in (("accuracy", "verification accuracy"),
                       ("tar_at_far_1e-3", "TAR @ FAR 1e-3"),
                       ("rank1", "rank-1")):
        val.plot([0] + epochs,
                 [data["untrained"][key]]
                 + [e["validation"][key] for e in data["epochs"]],
                 marker="o", label=label)
    if data.get("best_epoch", 0) > 0:
        val.axvline(data["best_epoch"], color="k", linestyle="--",
                    label="best epoch")
    val.set_xlabel("epoch (0: untrained)")
    val.set_ylim(0, 1.01)
    val.set_title("validation (held-out people)")
    val.grid(True, alpha=0.3)
    val.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py DATA.json OUT.png")
    with open(sys.argv[1]) as f:
        data = json.load(f)
    kinds = {"verification": plot_verification, "training": plot_training}
    kind = data.get("kind")
    if kind not in kinds:
        sys.exit("plot.py: unknown kind %r" % kind)
    kinds[kind](data, sys.argv[2])


if __name__ == "__main__":
    main()
