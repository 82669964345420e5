"""An English→Korean parallel corpus generated from a small grammar (no downloads).

One sampler per construction (transitive, motion, because, ...) picks words that fit each other and
builds the pair with ``course_lib.grammar``, which holds the morphology and the lexicon.
``make_splits`` holds whole (subject, verb, complement) keys out of training. ``align`` says which English
word produced which Korean word (chapter 11 scores the translator's cross-attention against it).
"""
from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .grammar import (
    ADJECTIVES,
    ADJECTIVES_OF,
    CLASSES,
    DIET,
    IT_RULES,
    KOREAN_NOUNS,
    MEALS,
    NOUNS,
    PLACE_OBJECTS,
    REASONS,
    STATES,
    TIMES,
    TOOLS,
    VEHICLES,
    VERBS,
    VERBS_BY_FRAME,
    Noun,
    Verb,
    _plural,
    _verb_ko,
    be_form,
    build_sentence,
    complements,
    has_batchim,
    it_object_sentence,
    lemma,
    like_sentence,
    noun_ids,
    number_of,
    particle,
    subject_np,
    variant,
    with_particle,
)
from .validate import nfc

__all__ = ["Pair", "Splits", "NOTE_EXAMPLES", "IT_EXAMPLES", "referent", "pair_text", "align", "words_of", "has_batchim",
           "particle", "generate", "make_splits", "load_pairs", "statistics", "NOUNS", "VERBS", "ADJECTIVES", "KOREAN_NOUNS"]


# ------------------------------------------------------------------ sampling
@dataclass(frozen=True)
class Pair:
    """A sentence pair. ``it`` is the id of the noun that "it" refers to in "because it was ADJ": the subject
    ("The cat drank the milk because it was hungry." → "cat") or the object ("... because it was sweet." → "milk");
    "" when the sentence has no such "it" (weather "it was raining" included)."""
    en: str
    ko: str
    construction: str
    key: tuple          # (subject, verb, complement): the combination held out between splits
    tense: str = ""
    words: tuple = ()   # content-word ids used: "N.cat", "V.eat", "A.blue", "R.hungry"
    it: str = ""        # the noun id "it" refers to, see above


def _article(rng: random.Random, n: Noun | None) -> str:
    if n is None or n.kind not in "cmp":
        return ""
    if n.kind == "c":
        return "pl" if n.id in CLASSES["food"] and rng.random() < 0.2 else rng.choice(("a", "the"))
    return rng.choice(("", "the"))


def _tense(rng: random.Random, v: Verb, s: tuple[Noun, ...], simple: bool = True) -> str:
    if "P" in v.flags or "S" in v.flags:
        return "past" if "P" in v.flags else "present"
    tense = "past" if rng.random() < 0.55 else "present"
    if simple and tense == "present" and v.en[0] == v.en[2] and (len(s) > 1 or number_of(s[0]) != "sg"):
        return "past"  # "I read a book" would be ambiguous between 읽는다 and 읽었다
    return tense


def _time(rng: random.Random, v: Verb, tense: str, prog: bool = False, comp: Noun | None = None):
    if "T" in v.flags or rng.random() > 0.3:
        return None
    options = [t for t in TIMES[("prog_" if prog else "") + tense]
               if not (comp and comp.id in MEALS and ("morning" in t[0] or "night" in t[0]))]
    return rng.choice(options) if options else None


_SIMPLE = {"transitive": VERBS_BY_FRAME["obj"], "motion": VERBS_BY_FRAME["dest"], "location": VERBS_BY_FRAME["loc"],
           "negation": [v for f in ("obj", "dest", "loc") for v in VERBS_BY_FRAME[f] if "N" not in v.flags],
           "progressive": [v for f in ("obj", "dest", "loc", "none") for v in VERBS_BY_FRAME[f] if "G" not in v.flags]}


def _pair(construction: str, built: tuple, key: tuple, tense: str) -> Pair:
    return Pair(built[0], built[1], construction, key, tense, built[2])


def _s_simple(rng: random.Random, construction: str) -> Pair | None:
    """transitive / motion / location at a place, negated or progressive ones too."""
    neg, prog = construction == "negation", construction == "progressive"
    v = rng.choice(_SIMPLE[construction])
    s = NOUNS[rng.choice(v.subjects)]
    comps = complements(v, s)
    if not comps and v.frame != "none":
        return None
    c = NOUNS[rng.choice(comps)] if comps else None
    tense = "present" if prog and rng.random() < 0.7 else _tense(rng, v, (s,), simple=not (neg or prog))
    built = build_sentence((s,), v, c, tense=tense, neg=neg, prog=prog, art=(_article(rng, c),),
                           time=_time(rng, v, tense, prog, c))
    return _pair(construction, built, (s.id, v.id, c.id if c else "-"), tense)


