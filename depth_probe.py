"""depth_probe.py: does a fixed-coefficient residual stream dilute token identity across depth?

Hypothesis (paper, arXiv 2604.08556, abstract): fixed-coefficient accumulation suffers irreversible dilution
"whether across time or depth", which only learned, input-dependent selection can resolve. A residual stream is
such an accumulator across depth: block l adds its update with weight 1, so the embedding of the current token is
one term in an ever longer sum. ema_lm.py's --depth-mixing makes that accumulation learned, as a constant weighting
(dwa, DenseFormer's depth-weighted average) or as a function of the token's state (dynamic, hyper-connections'
dynamic form); see its DepthMixing. What each reading predicts for this probe:
    dilution by a fixed sum   the current token's linear decodability falls with depth under residual, and
                              dwa and dynamic keep it higher at the last block;
    the paper's sentence      only dynamic (input-dependent) keeps it; dwa behaves like residual;
    no dilution               residual keeps it about as well as the learned mixings (the network writes what
                              it needs into the stream, and a linear read recovers it).
The previous token and the token 8 back measure the other direction: what the mixers have written into the stream.

What it does: for each run folder of ema_lm.py (its ckpt.pt, frozen), the state every block reads (the input of
block 0 = the embedding, ..., of block L-1) and the final LayerNorm's input, L + 1 states of width D per token,
on 256 training windows (fit) and on the first 256 windows of the run's own validation set (score). For each
state and each lag in (0, 1, 8) a linear probe decodes the token at position t - lag: ridge regression onto
one-hot targets over the 1,000 most frequent token ids of the fitting windows (about 80% of PTB's tokens; the
others are not scored), features standardised on the fitting windows, a bias, penalty 1e-3 x n (fixed, not
tuned). Accuracy is over the scored validation positions; chance is the most frequent id's share there.
A closed-form ridge probe, not a softmax one: 18 models x 5 states x 3 lags fit in seconds, and every state gets
the same probe. Results go to <run>/depth_probe.json; several runs give the table over seeds and the figure.

Commands:
    python depth_probe.py runs/depth/*                         # probe every run, print the table, save the figure
    python depth_probe.py results/lm/depth/* --figure figures/depth_probe.png   # redraw from the committed runs

Measured: results/lm/README.md, "Across depth" (CPU, 3 seeds; the runs come from
`python ema_lm.py --mixer M --depth-mixing X --seed S`).

Glossary: B batch, T context length, D width, L blocks, V vocabulary, K probed classes (1,000).
"""
# ----------------------------------------------------------------------------- imports
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import ema_lm as E
from plumbing import command_line, help_formatter, load_checkpoint, write_json_atomic

LAGS = (0, 1, 8)  # the current token, the previous one, the token 8 positions back
N_CLASSES = 1000  # the most frequent token ids of the fitting windows
N_WINDOWS = 256  # fitting windows from the training split, and scored validation windows
RIDGE = 1e-3  # penalty per fitting position, on standardised features

# ----------------------------------------------------------------------------- data: the states


