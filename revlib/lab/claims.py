"""The claim registry's machinery: a claim is one declared entry, and one rule turns its reading into a verdict.

An entry (`ClaimSpec`) states the paper's wording, its figure or table, the authors' released number where there is
one, δ with the δ's source, the measure it reads (a function of the run's typed stage results) and its
preconditions (measured states, each a function returning what is missing, or None when met). Adding a claim means
adding an entry to a paper's list (`revlib.lab.r1k_claims`, `revlib.lab.setlur_claims`), never a branch here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from revlib.core import stats

if TYPE_CHECKING:
    from revlib.lab.results import RunResults

RULE = ("Each claim is an effect E signed so that E > 0 is the paper's direction, with a 95% interval [lo, hi], and "
        "the size δ the claim needs (stated per row). reproduced: lo > 0 and E ≥ δ. not reproduced: hi < δ, i.e. the "
        "interval rules out an effect of size δ; when it lies wholly above 0 the page says 'too small to matter'. "
        "inconclusive: otherwise; or when the models it rests on did not learn (in-distribution accuracy below {min_acc}, "
        "or a base below its primitive-skill target); or when the claim's precondition failed (the row names it). "
        "Tables 1 and 2 are read out on the task-world benchmarks outside both training sets that are alive (some "
        "model at least {alive} points above chance), pooled and paired per problem.")
TOO_SMALL = "too small to matter: the interval lies above 0 but wholly below δ"


class NoteCode(str, Enum):
    """Why a verdict carries a note, as data: code reads the code, never the note's words."""

    NONE = ""
    GATE = "gate"                          # the models the claim rests on did not learn
    PRECONDITION = "precondition"          # a state the claim needs was not reached
    NOTHING_MEASURED = "nothing_measured"  # the run covers the claim but had nothing to measure
    TOO_SMALL = "too_small"                # the interval lies above 0, wholly below δ
    BELOW_DELTA = "below_delta"            # above 0, E below δ, and the interval does not rule δ out
    RELEASED_BELOW_DELTA = "released_below_delta"  # the authors' own released number does not reach δ


@dataclass(frozen=True)
class Note:
    """A verdict's note: a reason code and its words."""

    code: NoteCode = NoteCode.NONE
    text: str = ""

# A gate: the models a claim rests on did not learn (the text says how). A precondition: a state the claim needs
# was not reached. Both return None when met.
Check = Callable[["RunResults"], "str | None"]


@dataclass(frozen=True)
class Reading:
    """What a claim's measure read from the run: E (signed so E > 0 is the paper's direction), its 95% interval,
    and what was measured, in words. `effect` None: the run covers the claim but had nothing to measure
    (`missing` says why)."""

    effect: float | None
    interval: tuple[float, float] | None
    measured: str
    missing: str = ""

    @classmethod
    def paired(cls, a: Sequence[float], b: Sequence[float], describe: Callable[[float, float, float], str]) -> Reading:
        """E = mean(a - b) over paired outcomes with its normal interval; `describe(E, lo, hi)` words it."""
        eff, lo, hi = stats.paired_difference(a, b)
        return cls(eff, (lo, hi), describe(eff, lo, hi))

    @classmethod
    def mean(cls, values: Sequence[float], describe: Callable[[float, float, float], str]) -> Reading:
        """E = the mean of per-example values with its bootstrap interval."""
        vals = list(values)
        eff = sum(vals) / len(vals)
        lo, hi = stats.bootstrap_mean(vals)
        return cls(eff, (lo, hi), describe(eff, lo, hi))


@dataclass(frozen=True)
class HeldOut:
    """A claim's second reading, judged by the same rule with its own interval and verdict: for the r1k probes, on the
    held-out twins the models never saw, beside the primary in-sample reading."""

    measure: Callable[[RunResults], Reading | None]
    where: str                 # where it reads, in words
    gates: tuple[Check, ...] = ()
    preconditions: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Beside:
    """A further reading shown beside a claim's verdicts, judged by the same rule and δ with its own interval and
    verdict: for the r1k probes, revlib's response-only measure beside the authors' measure the verdicts compare on.
    `measure` returning None: nothing to show beside (the verdicts themselves read it)."""

    name: str                  # what it reads, in words
    measure: Callable[[RunResults], Reading | None]
    gates: tuple[Check, ...] = ()
    preconditions: tuple[Check, ...] = ()
    delta_note: str = ""       # how δ applies to this measure


