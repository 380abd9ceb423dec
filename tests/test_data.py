"""data/: every prepare path on small local files in the real formats, atomic uint16 writing, error messages.

The hub cannot be reached from CI, so downloads are exercised with file:// URLs and the parsing and
tokenizing code runs on tiny files written here in each real format.
"""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data.common as common
from data.c4 import prepare as c4
from data.common import (EOT, NotEnoughTokensError, TokenWriter, gpt2_encoding, load_tokens, prepare_command,
                         tokenize_documents, tokenize_to_file, write_tokens_atomic)
from data.fineweb import prepare as fineweb
from data.ptb import prepare as ptb
from data.wikitext103 import prepare as wikitext

REPO = Path(__file__).resolve().parents[1]


def docs_of(ids: np.ndarray) -> list[str]:
    """Decode a token file back into its documents (split at EOT)."""
    enc, out, start = gpt2_encoding(), [], 0
    for end in np.flatnonzero(ids == EOT):
        out.append(enc.decode(ids[start:end].tolist()))
        start = end + 1
    return out


# ----------------------------------------------------------------------------- common plumbing

def test_tokenize_documents_appends_eot_per_document():
    enc = gpt2_encoding()
    docs = ["Hello world", "", "a literal <|endoftext|> inside", "Grüße 🙂\n"]
    ids = tokenize_documents(docs, total=len(docs))
    assert ids.dtype == np.uint16
    assert (ids == EOT).sum() == len(docs) and ids[-1] == EOT
    assert ids[:3].tolist() == [15496, 995, EOT]
    assert docs_of(ids) == docs
    assert ids.tolist() == sum((enc.encode_ordinary(d) + [EOT] for d in docs), [])
    assert tokenize_documents([]).size == 0


def test_uint16_overflow_impossible(tmp_path):
    assert gpt2_encoding().n_vocab <= 2**16  # every GPT-2 id fits in uint16
    path = tmp_path / "x.bin"
    write_tokens_atomic(path, np.array([0, 50256, 65535], dtype=np.int64))
    assert np.fromfile(path, dtype=np.uint16).tolist() == [0, 50256, 65535]
    for bad in ([65536], [-1], [1, 2**40]):
        with pytest.raises(ValueError, match="uint16"):
            write_tokens_atomic(path, np.array(bad, dtype=np.int64))
    with pytest.raises(TypeError):
        write_tokens_atomic(path, np.array([1.5]))
    # a failed write leaves the earlier file as it was and no temporary file behind
    assert np.fromfile(path, dtype=np.uint16).tolist() == [0, 50256, 65535]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_token_writer_is_atomic(tmp_path):
    path = tmp_path / "train.bin"
    write_tokens_atomic(path, np.arange(5))
    with pytest.raises(KeyboardInterrupt):
        with TokenWriter(path) as w:
            w.write(np.arange(100))
            raise KeyboardInterrupt  # interrupted half way: nothing is replaced
    assert np.fromfile(path, dtype=np.uint16).tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin"]
    common.write_json_atomic(tmp_path / "meta.json", {"a": 1})
    assert json.loads((tmp_path / "meta.json").read_text()) == {"a": 1}


def test_tokenize_to_file_cuts_exactly(tmp_path):
    docs = [f"document number {i}" for i in range(50)]  # 3 tokens + EOT each
    stats = tokenize_to_file(tmp_path / "v.bin", docs, max_tokens=10)
    ids = np.fromfile(tmp_path / "v.bin", dtype=np.uint16)
    assert ids.size == stats["tokens"] == 10 and stats["documents"] == 3  # 4 + 4 + 2 tokens of the third
    with pytest.raises(NotEnoughTokensError):
        tokenize_to_file(tmp_path / "w.bin", docs, max_tokens=10_000, exact=True)
    assert not (tmp_path / "w.bin").exists()


def test_missing_data_names_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "DATA_DIR", tmp_path)
    for dataset in ("ptb", "c4", "fineweb", "wikitext103"):
        with pytest.raises(SystemExit) as err:
            load_tokens(dataset, "val")
        assert prepare_command(dataset) == f"python data/{dataset}/prepare.py"
        assert f"`python data/{dataset}/prepare.py`" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare_command("imagenet")


