"""Tests for the grammatical-role benchmark generator, data/roles/prepare.py (small splits, a second each)."""
import hashlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bigru_baseline import structure_dependent  # noqa: E402
from data.roles import prepare as prep  # noqa: E402

SMALL = dict(seed=0, n_train=1500, n_dev=200, n_test=200)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("roles")
    meta = prep.prepare(out, **SMALL)
    return out, meta, {s: read(out / f"{s}.jsonl") for s in prep.SPLITS}


def test_same_seed_gives_byte_identical_files(small, tmp_path):
    out, _, _ = small
    prep.prepare(tmp_path / "again", **SMALL)
    for name in [f"{s}.jsonl" for s in prep.SPLITS] + ["meta.json"]:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), f"{name} differs"
    prep.prepare(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (out / "train_a.jsonl").read_bytes() != (tmp_path / "other" / "train_a.jsonl").read_bytes()


def test_meta_matches_files(small):
    out, meta, data = small
    for s in prep.SPLITS:
        text = (out / f"{s}.jsonl").read_bytes()
        assert meta["files"][f"{s}.jsonl"]["sha256"] == hashlib.sha256(text).hexdigest()
        assert meta["files"][f"{s}.jsonl"]["sentences"] == len(data[s]) == sum(meta["constructions"][s].values())
    assert meta["roles"] == list(prep.ROLES) and meta["generator_version"] == prep.GENERATOR_VERSION


def test_splits_are_disjoint_and_use_only_training_words(small):
    _, meta, data = small
    seen: dict[tuple, str] = {}
    for s in prep.SPLITS:
        for rec in data[s]:
            key = tuple(rec["tokens"])
            assert key not in seen, f"{' '.join(key)!r} is in both {seen[key]} and {s}"
            seen[key] = s
            assert len(rec["tokens"]) == len(rec["roles"]) and set(rec["roles"]) <= set(prep.ROLES)
    train_words = {w for rec in data["train_a"] for w in rec["tokens"]}
    assert set(meta["vocabulary"]) == train_words
    for s in prep.SPLITS:
        assert {w for rec in data[s] for w in rec["tokens"]} <= train_words, f"{s} has words unseen in train_a"


def test_held_out_pairings_absent_from_training_and_present_in_test_a(small):
    _, meta, data = small
    pairings = {p["noun"]: p for p in meta["held_out_pairings"]}
    assert set(pairings) == set(prep.AGENT_ONLY) | set(prep.PATIENT_ONLY)
    for s in ("train_a", "dev_a", "test_b", "test_deep", "test_pairs"):  # only test_a may swap
        for rec in data[s]:
            for w, r in zip(rec["tokens"], rec["roles"]):
                if w in pairings:
                    assert [r] == pairings[w]["train_roles"], f"{s} {rec['id']}: {w} labelled {r}"
    for w, p in pairings.items():
        assert meta["train_roles_by_word"][w] == p["train_roles"]
    for rec in data["test_a"]:
        assert any(w in pairings and r == pairings[w]["test_a_role"] for w, r in zip(rec["tokens"], rec["roles"])), \
            f"test_a {rec['id']} has no held-out pairing: {' '.join(rec['tokens'])}"


def test_constructions_and_depths_per_split(small):
    _, _, data = small
    for s in ("train_a", "dev_a", "test_a"):
        assert {r["construction"] for r in data[s]} <= set(prep.GRAMMAR_A)
        assert max(r["depth"] for r in data[s]) <= 1
    assert {r["construction"] for r in data["test_b"]} == set(prep.GRAMMAR_B)
    assert {r["depth"] for r in data["test_deep"]} == {2, 3}
    for rec in data["test_deep"]:  # depth d -> d relative pronouns, d + 1 verbs
        assert sum(w in ("that", "who") for w in rec["tokens"]) == rec["depth"]
        assert rec["roles"].count("ACTION") == rec["depth"] + 1


def tagged(words: str, roles: str) -> list[tuple[str, str]]:
    short = {"A": "AGENT", "P": "PATIENT", "R": "RECIPIENT", "L": "LOCATION", "V": "ACTION", "M": "MODIFIER",
             "F": "FUNCTION"}
    w, r = words.split(), roles.split()
    assert len(w) == len(r), f"test typo: {len(w)} words but {len(r)} roles in {words!r}"
    return list(zip(w, [short[x] for x in r]))


def np_(noun: str, adj: str | None = None):
    return prep.noun_phrase(noun, "the", adj)


@pytest.mark.parametrize("built, words, roles", [
    (lambda: prep.passive(np_("cat"), "chased", np_("dog")),
     "the cat was chased by the dog", "F P F V F F A"),
    (lambda: prep.passive(np_("ball"), "kicked"),
     "the ball was kicked", "F P F V"),
    (lambda: prep.ditransitive_double_object(np_("girl"), "gave", np_("boy"), np_("ball", "red")),
     "the girl gave the boy the red ball", "F A V F R F M P"),
    (lambda: prep.ditransitive_prepositional(np_("girl"), "gave", np_("ball"), np_("boy")),
     "the girl gave the ball to the boy", "F A V F P F F R"),
    (lambda: prep.intransitive(prep.with_relative(np_("cat"), prep.rel_object("that", np_("dog"), "chased")),
                               "slept"),
     "the cat that the dog chased slept", "F A F F A V V"),
    (lambda: prep.transitive(np_("girl"), "saw",
                             prep.with_relative(np_("cat"), prep.rel_object("that", np_("dog"), "chased"))),
     "the girl saw the cat that the dog chased", "F A V F P F F A V"),
    (lambda: prep.passive(prep.with_relative(np_("dog"), prep.rel_subject("who", "bit", np_("man"))), "seen",
                          np_("girl")),
     "the dog who bit the man was seen by the girl", "F P F V F P F V F F A"),
    (lambda: prep.intransitive(prep.with_relative(np_("cat"), prep.rel_subject_passive("that", "chased",
                                                                                       np_("dog"))), "slept"),
     "the cat that was chased by the dog slept", "F A F F V F F A V"),
    (lambda: prep.cleft_object(np_("cat"), np_("dog"), "chased"),
     "it was the cat that the dog chased", "F F F P F F A V"),
    (lambda: prep.cleft_subject(np_("dog"), "chased", np_("cat")),
     "it was the dog that chased the cat", "F F F A F V F P"),
    (lambda: prep.topicalisation(np_("cat"), np_("dog"), "chased"),
     "the cat , the dog chased", "F P F F A V"),
    (lambda: prep.locative("in", np_("park")) + [(",", "FUNCTION")] + prep.intransitive(np_("dog"), "ran"),
     "in the park , the dog ran", "F F L F F A V"),
])
def test_hand_written_sentences_get_expected_roles(built, words, roles):
    assert built() == tagged(words, roles)


def test_generated_sentences_match_builders(small):
    """A generated passive parsed by hand gets the same labels as the builder gives."""
    _, _, data = small
    rec = next(r for r in data["train_a"] if r["construction"] == "passive_by" and len(r["tokens"]) == 7)
    det1, subj, _, verb, _, det2, agent = rec["tokens"]
    past = next(p for p, part in prep.TRANSITIVE.items() if part == verb)
    expect = prep.passive(prep.noun_phrase(subj, det1), prep.TRANSITIVE[past], prep.noun_phrase(agent, det2))
    assert list(zip(rec["tokens"], rec["roles"])) == expect


def test_structure_dependent_tokens_are_mostly_nouns(small):
    _, meta, data = small
    multi = {w for w, rs in meta["train_roles_by_word"].items() if len(rs) > 1}
    nouns = set(prep.ANIMATE) | set(prep.CONTAINERS)
    assert multi <= nouns and len(multi) >= len(prep.ANIMATE), f"multi-role words {sorted(multi)}"


def test_pairs_need_more_than_the_local_window(small):
    """test_pairs by construction: minimal pairs share the head noun's +-2-word window and differ in its role; the
    deciding word is at least 5 positions away; the head is each sentence's only structure-dependent token."""
    _, meta, data = small
    recs, train_roles = data["test_pairs"], meta["train_roles_by_word"]
    assert len(recs) == meta["sizes"]["test_pairs"] == 200 and len(recs) % 2 == 0
    for active, passive in zip(recs[::2], recs[1::2]):
        i, a, p = active["target"], active["tokens"], passive["tokens"]
        assert active["pair"] == passive["pair"] and passive["target"] == i
        assert (active["roles"][i], passive["roles"][i]) == ("AGENT", "PATIENT") and a[i] in prep.ANIMATE
        differ = next(k for k in range(min(len(a), len(p))) if a[k] != p[k])
        assert differ >= i + 5, f"{' '.join(a)!r} / {' '.join(p)!r}: decided {differ - i} words after the noun"
        assert p[differ] == "was" and (a[differ] in prep.INTRANSITIVE or p[differ + 1] == prep.TRANSITIVE[a[differ]])
        for rec in (active, passive):
            sd = [k for k, m in enumerate(structure_dependent(rec["tokens"], rec["roles"], train_roles)) if m]
            assert sd == [i], f"{rec['id']}: sd tokens {sd}, expected only the head {i}"
    assert {r["construction"].rsplit("_", 1)[0] for r in recs} == {f"pairs_{k}" for k in prep.PAIR_RELATIVES}


def test_any_window_function_scores_half_on_pairs(small):
    """Whatever a +-2-word window maps to, it answers both members of a pair alike: exactly 50% on the heads."""
    _, _, data = small
    window = lambda rec: tuple((["<s>"] * 2 + rec["tokens"] + ["</s>"] * 2)[rec["target"]:rec["target"] + 5])  # noqa: E731
    for rule in (lambda w: "AGENT", lambda w: "PATIENT" if len("".join(w)) % 2 else "AGENT"):
        hits = [rule(window(r)) == r["roles"][r["target"]] for r in data["test_pairs"]]
        assert sum(hits) * 2 == len(hits)


def test_hand_written_pair():
    subj = lambda: prep.with_relative(np_("dog"), prep.rel_object("that", np_("wolf"), "saw"))  # noqa: E731
    assert prep.transitive(subj(), "chased", np_("ball")) == tagged(
        "the dog that the wolf saw chased the ball", "F A F F A V V F P")
    assert prep.passive(subj(), "chased", np_("fox")) == tagged(
        "the dog that the wolf saw was chased by the fox", "F P F F A V F V F F A")


def test_unknown_construction_error_names_it():
    import random
    with pytest.raises(ValueError, match="'relative_clause_of_doom'"):
        prep.Sampler(random.Random(0)).sentence("relative_clause_of_doom")
