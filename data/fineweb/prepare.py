"""FineWeb (HuggingFaceFW/fineweb, sample-10BT) as GPT-2 tokens: the corpus the paper trained on (~8B tokens).

    python data/fineweb/prepare.py                                         # 1 shard: val + ~0.7B train tokens
    python data/fineweb/prepare.py --train-shards 15 --max-tokens 8000000000  # the paper's budget
    python data/fineweb/prepare.py --local-files ~/fineweb/sample/10BT     # files you already have

Source: https://huggingface.co/datasets/HuggingFaceFW/fineweb, `sample/10BT/000_00000.parquet`,
`001_00000.parquet`, ... (about 10B GPT-2 tokens in all; we believe 15 files, 000 .. 014, about 2 GB each).
Parquet needs `pyarrow`, which only this path (and WikiText from the hub) uses: it is imported when a
parquet file is read and its absence gives an install hint. FineWeb's JSON-lines exports (`.jsonl`,
`.jsonl.gz`, `.json.gz`, one object per line with a `text` field, as written by datatrove) are read with
the standard library, so `--local-files` works without pyarrow. Each row's `text` is one document,
end-of-text (50256) appended after each. Downloads are cached in data/fineweb/cache/.

Validation (a reconstruction choice; the paper reports C4 and Wiki perplexity, and FineWeb has no
validation split): val.bin is exactly the first --val-tokens tokens (default 10,000,000) of the first file,
documents in file order; train.bin starts at the next document, so the two never share a document. It is
useful to watch training; the paper's numbers come from data/c4 and data/wikitext103.

Train: the files in order, appended file by file to a temporary file (8B tokens do not fit in memory),
stopping at --max-tokens (default: the paper's 8,000,000,000).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):  # run as `python data/fineweb/prepare.py`: make `data.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data.common import (DATA_DIR, command_line, download_file, hf_url, iter_parquet_texts, new_meta,
                         NotEnoughTokensError, tokenize_to_file, write_json_atomic)

VERSION = "data/fineweb/prepare.py v1"
HF_REPO = "HuggingFaceFW/fineweb"
HUB_FOLDER = "sample/10BT"
N_HUB_FILES = 15  # sample/10BT/000_00000.parquet .. 014_00000.parquet
FILE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json.gz")


def hub_file_name(index: int) -> str:
    if not 0 <= index < N_HUB_FILES:
        raise ValueError(f"{HUB_FOLDER} has files 0..{N_HUB_FILES - 1}, asked for file {index}")
    return f"{index:03d}_00000.parquet"


def read_fineweb_texts(path: Path) -> Iterator[str]:
    """The `text` of every row of a FineWeb parquet file or JSON-lines export (optionally gzipped)."""
    name = Path(path).name
    if name.endswith(".parquet"):
        yield from iter_parquet_texts(path, "text")
        return
    if not name.endswith(FILE_SUFFIXES):
        raise ValueError(f"{path}: expected one of {FILE_SUFFIXES}")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ValueError(f"{path}:{line_no} is not a JSON line with a 'text' field: {e}") from e


def source_files(n_files: int, local_files: Path | None, cache_dir: Path) -> Iterator[Path]:
    """The first n_files data files: from --local-files (sorted by name) or downloaded one at a time."""
    if local_files is not None:  # checked now, not when the iterator first runs
        folder = Path(local_files).expanduser()
        found = sorted(p for p in folder.iterdir() if p.name.endswith(FILE_SUFFIXES)) if folder.is_dir() else []
        if len(found) < n_files:
            raise FileNotFoundError(f"{folder} holds {len(found)} FineWeb files ({', '.join(FILE_SUFFIXES)}), "
                                    f"{n_files} were asked for: lower --train-shards or add files")
        return iter(found[:n_files])
    return (download_file(hf_url(HF_REPO, f"{HUB_FOLDER}/{hub_file_name(i)}"), cache_dir / hub_file_name(i))
            for i in range(n_files))


def iter_documents(files: Iterator[Path], used: list[str]) -> Iterator[str]:
    """Documents of every file in order; appends each file's name to `used` when it is opened."""
    for path in files:
        used.append(path.name)
        yield from read_fineweb_texts(path)


def prepare(out_dir: Path | None = None, train_shards: int = 1, val_tokens: int = 10_000_000,
            max_tokens: int | None = 8_000_000_000, local_files: Path | None = None,
            cache_dir: Path | None = None) -> dict:
    """Write val.bin (first val_tokens tokens of file 0), train.bin (the rest) and meta.json; return meta."""
    out_dir = Path(out_dir) if out_dir is not None else DATA_DIR / "fineweb"
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    val_files: list[str] = []
    train_files: list[str] = []
    train_sources = source_files(train_shards, local_files, cache_dir)  # fails now if local files are missing
    try:
        val = tokenize_to_file(out_dir / "val.bin", iter_documents(source_files(1, local_files, cache_dir), val_files),
                               max_tokens=val_tokens, desc="fineweb val", exact=True)
    except NotEnoughTokensError as e:
        raise ValueError(f"{e}: the first FineWeb file is too short for --val-tokens {val_tokens:,}; lower it") from e
    # The document cut by the val limit is dropped, so train starts at a document val never saw.
    train_docs = iter_documents(train_sources, train_files)
    train = tokenize_to_file(out_dir / "train.bin", itertools.islice(train_docs, val["documents"], None),
                             max_tokens=max_tokens, desc="fineweb train")

    meta = new_meta(source=f"https://huggingface.co/datasets/{HF_REPO} ({HUB_FOLDER})" if local_files is None
                    else f"{HF_REPO} files from {local_files}", generator=VERSION)
    meta.update(files={"train": "train.bin", "val": "val.bin"},
                source_files={"train": train_files, "val": val_files},
                documents={"train": train["documents"], "val": val["documents"]},
                tokens={"train": train["tokens"], "val": val["tokens"]},
                validation_definition=f"first {val_tokens:,} tokens of {val_files[0]}; train starts at its "
                                      f"document {val['documents']} (0-based)")
    write_json_atomic(out_dir / "meta.json", meta)  # written last: its presence means the .bin files are complete
    return meta


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-shards", type=int, default=1,
                        help=f"number of files to read, in order (the hub sample has {N_HUB_FILES})")
    parser.add_argument("--val-tokens", type=int, default=10_000_000,
                        help="val.bin = exactly this many tokens from the start of the first file")
    parser.add_argument("--max-tokens", type=int, default=8_000_000_000,
                        help="stop train.bin after this many tokens (default: the paper's ~8B; 0: no limit)")
    parser.add_argument("--local-files", type=Path, default=None,
                        help="folder of already-downloaded .parquet / .jsonl(.gz) files, read in name order")
    parser.add_argument("--out-dir", type=Path, default=None, help="output folder (default: data/fineweb/)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default: <out-dir>/cache/)")
    args = parser.parse_args(argv)
    t0 = time.time()
    meta = prepare(args.out_dir, args.train_shards, args.val_tokens, args.max_tokens or None,
                   args.local_files, args.cache_dir)
    print(f"fineweb: tokens {meta['tokens']}, documents {meta['documents']} in {time.time() - t0:.1f}s")
    return meta


if __name__ == "__main__":
    command_line(main)
