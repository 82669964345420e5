"""Korean and English morphology and the lexicon behind the generated corpus (``corpus.py``).

Korean particles are chosen from the noun's final consonant (computed from Hangul code points), verbs come
from an explicit table, objects fit their verbs, and the "because" clause that English puts last comes first
in Korean. The lexicon and tables live in ``data/corpus_grammar.txt``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .hangul import RIEUL, final_index

__all__ = ["has_batchim", "particle", "with_particle", "Noun", "Verb", "Adjective", "NOUNS", "VERBS", "ADJECTIVES",
           "ADJECTIVES_OF", "CLASSES", "KOREAN_NOUNS", "REASONS", "STATES", "DIET", "HONOURED", "PLACE_OBJECTS", "TOOLS",
           "VEHICLES", "TIMES", "MEALS", "VERBS_BY_FRAME", "IT_RULES", "ItRule", "noun_ids", "variant", "number_of",
           "be_form", "noun_phrase", "subject_np", "build_sentence", "like_sentence", "it_object_sentence", "complements",
           "lemma"]

def has_batchim(word: str) -> bool:
    """True when the last Hangul syllable of `word` ends in a consonant (받침): 책 → True, 사과 → False."""
    return final_index(word) != 0


_PAIRS = {"은/는": ("은", "는"), "이/가": ("이", "가"), "을/를": ("을", "를"), "과/와": ("과", "와"), "으로/로": ("으로", "로")}
_PAIRS.update({"/".join(k.split("/")[::-1]): v for k, v in list(_PAIRS.items())})


def particle(word: str, pair: str) -> str:
    """The form of a particle pair that fits `word`: particle("학교", "을/를") -> "를".
    으로/로 takes 로 after a vowel and after ㄹ (서울로, 연필로), 으로 after other consonants (집으로)."""
    if pair not in _PAIRS:
        raise ValueError(f"unknown particle pair {pair!r}; expected one of 은/는, 이/가, 을/를, 와/과, 으로/로")
    after_consonant, after_vowel = _PAIRS[pair]
    final = final_index(word)
    if after_consonant == "으로":
        return after_vowel if final in (0, RIEUL) else after_consonant
    return after_consonant if final else after_vowel


def with_particle(word: str, pair: str) -> str:
    """`word` followed by the fitting particle: with_particle("학교", "을/를") -> "학교를"."""
    return word + particle(word, pair)


# ------------------------------------------------------------------ lexicon (data/corpus_grammar.txt)
@dataclass(frozen=True)
class Noun:
    """A noun of the lexicon: id, English, Korean, kind, gender/person and place preposition."""
    id: str
    en: str
    ko: str
    kind: str         # c a/the, m mass, p plural, z bare, t always "the", n name, h home, P pronoun
    gender: str = ""  # m, f, pl, 1s, 1p for people; "" → "it"
    prep: str = ""    # at / in / on for places


@dataclass(frozen=True)
class Verb:
    """A verb: English forms, Korean forms, frame, the subjects and complements that fit it, flags."""
    id: str
    en: tuple[str, ...]  # base, 3rd person singular, past, -ing
    ko: str              # dictionary form
    ko_present: str      # 한다체 present: 간다, 먹는다, 연다
    ko_past: str
    ko_connective: str   # -아서/-어서
    frame: str           # obj | dest | loc | dat | none
    subjects: tuple[str, ...]
    complements: tuple[str, ...]
    flags: str = ""
    prep: str = "to"
    neg: tuple[str, ...] = ()
    present: tuple[str, ...] = ()  # simple present and its negation when Korean states it: 들고 있다, 들고 있지 않다
    prog: tuple[str, ...] = ()     # progressive (present, past) when not -고 있다: 도착하는 중이다


@dataclass(frozen=True)
class Adjective:
    """An adjective: English id, Korean forms before a noun and as a predicate, the nouns it fits."""
    id: str
    attr: str   # before a noun: 파란 공
    pres: str   # predicate ("" when only used before nouns)
    past: str
    nouns: tuple[str, ...]
    connective: str = ""  # -아서/-어서 ("because it was sweet" → 달아서), for the "it" construction


def _sections(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            current = out.setdefault(line.strip("[] "), [])
        elif line.strip() and not line.startswith("#"):
            current.append(line)
    return out


_S = _sections(Path(__file__).with_name("data") / "corpus_grammar.txt")
NOUNS: dict[str, Noun] = {}                # noun id → Noun
CLASSES: dict[str, tuple[str, ...]] = {}  # class name (food, animal, person...) → noun ids
for _line in _S["nouns"]:
    for _tok in _line.split():
        if _tok.startswith("@"):
            _cls = _tok[1:]
            CLASSES.setdefault(_cls, ())
            continue
        if ":" in _tok:
            _head, _ko, _kind, *_extra = _tok.split(":")
            _id, _, _en = _head.partition("=")
            _x = _extra[0] if _extra else ""
            _place = _x in ("at", "in", "on")
            NOUNS[_id] = Noun(_id, (_en or _id).replace("_", " "), _ko, _kind, "" if _place else _x, _x if _place else "")
            _tok = _id
        CLASSES[_cls] += CLASSES[_tok[1:]] if _tok.startswith("+") else (_tok,)
CLASSES = {k: tuple(dict.fromkeys(v)) for k, v in CLASSES.items()}
CLASSES["person"] = CLASSES["pronoun"] + CLASSES["name"] + CLASSES["kidnoun"] + CLASSES["adultnoun"]
CLASSES["kid"] = CLASSES["pronoun"] + CLASSES["name"] + CLASSES["kidnoun"]
CLASSES["adult"] = CLASSES["pronoun"] + CLASSES["name"] + CLASSES["adultnoun"]
CLASSES["people"] = CLASSES["name"] + CLASSES["kidnoun"] + CLASSES["adultnoun"]  # people as objects
CLASSES["pet"] = ("cat", "dog")
_IDS_MEMO: dict[str, tuple[str, ...]] = {}


def noun_ids(spec: str) -> tuple[str, ...]:
    """Space-separated class names and noun ids → noun ids (in order, no repeats)."""
    if spec not in _IDS_MEMO:
        out = [i for tok in spec.split() for i in (CLASSES[tok] if tok in CLASSES else (tok,))]
        unknown = [i for i in out if i not in NOUNS]
        if unknown:
            raise KeyError(f"unknown nouns {unknown} in lexicon spec {spec!r}")
        _IDS_MEMO[spec] = tuple(dict.fromkeys(out))
    return _IDS_MEMO[spec]


def _verb(line: str) -> Verb:
    vid, en, ko, frame, subj, comp, *opts = line.split("|")
    flags = "".join(o for o in opts if "=" not in o)
    kw = dict(o.split("=", 1) for o in opts if "=" in o)
    ko_dict, ko_present, ko_past, ko_connective = (f.replace("_", " ") for f in ko.split())
    forms = {k: tuple(f.replace("_", " ") for f in kw[k].split(",")) if k in kw else () for k in ("neg", "present", "prog")}
    return Verb(vid, tuple(f.replace("_", " ") for f in en.split()), ko_dict, ko_present, ko_past, ko_connective, frame,
                noun_ids(subj), noun_ids(comp), flags, kw.get("prep", "to"), **forms)


VERBS = {v.id: v for v in map(_verb, _S["verbs"])}
ADJECTIVES = {a[0]: Adjective(a[0], a[1], a[2].strip("-"), a[3].strip("-"), noun_ids(a[4]), "".join(a[5:]))
              for a in (line.split() for line in _S["adjectives"])}
ADJECTIVES_OF: dict[str, list[Adjective]] = {}  # noun id → the adjectives that fit it
for _adj in ADJECTIVES.values():
    for _nid in _adj.nouns:
        ADJECTIVES_OF.setdefault(_nid, []).append(_adj)
# en, pres, past, conn, who, actions[, third-person "pres,past"]
REASONS = {r[0]: r[1:] for r in (line.split("|") for line in _S["reasons"])}
STATES = [r for r, v in REASONS.items() if not v[0].startswith("it ")]     # predicates of people and animals


def _table(name: str) -> dict[str, str]:
    return dict(line.split("|") for line in _S[name])


# What animals eat (DIET), whom 주다 is not used towards (HONOURED), verb|places|objects, verb|tools|objects,
# vehicles|places, time phrases by tense, meals (no morning or night time phrase with a meal).
DIET, _DRINKS, _PREY, _JOBS = _table("diet"), _table("drinks"), _table("prey"), _table("jobs")
HONOURED = set(_S["honoured"][0].split())
CLASSES["honoured"] = tuple(sorted(HONOURED))
# verb id → [(variant verb id, the role that decides: subject/object/recipient, the nouns that take the variant)]
_VARIANTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
for _line in _S["variants"]:
    _base, _var, _role, _spec = _line.split("|")
    _VARIANTS.setdefault(_base, []).append((_var, _role, noun_ids(_spec)))


@dataclass(frozen=True)
class ItRule:
    """A line of the "it" construction: "because it was ADJ" refers to the subject or to the object."""
    referent: str                 # "subject" or "object"
    adjectives: tuple[str, ...]   # subject: REASONS names (hungry); object: ADJECTIVES ids (sweet)
    actions: tuple[str, ...]      # "verb:complements", "!" negated, as in [reasons]
    subjects: tuple[str, ...]


IT_RULES = [ItRule(r, tuple(a.split()), tuple(act.split()), noun_ids(subj))
            for r, a, act, subj in (line.split("|") for line in _S["it"])]
PLACE_OBJECTS = [line.split("|") for line in _S["place_objects"]]
TOOLS = [line.split("|") for line in _S["tools"]]
VEHICLES = [line.split("|") for line in _S["vehicles"]]
TIMES: dict[str, list[tuple[str, str]]] = {}
for _line in _S["times"]:
    _tense_name, _en, _ko = _line.split("|")
    TIMES.setdefault(_tense_name, []).append((_en, _ko))
MEALS = {"lunch", "breakfast", "dinner"}
# Every Korean noun the generator can put before a particle (to check particles word by word).
KOREAN_NOUNS = frozenset({n.ko for n in NOUNS.values()} | {"배", "목", "비", "눈", "춤"}
                         | {v.ko[:-2] for v in VERBS.values() if v.ko.endswith("하다") and len(v.ko) > 2})


# ------------------------------------------------------------------ realisation
def number_of(n: Noun) -> str:
    """Grammatical number of a noun: '1s' (I), 'pl' (we, they, plurals) or 'sg'."""
    return {"1s": "1s", "1p": "pl", "pl": "pl"}.get(n.gender, "sg")


def be_form(number: str, past: bool) -> str:
    """English 'to be' for a number ('1s', 'sg', 'pl'): am/is/are or was/were."""
    return {"1s": "was", "sg": "was", "pl": "were"}[number] if past else {"1s": "am", "sg": "is", "pl": "are"}[number]


def _plural(word: str) -> str:
    if word in ("mouse", "fish", "sheep"):
        return {"mouse": "mice"}.get(word, word)
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "sh", "ch", "x", "potato", "tomato")) else "s")


def noun_phrase(n: Noun, art: str = "", adj: Adjective | None = None) -> str:
    """English noun phrase; art is 'a', 'the', 'pl' (bare plural) or '' (bare)."""
    words = ([adj.id] if adj else []) + [n.en]
    if n.kind in "nhP" or (n.kind == "z" and not adj):
        return n.en
    if n.kind == "t" or art == "the":
        return "the " + " ".join(words)
    if art == "pl":
        return " ".join(words[:-1] + [_plural(n.en)])
    if (art == "a" and n.kind == "c") or n.kind == "z":
        return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    return " ".join(words)


def subject_np(n: Noun) -> str:
    """English subject phrase: names and pronouns bare, other nouns with 'the'."""
    return n.en if n.kind in "nP" else "the " + n.en


def _place_np(place: Noun, prep: str) -> str:
    """prep: 'to', '' (bare), '@' (arrive: the place's at/in/on, bare "home") or 'loc' (also "at home")."""
    if place.kind == "h":
        return "at home" if prep == "loc" else "home"
    prep = place.prep if prep in ("@", "loc") else prep
    return (f"{prep} " if prep else "") + (place.en if place.kind in "zn" else "the " + place.en)


def _verb_ko(v: Verb, past: bool, prog: bool, neg: bool) -> str:
    if prog:
        return v.prog[past] if v.prog else v.ko[:-1] + ("고 있었다" if past else "고 있다")
    if v.present and not past:
        return v.present[neg]  # holds → 들고 있다
    form = v.ko_past if past else v.ko_present
    if not neg:
        return form
    if v.neg:
        return v.neg[past]
    if "L" in v.flags:  # long negation: 걸어가지 않았다, not 안 걸어갔다
        return v.ko[:-1] + ("지 않았다" if past else "지 않는다")
    if v.ko.endswith("하다") and len(v.ko) > 2:  # 공부하다 → 공부를 안 한다
        return f"{with_particle(v.ko[:-2], '을/를')} 안 {'했다' if past else '한다'}"
    return "안 " + form


def _en_verb(v: Verb, number: str, past: bool, prog: bool, neg: bool) -> str:
    """The English verb phrase: "is eating", "did not eat", "eats"."""
    base, s3, ved, ing = v.en
    if prog:
        return f"{be_form(number, past)} {ing}"
    if neg:
        return f"{'did' if past else 'does' if number == 'sg' else 'do'} not {base}"
    return (ved if past else s3 if number == "sg" else base).replace("{was}", be_form(number, True))


def _en_complements(v: Verb, comps: tuple[Noun, ...], art: tuple[str, ...], adj: Adjective | None,
                    recipient: Noun | None) -> list[str]:
    """The English words after the verb: object(s), recipient, or the place the verb goes to / happens at."""
    objs = " and ".join(noun_phrase(c, a, adj) for c, a in zip(comps, art))
    if v.frame == "dat":
        assert recipient is not None, f"{v.id} needs a recipient"
        return [subject_np(recipient), objs] if v.id == "teach" else [objs, "to", subject_np(recipient)]
    if v.frame == "obj":
        return [objs]
    return [_place_np(comps[0], v.prep if v.frame == "dest" else "loc")] if comps else []


def _en_reason(reason: str, subj: tuple[Noun, ...], number: str, past: bool) -> str:
    text = REASONS[reason][0]
    pronoun = {"1s": "I", "1p": "we", "pl": "they", "m": "he", "f": "she"}.get(subj[0].gender, "it")
    return "because " + text.format(p=pronoun if len(subj) == 1 else "they",
                                    be=be_form("sg" if text.startswith("it ") else number, past))


def _en_adjuncts(subj: tuple[Noun, ...], number: str, past: bool, place: Noun | None, tool: Noun | None,
                 time: tuple[str, str] | None, reason: str | None) -> list[str]:
    """The English place, tool, time and reason, in that order."""
    en = [_place_np(place, "loc")] if place else []
    if tool:
        en.append(f"by {tool.en}" if tool.id in noun_ids("vehicle car bicycle") else f"with {noun_phrase(tool, 'a')}")
    en += [time[0]] if time else []
    en += [_en_reason(reason, subj, number, past)] if reason else []
    return en


def _ko_complements(v: Verb, comps: tuple[Noun, ...], adj: Adjective | None) -> list[str]:
    """The Korean object(s) with 을/를, or the destination / location with its particle."""
    if v.frame in ("obj", "dat"):
        ko = [with_particle(c.ko, "와/과") for c in comps[:-1]] + ([adj.attr] if adj else [])
        return ko + [with_particle(comps[-1].ko, "을/를")]
    if v.frame == "dest" and comps:
        return [with_particle(comps[0].ko, "으로/로") if "R" in v.flags else comps[0].ko + "에"]
    return [comps[0].ko + ("에" if "E" in v.flags else "에서")] if comps else []


def _ko_words(subj: tuple[Noun, ...], v: Verb, comps: tuple[Noun, ...], adj: Adjective | None, place: Noun | None,
              tool: Noun | None, recipient: Noun | None, time: tuple[str, str] | None, reason: str | None) -> list[str]:
    """The Korean words before the verb: subject, time, reason, place, recipient, tool, complements."""
    ko = [with_particle(s.ko, "와/과") for s in subj[:-1]] + [with_particle(subj[-1].ko, "은/는")]
    ko += [time[1]] if time else []
    ko += [REASONS[reason][3]] if reason else []
    ko += [place.ko + ("에" if "E" in v.flags else "에서")] if place else []
    ko += [recipient.ko + ("께" if recipient.id in HONOURED else "에게")] if recipient else []
    ko += [with_particle(tool.ko, "으로/로")] if tool else []
    return ko + _ko_complements(v, comps, adj)


def _word_ids(subj: tuple[Noun, ...], v: Verb, comps: tuple[Noun, ...], adj: Adjective | None, place: Noun | None,
              tool: Noun | None, recipient: Noun | None, reason: str | None) -> tuple[str, ...]:
    extra = [x for x in (adj and "A." + adj.id, place and "N." + place.id, tool and "N." + tool.id,
                         recipient and "N." + recipient.id, reason and "R." + reason) if x]
    return tuple(["N." + s.id for s in subj] + ["V." + v.id] + ["N." + c.id for c in comps] + extra)


def build_sentence(subj: tuple[Noun, ...], v: Verb, comp=None, *, tense: str = "past", prog: bool = False,
                   neg: bool = False, art: tuple[str, ...] = ("",), adj: Adjective | None = None,
                   place: Noun | None = None, tool: Noun | None = None, recipient: Noun | None = None,
                   time: tuple[str, str] | None = None, reason: str | None = None) -> tuple[str, str, tuple[str, ...]]:
    """One sentence pair: (English, Korean, content-word ids)."""
    number, past = ("pl" if len(subj) > 1 else number_of(subj[0])), tense == "past"
    comps = comp if isinstance(comp, tuple) else ((comp,) if comp is not None else ())
    v = variant(v, subj, comps, recipient)
    en = [" and ".join(subject_np(s) for s in subj), _en_verb(v, number, past, prog, neg)]
    en += _en_complements(v, comps, art, adj, recipient)
    en += _en_adjuncts(subj, number, past, place, tool, time, reason)
    en_text = " ".join(en)
    ko = _ko_words(subj, v, comps, adj, place, tool, recipient, time, reason) + [_verb_ko(v, past, prog, neg)]
    words = _word_ids(subj, v, comps, adj, place, tool, recipient, reason)
    return en_text[0].upper() + en_text[1:] + ".", " ".join(ko) + ".", words


def like_sentence(s: Noun, o: Noun) -> tuple[str, str, tuple[str, ...]]:
    """I like cats. → 나는 고양이가 좋다. (I/we: 이/가 좋다; others: 을/를 좋아한다); returns (English, Korean, word ids)."""
    obj = noun_phrase(o, 'pl' if o.kind == 'c' else '')
    en = f"{subject_np(s)} {'likes' if number_of(s) == 'sg' else 'like'} {obj}."
    ko = with_particle(o.ko, "이/가") + " 좋다" if s.gender in ("1s", "1p") else with_particle(o.ko, "을/를") + " 좋아한다"
    return en[0].upper() + en[1:], f"{with_particle(s.ko, '은/는')} {ko}.", ("N." + s.id, "V.like", "N." + o.id)


def variant(v: Verb, subj: Sequence[Noun], comps: Sequence[Noun], recipient: Noun | None = None) -> Verb:
    """The verb that Korean uses with these nouns: 테니스를 치다 (not 하다), 개를 씻기다, 선생님께 드리다 ([variants])."""
    for var, role, ids in _VARIANTS.get(v.id, ()):
        nouns = {"subject": subj, "object": comps, "recipient": (recipient,) if recipient else ()}[role]
        if any(n.id in ids for n in nouns):
            return VERBS[var]
    return v


def it_object_sentence(s: Noun, v: Verb, o: Noun, adj: Adjective, *, tense: str = "past", neg: bool = False,
                       time: tuple[str, str] | None = None) -> tuple[str, str, tuple[str, ...]]:
    """The cat drank the milk because it was sweet. → 고양이는 우유가 달아서 마셨다. ("it" is the object: the object
    becomes the adjective's subject and is not repeated); returns (English, Korean, word ids)."""
    en, _, words = build_sentence((s,), v, o, tense=tense, neg=neg, art=("the",), time=time)
    ko = [with_particle(s.ko, "은/는")] + ([time[1]] if time else []) + [with_particle(o.ko, "이/가"), adj.connective]
    ko.append(_verb_ko(variant(v, (s,), (o,)), tense == "past", False, neg))
    return f"{en[:-1]} because it {be_form('sg', tense == 'past')} {adj.id}.", " ".join(ko) + ".", words + ("A." + adj.id,)


# Verbs by frame (obj, dest, loc, dat, none), leaving out those built only by special samplers (flags B, V, I).
VERBS_BY_FRAME = {f: [v for v in VERBS.values() if v.frame == f and not set("BVI") & set(v.flags)]
                  for f in ("obj", "dest", "loc", "dat", "none")}


_COMPS: dict[tuple[str, str], tuple[str, ...]] = {}


def complements(v: Verb, s: Noun) -> tuple[str, ...]:
    """Complements that make sense for this verb with this subject (diets, jobs, animals' places...)."""
    if (v.id, s.id) not in _COMPS:
        comps: Sequence[str] = v.complements
        animal = s.id in CLASSES["animal"]
        if (animal or s.id == "baby") and v.id in ("eat", "drink"):
            comps = noun_ids(DIET.get(s.id, "") if v.id == "eat" else _DRINKS.get(s.id, "water"))
        elif animal and v.id in ("catch", "chase") and s.id in _PREY:
            comps = noun_ids(_PREY[s.id])
        elif animal and v.frame in ("dest", "loc") and v.id not in ("fly", "swim", "climb"):
            comps = [c for c in comps if c in noun_ids("animal_place" + (" home park garden" if s.id in CLASSES["pet"] else ""))]
        elif v.id == "work" and s.id in _JOBS:
            comps = noun_ids(_JOBS[s.id])
        elif v.id == "wear_clothes" and s.gender == "m":
            comps = [c for c in comps if c not in ("dress", "skirt")]
        _COMPS[v.id, s.id] = tuple(c for c in comps if c != s.id)
    return _COMPS[v.id, s.id]


def lemma(word_id: str) -> tuple[str, str]:
    """(English, Korean) dictionary forms of a content-word id such as 'N.cat', 'V.eat', 'A.blue', 'R.hungry'."""
    kind, _, wid = word_id.partition(".")
    if kind == "N":
        return NOUNS[wid].en, NOUNS[wid].ko
    if kind == "V":
        return ("like", "좋아하다") if wid == "like" else (VERBS[wid].en[0], VERBS[wid].ko)
    return (wid, ADJECTIVES[wid].pres or ADJECTIVES[wid].attr) if kind == "A" else (wid, REASONS[wid][1])