def _s_place_object(rng: random.Random) -> Pair | None:
    vid, places, objs = rng.choice(PLACE_OBJECTS)
    v = VERBS[vid]
    s = NOUNS[rng.choice([p for p in v.subjects if p in CLASSES["person"]])]
    o, place = NOUNS[rng.choice([o for o in noun_ids(objs) if o in complements(v, s)])], NOUNS[rng.choice(noun_ids(places))]
    tense = _tense(rng, v, (s,))
    built = build_sentence((s,), v, o, tense=tense, art=(_article(rng, o),), place=place, time=_time(rng, v, tense, comp=o))
    return _pair("location", built, (s.id, v.id, o.id), tense)


def _s_adjective(rng: random.Random) -> Pair | None:
    v = rng.choice(VERBS_BY_FRAME["obj"])
    s = NOUNS[rng.choice(v.subjects)]
    options = [c for c in complements(v, s) if c in ADJECTIVES_OF]
    if not options:
        return None
    o = NOUNS[rng.choice(options)]
    prog = "G" not in v.flags and rng.random() < 0.3
    tense = "present" if prog else _tense(rng, v, (s,))
    built = build_sentence((s,), v, o, tense=tense, prog=prog, adj=rng.choice(ADJECTIVES_OF[o.id]), art=(_article(rng, o),))
    return _pair("adjective", built, (s.id, v.id, o.id), tense)


def _s_description(rng: random.Random) -> Pair:
    tense = rng.choice(("present", "past"))
    if rng.random() < 0.5:  # The ball is blue. → 공은 파랗다.
        adj = rng.choice([a for a in ADJECTIVES.values() if a.pres])
        n = NOUNS[rng.choice(adj.nouns)]
        en = f"The {n.en} {be_form('pl' if n.kind == 'p' else 'sg', tense == 'past')} {adj.id}."
        ko = f"{with_particle(n.ko, '은/는')} {adj.pres if tense == 'present' else adj.past}."
        return Pair(en, ko, "description", (n.id, "be", adj.id), tense, ("N." + n.id, "A." + adj.id))
    state = rng.choice(STATES)  # Minsu is tired. → 민수는 피곤하다.
    n = NOUNS[rng.choice(noun_ids(REASONS[state][4]))]
    en = f"{subject_np(n)} {be_form(number_of(n), tense == 'past')} {state}."
    forms = REASONS[state]  # feelings of others: 그는 슬퍼한다 (슬프다 only for 나, 우리)
    third = len(forms) > 6 and n.gender not in ("1s", "1p")
    predicate = forms[6].split(",")[tense == "past"] if third else forms[1 if tense == "present" else 2]
    ko = f"{with_particle(n.ko, '은/는')} {predicate}."
    return Pair(en[0].upper() + en[1:], ko, "description", (n.id, "be", state), tense, ("N." + n.id, "R." + state))


def _s_because(rng: random.Random) -> Pair | None:
    reason = rng.choice(list(REASONS))
    action = rng.choice(REASONS[reason][5].split())
    vid, spec = action.lstrip("!").split(":")
    v = VERBS[vid]
    s = NOUNS[rng.choice([x for x in noun_ids(REASONS[reason][4]) if x in v.subjects])]
    options = complements(v, s) if spec in "*-" else [x for x in noun_ids(spec.replace("+", " ")) if x in complements(v, s)]
    if spec != "-" and not options:
        return None
    c = NOUNS[rng.choice(options)] if spec != "-" else None
    it = s.id if s.gender == "" and not REASONS[reason][0].startswith("it ") else ""  # "because it was thirsty": the cat
    if it and c is not None and v.frame == "obj" and reason in _IT_SUBJECT_REASONS:
        return None  # "The cat ate the fish because it was hungry." is the "it" construction's
    tense = _tense(rng, v, (s,), simple=not action.startswith("!"))
    built = build_sentence((s,), v, c, tense=tense, neg=action.startswith("!"), art=(_article(rng, c),), reason=reason)
    return Pair(*built[:2], "because", (s.id, v.id, c.id if c else "-"), tense, built[2], it)


