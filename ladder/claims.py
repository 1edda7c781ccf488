"""The claims table: each headline claim of the paper beside what this reproduction measured, and the
verdict — computed here and nowhere else.

Paper values, the quantity each claim is judged on, its decision rule, the noise it is judged against and
every input of the rule (thresholds, margins, minimum rounds / seeds / step time / parameters) come from
ladder/paper/claims.csv, with why each threshold is what it is. A rule reads its inputs from there only;
tests/test_claims.py pins each one as a literal, so changing a rule changes a test.

Our measurements are `ClaimEntry` records: one typed dataclass for every kind of evidence, built in one
place per kind — `ladder.speedup.measured_entry` (a measured speed-up: H1-H4), `ladder.speedup.hybrid_entry`
(a converted hybrid's speed-up: H8), `ladder.speedup.model_entries` (the performance model),
`ladder.pretrain.training_claim` (a from-scratch training gap: H5/H6) and `ladder.adapt.recovery_entry`
(a conversion's recovery: H7). Notebooks store them (`block`) in the `claims` block of their result file
data/results/<profile>/*.json (ladder.provenance.write_result):

    "claims": {"H1": [{"evidence": "cpu-emulated-link", "quantity": "speedup", "value": 1.27, "n": 7,
                       "speedup": 1.27, "upper_bound_speedup": 1.40, "recovered": 0.68,
                       "ci": {"speedup": [1.21, 1.33], "recovered": [0.55, 0.80]},
                       "ours": "1.27x (...)", "how": "measured on CPU, emulated link"}]}

An entry holds measured quantities only; a stored `verdict` is refused (it would bypass the rules). An
optional "subject" names what was measured (a model, a shape) when one claim has several entries. Each
entry gets a verdict from its claim's rule (`judge`). A missing interval is inconclusive, never replaced by
a point estimate. Verdicts measured below the paper's scale read "consistent at small scale" or "not
reproduced at small scale"; "reproduced" and "not reproduced" need the paper's setting.

Each claim gets one headline verdict, from its strongest evidence in the order of `EVIDENCE` (multi-GPU >
one GPU > CPU real processes > CPU emulated link > small-scale training > performance model); entries of
that evidence that disagree make the headline inconclusive. The other entries' verdicts are shown under it.
Performance-model values never decide: in-sample ones are left out of the verdict, out-of-sample ones
give at most "inconclusive". A claim no result file addresses is "not run".
`python -m ladder.claims --profile cpu` prints the table; the book pipeline writes book/_generated/claims.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .config import preset
from .link import describe
from .paths import paper_file
from .provenance import REPO_ROOT, hardware_line
from .stats import runs_for_width, t_interval

PAPER_CLAIMS = paper_file("claims.csv")
RESULTS_ROOT = REPO_ROOT / "data" / "results"
VERDICTS = ("reproduced", "consistent at small scale", "inconclusive", "not reproduced at small scale",
            "not reproduced", "not applicable here", "not run")
# at the paper's setting: filled badges; below it: outlined ones, the two directions alike
BADGES = {"reproduced": "bdg-success", "consistent at small scale": "bdg-success-line",
          "inconclusive": "bdg-warning", "not reproduced at small scale": "bdg-danger-line",
          "not reproduced": "bdg-danger", "not applicable here": "bdg-secondary-line", "not run": "bdg-secondary"}
# strongest first (the headline verdict comes from the first of these a claim has); the label and badge
# shown in the Evidence column
EVIDENCE = {
    "multi-gpu": ("multi-GPU measurement", "bdg-success-line"),
    "gpu1-emulated-link": ("one GPU, emulated interconnect", "bdg-primary-line"),
    "cpu-real-processes": ("CPU, real processes", "bdg-info-line"),
    "cpu-emulated-link": ("CPU, emulated interconnect", "bdg-info-line"),
    "small-scale-training": ("small-scale training", "bdg-info-line"),
    "model-out-of-sample": ("performance model, out of sample", "bdg-warning-line"),
    "model-in-sample": ("performance model, in sample", "bdg-secondary-line"),
}
MODEL_EVIDENCE = ("model-in-sample", "model-out-of-sample")
HEADLINE_ORDER = ("multi-GPU > one GPU > CPU real processes > CPU emulated link > small-scale training > "
                  "performance model; evidence not applicable here does not decide")


class ResultFormatError(ValueError):
    """A result file's claims block does not follow the format above."""


# ------------------------------------------------------------------------------------------ the evidence
_FLOATS = ("value", "speedup", "upper_bound_speedup", "recovered", "comm_share", "step_ms", "link_ratio",
           "replay_error", "unigram_entropy", "params", "tokens", "drop", "gap_to_control", "gap_to_source")
_INTS = ("n", "nodes")
_SERIES = ("standard", "ladder")


