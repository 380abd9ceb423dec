"""C4 (allenai/c4, `en` variant) as GPT-2 tokens, for the paper's "C4 perplexity" (260 for the 130M EMA LM).

    python data/c4/prepare.py                                   # download 1 train + 1 validation shard
    python data/c4/prepare.py --train-shards 8                  # more training data (~170M tokens/shard)
    python data/c4/prepare.py --local-files ~/c4/en             # shards you already have, no network

Source: https://huggingface.co/datasets/allenai/c4, files `en/c4-train.XXXXX-of-01024.json.gz` and
`en/c4-validation.XXXXX-of-00008.json.gz`: gzip JSON lines with fields text, timestamp, url; we use `text`,
one document per line, end-of-text (50256) appended after each. Downloads are cached in data/c4/cache/.

Validation set (a reconstruction choice; the paper does not say which C4 tokens it evaluated on):
val.bin is exactly the first --val-tokens tokens (default 10,000,000) of the validation shards read in
order, starting at c4-validation.00000-of-00008.json.gz, documents in file order, cut mid-document at the
limit. One validation shard holds about 45k documents, roughly 20M GPT-2 tokens, so the default needs only
the first shard. Every model compared is evaluated on this same file.

Train: shards 00000 .. N-1 in order, appended shard by shard to a temporary file (the paper's scale does not
fit in memory), stopping at --max-tokens if given.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):  # run as `python data/c4/prepare.py`: make `data.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data.common import (DATA_DIR, command_line, download_file, hf_url, new_meta, NotEnoughTokensError,
                         tokenize_to_file, write_json_atomic)

VERSION = "data/c4/prepare.py v1"
HF_REPO = "allenai/c4"
N_SHARDS = {"train": 1024, "validation": 8}


def shard_name(split: str, index: int) -> str:
    """c4-train.00000-of-01024.json.gz, c4-validation.00000-of-00008.json.gz, ..."""
    n = N_SHARDS[split]
    if not 0 <= index < n:
        raise ValueError(f"C4 {split} has shards 0..{n - 1}, asked for shard {index}")
    return f"c4-{split}.{index:05d}-of-{n:05d}.json.gz"


def read_c4_texts(path: Path) -> Iterator[str]:
    """The `text` field of every line of a C4 shard (gzip JSON lines: text, timestamp, url)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ValueError(f"{path}:{line_no} is not a C4 JSON line with a 'text' field: {e}") from e


def shard_path(split: str, index: int, local_files: Path | None, cache_dir: Path) -> Path:
    """A local shard (--local-files) or a downloaded one, fetched only when it is needed."""
    name = shard_name(split, index)
    if local_files is not None:
        path = Path(local_files).expanduser() / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: --local-files must hold the C4 shards by their hub names "
                                    f"({name}, ...), or leave it out to download them")
        return path
    return download_file(hf_url(HF_REPO, f"en/{name}"), cache_dir / name)


def iter_split(split: str, n_shards: int, local_files: Path | None, cache_dir: Path) -> Iterator[str]:
    for i in range(n_shards):
        yield from read_c4_texts(shard_path(split, i, local_files, cache_dir))


def prepare(out_dir: Path | None = None, train_shards: int = 1, val_shards: int = 1,
            val_tokens: int = 10_000_000, max_tokens: int | None = None, local_files: Path | None = None,
            cache_dir: Path | None = None) -> dict:
    """Write val.bin (exactly val_tokens tokens), train.bin and meta.json into out_dir; return meta."""
    out_dir = Path(out_dir) if out_dir is not None else DATA_DIR / "c4"
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    meta = new_meta(source=f"https://huggingface.co/datasets/{HF_REPO} (en)" if local_files is None
                    else f"{HF_REPO} (en) shards from {local_files}", generator=VERSION)
    meta.update(files={}, shards={}, documents={}, tokens={},
                validation_definition=f"first {val_tokens:,} tokens of the validation shards in order"
                if val_tokens else "all tokens of the validation shards")

    try:
        val = tokenize_to_file(out_dir / "val.bin", iter_split("validation", val_shards, local_files, cache_dir),
                               max_tokens=val_tokens or None, desc="c4 val", exact=True)
    except NotEnoughTokensError as e:
        raise ValueError(f"{e}: the first {val_shards} C4 validation shard(s) are too short for "
                         f"--val-tokens {val_tokens:,}; raise --val-shards or lower --val-tokens") from e
    train = tokenize_to_file(out_dir / "train.bin", iter_split("train", train_shards, local_files, cache_dir),
                             max_tokens=max_tokens, desc="c4 train")
    for split, stats, c4_split, n in (("train", train, "train", train_shards), ("val", val, "validation", val_shards)):
        meta["files"][split] = f"{split}.bin"
        meta["shards"][split] = [shard_name(c4_split, i) for i in range(n)]
        meta["documents"][split] = stats["documents"]
        meta["tokens"][split] = stats["tokens"]
    write_json_atomic(out_dir / "meta.json", meta)  # written last: its presence means the .bin files are complete
    return meta


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-shards", type=int, default=1,
                        help="number of train shards (of 1024) to use, from 00000")
    parser.add_argument("--val-shards", type=int, default=1,
                        help="number of validation shards (of 8) to read, from 00000")
    parser.add_argument("--val-tokens", type=int, default=10_000_000,
                        help="val.bin = exactly this many tokens from the start of the validation shards (0: all)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="stop train.bin after this many tokens (default: all)")
    parser.add_argument("--local-files", type=Path, default=None,
                        help="folder holding already-downloaded shards (hub file names); nothing is downloaded")
    parser.add_argument("--out-dir", type=Path, default=None, help="output folder (default: data/c4/)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default: <out-dir>/cache/)")
    args = parser.parse_args(argv)
    t0 = time.time()
    meta = prepare(args.out_dir, args.train_shards, args.val_shards, args.val_tokens, args.max_tokens,
                   args.local_files, args.cache_dir)
    print(f"c4: tokens {meta['tokens']}, documents {meta['documents']} in {time.time() - t0:.1f}s")
    return meta


if __name__ == "__main__":
    command_line(main)
