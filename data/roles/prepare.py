"""The grammatical-role benchmark: a seeded generator for data/roles/*.jsonl.

The paper (arXiv 2604.08556) measures "structure" as grammatical role assignment over short synthetic
sentences but does not publish its grammars, so everything in this file is a reconstruction, chosen so that
the task cannot be solved from word identity alone:

- Roles (7): AGENT, PATIENT, RECIPIENT, LOCATION, ACTION (verbs), MODIFIER (adjectives, adverbs), FUNCTION
  (determiners, "was", prepositions, "by", "to", "that"/"who", expletive "it", the comma).
- A noun is labelled with its role in the clause where it is an overt argument. The gap inside a relative
  clause is not labelled: in "the cat that the dog chased slept" cat is the AGENT of "slept".
  Clefted and topicalised nouns (grammar B) take the role of the gap they bind, because the copula of
  "it was X that ..." and the topic position assign no role of their own.
- Grammar A (train_a, dev_a, test_a): active transitive, intransitive, ditransitive (double object and
  "to"-dative), passive with "by", locative PPs (also fronted, with a comma), adjectives, sentence-final
  adverbs, expletive weather sentences ("it rained"), and subject/object relative clauses of depth <= 1
  attached to the main subject or object (a subject relative may be passive: "that was chased by ...").
- Held-out pairings: AGENT_ONLY nouns occur in train_a/dev_a only as AGENT (also in their relative-clause
  gap), PATIENT_ONLY nouns only as PATIENT. Every test_a sentence contains at least one of them in the
  other role, so test_a measures structure, not memorised word-role pairs.
- Grammar B (test_b): object topicalisation, object and subject clefts, passives without "by"; same lexicon.
- Deep (test_deep): a nest of 2 or 3 relative clauses inside the main-clause subject, so the whole nest
  sits between the subject's head noun and the main verb (centre-embedded in the main clause). Each level
  is a subject, passive-subject or object relative, and the next level hangs on its own overt argument;
  when that argument is an object relative's subject the inner clause is also centre-embedded in its
  parent ("the cat that the dog that the girl saw chased slept"). The main clause is transitive,
  intransitive or passive. Training never has more than one relative clause per sentence.
- Pairs (test_pairs, made last, so the five splits above are byte-identical to roles-v1): a split that the
  words near a noun cannot solve. Sentences come in minimal pairs that share every word up to the main verb:
  an animate, ambiguous head noun (train roles AGENT, PATIENT, RECIPIENT) carries a depth-1 relative clause
  (subject "that chased the ball", passive "that was seen by the wolf", or object "that the wolf saw"), and
  the main clause is active in one member ("chased the mouse", "slept": head = AGENT) and passive with "by"
  in the other ("was chased by the fox": head = PATIENT). The deciding word (the main verb or "was") is at
  least 5 positions after the head noun, and the head's +-2-word window lies inside the shared prefix, so
  every function of that window (word and context lookups of any back-off) gives both members the same answer
  and scores exactly 50% on the heads, the constant-AGENT level (tested). The passive relative puts "was ...
  by" to the right of the head in both members, so a bag of the words to the right does not decide either.
  Every other noun is fixed by its word in train_a (inanimate or PATIENT_ONLY objects, AGENT_ONLY agents),
  so the heads are the split's only structure-dependent tokens (tested). All constructions are grammar A's
  (a relative on the main subject, active or passive-with-by main clause): the split measures structure,
  not transfer. Record fields "pair" (pair index) and "target" (the head's position) mark the pairs.
- Every word type of every split occurs in train_a; no sentence occurs twice across all six splits.
- Structure-dependent token (computed identically by every script from meta.json's train_roles_by_word):
  a token whose gold role is not the single role its word type has in train_a, i.e. the set of roles of
  the word in train_a is not exactly {gold role}. This covers words seen with several roles (animate nouns,
  "box"/"basket" as PATIENT or LOCATION) and the held-out swaps of test_a, which a word->role lookup gets
  wrong by construction.

Usage: python data/roles/prepare.py            (writes data/roles/{split}.jsonl and meta.json, seed 0)
       python data/roles/prepare.py --force    (regenerate even if the files exist)
Same seed and sizes -> byte-identical files (Python's random.Random, fixed iteration orders).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = "roles-v2"  # v2 adds test_pairs; the five v1 splits are unchanged
ROLES = ("AGENT", "PATIENT", "RECIPIENT", "LOCATION", "ACTION", "MODIFIER", "FUNCTION")
SPLITS = ("train_a", "dev_a", "test_a", "test_b", "test_deep", "test_pairs")
A, P, R, L, V, M, F = ROLES  # short names for the builders below

# ---------------------------------------------------------------- lexicon
ANIMATE = ("dog", "cat", "girl", "boy", "man", "woman", "teacher", "doctor",
           "farmer", "king", "queen", "bird", "horse", "child", "student", "baker")
AGENT_ONLY = ("lion", "wolf", "bear", "fox")        # train: AGENT only; test_a: PATIENT
PATIENT_ONLY = ("mouse", "rabbit", "duck", "lamb")  # train: PATIENT only; test_a: AGENT
OBJECTS = ("ball", "book", "apple", "letter", "cup", "key", "hat")
CONTAINERS = ("box", "basket")  # objects (PATIENT) and places (LOCATION): a lexically ambiguous pair
PLACES = ("park", "garden", "house", "river", "kitchen", "school", "forest", "market")
TRANSITIVE = {"chased": "chased", "saw": "seen", "liked": "liked", "helped": "helped",  # past -> participle
              "pushed": "pushed", "followed": "followed", "kicked": "kicked", "found": "found",
              "called": "called", "watched": "watched", "bit": "bitten", "caught": "caught"}
INTRANSITIVE = ("slept", "ran", "laughed", "smiled", "danced")
DITRANSITIVE = ("gave", "sent", "showed", "handed")
WEATHER = ("rained", "snowed")
ADJECTIVES = ("big", "small", "old", "young", "happy", "red")
ADVERBS = ("quickly", "slowly", "happily", "quietly")
PREPOSITIONS = ("in", "near", "under", "on")

# Construction weights per grammar (relative frequencies). Passives and relatives are frequent on purpose:
# they are the constructions where word order alone misleads.
GRAMMAR_A = {"active_transitive": 20, "intransitive": 8, "ditransitive_double_object": 9,
             "ditransitive_prepositional": 9, "passive_by": 16, "fronted_locative": 6, "expletive": 2,
             "subject_relative": 15, "object_relative": 15}
GRAMMAR_B = {"topicalisation": 1, "cleft_object": 1, "cleft_subject": 1, "passive_no_by": 1}
GRAMMAR_DEEP = {"centre_embedded_depth2": 1, "centre_embedded_depth3": 1}

Tagged = list[tuple[str, str]]  # (token, role) pairs


# ---------------------------------------------------------------- labelling builders
# Each clause builder assigns the roles of its overt arguments; the sampler below only picks words.
# The tests build hand-written sentences with these same functions.
@dataclass
class NP:
    """A noun phrase whose head noun has no role yet; the clause that takes it as argument assigns one."""
    tokens: Tagged
    head: int  # index of the head noun in tokens

    def as_arg(self, role: str) -> Tagged:
        out = list(self.tokens)
        out[self.head] = (out[self.head][0], role)
        return out


def noun_phrase(noun: str, det: str = "the", adj: str | None = None) -> NP:
    tokens = [(det, F)] + ([(adj, M)] if adj else []) + [(noun, "?")]
    return NP(tokens, len(tokens) - 1)


def with_relative(head: NP, rel: Tagged) -> NP:
    return NP(head.tokens + rel, head.head)


def rel_subject(pron: str, verb: str, obj: NP) -> Tagged:  # "that chased the cat" (gap = AGENT)
    return [(pron, F), (verb, V)] + obj.as_arg(P)


def rel_subject_passive(pron: str, participle: str, agent: NP) -> Tagged:  # "that was seen by the cat"
    return [(pron, F), ("was", F), (participle, V), ("by", F)] + agent.as_arg(A)


def rel_object(pron: str, subj: NP, verb: str) -> Tagged:  # "that the dog chased" (gap = PATIENT)
    return [(pron, F)] + subj.as_arg(A) + [(verb, V)]


def transitive(subj: NP, verb: str, obj: NP) -> Tagged:
    return subj.as_arg(A) + [(verb, V)] + obj.as_arg(P)


def intransitive(subj: NP, verb: str) -> Tagged:
    return subj.as_arg(A) + [(verb, V)]


def passive(subj: NP, participle: str, agent: NP | None = None) -> Tagged:
    by = [("by", F)] + agent.as_arg(A) if agent is not None else []
    return subj.as_arg(P) + [("was", F), (participle, V)] + by


def ditransitive_double_object(subj: NP, verb: str, recipient: NP, theme: NP) -> Tagged:
    return subj.as_arg(A) + [(verb, V)] + recipient.as_arg(R) + theme.as_arg(P)


def ditransitive_prepositional(subj: NP, verb: str, theme: NP, recipient: NP) -> Tagged:
    return subj.as_arg(A) + [(verb, V)] + theme.as_arg(P) + [("to", F)] + recipient.as_arg(R)


def locative(prep: str, place: NP) -> Tagged:
    return [(prep, F)] + place.as_arg(L)


def expletive(verb: str) -> Tagged:  # "it rained": "it" carries no role
    return [("it", F), (verb, V)]


def topicalisation(obj: NP, subj: NP, verb: str) -> Tagged:  # "the cat , the dog chased"
    return obj.as_arg(P) + [(",", F)] + subj.as_arg(A) + [(verb, V)]


def cleft_object(focus: NP, subj: NP, verb: str, pron: str = "that") -> Tagged:
    """ "it was the cat that the dog chased": the focus takes the role of its gap (PATIENT)."""
    return [("it", F), ("was", F)] + focus.as_arg(P) + [(pron, F)] + subj.as_arg(A) + [(verb, V)]


def cleft_subject(focus: NP, verb: str, obj: NP, pron: str = "that") -> Tagged:
    """ "it was the dog that chased the cat": the focus takes the role of its gap (AGENT)."""
    return [("it", F), ("was", F)] + focus.as_arg(A) + [(pron, F), (verb, V)] + obj.as_arg(P)


# ---------------------------------------------------------------- sampler
def allowed(noun: str, role: str) -> bool:
    """The held-out lexical restriction of train_a/dev_a (and of every slot not chosen for a swap)."""
    if noun in AGENT_ONLY:
        return role == A
    if noun in PATIENT_ONLY:
        return role == P
    return True


class Sampler:
    """Picks words for one sentence; `swap` (test_a only) may put held-out nouns in their unseen role."""

    def __init__(self, rng: random.Random, swap: bool = False):
        self.rng, self.swap = rng, swap

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def np(self, role: str, gap: str | None = None) -> NP:
        """An NP that will fill `role` (and, if it heads a relative clause, the clause's `gap` role)."""
        rng = self.rng
        if role == L:
            noun = self.pick(PLACES + CONTAINERS)
        elif role == "THEME":  # the thing given: inanimate, labelled PATIENT
            noun = self.pick(OBJECTS + CONTAINERS)
        elif self.swap and role in (A, P) and rng.random() < 0.5:
            noun = self.pick(PATIENT_ONLY if role == A else AGENT_ONLY)
        elif role == P and gap in (None, P) and rng.random() < 0.35:
            noun = self.pick(OBJECTS + CONTAINERS)
        else:
            pool = ANIMATE if role == R or gap == R else ANIMATE + AGENT_ONLY + PATIENT_ONLY
            pool = tuple(n for n in pool if allowed(n, role) and (gap is None or allowed(n, gap)))
            noun = self.pick(pool)
        adj = self.pick(ADJECTIVES) if rng.random() < 0.2 else None
        det = "the" if rng.random() < 0.75 else ("an" if (adj or noun)[0] in "aeiou" else "a")
        return noun_phrase(noun, det, adj)

    def pron(self, head: NP) -> str:
        animate = head.tokens[head.head][0] not in OBJECTS + CONTAINERS + PLACES
        return "who" if animate and self.rng.random() < 0.5 else "that"

    def rel_np(self, role: str, depth: int, kind: str | None = None) -> NP:
        """An NP in `role` carrying a nest of `depth` relative clauses: each clause's own overt argument
        (the subject of an object relative, the object of a subject relative, the by-agent of a passive
        one) carries the next level. kind fixes the outermost clause; the rest are drawn uniformly."""
        kind = kind or self.pick(("subj", "subj_passive", "obj"))
        head = self.np(role, gap=A if kind == "subj" else P)
        pron, verb = self.pron(head), self.pick(tuple(TRANSITIVE))
        inner_role = P if kind == "subj" else A
        inner = self.rel_np(inner_role, depth - 1) if depth > 1 else self.np(inner_role)
        if kind == "obj":
            return with_relative(head, rel_object(pron, inner, verb))
        if kind == "subj":
            return with_relative(head, rel_subject(pron, verb, inner))
        return with_relative(head, rel_subject_passive(pron, TRANSITIVE[verb], inner))

    def tail(self, tagged: Tagged, pp: bool = True) -> Tagged:
        """Optional locative PP and sentence-final adverb."""
        if pp and self.rng.random() < 0.2:
            tagged = tagged + locative(self.pick(PREPOSITIONS), self.np(L))
        if self.rng.random() < 0.15:
            tagged = tagged + [(self.pick(ADVERBS), M)]
        return tagged

    def main_clause(self, subj: NP, obj: NP | None, kind: str) -> Tagged:
        if kind == "transitive":
            return transitive(subj, self.pick(tuple(TRANSITIVE)), obj)
        if kind == "passive":
            return passive(subj, TRANSITIVE[self.pick(tuple(TRANSITIVE))], obj)
        return intransitive(subj, self.pick(INTRANSITIVE))

    def relative_sentence(self, depth: int, rel_kind: str | None, on_subject: bool) -> Tagged:
        """Main clause (transitive / intransitive / passive) with a relative chain on one argument."""
        kind = self.pick(("transitive", "intransitive", "passive"))
        if kind == "intransitive":
            on_subject = True
        subj_role, obj_role = (P, A) if kind == "passive" else (A, P)
        subj = self.rel_np(subj_role, depth, rel_kind) if on_subject else self.np(subj_role)
        obj = None if kind == "intransitive" else (
            self.np(obj_role) if on_subject else self.rel_np(obj_role, depth, rel_kind))
        return self.tail(self.main_clause(subj, obj, kind), pp=depth <= 1)

    def sentence(self, construction: str) -> tuple[Tagged, int]:
        """One sentence of `construction` and its relative-clause depth (cleft clauses count as 1)."""
        pick, verb = self.pick, lambda: self.pick(tuple(TRANSITIVE))
        if construction == "active_transitive":
            return self.tail(transitive(self.np(A), verb(), self.np(P))), 0
        if construction == "intransitive":
            return self.tail(intransitive(self.np(A), pick(INTRANSITIVE))), 0
        if construction == "ditransitive_double_object":
            return self.tail(ditransitive_double_object(self.np(A), pick(DITRANSITIVE), self.np(R),
                                                        self.np("THEME"))), 0
        if construction == "ditransitive_prepositional":
            return self.tail(ditransitive_prepositional(self.np(A), pick(DITRANSITIVE), self.np("THEME"),
                                                        self.np(R))), 0
        if construction == "passive_by":
            return self.tail(passive(self.np(P), TRANSITIVE[verb()], self.np(A))), 0
        if construction == "fronted_locative":
            body = (transitive(self.np(A), verb(), self.np(P)) if self.rng.random() < 0.6
                    else intransitive(self.np(A), pick(INTRANSITIVE)))
            return locative(pick(PREPOSITIONS), self.np(L)) + [(",", F)] + self.tail(body, pp=False), 0
        if construction == "expletive":
            return self.tail(expletive(pick(WEATHER))), 0
        if construction in ("subject_relative", "object_relative"):
            rel_kind = "obj" if construction == "object_relative" else pick(("subj", "subj", "subj_passive"))
            return self.relative_sentence(1, rel_kind, on_subject=self.rng.random() < 0.5), 1
        if construction == "topicalisation":
            return self.tail(topicalisation(self.np(P), self.np(A), verb())), 0
        if construction == "cleft_object":
            focus = self.np(P, gap=P)
            return cleft_object(focus, self.np(A), verb(), self.pron(focus)), 1
        if construction == "cleft_subject":
            focus = self.np(A, gap=A)
            return cleft_subject(focus, verb(), self.np(P), self.pron(focus)), 1
        if construction == "passive_no_by":
            return self.tail(passive(self.np(P), TRANSITIVE[verb()])), 0
        if construction.startswith("centre_embedded_depth"):
            depth = int(construction[-1])
            return self.relative_sentence(depth, None, on_subject=True), depth
        raise ValueError(f"unknown construction {construction!r}; known: "
                         f"{sorted(GRAMMAR_A) + sorted(GRAMMAR_B) + sorted(GRAMMAR_DEEP)}")


PAIR_RELATIVES = ("subject_relative", "passive_relative", "object_relative")


def minimal_pair(sampler: Sampler) -> tuple[Tagged, Tagged, str]:
    """Two sentences that share every word up to the main verb (see the docstring's "Pairs"): the first has an
    active main clause (head = AGENT), the second a passive one with "by" (head = PATIENT); and the relative
    clause's kind. Every noun but the head has one role in train_a (objects PATIENT_ONLY or inanimate, agents
    AGENT_ONLY), so the head is the only structure-dependent token."""
    rng, pick = sampler.rng, sampler.pick

    def np_from(pool: tuple) -> NP:  # Sampler.np's adjective and determiner rates, from a given pool of nouns
        noun, adj = pick(pool), pick(ADJECTIVES) if rng.random() < 0.2 else None
        return noun_phrase(noun, "the" if rng.random() < 0.75 else ("an" if (adj or noun)[0] in "aeiou" else "a"), adj)

    fixed_patient, fixed_agent = (lambda: np_from(OBJECTS + PATIENT_ONLY)), (lambda: np_from(AGENT_ONLY))
    head = np_from(ANIMATE)
    pron, verb, kind = sampler.pron(head), pick(tuple(TRANSITIVE)), pick(PAIR_RELATIVES)
    if kind == "subject_relative":
        subj = with_relative(head, rel_subject(pron, verb, fixed_patient()))
    elif kind == "passive_relative":
        subj = with_relative(head, rel_subject_passive(pron, TRANSITIVE[verb], fixed_agent()))
    else:
        subj = with_relative(head, rel_object(pron, fixed_agent(), verb))
    main_verb = pick(tuple(TRANSITIVE))
    active = (transitive(subj, main_verb, fixed_patient()) if rng.random() < 0.7
              else intransitive(subj, pick(INTRANSITIVE)))
    return active, passive(subj, TRANSITIVE[main_verb], fixed_agent()), kind


def generate_pairs(n: int, rng: random.Random, seen: set[tuple[str, ...]]) -> list[dict]:
    """n sentences (n // 2 minimal pairs, active member first), none seen before (`seen` is updated)."""
    sampler, records, attempts = Sampler(rng), [], 0
    while len(records) < 2 * (n // 2):
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"test_pairs: only {len(records)} of {n} unique sentences after {attempts} draws; "
                               f"lower the split size")
        active, passive_, kind = minimal_pair(sampler)
        pair = [tuple(w for w, _ in s) for s in (active, passive_)]
        if any(p in seen for p in pair):
            continue
        target = next(i for i, (w, r) in enumerate(active) if r == A and w in ANIMATE)  # the head noun
        for tagged, tokens, voice in ((active, pair[0], "active"), (passive_, pair[1], "passive")):
            seen.add(tokens)
            records.append({"id": f"test_pairs-{len(records):05d}", "tokens": list(tokens),
                            "roles": [r for _, r in tagged], "construction": f"pairs_{kind}_{voice}", "depth": 1,
                            "pair": len(records) // 2, "target": target})
    return records


def has_swap(tagged: Tagged) -> bool:
    """True if a held-out noun carries the role it never has in training (the test_a condition)."""
    return any((w in AGENT_ONLY and r == P) or (w in PATIENT_ONLY and r == A) for w, r in tagged)


# ---------------------------------------------------------------- splits
def generate_split(split: str, n: int, rng: random.Random, seen: set[tuple[str, ...]]) -> list[dict]:
    """n sentences never seen before in any split (`seen` is updated in place)."""
    if split == "test_pairs":
        return generate_pairs(n, rng, seen)
    grammar = {"test_b": GRAMMAR_B, "test_deep": GRAMMAR_DEEP}.get(split, GRAMMAR_A)
    names, weights = list(grammar), list(grammar.values())
    sampler = Sampler(rng, swap=split == "test_a")
    records, attempts = [], 0
    while len(records) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"{split}: only {len(records)} of {n} unique sentences after {attempts} "
                               f"draws; the grammar is too small for n={n}, lower the split size")
        construction = rng.choices(names, weights)[0]
        tagged, depth = sampler.sentence(construction)
        tokens = tuple(w for w, _ in tagged)
        if tokens in seen or (split == "test_a" and not has_swap(tagged)):
            continue
        assert all(r in ROLES for _, r in tagged), f"unlabelled token in {tagged}: a builder forgot a role"
        seen.add(tokens)
        records.append({"id": f"{split}-{len(records):05d}", "tokens": list(tokens),
                        "roles": [r for _, r in tagged], "construction": construction, "depth": depth})
    return records


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare(out_dir: str | Path = Path(__file__).resolve().parent, seed: int = 0, n_train: int = 20000,
            n_dev: int = 2000, n_test: int = 2000) -> dict:
    """Generate all six splits and meta.json into out_dir; returns the meta dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng, seen = random.Random(seed), set()
    sizes = {"train_a": n_train, "dev_a": n_dev, "test_a": n_test, "test_b": n_test, "test_deep": n_test,
             "test_pairs": 2 * (n_test // 2)}
    data = {s: generate_split(s, sizes[s], rng, seen) for s in SPLITS}

    train_roles: dict[str, set[str]] = {}
    for rec in data["train_a"]:
        for w, r in zip(rec["tokens"], rec["roles"]):
            train_roles.setdefault(w, set()).add(r)
    for split, recs in data.items():  # the BiGRU embeds word types: no word may be unseen in training
        unseen = sorted({w for rec in recs for w in rec["tokens"]} - set(train_roles))
        if unseen:
            raise RuntimeError(f"{split} has words never seen in train_a: {unseen}; raise n_train "
                               f"(now {n_train}) or the grammar A weights of the constructions that use them")

    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "roles": list(ROLES),
            "vocabulary": sorted(train_roles), "sizes": sizes,
            "train_roles_by_word": {w: sorted(rs, key=ROLES.index) for w, rs in sorted(train_roles.items())},
            "structure_dependent": "a token whose word type's set of roles in train_a is not exactly "
                                   "{its gold role}",
            "held_out_pairings": [{"noun": n, "train_roles": [A], "test_a_role": P} for n in AGENT_ONLY]
                                 + [{"noun": n, "train_roles": [P], "test_a_role": A} for n in PATIENT_ONLY],
            "constructions": {s: {} for s in SPLITS}, "depths": {s: {} for s in SPLITS}, "files": {}}
    for split, recs in data.items():
        for rec in recs:
            c, d = meta["constructions"][split], meta["depths"][split]
            c[rec["construction"]] = c.get(rec["construction"], 0) + 1
            d[str(rec["depth"])] = d.get(str(rec["depth"]), 0) + 1
        meta["constructions"][split] = dict(sorted(meta["constructions"][split].items()))
        meta["depths"][split] = dict(sorted(meta["depths"][split].items()))
        text = "".join(json.dumps(rec) + "\n" for rec in recs)
        atomic_write_text(out_dir / f"{split}.jsonl", text)
        meta["files"][f"{split}.jsonl"] = {"sentences": len(recs),
                                           "sha256": hashlib.sha256(text.encode()).hexdigest()}
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")  # last: marks completion
    return meta


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out_dir", default=str(Path(__file__).resolve().parent),
                    help="where the .jsonl files and meta.json go (default: this folder)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed; same seed -> byte-identical files")
    ap.add_argument("--n_train", type=int, default=20000, help="sentences in train_a")
    ap.add_argument("--n_dev", type=int, default=2000, help="sentences in dev_a")
    ap.add_argument("--n_test", type=int, default=2000,
                    help="sentences in each of test_a, test_b, test_deep and test_pairs (rounded down to pairs)")
    ap.add_argument("--force", action="store_true", help="regenerate even if meta.json already exists")
    args = ap.parse_args(argv)
    meta_path = Path(args.out_dir) / "meta.json"
    if meta_path.exists() and not args.force:
        print(f"{meta_path} exists; pass --force to regenerate")
        return json.loads(meta_path.read_text())
    meta = prepare(args.out_dir, args.seed, args.n_train, args.n_dev, args.n_test)
    for split in SPLITS:
        print(f"{split:10s} {meta['sizes'][split]:6d} sentences  {meta['constructions'][split]}")
    return meta


if __name__ == "__main__":
    main()