@dataclass(frozen=True)
class ClaimEntry:
    """One piece of evidence for one claim: measured (or modelled) quantities, never a verdict.

    `ci` maps a quantity to its 95% interval (lo, hi); `n` is the number of units the intervals resample
    (paired rounds, repeated runs, held-out sequences); `extra` holds descriptive fields (link, shape, tp,
    metric, test losses, ...) that no rule reads. A NaN measurement is stored as missing."""
    # (mutation check: a mutated annotation below, e.g. `float & None`, is equivalent: with `from __future__ import
    # annotations` annotations are strings that nothing evaluates)
    evidence: str
    quantity: str = ""
    value: float | None = None
    ours: str = ""
    how: str = ""
    subject: str | None = None
    n: int | None = None
    ci: Mapping[str, tuple] = field(default_factory=dict)  # (a default of None is equivalent: normalised below)
    # speed (H1-H4, H8)
    speedup: float | None = None
    upper_bound_speedup: float | None = None
    recovered: float | None = None
    comm_share: float | None = None
    step_ms: float | None = None
    nodes: int | None = None
    # an emulated link set to a regime (ladder.replay): its a/c, and the measured speed-up's error against the
    # replay of the same ratio from module times measured in isolation
    link_ratio: float | None = None
    replay_error: float | None = None
    # training from scratch (H5, H6): per-seed held-out losses, aligned with `seeds`
    seeds: tuple | None = None
    standard: tuple | None = None
    ladder: tuple | None = None
    unigram_entropy: float | None = None
    params: float | None = None
    tokens: float | None = None
    # recovery after conversion (H7), nats
    drop: float | None = None
    gap_to_control: float | None = None
    gap_to_source: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        where = f"evidence {self.evidence!r}"
        if self.evidence not in EVIDENCE:
            raise ResultFormatError(f"has evidence {self.evidence!r}; expected one of {list(EVIDENCE)}")
        if "verdict" in self.extra:
            raise ResultFormatError(f"stores a verdict ({self.extra['verdict']!r}); result files hold measurements only")
        clash = set(self.extra) & {f.name for f in fields(self)}
        if clash:
            raise ResultFormatError(f"extra fields {sorted(clash)} shadow the entry's own ({where})")
        for name in _FLOATS:
            object.__setattr__(self, name, _number(getattr(self, name), name, where))
        for name in _INTS:
            v = _number(getattr(self, name), name, where)
            if v is not None and v != int(v):
                raise ResultFormatError(f"{name} = {v} is not a whole number ({where})")
            object.__setattr__(self, name, None if v is None else int(v))
        for name in ("seeds", *_SERIES):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                    raise ResultFormatError(f"{name} must be a list ({where})")
                v = tuple(_number(x, name, where) for x in v)
                if any(x is None for x in v):
                    raise ResultFormatError(f"{name} holds a missing value ({where})")
                if name == "seeds":
                    if any(x != int(x) for x in v):
                        raise ResultFormatError(f"seeds must be whole numbers ({where})")
                    v = tuple(int(x) for x in v)
            object.__setattr__(self, name, v)
        if self.seeds is not None:
            for name in _SERIES:
                got = getattr(self, name)
                if got is not None and len(got) != len(self.seeds):
                    raise ResultFormatError(f"{name} has {len(got)} values for {len(self.seeds)} seeds ({where})")
        ci = {}
        for name, pair in dict(self.ci or {}).items():
            if pair is None:
                continue
            if isinstance(pair, (str, bytes)) or len(pair) != 2:
                raise ResultFormatError(f"ci of {name} must be [low, high] ({where})")
            lo, hi = (_number(x, f"ci of {name}", where) for x in pair)
            if lo is None or hi is None:
                continue  # a NaN bound: no interval
            if lo > hi:
                raise ResultFormatError(f"ci of {name} is [{lo}, {hi}]: low above high")
            ci[name] = (lo, hi)
        object.__setattr__(self, "ci", ci)
        object.__setattr__(self, "extra", dict(self.extra))

    # read access by name, for the notebooks' prose (entry["drop"], entry.get("recovered"))
    def __getitem__(self, key: str):
        if key != "extra" and key in {f.name for f in fields(self)}:
            return getattr(self, key)
        return self.extra[key]

    def get(self, key: str, default=None):
        try:
            v = self[key]
        except KeyError:
            return default
        return default if v is None else v

    def interval(self, name: str):
        """The 95% interval of `name` as (lo, hi), or None."""
        return self.ci.get(name)

    def to_dict(self) -> dict:
        """The JSON form stored in a result file (missing values left out)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or v is None or (f.name == "ci" and not v):
                continue
            out[f.name] = {k: list(p) for k, p in v.items()} if f.name == "ci" else \
                list(v) if isinstance(v, tuple) else v
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d) -> "ClaimEntry":
        """An entry read from a result file; unknown fields go to `extra`. Older files kept the conversion
        cost's interval as "drop_ci": it is read as ci["drop"]."""
        if isinstance(d, ClaimEntry):
            return d
        if not isinstance(d, Mapping):
            raise ResultFormatError(f"an entry must be a mapping, got {type(d).__name__}")
        if "verdict" in d:
            raise ResultFormatError(f"stores a verdict ({d['verdict']!r}); result files hold measurements only")
        d = dict(d)
        ci = dict(d.pop("ci", None) or {})
        if "drop_ci" in d and "drop" not in ci:
            ci["drop"] = d.pop("drop_ci")
        names = {f.name for f in fields(cls)} - {"extra"}  # "ci" is taken above
        known = {k: d.pop(k) for k in list(d) if k in names}
        if "evidence" not in known:
            raise ResultFormatError("has evidence None")
        return cls(**known, ci=ci, extra=d)


def _number(v, name, where):
    """A float (None and NaN: missing); anything else is a format error."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ResultFormatError(f"{name} = {v!r} is not a number ({where})")
    v = float(v)
    return None if math.isnan(v) else v


def block(claims: Mapping[str, Any]) -> dict[str, list[dict]]:
    """A notebook's claims ({claim id: entry or list of entries}) as the JSON block of its result file."""
    return {cid: [ClaimEntry.from_dict(e).to_dict() for e in (es if isinstance(es, (list, tuple)) else [es])]
            for cid, es in claims.items()}


# ------------------------------------------------------------------------------------------ paper side
def paper_claims(path: Path = PAPER_CLAIMS) -> list[dict]:
    """Rows of ladder/paper/claims.csv: id, claim, paper_value, source, quantity, rule, noise, thresholds
    (parsed to a dict of floats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper claims file {path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"id", "claim", "paper_value", "source", "quantity", "rule", "noise", "thresholds"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{path} must have columns {sorted(need)}, has {sorted(rows[0])}")
    for r in rows:
        r["thresholds"] = parse_thresholds(r["thresholds"], f"{path} row {r['id']}")
    return rows


def parse_thresholds(text: str, where: str = "thresholds") -> dict[str, float]:
    """'a=0.29; b=1e9' -> {'a': 0.29, 'b': 1e9}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        key, sep, val = part.partition("=")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            sep = ""  # (mutation check: None is equivalent, only its truth is read)
        if not sep:
            raise ValueError(f"{where}: threshold {part!r} is not name=number")
    return out


# -------------------------------------------------------------------------------------------- the rules
def _thr(t: Mapping, name: str) -> float:
    try:
        return t[name]
    except KeyError:
        raise ValueError(f"ladder/paper/claims.csv: the rule needs threshold {name!r}, the row has "
                         f"{sorted(t)}") from None


def _scaled(direction: str, at_scale: bool) -> str:
    """A verdict in the paper's direction (or against it), qualified when measured below the paper's scale."""
    if at_scale:
        return direction
    return {"reproduced": "consistent at small scale", "not reproduced": "not reproduced at small scale"}[direction]


def _need(e: ClaimEntry, *names):
    missing = [f for f in names if getattr(e, f) is None]
    if missing:
        raise ResultFormatError(f"entry lacks {', '.join(missing)} (evidence {e.evidence!r})")


def _rounds(e: ClaimEntry, t: Mapping, what: str = "rounds"):
    """None when the entry's interval rests on at least min_rounds units, else (inconclusive, reason)."""
    need = _thr(t, "min_rounds")
    if e.n is None:
        return "inconclusive", f"the number of {what} is not recorded (the rule needs ≥ {need:g})"
    if e.n < need:
        return "inconclusive", f"only {e.n} {what}: an interval needs ≥ {need:g}"
    return None


