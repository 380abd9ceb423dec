"""The LM comparison over seeds: loss by token class and the copy probe of finished ema_lm.py runs.

    python results/lm/compare.py runs/ptb-ema-small-s* runs/ptb-attention-small-s* runs/ptb-gla-small-s*

Reads each run folder's final.json (or eval.json from `python ema_lm.py --eval-only`, whichever is later), groups
the runs by mixer and by every setting that changes the model (an FFN that is not the block's own, the block,
--conv-kernel, --depth-mixing; from config.json), and prints a Markdown table: perplexity and loss by
token class (ema_lm.py's token_classes), mean +- std over the runs (ddof 1), and the copy probe. Below it, for
every group after the first, the share of its loss gap to the first group that each token class carries. Refused,
with one message each: runs scored on other validation windows, partial runs (a final.json of --steps-this-run,
an eval.json of an unfinished run: marked partial, or at a step short of config.json's --max-steps), a run given
twice, and a folder or score file that is missing or damaged.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for ema_lm
from ema_lm import SPEN_MIXERS, TOKEN_CLASSES  # noqa: E402
from plumbing import command_line, read_json  # noqa: E402


def latest_scores(run_dir: str) -> dict:
    """A finished run's scores: final.json or eval.json (--eval-only), whichever was written at the later step."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise SystemExit(f"compare.py: {run_dir} is a file; give ema_lm.py run folders (its --out-dir)")
    fix = f"score the run again with `python ema_lm.py --eval-only --out-dir {run_dir}`"
    found = [read_json(p, fix) for p in (Path(run_dir) / "final.json", Path(run_dir) / "eval.json") if p.exists()]
    if not found:
        raise SystemExit(f"compare.py: {run_dir} holds no final.json or eval.json; finish the run or run "
                         f"`python ema_lm.py --eval-only --out-dir {run_dir}` first")
    keys = ("step", "mixer", "ffn", "val_ppl", "probe_first", "probe_second")
    if not all(isinstance(r, dict) and all(k in r for k in keys) for r in found):
        raise SystemExit(f"compare.py: {run_dir}'s final.json or eval.json is not the score record of an ema_lm.py "
                         f"run (it needs {', '.join(keys)}); {fix}")
    r = max(found, key=lambda r: r["step"])
    config = read_json(Path(run_dir) / "config.json", fix, default={})
    config = config.get("config", {}) if isinstance(config, dict) else {}
    r["group"] = group_name(r, config)
    max_steps = r.get("max_steps") or config.get("max_steps")
    if max_steps is not None and r["step"] < max_steps:  # an eval.json written before --partial was recorded
        r["partial"] = True
    if r.get("partial") or "classes" not in r:
        raise SystemExit(f"compare.py: {run_dir} holds a partial run (step {r['step']}) or scores without the "
                         f"token-class breakdown; finish it with --resume, or score it with --eval-only")
    return r


def group_name(r: dict, config: dict) -> str:
    """The table's row label: the mixer, then each setting that differs from the paper's model (older runs
    record None for settings that did not exist yet, which were then the defaults)."""
    own_ffn = "sparse" if r["mixer"] in SPEN_MIXERS else "dense"
    extras = [f"{r['ffn']} FFN" if r["ffn"] != own_ffn else "",
              f"{config['block']} block" if config.get("block") not in (None, "auto") else "",
              f"conv {config['conv_kernel']}" if config.get("conv_kernel") else "",
              config["depth_mixing"] if config.get("depth_mixing") not in (None, "residual") else ""]
    return ", ".join([r["mixer"], *filter(None, extras)])


def compare_runs(run_dirs: list) -> dict:
    """Loss by token class and the copy probe, mean +- std over the runs of each group (group_name), and the
    share of the loss gap between the first group and each other one that every class carries:
    n_c (L_c^other - L_c^first) / (N (L^other - L^first)); the shares add up to 1."""
    resolved = [Path(d).resolve() for d in run_dirs]
    twice = sorted({str(d) for d in resolved if resolved.count(d) > 1})
    if twice:
        raise SystemExit(f"compare.py: {', '.join(twice)} given more than once; each run counts once in a mean")
    groups = {}
    for d in run_dirs:
        r = latest_scores(d)
        first = next(iter(groups.values()), [r])[0]
        if any(r["classes"][c]["count"] != first["classes"][c]["count"] for c in r["classes"]):
            raise SystemExit(f"compare.py: {d} was scored on other validation windows than the first run "
                             "(block size, --eval-tokens or dataset differ); compare runs scored alike")
        groups.setdefault(r["group"], []).append(r)
    cols, probes = ("all", *TOKEN_CLASSES), ("probe_first", "probe_second")
    counts = next(iter(groups.values()))[0]["classes"]
    mean = {m: {c: np.mean([r["classes"][c]["loss"] for r in rs]) for c in cols} for m, rs in groups.items()}

    def cell(values: list, fmt: str) -> str:  # mean +- std over seeds (ddof 1); one run: its value alone
        return f"{np.mean(values):{fmt}}" + (f" +- {np.std(values, ddof=1):{fmt}}" if len(values) > 1 else "")
    print("| mixer (runs) | perplexity | " + " | ".join(f"{c} ({counts[c]['count']:,})" for c in cols)
          + " | probe: 1st copy | 2nd copy |\n" + "|---" * (len(cols) + 4) + "|")
    for m, rs in groups.items():
        print(f"| {m} ({len(rs)}) | " + " | ".join([cell([r["val_ppl"] for r in rs], ".1f")]
              + [cell([r["classes"][c]["loss"] for r in rs], ".3f") for c in cols]
              + [cell([r[k] for r in rs], ".2f") for k in probes]) + " |")
    base, shares = next(iter(groups)), {}
    for m in list(groups)[1:]:
        gap = counts["all"]["count"] * (mean[m]["all"] - mean[base]["all"])
        shares[m] = {c: counts[c]["count"] * (mean[m][c] - mean[base][c]) / gap for c in TOKEN_CLASSES}
        print(f"share of the gap {m} - {base} ({mean[m]['all'] - mean[base]['all']:+.3f} nats): "
              + ", ".join(f"{c} {s:.0%}" for c, s in shares[m].items()))
    return dict(mean=mean, shares=shares, runs={m: len(rs) for m, rs in groups.items()})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("runs", nargs="+", help="finished ema_lm.py run folders; the first one's mixer is the reference")
    return compare_runs(p.parse_args(argv).runs)


if __name__ == "__main__":
    command_line(main)