_IT_SUBJECT_REASONS = {a for rule in IT_RULES if rule.referent == "subject" for a in rule.adjectives}


def _it_pair(s: Noun, v: Verb, c: Noun, referent: str, adjective: str, tense: str = "past", neg: bool = False,
             time: tuple[str, str] | None = None) -> Pair:
    """"because it was ADJ": "it" is the subject (hungry: 고양이는 배가 고파서 우유를 마셨다) or the object (sweet:
    고양이는 우유가 달아서 마셨다); ``Pair.it`` records which noun."""
    if referent == "subject":
        built = build_sentence((s,), v, c, tense=tense, neg=neg, art=("the",), time=time, reason=adjective)
    else:
        built = it_object_sentence(s, v, c, ADJECTIVES[adjective], tense=tense, neg=neg, time=time)
    return Pair(built[0], built[1], "it", (s.id, v.id, c.id), tense, built[2], s.id if referent == "subject" else c.id)


def _two_objects(rng: random.Random, v: Verb) -> Pair | None:
    """Two objects: 빵과 우유를."""
    s = NOUNS[rng.choice(v.subjects)]
    if len(complements(v, s)) < 2:
        return None
    a, b = (NOUNS[x] for x in rng.sample(complements(v, s), 2))
    if variant(v, (s,), (a,)) != variant(v, (s,), (b,)):
        return None  # 사과와 개를 씻었다/씻겼다: the two objects want different verbs
    tense = _tense(rng, v, (s,))
    built = build_sentence((s,), v, (a, b), tense=tense, art=(_article(rng, a), _article(rng, b)))
    return _pair("coordination", built, (s.id, v.id, a.id + "+" + b.id), tense)


def _s_coordination(rng: random.Random) -> Pair | None:
    v = rng.choice(_SIMPLE["transitive"] + _SIMPLE["motion"] + _SIMPLE["location"])
    if v.frame == "obj" and rng.random() < 0.3:
        return _two_objects(rng, v)
    a, b = rng.sample([x for x in v.subjects if NOUNS[x].kind != "P"], 2)
    if "I" in v.subjects and a in CLASSES["person"] and rng.random() < 0.25:
        b = "I"  # "Suni and I" → 순이와 나는
    subjects = (NOUNS[a], NOUNS[b])
    comps = [c for c in complements(v, subjects[0]) if c in complements(v, subjects[1])]
    if not comps:
        return None
    c = NOUNS[rng.choice(comps)]
    tense = _tense(rng, v, subjects)
    built = build_sentence(subjects, v, c, tense=tense, art=(_article(rng, c),), time=_time(rng, v, tense, comp=c))
    return _pair("coordination", built, (a + "+" + b, v.id, c.id), tense)


def _s_dative(rng: random.Random) -> Pair:
    v = rng.choice(VERBS_BY_FRAME["dat"])
    s = NOUNS[rng.choice(v.subjects)]
    recipients: Sequence[str]
    if v.id == "teach":
        recipients = noun_ids("name kidnoun")
    elif v.id == "give":  # animals get food they eat; elders receive with 께 드리다 (grammar.variant)
        recipients = [x for x in noun_ids("people animal") if x not in ("fish", "frog", "butterfly")]
    else:
        recipients = CLASSES["people"]
    r = NOUNS[rng.choice([x for x in recipients if x != s.id])]
    o = NOUNS[rng.choice(noun_ids(DIET.get(r.id, "") + " water") if r.id in CLASSES["animal"] else v.complements)]
    tense = _tense(rng, v, (s,))
    built = build_sentence((s,), v, o, tense=tense, art=(_article(rng, o),), recipient=r)
    return _pair("dative", built, (s.id, v.id, o.id), tense)


def _s_instrument(rng: random.Random) -> Pair:
    if rng.random() < 0.3:  # by bus → 버스로
        tools, places = rng.choice(VEHICLES)
        v, objs = VERBS[rng.choice(("go", "come", "go_back", "come_back"))], noun_ids(places)
    else:
        vid, tools, obj_spec = rng.choice(TOOLS)
        v, objs = VERBS[vid], noun_ids(obj_spec)
    s = NOUNS[rng.choice([x for x in v.subjects if x in CLASSES["person"]])]
    c = NOUNS[rng.choice([x for x in objs if x in complements(v, s)])]
    tense = _tense(rng, v, (s,))
    built = build_sentence((s,), v, c, tense=tense, art=(_article(rng, c),), tool=NOUNS[rng.choice(noun_ids(tools))])
    return _pair("instrument", built, (s.id, v.id, c.id), tense)