def _interval_vs(lo, hi, target, name, fmt, at_scale, suffix=""):
    """In the paper's direction when the whole CI is at or above `target`, against it when the whole CI is
    below, inconclusive when it straddles it."""
    if lo >= target:
        return _scaled("reproduced", at_scale), f"{name} CI low {lo:{fmt}} ≥ {target:{fmt}}{suffix}"
    if hi < target:
        return _scaled("not reproduced", at_scale), f"{name} CI high {hi:{fmt}} < {target:{fmt}}{suffix}"
    return "inconclusive", f"{name} CI [{lo:{fmt}}, {hi:{fmt}}] straddles {target:{fmt}}"


def _multi_gpu_speed(e: ClaimEntry, t):
    """A real multi-GPU speed-up against the paper's: at least share_of_gain of its gain, with confidence."""
    target = 1 + _thr(t, "share_of_gain") * _thr(t, "paper_gain")
    return _interval_vs(*e.interval("speedup"), target, "speed-up", ".4f", True)


def replay_agrees(e: ClaimEntry, tol: float) -> bool:
    """Does the measurement agree with the replay of its own module times? The replay's speed-up (the measured
    one over 1 + `replay_error`) must lie in the measured speed-up's 95% CI widened by `tol` on each side:
    [lo (1 - tol), hi (1 + tol)]. Judged against the interval, not the point estimate, so a run's own noise
    cannot flip it (decided 2026-12-06, see book/methods.md)."""
    lo, hi = e.interval("speedup")
    replay = e.speedup / (1 + e.replay_error)
    return lo * (1 - tol) <= replay <= hi * (1 + tol)


def _cpu_premise(e: ClaimEntry, t: Mapping):
    """What a CPU speed entry needs before its numbers are read (H1-H3, H8), as (verdict, reason); None when
    met. Real gloo processes cannot overlap anything; an emulated link counts only when it was set to a
    regime's a/c and the measurement agrees with the replay of that ratio. Called once the speed-up's
    interval is known to exist."""
    if e.evidence == "cpu-real-processes":  # the premise is unmet, whatever the numbers say
        return "not applicable here", ("the collectives run on the same CPU cores as the compute, so nothing can "
                                       "overlap: this machine cannot test the claim's premise")
    if e.evidence == "cpu-emulated-link":
        if e.link_ratio is None:
            return "inconclusive", ("the emulated link was not set to a regime's a/c: a fixed link's verdict "
                                    "follows the machine's speed that day")
        if e.replay_error is None:
            return "inconclusive", "no replay of the same a/c to check the measurement against"
        if not replay_agrees(e, _thr(t, "max_replay_error")):
            lo, hi = e.interval("speedup")
            return "inconclusive", (f"the replay's {e.speedup / (1 + e.replay_error):.2f}x lies outside the measured "
                                    f"speed-up's 95% CI [{lo:.2f}, {hi:.2f}] widened by ±"
                                    f"{_thr(t, 'max_replay_error'):.0%}: the emulation is not what it models")
    return None


def _speed_premise(e: ClaimEntry, t: Mapping, units: str):
    """What any speed entry (H1-H3, H8) needs before its numbers are read, as (verdict, reason), or None: enough
    paired `units` ("rounds", "runs"), an interval for the speed-up, and on CPU `_cpu_premise`."""
    _need(e, "speedup")
    short = _rounds(e, t, units)
    if short:
        return short
    if e.interval("speedup") is None:
        return "inconclusive", "no confidence interval for the speed-up"
    return _cpu_premise(e, t)


def rule_speed(e: ClaimEntry, t: Mapping):
    """H1-H3: the paper's number on real GPUs; on emulated links and CPUs, the mechanism (a speed-up that
    keeps a good share of the no-communication upper bound's gain)."""
    unmet = _speed_premise(e, t, "rounds")
    if unmet:
        return unmet
    if e.evidence == "multi-gpu":
        if "min_nodes" in t and e.nodes is None:
            return "inconclusive", f"the number of nodes is not recorded (the claim needs ≥ {t['min_nodes']:g})"
        if "min_nodes" in t and e.nodes < t["min_nodes"]:
            return "inconclusive", f"measured on {e.nodes} node(s); the claim needs ≥ {t['min_nodes']:g}"
        return _multi_gpu_speed(e, t)
    lo, hi = e.interval("speedup")
    if hi <= 1:
        return "not reproduced at small scale", f"no speed-up: CI high {hi:.3f} ≤ 1"
    if lo <= 1:
        return "inconclusive", f"speed-up CI [{lo:.3f}, {hi:.3f}] includes 1"
    rci = e.interval("recovered")
    if rci is None:
        return "inconclusive", "no interval for the recovered share of the upper bound's gain"
    return _interval_vs(*rci, _thr(t, "min_recovered"), "recovered", ".0%", False, " of the upper bound's gain")


def rule_comm_share(e: ClaimEntry, t: Mapping):
    """H4: the share of latency spent communicating, only measurable on the real interconnect."""
    _need(e, "comm_share")
    if e.evidence != "multi-gpu":
        return "inconclusive", "the share is set by the emulated link's parameters, not measured"
    short = _rounds(e, t)
    if short:
        return short
    ci = e.interval("comm_share")
    if ci is None:
        return "inconclusive", "no confidence interval for the communication share"
    lo, hi = ci
    a, b = _thr(t, "paper") - _thr(t, "tol"), _thr(t, "paper") + _thr(t, "tol")
    if a <= lo and hi <= b:
        return "reproduced", f"CI [{lo:.2f}, {hi:.2f}] inside [{a:.2f}, {b:.2f}]"
    if hi < a or lo > b:
        return "not reproduced", f"CI [{lo:.2f}, {hi:.2f}] outside [{a:.2f}, {b:.2f}]"
    return "inconclusive", f"CI [{lo:.2f}, {hi:.2f}] overlaps the edge of [{a:.2f}, {b:.2f}]"