def test_download_file_atomic_and_cached(tmp_path):
    src = tmp_path / "remote.json.gz"
    src.write_bytes(b"x" * 3_000_000)
    dest = common.download_file(src.as_uri(), tmp_path / "cache" / "shard.json.gz")
    assert dest.read_bytes() == src.read_bytes()
    src.unlink()  # a second call uses the cached file and does not fetch again
    assert common.download_file(src.as_uri(), dest) == dest
    with pytest.raises(RuntimeError, match="--local-files"):
        common.download_file(src.as_uri(), tmp_path / "cache" / "other.json.gz")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["shard.json.gz"]
    assert common.hf_url("allenai/c4", "en/x.json.gz") == "https://huggingface.co/datasets/allenai/c4/resolve/main/en/x.json.gz"


# ----------------------------------------------------------------------------- PTB

def test_ptb_prepare(tmp_path):
    meta = ptb.prepare(tmp_path)
    assert set(meta["tokens"]) == {"train", "val", "test"} and meta["documents"] == {"train": 1, "val": 1, "test": 1}
    for split, n in meta["tokens"].items():
        ids = np.fromfile(tmp_path / f"{split}.bin", dtype=np.uint16)
        assert ids.size == n > 50_000 and ids[-1] == EOT and (ids == EOT).sum() == 1
    val = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    assert gpt2_encoding().decode(val[:14].tolist()).startswith("consumers may want to move their telephones")
    assert json.loads((tmp_path / "meta.json").read_text())["tokens"] == meta["tokens"]
    assert ptb.ptb_text(" a b \n\n c <unk> N \n") == "a b\nc <unk> N\n"


# ----------------------------------------------------------------------------- C4