def _s_it(rng: random.Random) -> Pair | None:
    """"The cat drank the milk because it was hungry / sweet.": "it" is the subject or the object (IT_RULES)."""
    referent = rng.choice(("subject", "object"))
    rule = rng.choice([r for r in IT_RULES if r.referent == referent])
    adjective, action = rng.choice(rule.adjectives), rng.choice(rule.actions)
    vid, spec = action.lstrip("!").split(":")
    v, s = VERBS[vid], NOUNS[rng.choice(rule.subjects)]
    options: Sequence[str] = complements(v, s) if spec == "*" else noun_ids(spec.replace("+", " "))
    if rule.referent == "object":
        options = [c for c in options if c in ADJECTIVES[adjective].nouns]
    options = [c for c in options if NOUNS[c].kind in "cmt" and (vid not in ("eat", "drink") or c in complements(v, s))]
    if not options:
        return None
    c, neg = NOUNS[rng.choice(options)], action.startswith("!")
    tense = _tense(rng, v, (s,), simple=not neg)
    return _it_pair(s, v, c, referent, adjective, tense, neg, _time(rng, v, tense, comp=c))


def _like(s: Noun, o: Noun, construction: str = "like") -> Pair:
    """I like cats. → 나는 고양이가 좋다."""
    return _pair(construction, like_sentence(s, o), (s.id, "like", o.id), "present")