@torch.no_grad()
def block_states(model: E.LanguageModel, windows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """The state every block reads and the final LayerNorm's input: (L + 1, n_windows, T, D), float64."""
    model.eval()
    out = []
    for i in range(0, len(windows), batch):
        states = []
        model(windows[i:i + batch], states=states)
        out.append(torch.stack(states).double())  # (L + 1, b, T, D)
    return torch.cat(out, 1)


def train_windows(data: np.ndarray, T: int, n: int, seed: int = 1234) -> torch.Tensor:
    """n random windows of T training tokens, the same for every run with this T."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(data) - T, (n,), generator=gen).tolist()
    return torch.stack([torch.from_numpy(data[s:s + T].astype(np.int64)) for s in starts])  # (n, T)


# ----------------------------------------------------------------------------- evaluation: the probe


def lagged(states: torch.Tensor, windows: torch.Tensor, lag: int) -> tuple:
    """Features at positions t >= lag and the token at t - lag: (L + 1, n, D) and (n,)."""
    return states[:, :, lag:].flatten(1, 2), windows[:, :windows.shape[1] - lag].flatten()


def ridge_probe(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                classes: torch.Tensor) -> float:
    """Accuracy of a ridge regression onto one-hot targets (argmax over `classes`), fitted on (x_fit, y_fit)
    and scored on the validation positions whose token is one of `classes`."""
    index = torch.full((int(max(classes.max(), y_fit.max(), y_val.max())) + 1,), -1, dtype=torch.long)
    index[classes] = torch.arange(len(classes))
    keep_fit, keep_val = index[y_fit] >= 0, index[y_val] >= 0
    x_fit, c_fit, x_val, c_val = x_fit[keep_fit], index[y_fit[keep_fit]], x_val[keep_val], index[y_val[keep_val]]
    mean, std = x_fit.mean(0), x_fit.std(0).clamp(min=1e-8)
    one = torch.ones(len(x_fit), 1, dtype=x_fit.dtype)
    X = torch.cat([(x_fit - mean) / std, one], 1)  # (n, D + 1)
    XtY = torch.zeros(X.shape[1], len(classes), dtype=X.dtype).index_add_(1, c_fit, X.t())  # X^T one-hot
    W = torch.linalg.solve(X.t() @ X + RIDGE * len(X) * torch.eye(X.shape[1], dtype=X.dtype), XtY)
    Xv = torch.cat([(x_val - mean) / std, torch.ones(len(x_val), 1, dtype=X.dtype)], 1)
    return (Xv @ W).argmax(1).eq(c_val).double().mean().item()


def probe_run(run: Path) -> dict:
    """Every state of the run's frozen model, every lag: probe accuracy, chance and coverage."""
    ckpt = load_checkpoint(run / "ckpt.pt")
    cfg, args = E.ModelConfig(**ckpt["model_config"]), ckpt["args"]
    model = E.LanguageModel(cfg)
    model.load_state_dict(ckpt["model"])
    model.head = nn.Identity()  # the probe reads the states; the 50k-way output layer is not needed
    T = cfg.block_size
    fit = train_windows(E.get_tokens(args["dataset"], "train"), T, N_WINDOWS)
    val = E.val_windows(E.get_tokens(args["dataset"], E.EVAL_SPLIT[args["dataset"]]), T, N_WINDOWS * T)
    val = val[:len(val) - 1].view(-1, T)  # (n, T): the first windows of the run's fixed validation set
    s_fit, s_val = block_states(model, fit), block_states(model, val)
    classes = torch.bincount(fit.flatten()).argsort(descending=True)[:N_CLASSES]
    out = dict(run=run.name, mixer=cfg.mixer, depth_mixing=cfg.depth_mixing, seed=args["seed"], step=ckpt["step"],
               lags=list(LAGS), n_classes=N_CLASSES, ridge=RIDGE, fit_windows=len(fit), val_windows=len(val),
               accuracy={}, chance={}, coverage={})
    for lag in LAGS:
        (x_fit, y_fit), (x_val, y_val) = lagged(s_fit, fit, lag), lagged(s_val, val, lag)
        out["accuracy"][lag] = [ridge_probe(x_fit[d], y_fit, x_val[d], y_val, classes) for d in range(len(s_fit))]
        scored = y_val[torch.isin(y_val, classes)]
        out["chance"][lag] = torch.bincount(scored).max().item() / len(scored)
        out["coverage"][lag] = len(scored) / len(y_val)
    return out


# ----------------------------------------------------------------------------- results: table and figure


def summarise(probes: list, finals: list) -> list:
    """One row per (mixer, depth mixing): mean and std over seeds of perplexity, loss by token class and the
    probe's accuracy at the last state, for every lag."""
    groups = {}
    for p, f in zip(probes, finals):
        groups.setdefault((p["mixer"], p["depth_mixing"]), []).append((p, f))
    rows = []
    for (mixer, depth), runs in groups.items():
        def stat(values):
            v = np.array(values, dtype=float)
            return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        row = dict(mixer=mixer, depth_mixing=depth, seeds=sorted(p["seed"] for p, _ in runs),
                   ppl=stat([f["val_ppl"] for _, f in runs]))
        for c in E.TOKEN_CLASSES:
            row[c] = stat([f["classes"][c]["loss"] for _, f in runs])
        for lag in LAGS:
            row[f"last_lag{lag}"] = stat([p["accuracy"][str(lag)][-1] for p, _ in runs])
            row[f"curve_lag{lag}"] = np.mean([p["accuracy"][str(lag)] for p, _ in runs], 0).tolist()
        rows.append(row)
    order = {m: i for i, m in enumerate(E.MIXERS)}
    return sorted(rows, key=lambda r: (order[r["mixer"]], E.DEPTH_MIXINGS.index(r["depth_mixing"])))


def format_table(rows: list, chance: dict) -> str:
    pm = lambda s, f: f"{s[0]:{f}} +- {s[1]:{f}}"  # noqa: E731
    lines = ["| mixer | depth mixing | seeds | perplexity | induction | repeated | novel | "
             + " | ".join(f"probe, last state, lag {lag}" for lag in LAGS) + " |", "|---" * (7 + len(LAGS)) + "|"]
    for r in rows:
        lines.append(f"| {r['mixer']} | {r['depth_mixing']} | {len(r['seeds'])} | {pm(r['ppl'], '.1f')} | "
                     + " | ".join(pm(r[c], ".3f") for c in E.TOKEN_CLASSES) + " | "
                     + " | ".join(pm(r[f"last_lag{lag}"], ".3f") for lag in LAGS) + " |")
    lines.append("chance (the most frequent probed id): " + ", ".join(f"lag {k} {v:.3f}" for k, v in chance.items()))
    return "\n".join(lines)


def save_figure(rows: list, chance: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(LAGS), figsize=(4.2 * len(LAGS), 3.4), sharey=False)
    styles = {"residual": "-", "dwa": "--", "dynamic": ":"}
    for ax, lag in zip(axes, LAGS):
        for r in rows:
            color = f"C{E.MIXERS.index(r['mixer'])}"
            curve = r[f"curve_lag{lag}"]
            ax.plot(range(len(curve)), curve, styles.get(r["depth_mixing"], "-"), color=color, marker="o", ms=3,
                    label=f"{r['mixer']}, {r['depth_mixing']}")
        ax.axhline(chance[lag], color="gray", lw=1, ls=":", label="chance")
        ax.set_title({0: "current token", 1: "previous token", 8: "token 8 back"}.get(lag, f"lag {lag}"))
        ax.set_xlabel("state (0 = embedding, L = final)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe accuracy (validation)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI and main


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=help_formatter())
    p.add_argument("runs", nargs="+", help="ema_lm.py run folders (each with final.json, and ckpt.pt unless it holds "
                   "depth_probe.json already: a committed record is redrawn without its checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="probe again a run that has depth_probe.json")
    p.add_argument("--figure", default="figures/depth_probe.png", help="where to save the figure ('' = none)")
    args = p.parse_args(argv)
    for run in args.runs:
        probed = (Path(run) / "depth_probe.json").exists() and not args.overwrite
        needed = ("final.json",) if probed else ("final.json", "ckpt.pt")
        missing = [f for f in needed if not (Path(run) / f).exists()]
        if missing:
            p.error(f"{run} has no {' or '.join(missing)}: give finished ema_lm.py run folders")
    return args


def main(argv=None) -> dict:
    args = get_args(argv)
    probes, finals = [], []
    for run in map(Path, args.runs):
        path = run / "depth_probe.json"
        if args.overwrite or not path.exists():
            write_json_atomic(path, probe_run(run))
        probes.append(json.loads(path.read_text()))
        finals.append(json.loads((run / "final.json").read_text()))
        p = probes[-1]
        print(f"{run}: " + "; ".join(f"lag {k} " + " ".join(f"{a:.3f}" for a in v) for k, v in p["accuracy"].items()))
    chance = {lag: float(np.mean([p["chance"][str(lag)] for p in probes])) for lag in LAGS}
    rows = summarise(probes, finals)
    print(format_table(rows, chance))
    if args.figure:
        save_figure(rows, chance, Path(args.figure))
        print(f"figure: {args.figure}")
    return dict(rows=rows, chance=chance)


if __name__ == "__main__":
    command_line(main)
