"""Code copied between experiment scripts stays identical to its source (house style: one experiment, one file).

Every top-level definition (function, class, constant) that a script shares by name with a script it copies
from is either a verbatim copy, listed in COPIES, or a deliberate divergence, listed with its reason in
DIVERGENCES. A copy must also be used by the script that carries it. The scripts are parsed, not imported, so
this test compares the text a reader sees.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# receiving script -> {source script: names copied verbatim}
COPIES = {
    "ablation_attention.py": {"ema_lm.py": [
        "ROOT", "ALPHAS", "DATASETS", "EVAL_SPLIT", "get_tokens", "get_batch", "val_windows",
        "ema_chunk_matrices", "chunk_carries", "EMAScan", "ema_scan", "FFN", "CausalSelfAttention", "token_losses",
        "evaluate", "OUT_OF_MEMORY"]},
    "hebbian_roles.py": {
        "bigru_baseline.py": ["REPO", "SPLITS", "EVAL_SPLITS", "REGENERATE", "read_role_file", "load_role_data",
                              "structure_dependent", "flatten_split", "summarise_seeds"]},
}

# (receiving script, name) -> why it differs from the source's definition of the same name
DIVERGENCES = {
    ("ablation_attention.py", "ModelConfig"): "adds the predictor and its heads",
    ("ablation_attention.py", "PRESETS"): "its own budgets: 12 runs must fit the CPU and the GPU",
    ("ablation_attention.py", "SPENBlock"): "the block with a choice of predictor (the ablation itself)",
    ("ablation_attention.py", "AttentionBlock"): "softmax attention only; ema_lm.py's also builds linear attention",
    ("ablation_attention.py", "LanguageModel"): "chooses the block by row and counts predictor parameters",
    ("hebbian_roles.py", "Config"): "the Hebbian network's settings, not the BiGRU's",
    ("hebbian_roles.py", "encode"): "token ids for the Hebbian network (the BiGRU pads and batches its own)",
    ("content_recall.py", "MIXERS"): "ema_lm.py's mixers plus the two localisation rows",
    ("content_recall.py", "PRESETS"): "sweep presets, not model presets",
    ("ablation_attention.py", "model_config"): "the config of one ablation row, not of ema_lm.py's flags",
    ("content_recall.py", "model_config"): "the config of one MQAR run (width, length), not of ema_lm.py's flags",
}
OWN = {"main", "get_args", "parse_args", "ROOT"}  # every script's own command line and folder

SOURCES = sorted({(r, s) for r, by in COPIES.items() for s in by} | {(r, "ema_lm.py") for r, _ in DIVERGENCES})


def definitions(script: str) -> dict:
    """Top-level name -> its exact source text."""
    text = (REPO / script).read_text()
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = ast.get_source_segment(text, node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = ast.get_source_segment(text, node)
    return out


def used_copies(script: str) -> set:
    """The copied names the script's own code needs, directly or through other copies: a copy that only other
    unused copies call counts as unused."""
    copied = {n for names in COPIES.get(script, {}).values() for n in names}
    loads = {}  # top-level statement -> the names it reads
    for node in ast.parse((REPO / script).read_text()).body:
        name = getattr(node, "name", None) or next((t.id for t in getattr(node, "targets", [getattr(node, "target",
                                                                                                      None)])
                                                    if isinstance(t, ast.Name)), None)
        read = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        loads.setdefault(name if name in copied else None, set()).update(read)
    used, todo = set(), set(loads.get(None, set())) & copied  # what the script's own code reads
    while todo:
        name = todo.pop()
        used.add(name)
        todo |= (loads.get(name, set()) & copied) - used
    return used


@pytest.mark.parametrize("receiver,source,name",
                         [(r, s, n) for r, by in COPIES.items() for s, names in by.items() for n in names])
def test_copy_is_identical_and_used(receiver, source, name):
    ours, theirs = definitions(receiver), definitions(source)
    assert name in theirs, f"{source} no longer defines {name}: update COPIES in {__file__}"
    assert name in ours, f"{receiver} lacks its copy of {name} from {source}"
    assert ours[name] == theirs[name], f"{name} in {receiver} drifted from {source}: copy it again (or list it " \
                                       "in DIVERGENCES with the reason)"
    assert name in used_copies(receiver), f"{receiver} carries {name} but its own code never needs it: drop the copy"


@pytest.mark.parametrize("receiver,source", SOURCES)
def test_every_shared_name_is_a_copy_or_a_listed_divergence(receiver, source):
    ours, theirs = definitions(receiver), definitions(source)
    copies = set(COPIES.get(receiver, {}).get(source, []))
    for name in sorted(set(ours) & set(theirs) - OWN - copies):
        assert (receiver, name) in DIVERGENCES, f"{receiver} and {source} both define {name} and it is neither " \
                                                "a listed copy nor a listed divergence"
        assert ours[name] != theirs[name], f"{name} is now identical in {receiver} and {source}: move it to COPIES"