def _training_gap(e: ClaimEntry, t: Mapping):
    """(gap CI lo, hi, at_scale, text) for H5/H6, or a (verdict, reason) when the runs cannot decide."""
    _need(e, "standard", "ladder")
    std, lad = e.standard, e.ladder
    if e.unigram_entropy is None:
        return "inconclusive", "no unigram entropy recorded to tell whether the models learned"
    bar = e.unigram_entropy - _thr(t, "learn_margin_nats")
    worst = max(std + lad)
    if worst > bar:
        return "inconclusive", (f"the models did not learn: worst held-out loss {worst:.3f} > unigram entropy "
                                f"{e.unigram_entropy:.3f} − {_thr(t, 'learn_margin_nats'):g} nat")
    need = _thr(t, "min_seeds")
    if len(std) < need or len(lad) < need:
        return "inconclusive", f"{len(std)} standard / {len(lad)} ladder seeds: the rule needs ≥ {need:g} per wiring"
    if e.seeds is None:
        return "inconclusive", "the seeds are not recorded: the gap cannot be paired by seed"
    got = t_interval([b - a for a, b in zip(std, lad)])
    (lo, hi), margin = got["ci"], _thr(t, "margin_nats")
    text = f"paired gap {got['mean']:+.3f} nats, 95% CI [{lo:+.3f}, {hi:+.3f}] over {got['n']} seeds"
    if hi - lo > margin:
        needed = runs_for_width(got["sd"], margin)
        return "inconclusive", (f"underpowered: {text} is {hi - lo:.3f} wide > margin {margin:g}; at this seed-to-"
                                f"seed spread (sd {got['sd']:.3f}) a {margin:g}-wide interval needs {needed} seeds")
    at_scale = (e.params is not None and e.params >= _thr(t, "min_params")
                and e.tokens is not None and e.tokens >= _thr(t, "min_tokens"))
    return lo, hi, at_scale, text


def rule_comparable(e: ClaimEntry, t: Mapping):
    """H5: ladder comparable to standard: the paired gap's CI inside ± margin_nats."""
    got = _training_gap(e, t)
    if len(got) == 2:  # (verdict, reason): the runs cannot decide
        return got
    lo, hi, at_scale, text = got
    m = _thr(t, "margin_nats")
    if -m <= lo and hi <= m:
        return _scaled("reproduced", at_scale), f"{text} inside ±{m:g}"
    if lo > m:
        return _scaled("not reproduced", at_scale), f"ladder worse: {text}, low above {m:g}"
    if hi < -m:
        return "inconclusive", f"ladder better beyond the margin ({text}): not the paper's 'comparable'"
    return "inconclusive", f"{text} straddles the edge of ±{m:g}"


def rule_slightly_worse(e: ClaimEntry, t: Mapping):
    """H6: ladder worse than standard: the paired gap's CI above 0."""
    got = _training_gap(e, t)
    if len(got) == 2:  # (verdict, reason): the runs cannot decide
        return got
    lo, hi, at_scale, text = got
    if lo > 0:
        return _scaled("reproduced", at_scale), f"ladder worse: {text}, low above 0"
    if hi < 0:
        return _scaled("not reproduced", at_scale), f"ladder better: {text}, high below 0"
    return "inconclusive", f"{text} includes 0"


