"""Penn Treebank (Mikolov's language-modelling split) as GPT-2 tokens: the built-in default dataset.

    python data/ptb/prepare.py        # a few seconds; writes data/ptb/{train,val,test}.bin + meta.json

Source: the `treebank` package (`treebank.penn`: 'train', 'valid', 'test', each one string with one
sentence per line, lower-cased, numbers as `N`, rare words as `<unk>`, ~0.9M/70k/80k words). 'valid'
is written as val.bin.

Documents (a reconstruction choice). PTB's sentences are consecutive sentences of Wall Street Journal
articles whose article boundaries were thrown away, so the corpus has no real document boundaries. Each
split is therefore one document: every sentence becomes `line.strip() + "\n"` (the newline plays the role
of Mikolov's `<eos>`, as in nanoGPT-style character/word PTB use), and a single end-of-text (50256) is
appended at the end of the split. Putting an end-of-text after every ~25-token sentence instead would tell
the model that its context resets every sentence, which is false for this text and would hide exactly the
long-range context the EMA traces are there to carry. `<unk>` and `N` stay literal strings and are
tokenised by GPT-2's BPE like any other text, so perplexities are per GPT-2 token, not per PTB word, and
are not comparable with word-level PTB numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python data/ptb/prepare.py`: make `data.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data.common import DATA_DIR, command_line, new_meta, tokenize_documents, write_json_atomic, write_tokens_atomic

VERSION = "data/ptb/prepare.py v1"
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # our file name -> treebank.penn key


def ptb_text(raw: str) -> str:
    """One PTB split as a single document: stripped sentence lines, each ending in a newline."""
    return "".join(line.strip() + "\n" for line in raw.splitlines() if line.strip())


def prepare(out_dir: Path | None = None) -> dict:
    """Write train.bin, val.bin, test.bin and meta.json into out_dir (default data/ptb/); return meta."""
    import treebank

    out_dir = Path(out_dir) if out_dir is not None else DATA_DIR / "ptb"
    meta = new_meta(source="treebank package (treebank.penn; Mikolov's PTB LM split)", generator=VERSION)
    meta.update(files={}, documents={}, tokens={}, sentences={},
                document_definition="each split is one document: sentence lines joined with '\\n', "
                                    "one end-of-text at the end of the split")
    for split, key in SPLITS.items():
        text = ptb_text(treebank.penn[key])
        ids = tokenize_documents([text], total=1, desc=f"ptb {split}")
        write_tokens_atomic(out_dir / f"{split}.bin", ids)
        meta["files"][split] = f"{split}.bin"
        meta["documents"][split] = 1
        meta["sentences"][split] = text.count("\n")
        meta["tokens"][split] = int(ids.size)
    write_json_atomic(out_dir / "meta.json", meta)  # written last: its presence means the .bin files are complete
    return meta


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: data/ptb/ next to this script)")
    args = parser.parse_args(argv)
    t0 = time.time()
    meta = prepare(args.out_dir)
    print(f"ptb: tokens {meta['tokens']} in {time.time() - t0:.1f}s")
    return meta


if __name__ == "__main__":
    command_line(main)
