"""WikiText-103 (raw) test and validation sets as GPT-2 tokens, for the paper's "Wiki perplexity" (729).

    python data/wikitext103/prepare.py                              # from the hub (needs pyarrow)
    python data/wikitext103/prepare.py --local-files ~/wikitext-103-raw   # wiki.test.raw [+ wiki.valid.raw]

Source: https://huggingface.co/datasets/Salesforce/wikitext, `wikitext-103-raw-v1/test-00000-of-00001.parquet`
and `validation-00000-of-00001.parquet` (one row per line of the original file, blank lines as ""), or the
original `wiki.test.raw` / `wiki.valid.raw` text files (blank lines as " \\n"). Both give identical tokens.
WikiText-2 and WikiText-103 share the same validation and test articles, so this is also WikiText-2's test.

Reconstruction choices (the paper says only "Wiki perplexity"):
- Raw (not the `<unk>`-ed tokenized variant), since a GPT-2 BPE model has no use for `<unk>`.
- Documents are articles: a new article starts at every top-level heading line ` = Title = ` (one `=` on
  each side; ` = = Section = = ` lines stay inside their article). Test has 60 articles.
- Article text: its lines without their newline, whitespace-only lines made empty, joined with "\\n",
  leading and trailing blank lines dropped, one final "\\n"; the file's own spacing (` @-@ `, ` , `) is kept
  as is (no detokenisation). End-of-text (50256) after every article.
- test.bin is the "Wiki perplexity" set; val.bin (the validation articles) is there so that nothing is ever
  tuned on test. meta.json also records whitespace-separated words per split, so a per-token perplexity can
  be converted to a per-word one: ppl_word = exp(total_nll / words).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Iterable

if __package__ in (None, ""):  # run as `python data/wikitext103/prepare.py`: make `data.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data.common import (DATA_DIR, command_line, download_file, hf_url, iter_parquet_texts, new_meta,
                         tokenize_documents, write_json_atomic, write_tokens_atomic)

VERSION = "data/wikitext103/prepare.py v1"
HF_REPO = "Salesforce/wikitext"
# our split -> (hub parquet file, original raw file name, required?)
SPLITS = {"test": ("wikitext-103-raw-v1/test-00000-of-00001.parquet", "wiki.test.raw", True),
          "val": ("wikitext-103-raw-v1/validation-00000-of-00001.parquet", "wiki.valid.raw", False)}
ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")  # " = Robert Boulter = ", not " = = Career = = "


def wikitext_articles(lines: Iterable[str]) -> list[str]:
    """Split WikiText lines (raw-file lines or hub rows) into article documents, as described above."""
    articles: list[list[str]] = []
    for line in lines:
        line = line.rstrip("\n")
        line = line if line.strip() else ""
        if ARTICLE_HEADING.match(line) or not articles:
            articles.append([])
        articles[-1].append(line)
    docs = ("\n".join(a).strip("\n") for a in articles)
    return [d + "\n" for d in docs if d]


def read_lines(split: str, local_files: Path | None, cache_dir: Path) -> list[str] | None:
    """The split's lines from --local-files (wiki.*.raw) or the hub parquet; None if an optional split is absent."""
    hub_file, raw_name, required = SPLITS[split]
    if local_files is not None:
        path = Path(local_files).expanduser() / raw_name
        if not path.exists():
            if required:
                raise FileNotFoundError(f"{path} not found: --local-files must hold the original {raw_name} "
                                        f"(from wikitext-103-raw-v1.zip), or leave it out to download from the hub")
            return None
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    return list(iter_parquet_texts(download_file(hf_url(HF_REPO, hub_file), cache_dir / Path(hub_file).name)))


def prepare(out_dir: Path | None = None, local_files: Path | None = None, cache_dir: Path | None = None) -> dict:
    """Write test.bin, val.bin (if available) and meta.json into out_dir (default data/wikitext103/); return meta."""
    out_dir = Path(out_dir) if out_dir is not None else DATA_DIR / "wikitext103"
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    meta = new_meta(source=f"https://huggingface.co/datasets/{HF_REPO} (wikitext-103-raw-v1)" if local_files is None
                    else f"wikitext-103-raw files from {local_files}", generator=VERSION)
    meta.update(files={}, documents={}, tokens={}, words={},
                document_definition="one article per top-level ' = Title = ' heading, end-of-text after each")
    for split in SPLITS:
        lines = read_lines(split, local_files, cache_dir)
        if lines is None:  # optional split absent: drop a stale file from an earlier run, so meta.json tells all
            (out_dir / f"{split}.bin").unlink(missing_ok=True)
            continue
        articles = wikitext_articles(lines)
        ids = tokenize_documents(articles, total=len(articles), desc=f"wikitext103 {split}")
        write_tokens_atomic(out_dir / f"{split}.bin", ids)
        meta["files"][split] = f"{split}.bin"
        meta["documents"][split] = len(articles)
        meta["tokens"][split] = int(ids.size)
        meta["words"][split] = sum(len(a.split()) for a in articles)
    write_json_atomic(out_dir / "meta.json", meta)  # written last: its presence means the .bin files are complete
    return meta


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-files", type=Path, default=None,
                        help="folder holding wiki.test.raw (and optionally wiki.valid.raw); nothing is downloaded")
    parser.add_argument("--out-dir", type=Path, default=None, help="output folder (default: data/wikitext103/)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default: <out-dir>/cache/)")
    args = parser.parse_args(argv)
    t0 = time.time()
    meta = prepare(args.out_dir, args.local_files, args.cache_dir)
    print(f"wikitext103: tokens {meta['tokens']}, articles {meta['documents']} in {time.time() - t0:.1f}s")
    return meta


if __name__ == "__main__":
    command_line(main)