@dataclass
class BesideReading:
    """A `Beside` reading of this run, as the findings page shows it."""

    name: str
    measured: str
    verdict: str
    note: str = ""
    effect: float | None = None
    interval: tuple[float, float] | None = None
    delta_note: str = ""
    note_code: NoteCode = NoteCode.NONE


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper, declared: what it says, where, the δ it needs and why, what it reads, what it needs."""

    id: str
    paper: str                 # "r1k", "setlur", or "ours" (beyond both papers)
    wording: str               # the claim, in the paper's terms
    figure: str                # the figure or table it is read from, with the paper's number
    delta: float               # the smallest effect that matters, on the measure's own scale
    delta_source: str          # where δ comes from
    measure: Callable[[RunResults], Reading | None]  # None: the run does not cover the claim
    gates: tuple[Check, ...] = ()
    preconditions: tuple[Check, ...] = ()
    released_effect: float | None = None  # the authors' own number for this effect, where they released one
    released_what: str = ""
    reads: str = ""            # where the primary reading is taken, when the claim has a second one
    held_out: HeldOut | None = None
    origin: float = 0.0        # the effect of no change on the measure's scale: 0 for a difference, 1 for a multiple
    compares_on: Callable[[RunResults], str] | None = None  # the measure the verdicts read, in words, where it varies
    beside: tuple[Beside, ...] = ()


@dataclass
class Claim:
    """A claim as the findings page shows it: its entry's fields, what this run measured, and the verdict."""

    id: str
    paper: str
    claim: str
    paper_figure: str
    measured: str
    verdict: str
    effect: float | None = None
    interval: tuple[float, float] | None = None
    delta: float | None = None
    note: str = ""
    delta_source: str = ""
    released_effect: float | None = None
    reading: str = ""                       # where `verdict` reads (for claims read two ways)
    note_code: NoteCode = NoteCode.NONE     # why `note`, as a code
    verdict_held_out: str | None = None     # the second reading's verdict, effect, interval and words
    effect_held_out: float | None = None
    interval_held_out: tuple[float, float] | None = None
    measured_held_out: str = ""
    note_held_out: str = ""
    note_code_held_out: NoteCode = NoteCode.NONE
    reading_held_out: str = ""
    compares_on: str = ""                   # the measure `verdict` and `verdict_held_out` read
    beside: list[BesideReading] = field(default_factory=list)  # further readings shown beside, each with its verdict


def verdict(effect_lo: float, effect_hi: float, delta: float, effect: float | None = None) -> str:
    """The rule (RULE): reproduced needs lo > 0 and E >= δ; hi < δ is not reproduced; else inconclusive.
    Without `effect`, E is the interval's midpoint."""
    e = (effect_lo + effect_hi) / 2 if effect is None else effect
    if effect_lo > 0 and e >= delta:
        return "reproduced"
    if effect_hi < delta:
        return "not reproduced"
    return "inconclusive"


def decide(effect: float, lo: float, hi: float, delta: float, gate: str | None = None,
           precondition: str | None = None) -> tuple[str, Note]:
    """(verdict, note): a gate (models did not learn) or a failed precondition makes it inconclusive and says why;
    an interval wholly between 0 and δ is 'too small to matter'."""
    if gate:
        return "inconclusive", Note(NoteCode.GATE, gate)
    if precondition:
        return "inconclusive", Note(NoteCode.PRECONDITION, f"precondition failed: {precondition}")
    v = verdict(lo, hi, delta, effect)
    if v == "not reproduced" and lo > 0:
        return v, Note(NoteCode.TOO_SMALL, TOO_SMALL)
    if v == "inconclusive" and lo > 0:
        return v, Note(NoteCode.BELOW_DELTA, f"above 0 but E = {effect:+.3g} is below δ = {delta:g} and the interval "
                                             "does not rule δ out")
    return v, Note()


def _failed(checks: Sequence[Check], results: RunResults) -> str | None:
    found = [text for text in (check(results) for check in checks) if text]
    return "; ".join(found) if found else None