def write_c4_shard(path: Path, texts: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:  # the real format: gzip JSON lines, text/timestamp/url
        for i, text in enumerate(texts):
            row = {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.com/{i}"}
            f.write(json.dumps(row) + "\n")


@pytest.fixture
def c4_shards(tmp_path):
    folder = tmp_path / "c4_en"
    folder.mkdir()
    shards = {"c4-train.00000-of-01024.json.gz": [f"Train zero {i}.\nSecond line ü." for i in range(40)],
              "c4-train.00001-of-01024.json.gz": [f"Train one {i}." for i in range(30)],
              "c4-validation.00000-of-00008.json.gz": [f"Validation {i} 🙂" for i in range(20)]}
    for name, texts in shards.items():
        write_c4_shard(folder / name, texts)
    return folder, shards


def test_c4_local_files_as_a_script(c4_shards, tmp_path):
    folder, shards = c4_shards
    out = tmp_path / "out"
    # run from another working directory: paths resolve from the script, not the cwd
    subprocess.run([sys.executable, str(REPO / "data/c4/prepare.py"), "--local-files", str(folder), "--out-dir",
                    str(out), "--train-shards", "2", "--val-tokens", "50"], check=True, cwd=tmp_path,
                   capture_output=True)
    meta = json.loads((out / "meta.json").read_text())
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert docs_of(train) == shards["c4-train.00000-of-01024.json.gz"] + shards["c4-train.00001-of-01024.json.gz"]
    assert val.size == meta["tokens"]["val"] == 50  # exactly --val-tokens, cut mid-document
    whole_val = tokenize_documents(shards["c4-validation.00000-of-00008.json.gz"])
    assert val.tolist() == whole_val[:50].tolist()
    assert meta["tokens"]["train"] == train.size and meta["documents"] == {"train": 70, "val": meta["documents"]["val"]}
    assert meta["shards"]["val"] == ["c4-validation.00000-of-00008.json.gz"]


def test_c4_errors_and_download_path(c4_shards, tmp_path, monkeypatch):
    folder, _ = c4_shards
    with pytest.raises(FileNotFoundError, match="c4-train.00002-of-01024.json.gz"):
        c4.main(["--local-files", str(folder), "--out-dir", str(tmp_path / "a"), "--train-shards", "3",
                 "--val-tokens", "10"])
    with pytest.raises(ValueError, match="--val-shards"):
        c4.main(["--local-files", str(folder), "--out-dir", str(tmp_path / "b"), "--val-tokens", "100000"])
    assert not (tmp_path / "b" / "val.bin").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "c4-validation.00000-of-00008.json.gz").write_bytes(gzip.compress(b'{"url": "u"}\n'))
    with pytest.raises(ValueError, match="'text'"):
        c4.main(["--local-files", str(bad), "--out-dir", str(tmp_path / "c"), "--val-tokens", "10"])

    # Online path: the hub URLs are requested and cached; served here from the local shards.
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((folder / Path(url).name).read_bytes())
        return dest

    monkeypatch.setattr(c4, "download_file", fake_download)
    meta = c4.prepare(tmp_path / "d", train_shards=1, val_tokens=20, max_tokens=30)
    assert urls == ["https://huggingface.co/datasets/allenai/c4/resolve/main/en/c4-validation.00000-of-00008.json.gz",
                    "https://huggingface.co/datasets/allenai/c4/resolve/main/en/c4-train.00000-of-01024.json.gz"]
    assert meta["tokens"] == {"train": 30, "val": 20}
    assert (tmp_path / "d" / "cache" / "c4-train.00000-of-01024.json.gz").exists()


# ----------------------------------------------------------------------------- FineWeb

FINEWEB_ROW = {"id": "<urn:uuid:0>", "dump": "CC-MAIN-2013-20", "url": "http://example.com",
               "date": "2013-05-18T05:48:54Z", "file_path": "s3://commoncrawl/x.warc.gz", "language": "en",
               "language_score": 0.95, "token_count": 7}


def test_fineweb_jsonl_local_files(tmp_path):
    folder = tmp_path / "fw"
    folder.mkdir()
    texts = {name: [f"{name} document {i}, some words." for i in range(25)] for name in ("000_00000", "001_00000")}
    with gzip.open(folder / "000_00000.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, **FINEWEB_ROW}) + "\n" for t in texts["000_00000"])
    rows = (json.dumps({"text": t, **FINEWEB_ROW}) + "\n" for t in texts["001_00000"])
    (folder / "001_00000.jsonl").write_text("".join(rows))
    meta = fineweb.main(["--local-files", str(folder), "--out-dir", str(tmp_path / "out"), "--train-shards", "2",
                         "--val-tokens", "30"])
    val = np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16)
    train = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16)
    n_val_docs = meta["documents"]["val"]
    assert val.size == 30 and val.tolist() == tokenize_documents(texts["000_00000"])[:30].tolist()
    # train starts at the first document val did not touch: no document is in both
    all_docs = texts["000_00000"] + texts["001_00000"]
    assert docs_of(train) == all_docs[n_val_docs:]
    assert meta["source_files"] == {"train": ["000_00000.jsonl.gz", "001_00000.jsonl"], "val": ["000_00000.jsonl.gz"]}
    # --max-tokens stops train.bin exactly
    meta = fineweb.main(["--local-files", str(folder), "--out-dir", str(tmp_path / "out2"), "--train-shards", "2",
                         "--val-tokens", "30", "--max-tokens", "77"])
    assert meta["tokens"]["train"] == 77 == (tmp_path / "out2" / "train.bin").stat().st_size // 2
    with pytest.raises(FileNotFoundError, match="--train-shards"):
        fineweb.main(["--local-files", str(folder), "--out-dir", str(tmp_path / "o3"), "--train-shards", "3"])