NOTE_EXAMPLES: list[tuple[str, str]] = [
    ("I go to school.", "나는 학교에 간다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
    ("She closed the drawer.", "그녀는 서랍을 닫았다."), ("He closed his heart.", "그는 마음을 닫았다."),
    ("I was born in Paris.", "나는 파리에서 태어났다."),
    ("The boy is holding a blue ball.", "소년은 파란 공을 들고 있다."), ("I like cats.", "나는 고양이가 좋다."),
]


IT_EXAMPLES: list[tuple[str, str]] = [
    ("The cat drank the milk because it was hungry.", "고양이는 배가 고파서 우유를 마셨다."),
    ("The cat drank the milk because it was sweet.", "고양이는 우유가 달아서 마셨다."),
]
_IT_KEY = ("cat", "drink", "milk")  # the note's "it" sentences: held out of train, in the test split


def _it_examples() -> list[Pair]:
    """The concept note's two "it" sentences, built by the grammar."""
    return [_it_pair(NOUNS["cat"], VERBS["drink"], NOUNS["milk"], *ra) for ra in (("subject", "hungry"), ("object", "sweet"))]


def _note_pairs() -> list[Pair]:
    """The concept note's sentences, built by the grammar (the idiom 마음을 닫다 is written out)."""
    N, V = NOUNS, VERBS
    return [_pair("note", build_sentence((N["I"],), V["go"], N["school"], tense="present"), ("I", "go", "school"), "present"),
            _pair("note", build_sentence((N["Suni"],), V["close"], N["window"], art=("the",)),
                  ("Suni", "close", "window"), "past"),
            _pair("note", build_sentence((N["she"],), V["close"], N["drawer"], art=("the",)), ("she", "close", "drawer"), "past"),
            Pair("He closed his heart.", "그는 마음을 닫았다.", "note", ("he", "close", "heart"), "past",
                 ("N.he", "V.close", "N.heart")),
            _pair("note", build_sentence((N["I"],), V["born"], N["Paris"]), ("I", "born", "Paris"), "past"),
            _pair("note", build_sentence((N["boy"],), V["hold"], N["ball"], tense="present", prog=True, art=("a",),
                                         adj=ADJECTIVES["blue"]), ("boy", "hold", "ball"), "present"),
            _like(N["I"], N["cat"], "note")]


_BUILDERS = {"transitive": lambda r: _s_simple(r, "transitive"), "motion": lambda r: _s_simple(r, "motion"),
             "location": lambda r: _s_simple(r, "location") if r.random() < 0.6 else _s_place_object(r),
             "adjective": _s_adjective, "description": _s_description, "negation": lambda r: _s_simple(r, "negation"),
             "progressive": lambda r: _s_simple(r, "progressive"), "because": _s_because, "coordination": _s_coordination,
             "dative": _s_dative, "instrument": _s_instrument, "it": _s_it,
             "like": lambda r: _like(NOUNS[r.choice(CLASSES["person"])], NOUNS[r.choice(CLASSES["likeable"])])}
_WEIGHTS = {"transitive": 16, "motion": 10, "location": 11, "adjective": 10, "description": 4, "negation": 10,
            "progressive": 10, "because": 12, "coordination": 6, "dative": 5, "instrument": 4, "like": 2, "it": 8}


def _sample(rng: random.Random, n: int) -> list[Pair]:
    pairs = {p.en: p for p in _note_pairs() + _it_examples()}
    target, names = n + len(pairs), list(_WEIGHTS)
    for _ in range(40 * n + 1000):
        if len(pairs) >= target:
            return list(pairs.values())
        for name in rng.choices(names, weights=list(_WEIGHTS.values()), k=min(256, 2 * (target - len(pairs)))):
            p = _BUILDERS[name](rng)
            if p is not None and p.en not in pairs and len(pairs) < target:
                pairs[p.en] = p
    raise RuntimeError(f"the grammar produced only {len(pairs)} distinct pairs, fewer than the {target} asked for")


def generate(seed: int = 0, n_pairs: int = 22000) -> list[Pair]:
    """The note's examples and IT_EXAMPLES, then `n_pairs` distinct pairs sampled from the grammar; deterministic in `seed`."""
    if not isinstance(seed, int) or not isinstance(n_pairs, int) or n_pairs < 0:
        raise ValueError(f"generate expects an int seed and an int n_pairs >= 0, got {seed!r}, {n_pairs!r}")
    return _sample(random.Random(seed), n_pairs)


# ------------------------------------------------------------------ word alignment
_AUX = {"am", "is", "are", "was", "were", "do", "does", "did", "not"}  # tense, aspect, negation: Korean endings (and 안)
_PREPS = {"to", "at", "in", "on", "with", "by"}  # Korean particles: 학교에 is "to school"
_PARTICLES = ("", "은", "는", "이", "가", "을", "를", "와", "과", "에", "에서", "에게", "께", "로", "으로")


def words_of(text: str) -> list[str]:
    """The word tokens of a corpus sentence: its space-separated words, the final period on its own.

    The same tokens as chapter 01's ``tokens.word_tokenize`` on every generated sentence (tested).
    """
    return re.findall(r"[^\s.]+|\.", text)


def align(pair: Pair) -> list[tuple[int, int]]:
    """Which English word produced which Korean word: sorted (english_index, korean_index) links.

    Indices are into ``words_of(pair.en)`` / ``words_of(pair.ko)`` (= ``word_tokenize``), the translator's tokens.
    The convention: a Korean word carries its particle or ending, so
      - a noun, an adjective, a time phrase link to the Korean word(s) that realise them (cat ↔ 고양이를);
      - a preposition links to the Korean word of its noun (to, school ↔ 학교에), "and" to the first conjunct's (빵과);
      - the verb with its auxiliaries and "not" links to every word of the Korean predicate (is, holding ↔ 들고, 있다);
        a description's copula ("is" blue) links to the predicate adjective (파랗다);
      - a "because" clause links to the Korean clause (because, he, was, hungry ↔ 배가, 고파서), except an "it"
        that refers to a noun (``pair.it``): it links to that noun's Korean word (it ↔ 고양이는 in "... because it
        was hungry", it ↔ 우유가 in "... because it was sweet", where because, was, sweet ↔ 달아서);
      - the final period to the final period. Articles and "his" stay unlinked (Korean has none).
    Needs the content-word ids of a generated ``Pair`` (``pair.words``); the note's idiom pair works as well.
    """
    if not isinstance(pair, Pair):
        raise TypeError(f"align needs a corpus.Pair (its content-word ids say which words produced which), "
                        f"got {type(pair).__name__}")
    en, ko = [w.lower() for w in words_of(pair.en)], words_of(pair.ko)
    links: set[tuple[int, int]] = set()
    used_ko: set[int] = set()

    def link(en_idx: Sequence[int], ko_idx: Sequence[int]) -> None:
        links.update((i, j) for i in en_idx for j in ko_idx)
        used_ko.update(ko_idx)

    predicate = _predicate(pair, ko)  # the Korean predicate's word indices (at the end)
    for word in sorted(pair.words, key=lambda w: not w.startswith("R.")):  # a clause first: 배가 is not the noun 배
        kind, _, wid = word.partition(".")
        if kind == "N":
            _link_noun(NOUNS[wid], en, ko, link, used_ko, predicate)
        elif kind == "A":
            adj = ADJECTIVES[wid]
            forms = {adj.attr, adj.pres, adj.past, adj.connective} - {""}
            ko_idx = [j for j, w in enumerate(ko) if w in forms]
            link([i for i, w in enumerate(en) if w == wid or (w in ("because", "was", "is") and _in_it_clause(pair, en, i))],
                 ko_idx)
        elif kind == "R":
            _link_reason(wid, en, ko, link, predicate, skip=_it_index(pair, en))
        elif kind == "V":
            v_en = {w for form in (VERBS[wid].en if wid in VERBS else ("like", "likes")) for w in form.split()} - {"{was}"}
            link([i for i, w in enumerate(en) if w in v_en or (w in _AUX and not _in_reason(en, i))], predicate)
    if not any(w.startswith("V.") for w in pair.words):  # a description: the copula goes to the predicate
        link([i for i, w in enumerate(en) if w in _AUX and not _in_reason(en, i)], predicate)
    if pair.it:  # "it" → the Korean word of the noun it refers to
        referent = NOUNS[pair.it].ko
        link([_it_index(pair, en)], [j for j, w in enumerate(ko) if w.startswith(referent) and w[len(referent):] in _PARTICLES
                                     and j not in predicate][:1])
    for t_en, t_ko in (t for ts in TIMES.values() for t in ts):
        i, j = _find(en, t_en.lower().split()), _find(ko, t_ko.split())
        if i is not None and j is not None:
            link(range(i, i + len(t_en.split())), range(j, j + len(t_ko.split())))
    link([i for i, w in enumerate(en) if w == "."], [j for j, w in enumerate(ko) if w == "."])
    return sorted(links)


def _find(words: Sequence[str], phrase: Sequence[str]) -> int | None:
    """Where ``phrase`` starts in ``words`` (None if it does not occur)."""
    n = len(phrase)
    return next((i for i in range(len(words) - n + 1) if list(words[i:i + n]) == list(phrase)), None)


def _in_reason(en: Sequence[str], i: int) -> bool:
    return "because" in en and i > en.index("because")


def _it_index(pair: Pair, en: Sequence[str]) -> int:
    """The index of "because it"'s "it" when it refers to a noun (``pair.it``), else -1."""
    return en.index("because") + 1 if pair.it else -1


def _in_it_clause(pair: Pair, en: Sequence[str], i: int) -> bool:
    return bool(pair.it) and "because" in en and i >= en.index("because")


def _predicate(pair: Pair, ko: list[str]) -> list[int]:
    """The Korean predicate: the words before the period that belong to the verb (안, 고 있다, 공부를 안 한다)."""
    body = ko[:-1] if ko and ko[-1] == "." else ko
    verbs = [VERBS[w[2:]] for w in pair.words if w.startswith("V.") and w[2:] in VERBS]
    forms = {" ".join(body[-1:])} | {f for w in pair.words if w.startswith("R.") for f in REASONS[w[2:]][1:3]}
    for v in verbs:
        forms |= {_verb_ko(v, past, prog, neg) for past in (False, True) for prog in (False, True) for neg in (False, True)}
    size = max(len(f.split()) for f in forms if " ".join(body[-len(f.split()):]) == f)
    return list(range(len(body) - size, len(body)))


def _link_noun(noun: Noun, en: list[str], ko: list[str], link, used_ko: set[int], predicate: list[int]) -> None:
    """A noun (and the preposition or "and" before it) to its Korean word: the noun plus a particle."""
    words = noun.en.lower().split()
    ko_idx = [j for j, w in enumerate(ko) if j not in predicate and j not in used_ko and w[len(noun.ko):] in _PARTICLES
              and w.startswith(noun.ko)][:1]
    for form in (words, words[:-1] + [_plural(words[-1])]):
        start = _find(en, form)
        if start is not None:
            en_idx = list(range(start, start + len(form)))
            before = start - 1
            while before >= 0 and (en[before] in ("a", "an", "the", "his") or en[before] in ADJECTIVES):
                before -= 1  # articles and adjectives between a preposition and its noun
            if before >= 0 and en[before] in _PREPS:
                en_idx.append(before)
            if start + len(form) < len(en) and en[start + len(form)] == "and" and ko_idx and ko[ko_idx[0]][-1] in "와과":
                en_idx.append(start + len(form))  # "bread and milk" → 빵과 우유를: 과 is "and"
            link(en_idx, ko_idx)
            return


def _link_reason(reason: str, en: list[str], ko: list[str], link, predicate: list[int], skip: int = -1) -> None:
    """A "because" clause to its Korean clause (but the word at `skip`); a state ("Minsu is tired") to the predicate."""
    forms = REASONS[reason]
    if "because" in en:
        start, clause = en.index("because"), forms[3].split()
        j = _find(ko, clause)
        link([i for i in range(start, len(en) - 1) if i != skip], range(j, j + len(clause)) if j is not None else [])
    else:
        link([i for i, w in enumerate(en) if w == reason], predicate)


# ------------------------------------------------------------------ splits, files, statistics
@dataclass(frozen=True)
class Splits:
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]


