"""When does a model learn to copy? The repeated-segment probe against tokens seen, one line per run.

    python results/lm/plot_onset.py runs/onset/ptb-*-T256-s0 --out figures/lm_copy_onset.png

Reads each run folder's metrics.jsonl (written by ema_lm.py at every evaluation) and plots the probe gap,
the loss on the first copy of a random segment minus the loss on its second copy: 0 for a model that cannot
copy, ln(V) for a perfect copier. The lower panel is the validation loss of the same evaluations.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for plumbing
from plumbing import command_line, read_json, read_jsonl  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("runs", nargs="+", help="run folders of ema_lm.py (each with metrics.jsonl and config.json)")
    p.add_argument("--out", default="figures/lm_copy_onset.png", help="where to write the PNG")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
    curves = {}
    for run in map(Path, args.runs):
        config = read_json(run / "config.json", "give ema_lm.py run folders (each has a config.json)")
        evals = [r for r in read_jsonl(run / "metrics.jsonl") if "probe_gap" in r]
        if not evals:
            raise SystemExit(f"{run}/metrics.jsonl has no probe records: was it written by this ema_lm.py?")
        dataset, mixer = config["config"]["dataset"], config["model_config"]["mixer"]
        tokens = [r["tokens"] / 1e6 for r in evals]
        curves[mixer] = dict(tokens=tokens, gap=[r["probe_gap"] for r in evals],
                             val=[r[f"val_loss_{dataset}"] for r in evals])
        top.plot(tokens, curves[mixer]["gap"], marker=".", label=mixer)
        bottom.plot(tokens, curves[mixer]["val"], marker=".", label=mixer)
    top.axhline(0, color="gray", lw=1, ls=":")
    top.set_ylabel("probe gap (nats):\n1st copy - 2nd copy")
    bottom.set_ylabel(f"validation loss ({dataset})")
    bottom.set_xlabel("training tokens seen (millions)")
    top.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return curves


if __name__ == "__main__":
    command_line(main)