def _to_original(e: ClaimEntry) -> str:
    """The retrained hybrid's gap to the original (source) model: reported beside the rule's comparator."""
    ci = e.interval("gap_to_source")
    if e.gap_to_source is not None:
        return f"; gap to the original model {e.gap_to_source:+.3f}" + (
            f" (CI {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else "")
    loss = e.extra.get("test_loss") or {}
    if loss.get("source") is not None and loss.get("retrained") is not None:
        return f"; gap to the original model {loss['retrained'] - loss['source']:+.3f} (no interval recorded)"
    return ""


def rule_recovery(e: ClaimEntry, t: Mapping):
    """H7: full recovery = the retrained hybrid within tol_nats of the source retrained on the same data."""
    if e.gap_to_control is None:  # a run without the control (e.g. the smoke profile)
        return "inconclusive", "no control retrained on the same data to compare with" + _to_original(e)
    ci = e.interval("gap_to_control")
    if ci is None:
        return "inconclusive", "no confidence interval for the gap to the control"
    drop = e.interval("drop")
    if drop is None:
        return "inconclusive", "no interval for the conversion's cost against the control"
    if drop[0] <= _thr(t, "min_drop_nats"):
        return "inconclusive", (f"the conversion's cost (CI low {drop[0]:.3f} nats) is not above "
                                f"{_thr(t, 'min_drop_nats'):g}: nothing to recover")
    tol, (lo, hi) = _thr(t, "tol_nats"), ci
    at_scale = e.params is not None and e.params >= _thr(t, "min_params")
    if hi <= tol:
        return _scaled("reproduced", at_scale), f"gap to control CI high {hi:+.3f} ≤ {tol:g} nats" + _to_original(e)
    if lo > tol:
        rec = f" ({e.recovered:.0%} of the drop recovered)" if e.recovered is not None else ""
        return _scaled("not reproduced", at_scale), f"gap to control CI low {lo:+.3f} > {tol:g} nats{rec}" + _to_original(e)
    return "inconclusive", f"gap to control CI [{lo:+.3f}, {hi:+.3f}] straddles {tol:g} nats" + _to_original(e)


def rule_hybrid_speed(e: ClaimEntry, t: Mapping):
    """H8: a hybrid speed-up; off real GPUs only on a model whose decode step is long enough to time."""
    unmet = _speed_premise(e, t, "runs")
    if unmet:
        return unmet
    if e.evidence == "multi-gpu":
        return _multi_gpu_speed(e, t)
    step, need = e.step_ms, _thr(t, "min_step_ms")
    if step is None:
        return "inconclusive", f"the decode step is not recorded (the rule needs ≥ {need:g} ms)"
    if step < need:
        return "inconclusive", f"decode step {step:.2f} ms < {need:g} ms: timer noise"
    lo, hi = e.interval("speedup")
    if lo > 1:
        return "consistent at small scale", f"speed-up CI low {lo:.3f} > 1"
    if hi <= 1:
        return "not reproduced at small scale", f"speed-up CI high {hi:.3f} ≤ 1"
    return "inconclusive", f"speed-up CI [{lo:.3f}, {hi:.3f}] includes 1"


RULES = {"H1": rule_speed, "H2": rule_speed, "H3": rule_speed, "H4": rule_comm_share,
         "H5": rule_comparable, "H6": rule_slightly_worse, "H7": rule_recovery, "H8": rule_hybrid_speed}


def judge(cid: str, entry, thresholds: Mapping) -> tuple[str, str]:
    """(verdict, reason) for one entry (a ClaimEntry, or its dict form) of claim `cid` under its rule."""
    e = ClaimEntry.from_dict(entry)
    if e.evidence == "model-in-sample":
        return "not run", "a performance-model value fitted on the compared data does not count"
    if e.evidence == "model-out-of-sample":
        return "inconclusive", "a performance-model prediction, not a measurement"
    return RULES[cid](e, thresholds)


def headline(judged: list[dict]) -> dict:
    """The claim's one verdict: from its strongest evidence (the order of EVIDENCE), leaving in-sample model
    values and evidence "not applicable here" out; entries of that evidence that disagree make it inconclusive."""
    deciding = [j for j in judged if j["evidence"] != "model-in-sample"]
    # evidence whose premise this machine does not meet says nothing either way: the next evidence decides
    applicable = [j for j in deciding if j["verdict"] != "not applicable here"]
    deciding = applicable or deciding
    if not deciding:
        return {"verdict": "not run", "evidence": judged[0]["evidence"] if judged else None,
                "reason": judged[0]["reason"] if judged else "no result", "subject": None}
    rank = list(EVIDENCE)
    best = min(rank.index(j["evidence"]) for j in deciding)
    top = [j for j in deciding if rank.index(j["evidence"]) == best]
    verdicts = list(dict.fromkeys(j["verdict"] for j in top))
    if len(verdicts) == 1:
        return {"verdict": verdicts[0], "evidence": top[0]["evidence"], "reason": top[0]["reason"],
                "subject": top[0]["subject"] if len(top) == 1 else None,
                "entry": judged.index(top[0]) if len(top) == 1 else None}
    # (mutation check: top[1] for top[0] is equivalent: every entry of `top` has the same evidence)
    return {"verdict": "inconclusive", "evidence": top[0]["evidence"], "subject": None,
            "reason": "its strongest evidence disagrees: " + ", ".join(
                f"{j['verdict']}" + (f" ({j['subject']})" if j.get("subject") else "") for j in top)}


# ------------------------------------------------------------------------------------------ our side
def _entries(path: Path, cid, raw) -> list[ClaimEntry]:
    entries = [raw] if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ResultFormatError(f"{path}: claim {cid} must be an entry or a list of entries")
    out = []
    for e in entries:
        if "verdict" in e:
            raise ResultFormatError(
                f"{path}: claim {cid} stores a verdict ({e['verdict']!r}); result files hold measurements only "
                "and ladder.claims computes verdicts — re-run the notebook that writes this file")
        try:
            out.append(ClaimEntry.from_dict(e))
        except ResultFormatError as err:
            raise ResultFormatError(f"{path}: claim {cid} {err}") from None
    return out


def result_claims(profile: str, results_root: Path = RESULTS_ROOT, known_ids=None) -> dict[str, list[dict]]:
    """Claim id -> [{"entry": ClaimEntry, "file", "date", "hardware"}] from data/results/<profile>/*.json."""
    folder = Path(results_root) / profile
    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ResultFormatError(f"result file {path} is not valid JSON: {e}") from None
        claims = record.get("claims") if isinstance(record, dict) else None
        if not claims:
            continue
        if not isinstance(claims, dict):
            raise ResultFormatError(f"{path}: 'claims' must map claim ids to entries, got {type(claims).__name__}")
        prov = record.get("provenance", {})
        for cid, raw in claims.items():
            if known_ids is not None and cid not in known_ids:
                raise ResultFormatError(f"{path}: unknown claim id {cid!r} (known: {sorted(known_ids)})")
            for e in _entries(path, cid, raw):
                out.setdefault(cid, []).append({"entry": e, "file": _rel(path),
                                                "date": str(prov.get("date", ""))[:10],
                                                "hardware": prov.get("hardware", {})})
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _ours(e: ClaimEntry) -> str:
    if e.ours:
        return e.ours
    return "" if e.value is None else str(e.value)


def claims_table(profile: str, paper_path: Path = PAPER_CLAIMS, results_root: Path = RESULTS_ROOT) -> list[dict]:
    """One row per paper claim: id, claim, paper, ours, how, evidence, verdict (the headline), headline
    (its evidence and reason), judged (every entry's verdict, evidence, reason, subject), profile, date,
    files. Entries are ordered strongest evidence first. For the book's table (`to_markdown`): entries
    (each entry with its file, date and hardware, aligned with judged), deciding (the indices of the entries
    the headline rests on), headline_number (the deciding entry's number and 95% interval, short),
    evidence_phrase (what it was measured on, in words), chapter (the book page that measures it), noise."""
    paper = paper_claims(paper_path)
    found = result_claims(profile, results_root, known_ids={r["id"] for r in paper})
    order = list(EVIDENCE)
    rows = []
    for p in paper:
        base = {"id": p["id"], "claim": p["claim"], "paper": p["paper_value"], "source": p["source"],
                "rule": p["rule"], "noise": p["noise"], "profile": profile, "chapter": CHAPTERS.get(p["id"])}
        items = sorted(found.get(p["id"], []), key=lambda x: order.index(x["entry"].evidence))
        if not items:
            rows.append({**base, "ours": "—", "how": f"no result in data/results/{profile}/", "evidence": [],
                         "date": "—", "verdict": "not run", "headline": None, "judged": [], "files": [],
                         "entries": [], "deciding": [], "headline_number": "—",
                         "evidence_phrase": f"no result in data/results/{profile}/"})
            continue
        judged = []
        for x in items:
            e = x["entry"]
            try:
                v, why = judge(p["id"], e, p["thresholds"])
            except ResultFormatError as err:
                raise ResultFormatError(f"{x['file']}: claim {p['id']}: {err}") from None
            judged.append({"verdict": v, "evidence": e.evidence, "reason": why, "subject": e.subject})
        head = headline(judged)
        entries = [x["entry"] for x in items]
        rows.append({**base, "ours": "; ".join(_ours(e) for e in entries),
                     "how": "; ".join(dict.fromkeys(e.how for e in entries if e.how)),
                     "evidence": list(dict.fromkeys(e.evidence for e in entries)),
                     "date": max(x["date"] for x in items) or "—",
                     "verdict": head["verdict"], "headline": head, "judged": judged,
                     "files": list(dict.fromkeys(str(x["file"]) for x in items)),
                     **_presented(items, judged, head)})
    return rows


# ------------------------------------------------------------------------------------------ presentation
# The book's table shows, per claim, the paper's number, the deciding entry's number with its interval, the
# evidence in words and one verdict badge; everything else (every entry's text, how it was obtained, its
# verdict and reason, the rule, the files) goes to a details block per claim below the table. Nothing here
# decides anything: it formats what the rules above returned and the entries' own fields.

# the chapter (book page) that measures each claim
CHAPTERS = {"H1": "notebooks/02_speedup", "H2": "notebooks/02_speedup", "H3": "notebooks/02_speedup",
            "H4": "notebooks/02_speedup", "H5": "notebooks/03_pretraining", "H6": "notebooks/03_pretraining",
            "H7": "notebooks/04_llama_adaptation", "H8": "notebooks/04_llama_adaptation"}
# phrases of the table linked to their glossary entry (book/methods.md), the first occurrence in a cell
CELL_TERMS = {"upper bound's gain": "share of the upper bound's gain", "upper bound": "upper bound", "a/c": "a/c", "regime": "regime", "link emulated": "emulated link",
              "emulated link": "emulated link", "gloo": "gloo", "performance model": "performance model",
              "in sample": "in sample", "out of sample": "out of sample", "gap to control": "gap to the control"}
_CELL_TERMS = re.compile("|".join(rf"(?<![\w/]){re.escape(k)}(?![\w/])" for k in CELL_TERMS))
_LINK_SPEC = re.compile(r"(?:\blink )?(?<![\w:])((?:custom:[0-9.eE+-]+:[0-9.eE+-]+(?::[0-9.eE+-]+)?|nvlink4|pcie5-nop2p|"
                        r"net100g|net400g)(?![\w:]))")


def _deciding(judged: list[dict], head: dict | None) -> list[int]:
    """Indices of the entries the headline verdict rests on: its entry, or every entry of its evidence
    (those not applicable here left out while another remains)."""
    if head is None or not judged:
        return []
    if head.get("entry") is not None:
        return [head["entry"]]
    same = [i for i, j in enumerate(judged) if j["evidence"] == head["evidence"]]
    return [i for i in same if judged[i]["verdict"] != "not applicable here"] or same


def _signed(x: float, fmt: str) -> str:
    return format(x, "+" + fmt).replace("-", "−")


def _range(lo: float, hi: float, fmt: str, signed: bool = False) -> str:
    """'1.30–1.43', or '−0.090 to +0.170' for signed quantities and intervals reaching below 0."""
    if signed or lo < 0:
        return f"{_signed(lo, fmt)} to {_signed(hi, fmt)}"
    return f"{lo:{fmt}}–{hi:{fmt}}"


def _share(x: float, ci, what: str) -> str:
    """'87% (75–100%) of ...': a share with its interval, in whole percent; with one decimal when the interval
    is under two points wide ('98.5% (98.5–98.5%)'), where whole percent would round its ends apart."""
    digits = 1 if ci is not None and ci[1] - ci[0] < 0.02 else 0
    pct = lambda v: f"{v * 100:.{digits}f}".replace("-", "−")
    if ci is None:
        return f"{pct(x)}% {what} (no interval)"
    return f"{pct(x)}% ({pct(ci[0])}{' to ' if ci[0] < 0 else '–'}{pct(ci[1])}%) {what}"


def _training_number(e: ClaimEntry) -> str:
    std, lad = e.standard, e.ladder
    seeds = (f"{len(std)} seed{'' if len(std) == 1 else 's'} per wiring" if len(std) == len(lad)
             else f"{len(std)} standard / {len(lad)} ladder seeds")
    if e.seeds is not None and len(std) == len(lad) >= 2:
        got = t_interval([b - a for a, b in zip(std, lad)])
        return (f"ladder − standard {_signed(got['mean'], '.3f')} nats ({_range(*got['ci'], '.3f', True)}), "
                f"{seeds}")
    gap = sum(lad) / len(lad) - sum(std) / len(std)
    why = "seeds not recorded" if e.seeds is None else "fewer than 2 paired seeds"
    return f"ladder − standard {_signed(gap, '.3f')} nats (no interval: {why}), {seeds}"


def entry_number(e: ClaimEntry) -> str:
    """One entry's number and its 95% interval, short: '1.37× (1.30–1.43), 87% (75–100%) of the upper
    bound's gain'; 'gap to control +0.068 nats (+0.063 to +0.074), ...'; '(no interval)' where none."""
    e = ClaimEntry.from_dict(e)
    if e.speedup is not None:
        ci = e.interval("speedup")
        text = f"{e.speedup:.2f}×" + (f" ({_range(*ci, '.2f')})" if ci else " (no interval)")
        if e.recovered is not None:
            text += ", " + _share(e.recovered, e.interval("recovered"), "of the upper bound's gain")
        return text
    if e.comm_share is not None:
        return _share(e.comm_share, e.interval("comm_share"), "of standard's time in all-reduce")
    if e.standard is not None and e.ladder is not None:
        return _training_number(e)
    if e.gap_to_control is not None:
        ci = e.interval("gap_to_control")
        text = (f"gap to control {_signed(e.gap_to_control, '.3f')} nats"
                + (f" ({_range(*ci, '.3f', True)})" if ci else " (no interval)"))
        if e.recovered is not None:
            text += f", {e.recovered * 100:.0f}% of the conversion's cost recovered".replace("-", "−")
        return text
    if e.value is not None:
        ci = e.interval(e.quantity) if e.quantity else None
        return (f"{e.quantity or 'value'} {e.value:.3g}"
                + (f" ({_range(*ci, '.3g')})" if ci else " (no interval)"))
    return "no number recorded"


def _count(x, unit: str) -> str | None:
    """2557632 -> '2.6M parameters'."""
    if x is None:
        return None
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")):
        if x >= div:
            v = x / div
            return (f"{v:.1f}".rstrip("0").rstrip(".") if v < 10 else f"{v:.0f}") + f"{suffix} {unit}"
    return f"{x:g} {unit}"


def _message_bytes(e: ClaimEntry) -> int | None:
    """The all-reduce message of a performance-model entry's decode step (batch x dim x 2 bytes, the model's
    16-bit activations); None where the shape or batch is not recorded."""
    try:
        return int(e.extra["batch"]) * preset(e.extra["shape"]).dim * 2
    except (KeyError, ValueError, TypeError):
        return None


def link_words(spec, ranks=None, nbytes=None) -> str | None:
    """A link spec in words with one all-reduce's time (ladder.link.describe); None for no link or a
    spec that is not one ('none (measured gloo)')."""
    try:
        words = describe(spec, int(ranks) if ranks else None, nbytes)
    except (ValueError, TypeError):
        return None
    return None if words == "no emulated link" else words


def evidence_phrase(e: ClaimEntry, hardware: Mapping | None = None) -> str:
    """What an entry was measured on, in a short phrase: its evidence kind, the regime or link it was set to,
    the hardware ('2-core CPU, link emulated at a/c = 0.43 (the “paper, NVLink” regime)')."""
    e, hw = ClaimEntry.from_dict(e), dict(hardware or {})
    tp = e.extra.get("tp")
    link = link_words(e.extra.get("link"), tp, _message_bytes(e) if e.evidence in MODEL_EVIDENCE else None)
    cpu = f"{hw['cpu_count']}-core CPU" if hw.get("cpu_count") else "CPU"
    if e.link_ratio is not None:
        regime = e.extra.get("regime")
        emulated = f"link emulated at a/c = {e.link_ratio:.2f}" + (f" (the “{regime}” regime)" if regime else "")
    else:
        emulated = f"emulated link: {link}" if link else "emulated link"
    if e.evidence == "multi-gpu":
        gpus = f"{hw['gpu_count']}× {hw['gpu']}" if hw.get("gpu") and hw.get("gpu_count") else "several GPUs"
        return gpus + (f", {e.nodes} nodes" if e.nodes else "") + (f", TP = {tp}" if tp else "")
    if e.evidence == "gpu1-emulated-link":
        return f"one {hw.get('gpu') or 'GPU'}, {emulated}"
    if e.evidence == "cpu-real-processes":
        return f"{cpu}, {f'{tp} ' if tp else ''}real gloo processes" + (f", plus an emulated link: {link}" if link else "")
    if e.evidence == "cpu-emulated-link":
        return f"{cpu}, {emulated}"
    if e.evidence == "small-scale-training":
        bits = [e.subject, _count(e.params, "parameters"), _count(e.tokens, "tokens")]
        return f"{cpu}, small-scale training" + "".join(f"{': ' if i == 0 else ', '}{b}" for i, b in
                                                         enumerate(b for b in bits if b))
    what = " at ".join(b for b in (e.extra.get("shape"), f"TP = {tp}" if tp else None) if b)
    return ("performance model" + (f" of {what}" if what else "") + (f" on {link}" if link else "")
            + ("; in sample: does not count" if e.evidence == "model-in-sample" else "; out of sample"))


def _presented(items: list[dict], judged: list[dict], head: dict) -> dict:
    """The row keys the book's table reads: the deciding entries' number and evidence, in words."""
    deciding = _deciding(judged, head)
    first = items[deciding[0]]
    number = entry_number(first["entry"])
    if len(deciding) > 1:
        number = (f"{first['entry'].subject}: " if first["entry"].subject else "") + number + \
            f" (and {len(deciding) - 1} more {'entry' if len(deciding) == 2 else 'entries'}: details)"
    return {"entries": items, "deciding": deciding, "headline_number": number,
            "evidence_phrase": evidence_phrase(first["entry"], first["hardware"])}


_ESCAPE = re.compile(r"([\\`*_{}\[\]<>$|#])")


# a dot inside a word ('paper-numbers.md', 'ladder.replay'): escaped, so linkify does not make a web address of it
_DOT = re.compile(r"(?<=\w)\.(?=[A-Za-z])")


def _escape(text: str) -> str:
    return _DOT.sub(r"\\.", _ESCAPE.sub(r"\\\1", text))


def _md(text) -> str:
    """Plain text for a table cell: one line, MyST markup characters escaped."""
    return _escape(" ".join(str(text).split())) or "—"


def _terms(md: str) -> str:
    """Escaped cell text with the first occurrence of each glossary phrase linked ({term})."""
    seen = set()

    def link(m):
        term = CELL_TERMS[m.group(0)]
        if term in seen:
            return m.group(0)
        seen.add(term)
        return f"{{term}}`{m.group(0)} <{term}>`" if m.group(0) != term else f"{{term}}`{term}`"
    return _CELL_TERMS.sub(link, md)


def _with_link_names(text: str, ranks=None) -> str:
    """`text` escaped (as `_md`), each link spec in it ('pcie5-nop2p', 'custom:0.0004:2e8') named in words
    with one all-reduce's time at `ranks` ranks, the spec kept as code."""
    text = " ".join(str(text).split())
    out, at = [], 0
    for m in _LINK_SPEC.finditer(text):
        words = link_words(m.group(1), ranks)
        if words is not None:  # 'link pcie5-nop2p' -> 'PCIe 5.0 without peer-to-peer, ... (`pcie5-nop2p`)'
            out += [_escape(text[at:m.start()]), f"{_md(words)} (`{m.group(1)}`)"]
            at = m.end()
    out.append(_escape(text[at:]))
    return "".join(out) or "—"


def _label(j: dict) -> str:
    return ", ".join(x for x in (EVIDENCE[j["evidence"]][0], j.get("subject")) if x)


def _anchor(row: dict) -> str:
    return f"claim-{row['id'].lower()}"


def _chapter(doc: str) -> str:
    """{doc} link to a chapter page: 'chapter 2'."""
    number = re.match(r"notebooks/(\d+)_", doc)
    return f"{{doc}}`chapter {int(number.group(1))} </{doc}>`" if number else f"{{doc}}`/{doc}`"


def _verdict_cell(row: dict, chapters=None) -> str:
    """One badge (the headline verdict), then links to the claim's details block and to its chapter."""
    links = [f"{{ref}}`details <{_anchor(row)}>`"]
    if row.get("chapter") and (chapters is None or row["chapter"] in chapters):
        links.append(_chapter(row["chapter"]))
    return f"{{{BADGES[row['verdict']]}}}`{row['verdict']}` <br> " + " · ".join(links)


def _entry_lines(row: dict, i: int) -> list[str]:
    """One entry in a details block: its verdict and reason, then what was measured, how, on what, where."""
    j, x = row["judged"][i], row["entries"][i]
    e = x["entry"]
    tp = e.extra.get("tp")
    lines = [f"- *{j['verdict']}* {_md('(' + _label(j) + ')')}: {_md(j['reason'])}"
             + (" — **the headline rests on it**" if i in row["deciding"] else "")]
    lines.append(f"  - Ours: {_terms(_with_link_names(_ours(e) or '—', tp))}")
    if e.how:
        lines.append(f"  - How: {_with_link_names(e.how, tp)}")
    lines.append(f"  - Measured on: {_terms(_md(evidence_phrase(e, x['hardware'])))}")
    lines.append(f"  - Result file: `{x['file']}`" + (f", {x['date']}" if x["date"] else ""))
    return lines


def _details(row: dict, chapters=None) -> list[str]:
    """The details block of one claim: a dropdown named claim-<id> that the table links to."""
    v, head = row["verdict"], row.get("headline")
    lines = [f"````{{dropdown}} {row['id']}: {_md(row['claim'])} — {v}", f":name: {_anchor(row)}",
             ":class-container: claims-details", "",
             f"**Claim.** {_md(row['claim'])}. **Paper:** {_md(row['paper'])}. **Where in the paper:** "
             f"{_md(row['source'])}.", ""]
    if head is None:
        lines += [f"**Verdict:** {{{BADGES[v]}}}`{v}` — no result in `data/results/{row['profile']}/` "
                  "addresses this claim yet.", ""]
    else:
        lines += [f"**Verdict:** {{{BADGES[v]}}}`{v}`, from its strongest {{term}}`evidence` "
                  f"({_md(_label(head))}): {_md(head['reason'])}.", "",
                  "**Every entry**, strongest evidence first:", ""]
        seen = set()
        for i in range(len(row["judged"])):
            entry = _entry_lines(row, i)
            key = "\n".join(entry)  # identical entries get the same verdict: both decide the headline or neither
            if key not in seen:  # an entry written twice is shown once
                seen.add(key)
                lines += entry
        lines.append("")
    lines += ["```{container} claims-rule", f"**Decision rule** (`ladder/paper/claims.csv`): {_md(row['rule'])}", "",
              f"**Noise it is judged against:** {_md(row.get('noise', '—'))}", "```", ""]
    if row.get("chapter") and (chapters is None or row["chapter"] in chapters):
        lines += [f"Measured in {_chapter(row['chapter'])}.", ""]
    elif row.get("chapter"):
        lines += [f"Its chapter (`{row['chapter']}`) is not part of this build.", ""]
    return lines + ["````", ""]


def to_markdown(rows: list[dict], profile: str, chapters=None) -> str:
    """A compact MyST list-table (id `claims-table`): per claim the paper's number, ours with its interval,
    the evidence in words, one verdict badge and links to the claim's details block (below the table) and
    chapter. `chapters`: the chapter pages in the book (None: all), the others are not linked."""
    lines = [
        f"<!-- Generated by ladder.claims from ladder/paper/claims.csv and data/results/{profile}/*.json. "
        "Do not edit: re-run the pipeline. -->",
        "```{list-table} Headline claims: the paper's value and ours "
        f"(profile **{profile}**; generated from the result files; verdicts by the rules in "
        "ladder/paper/claims.csv). Every entry, its reasoning and its rule: in the details below the table.",
        ":header-rows: 1", ":name: claims-table", ":class: claims-table", ":widths: 22 17 24 21 16", "",
        "* - Claim", "  - Paper", "  - Ours ({term}`95% CI`)", "  - {term}`Evidence <evidence>`",
        "  - {term}`Verdict <verdict>`"]
    for r in rows:
        lines += [f"* - **{r['id']}** {_md(r['claim'])}", f"  - {_md(r['paper'])}",
                  f"  - {_terms(_md(r['headline_number']))}", f"  - {_terms(_md(r['evidence_phrase']))}",
                  f"  - {_verdict_cell(r, chapters)}"]
    lines += ["```", ""]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    lines.append(f"Claims by headline verdict ({len(rows)} claims, each judged on its strongest evidence: "
                 f"{HEADLINE_ORDER}): " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ". "
                 "Sources of the paper's values and of the decision rules: `ladder/paper/claims.csv`; ours: "
                 + (", ".join(f"`{f}`" for f in sorted({f for r in rows for f in r["files"]})) or "none yet")
                 + ".")
    lines += ["", "**What each verdict rests on** (open a claim: every entry, how it was obtained, its verdict "
              "and reason, the rule, the result files):", ""]
    for r in rows:
        lines += _details(r, chapters)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_claims_page(profile: str, path: Path, paper_path: Path = PAPER_CLAIMS,
                      results_root: Path = RESULTS_ROOT) -> Path:
    """Write the markdown table included by the book's opening page. Where the page sits in a book
    (<book>/_generated/), only the chapters executed into <book>/notebooks/ are linked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(claims_table(profile, paper_path, results_root), profile, book_chapters(path.parent.parent)))
    return path


def book_chapters(book_dir: Path) -> set[str] | None:
    """The chapters executed into <book_dir>/notebooks ({"notebooks/02_speedup", ...}), which the claims table
    links; None when there is no such folder (then every chapter is linked)."""
    folder = Path(book_dir) / "notebooks"
    return {f"notebooks/{p.stem}" for p in folder.glob("[0-9][0-9]_*.ipynb")} if folder.is_dir() else None


def stability_markdown(profile: str, results_root: Path = RESULTS_ROOT) -> str:
    """The book's paragraph on whether the chapters' verdicts hold still, from
    <results_root>/<profile>/stability_*.json (what `python -m ladder.stability` wrote, with its rule)."""
    files = sorted((Path(results_root) / profile).glob("stability_*.json"))
    if not files:
        return (f"**Does it hold still?** No repeated run is recorded for the {profile} profile "
                f"(`python -m ladder.stability --profile {profile}` re-runs a chapter and records it).\n")
    out = []
    for f in files:
        r = json.loads(f.read_text())
        prov, rule = r.get("provenance", {}), r.get("rule") or {}
        per, any_speedup = [], False
        for cid, c in r.get("per_claim", {}).items():
            rec = [x for x in c["recovered"] if x is not None]
            digits = 1 if rec and max(rec) - min(rec) < 0.02 else 0  # whole percent would round a tight range apart
            spread = f", recovered {min(rec):.{digits}%}–{max(rec):.{digits}%}" if rec else ""
            # each run's measured speed-up (its deciding entry's): only re-runs show how far it drifts between runs
            fast = [x for x in (run.get("outcomes", {}).get(cid, {}).get("speedup") for run in r["runs"])
                    if x is not None]
            spread += f", speed-up {min(fast):.2f}x–{max(fast):.2f}x" if fast else ""
            any_speedup = any_speedup or bool(fast)
            per.append(f"{cid}: {' / '.join(dict.fromkeys(c['verdicts']))}{spread}")
        said = (f"every verdict the same, recovered within {rule['max_recovery_spread'] * 100:.0f} points, at least "
                f"{rule['min_runs']:g} runs" if {"max_recovery_spread", "min_runs"} <= set(rule)
                else "not recorded in the result file")
        out.append(f"**Does it hold still?** Chapter `{r['chapter']}` was executed {len(r['runs'])} times in a row "
                   f"on {str(prov.get('date', ''))[:10]} (commit `{str(prov.get('git_commit', ''))[:10]}`)"
                   + (f" on {hardware_line(prov)}" if prov.get("hardware") else "") + ": "
                   f"**{r['verdict']}** ({r['reason']}). Per claim, its verdicts over the runs and the range of "
                   f"the share of the upper bound's gain recovered"
                   + (" and of the measured speed-up" if any_speedup else "") + f": {'; '.join(per)}. "
                   + ("The claims table's 95% intervals resample the rounds of one run, so they leave out the "
                      "speed-up's drift between runs (the stability rule judges verdicts and recovered shares only). "
                      if any_speedup else "")
                   + f"The rule ({said}) is `ladder/stability.py`.\n")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladder.claims", description="Print the claims table.")
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    for r in claims_table(args.profile):
        print(f"{r['id']:3} {r['verdict']:30} paper: {r['paper']} | ours: {r['ours']} ({r['how']})")
        for j in r["judged"]:
            on = j["evidence"] + (f", {j['subject']}" if j.get("subject") else "")
            print(f"      [{on}] {j['verdict']}: {j['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