@dataclass
class Registry:
    """The declared claims, in the order the page lists them; evaluating reads each one once."""

    specs: list[ClaimSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [s.id for s in self.specs]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"claim ids declared twice: {repeated}")

    def spec(self, claim_id: str) -> ClaimSpec:
        for s in self.specs:
            if s.id == claim_id:
                return s
        raise KeyError(f"no claim {claim_id!r} in the registry")

    def evaluate(self, results: RunResults) -> list[Claim]:
        return [c for c in (evaluate(s, results) for s in self.specs) if c is not None]


def judge(reading: Reading, delta: float, gate: str | None, precondition: str | None, origin: float = 0.0
          ) -> tuple[str, Note]:
    """(verdict, note) of one reading: as `decide`, and inconclusive with the reason when nothing was measured.
    A measure whose no-change value is `origin` (1 for a multiple) is judged on E - origin against δ - origin."""
    if reading.effect is None or reading.interval is None:
        if gate:
            return "inconclusive", Note(NoteCode.GATE, gate)
        if precondition:
            return "inconclusive", Note(NoteCode.PRECONDITION, f"precondition failed: {precondition}")
        return "inconclusive", Note(NoteCode.NOTHING_MEASURED, reading.missing)
    lo, hi = reading.interval
    verdict_, note = decide(reading.effect - origin, lo - origin, hi - origin, delta - origin, gate, precondition)
    if origin and note.code == NoteCode.BELOW_DELTA:
        note = Note(note.code, f"above {origin:g}x but E = {reading.effect:.2f}x is below δ = {delta:g}x and the "
                               "interval does not rule δ out")
    return verdict_, note


def evaluate(spec: ClaimSpec, results: RunResults) -> Claim | None:
    """The entry's verdict on this run (and its held-out verdict, where it has that reading); None when the run
    does not cover it."""
    reading = results.reading(spec)
    second = results.reading_held_out(spec) if spec.held_out else None
    if reading is None and second is None:
        return None
    if reading is None:
        reading = Reading(None, None, "", missing=f"this run has no {spec.reads or 'primary'} reading")
    figure = spec.figure
    if spec.released_effect is not None:
        figure += f" · authors' release (Qwen2.5-7B): {spec.released_what} E = {spec.released_effect:+.3f}"
    claim = Claim(spec.id, spec.paper, spec.wording, figure, reading.measured, "inconclusive", reading.effect,
                  reading.interval, spec.delta, "", spec.delta_source, spec.released_effect, spec.reads)
    claim.verdict, note = judge(reading, spec.delta, _failed(spec.gates, results),
                                _failed(spec.preconditions, results), spec.origin)
    claim.note, claim.note_code = note.text, note.code
    if spec.released_effect is not None and spec.released_effect < spec.delta:
        claim.note = (claim.note + "; " if claim.note else "") + \
            f"the authors' own released number ({spec.released_effect:+.3f}) does not reach δ"
        if claim.note_code == NoteCode.NONE:
            claim.note_code = NoteCode.RELEASED_BELOW_DELTA
    if spec.held_out is not None:
        h = spec.held_out
        claim.reading_held_out = h.where
        if second is None:
            claim.verdict_held_out, claim.note_held_out = "inconclusive", "this run has no held-out reading"
            claim.note_code_held_out = NoteCode.NOTHING_MEASURED
        else:
            claim.effect_held_out, claim.interval_held_out, claim.measured_held_out = \
                second.effect, second.interval, second.measured
            claim.verdict_held_out, note = judge(second, spec.delta, _failed(h.gates, results),
                                                 _failed(h.preconditions, results))
            claim.note_held_out, claim.note_code_held_out = note.text, note.code
    if spec.compares_on is not None:
        claim.compares_on = spec.compares_on(results)
    for b in spec.beside:
        other = b.measure(results)
        if other is None:
            continue
        v, note = judge(other, spec.delta, _failed(b.gates, results), _failed(b.preconditions, results))
        claim.beside.append(BesideReading(b.name, other.measured, v, note.text, other.effect, other.interval,
                                          b.delta_note, note.code))
    return claim