def _check_split_sizes(seed: int, n_train: int, n_valid: int, n_test: int) -> None:
    for name, value in (("seed", seed), ("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if not isinstance(value, int) or isinstance(value, bool) or (name != "seed" and value < 0):
            raise ValueError(f"make_splits expects {name} to be a non-negative int, got {value!r}")
    if n_train < len(NOTE_EXAMPLES):
        raise ValueError(f"n_train must be at least {len(NOTE_EXAMPLES)} (the note's examples), got {n_train}")


def _pair_tokens(p: Pair) -> set[tuple[str, str]]:
    """The words of a pair, tagged with their language: {("en", "cat"), ("ko", "고양이가"), ...}."""
    return {("en", w.strip(".")) for w in p.en.split()} | {("ko", w.strip(".")) for w in p.ko.split()}


def _hold_out(rng: random.Random, pool: list[Pair], tokens: dict[str, set], n_valid: int, n_test: int,
              ) -> tuple[list[Pair], list[Pair], set[tuple]]:
    """Whole keys for test, then valid, skipping a key whose removal would take a word out of train."""
    groups: dict[tuple, list[Pair]] = {}
    for p in pool:
        groups.setdefault(p.key, []).append(p)
    group_tokens = {k: set().union(*(tokens[p.en] for p in g)) for k, g in groups.items()}
    carriers = Counter(t for toks in group_tokens.values() for t in toks)  # how many keys use each word
    keys = [k for k, g in groups.items() if all(p.construction != "note" for p in g)]
    rng.shuffle(keys)
    test: list[Pair] = []
    valid: list[Pair] = []
    held: set[tuple] = set()  # the keys held out for test and valid
    for split, size in ((test, n_test), (valid, n_valid)):
        for k in _it_keys_first([k for k in keys if k not in held], groups, size, note_key=split is test):
            if len(split) >= size:
                break
            if any(carriers[t] < 2 for t in group_tokens[k]):
                continue  # holding this key out would take a word out of train
            carriers.subtract(group_tokens[k])
            split.extend(groups[k])
            held.add(k)
    test, valid = test[:n_test], valid[:n_valid]
    if len(test) < n_test or len(valid) < n_valid:
        raise RuntimeError("could not hold out enough keys; ask for smaller valid/test splits")
    return test, valid, held


def referent(p: Pair) -> str:
    """Which noun "it" refers to in a pair: "subject", "object", or "" (no "it" that refers to a noun)."""
    return "" if not p.it else "subject" if p.it == p.key[0] else "object"


def _it_keys_first(keys: list[tuple], groups: dict[tuple, list[Pair]], size: int, note_key: bool) -> list[tuple]:
    """The note's "it" key (for test), then "it" keys of each referent (about 3 % of the split each), then the rest."""
    first = [_IT_KEY] if note_key and size and _IT_KEY in keys else []
    for kind in ("subject", "object"):
        count = 0
        for k in keys:
            if count >= max(1, 3 * size // 100):
                break
            n = sum(p.construction == "it" and referent(p) == kind for p in groups[k])
            if n and k not in first:
                first.append(k)
                count += n
    return first + [k for k in keys if k not in first]


def _choose_train(rest: list[Pair], tokens: dict[str, set], needed: set, n_train: int) -> list[Pair]:
    """First one train sentence for every word of valid/test (and the note's), then fill up in order."""
    chosen = [p.construction == "note" for p in rest]
    for i, p in enumerate(rest):
        chosen[i] = chosen[i] or bool(tokens[p.en] & needed)
        needed -= tokens[p.en] if chosen[i] else set()
    extra = n_train - sum(chosen)
    if extra < 0 or needed:
        raise ValueError(f"n_train={n_train} is too small to contain every word of valid/test; use a larger n_train")
    for i in range(len(rest)):
        if extra and not chosen[i]:
            chosen[i], extra = True, extra - 1
    if extra:
        raise RuntimeError(f"the grammar produced too few pairs for n_train={n_train}")
    return [p for p, c in zip(rest, chosen) if c]


def make_splits(seed: int = 0, n_train: int = 20000, n_valid: int = 1000, n_test: int = 1000) -> Splits:
    """Deterministic splits. Valid and test hold whole keys (subject, verb, complement) never seen in train,
    every word they use occurs in train, the note's sentences are in train and its "it" sentences
    (IT_EXAMPLES, key ("cat", "drink", "milk")) in test."""
    _check_split_sizes(seed, n_train, n_valid, n_test)
    rng, total = random.Random(seed), n_train + n_valid + n_test
    pool = _sample(rng, total + total // 40 + 50)
    tokens = {p.en: _pair_tokens(p) for p in pool}
    test, valid, held = _hold_out(rng, pool, tokens, n_valid, n_test)
    rest = [p for p in pool if p.key not in held]
    needed = set().union(set(), *(tokens[p.en] for p in valid + test))
    return Splits(_choose_train(rest, tokens, needed, n_train), valid, test)


def pair_text(pair: Pair | Sequence[str]) -> tuple[str, str]:
    """(English, Korean) text of a corpus Pair or of an (en, ko) tuple."""
    if isinstance(pair, Pair):
        return pair.en, pair.ko
    if isinstance(pair, (tuple, list)) and len(pair) >= 2 and all(isinstance(s, str) for s in pair[:2]):
        return pair[0], pair[1]
    raise TypeError(f"expected a corpus.Pair or an (english, korean) tuple of str, got {pair!r:.80}")


def load_pairs(path: str | Path, max_pairs: int | None = None) -> list[tuple[str, str]]:
    """Read `English<TAB>Korean[<TAB>anything]` lines (UTF-8, BOM allowed, text returned in NFC); blank lines are skipped."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_pairs expects a file path (str or pathlib.Path), got {type(path).__name__} {path!r:.60}")
    path = Path(path)
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 0):
        raise ValueError(f"max_pairs must be None or a non-negative int, got {max_pairs!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no sentence-pair file at {path} (expected UTF-8 text, one 'English<TAB>Korean' per line)")
    pairs: list[tuple[str, str]] = []
    with path.open("rb") as f:  # bytes, decoded line by line, so that a bad byte is reported on its own line
        for lineno, raw in enumerate(f, 1):
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} is not UTF-8 text: line {lineno}, byte {err.start + 1} of the line "
                                 f"({raw[err.start:err.start + 1]!r}): {err.reason}") from None
            if not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 2:
                raise ValueError(f"{path}, line {lineno}: expected 'English<TAB>Korean', found no tab in {line[:60]!r}")
            en, ko = nfc(cols[0].strip()), nfc(cols[1].strip())
            if not en or not ko:
                raise ValueError(f"{path}, line {lineno}: the {'Korean' if en else 'English'} side is empty in "
                                 f"{line.rstrip()[:60]!r}")
            pairs.append((en, ko))
    return pairs


def statistics(splits: Splits) -> dict:
    """Pairs per split, word types per language, content words, constructions, tenses, sentence lengths."""
    parts = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    pairs = [p for ps in parts.values() for p in ps]
    lengths = {lang: [len(getattr(p, lang).split()) for p in pairs] or [0] for lang in ("en", "ko")}
    content = {lemma(w) for p in pairs for w in p.words if not (w.startswith("N.") and NOUNS[w[2:]].kind == "P")}
    return {
        "pairs": {**{k: len(v) for k, v in parts.items()}, "total": len(pairs)},
        "words": {lang: len({w.strip(".") for p in pairs for w in getattr(p, lang).split()}) for lang in ("en", "ko")},
        "content_words": {"en": len({e for e, _ in content}), "ko": len({k for _, k in content})},
        "constructions": dict(Counter(p.construction for p in pairs).most_common()),
        "tenses": dict(Counter(p.tense for p in pairs).most_common()),
        "held_out_keys": {"valid": len({p.key for p in splits.valid}), "test": len({p.key for p in splits.test})},
        "sentence_length": {lang: {"mean": round(sum(v) / len(v), 2), "max": max(v)} for lang, v in lengths.items()},
    }