def test_fineweb_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed: the parquet path is only run where it is")
    import pyarrow.parquet as pq
    texts = [f"parquet row {i}" for i in range(10)]
    pq.write_table(pa.table({"text": texts, "id": [str(i) for i in range(10)]}), tmp_path / "000_00000.parquet")
    assert list(fineweb.read_fineweb_texts(tmp_path / "000_00000.parquet")) == texts


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow...` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        list(fineweb.read_fineweb_texts(tmp_path / "000_00000.parquet"))


# ----------------------------------------------------------------------------- WikiText-103

# The original wiki.test.raw layout: a leading space on every line, " \n" for blank lines,
# " = Title = " starting each article, " = = Section = = " inside it.
WIKI_RAW = (" \n = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre actor . \n"
            " \n = = Career = = \n \n = = = 2000 – 2005 = = = \n \n In 2000 Boulter had a guest @-@ starring role . \n"
            " \n = Du Fu = \n \n Du Fu ( 712 – 770 ) was a prominent Chinese poet . \n \n")


def test_wikitext_articles_from_raw_file_and_hub_rows(tmp_path):
    (tmp_path / "wiki.test.raw").write_text(WIKI_RAW, encoding="utf-8")
    meta = wikitext.main(["--local-files", str(tmp_path), "--out-dir", str(tmp_path / "out")])
    ids = np.fromfile(tmp_path / "out" / "test.bin", dtype=np.uint16)
    articles = docs_of(ids)
    assert meta["documents"] == {"test": 2} and len(articles) == 2 and "val" not in meta["tokens"]
    assert articles[0].startswith(" = Robert Boulter = \n\n Robert Boulter is") and " = = Career = = " in articles[0]
    assert articles[1] == " = Du Fu = \n\n Du Fu ( 712 – 770 ) was a prominent Chinese poet . \n"
    assert meta["words"]["test"] == sum(len(a.split()) for a in articles)
    # The hub parquet holds one row per line, blank lines as "": same articles.
    hub_rows = [line + "\n" if line.strip() else "" for line in WIKI_RAW.split("\n")[:-1]]
    assert wikitext.wikitext_articles(hub_rows) == wikitext.wikitext_articles(WIKI_RAW.splitlines(keepends=True))
    # wiki.valid.raw, when present, becomes val.bin
    (tmp_path / "wiki.valid.raw").write_text(WIKI_RAW, encoding="utf-8")
    meta = wikitext.main(["--local-files", str(tmp_path), "--out-dir", str(tmp_path / "out")])
    assert meta["tokens"]["val"] == meta["tokens"]["test"] == ids.size
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        wikitext.main(["--local-files", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o2")])


def test_every_prepare_script_has_help():
    for name in ("ptb", "c4", "fineweb", "wikitext103"):
        r = subprocess.run([sys.executable, str(REPO / f"data/{name}/prepare.py"), "--help"], capture_output=True,
                           text=True, cwd="/")
        assert r.returncode == 0 and "usage" in r.stdout, r.stderr


def test_hub_paths_request_the_right_files(tmp_path, monkeypatch):
    """FineWeb and WikiText from the hub (parquet): URLs, lazy per-file download, parsing of the rows."""
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        return Path(dest)

    # 2000 rows: more than one 512-document tokenizer batch, which may read ahead into the next file
    rows = {"000_00000.parquet": [f"fineweb row {i}" for i in range(2000)], "001_00000.parquet": ["never read"],
            "test-00000-of-00001.parquet": [line + "\n" if line.strip() else "" for line in WIKI_RAW.split("\n")[:-1]],
            "validation-00000-of-00001.parquet": ["", " = Valid = \n", "", " Text . \n"]}
    for module in (fineweb, wikitext):
        monkeypatch.setattr(module, "download_file", fake_download)
    for module in (fineweb, wikitext):  # what pyarrow would read from each hub file
        monkeypatch.setattr(module, "iter_parquet_texts", lambda path, column="text": iter(rows[Path(path).name]))
    meta = fineweb.prepare(tmp_path / "fw", train_shards=2, val_tokens=12, max_tokens=20)
    hub = "https://huggingface.co/datasets/"
    # val reads file 000; train re-reads it and stops at --max-tokens before file 001 is ever fetched
    assert urls == [hub + "HuggingFaceFW/fineweb/resolve/main/sample/10BT/000_00000.parquet"] * 2
    assert meta["tokens"] == {"train": 20, "val": 12}
    urls.clear()
    meta = wikitext.prepare(tmp_path / "wt")
    assert urls == [hub + "Salesforce/wikitext/resolve/main/wikitext-103-raw-v1/test-00000-of-00001.parquet",
                    hub + "Salesforce/wikitext/resolve/main/wikitext-103-raw-v1/validation-00000-of-00001.parquet"]
    assert meta["documents"] == {"test": 2, "val": 1}
