"""The one bootstrap of the package: percentile intervals from resampling measured units with replacement.

Every confidence interval the claims table judges comes from here:
  * speed (ladder.speedup): units are measurement rounds (standard, ladder, upper bound sampled at about
    the same time), resampled whole so the load drift they share stays paired;
  * a speed-up of two independent sample sets (ladder.speedup.ratio_ci): each set resampled on its own;
  * a loss gap between two models on the same held-out sequences (`paired_gap`): units are sequences,
    each carrying both models' losses, so the difficulty of a sequence cancels in the gap.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted `xs`."""
    pos = q * (len(xs) - 1)
    i = int(pos)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (pos - i) * (xs[i + 1] - xs[i])


def bootstrap(*groups: Sequence, statistic: Callable, n_boot: int = 2000, seed: int = 0,
              level: float = 0.95):
    """The `level` percentile interval of `statistic(*resampled_groups)`: each group is resampled with
    replacement, independently of the others. `statistic` returns a number (-> [lo, hi]) or a dict of
    numbers (-> {name: [lo, hi]}); NaN draws are dropped. One unit per group gives a zero-width interval."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("bootstrap needs at least one unit in every group")
    rng = random.Random(seed)
    draws: dict = {}
    for _ in range(n_boot):
        value = statistic(*([g[rng.randrange(len(g))] for _ in g] for g in groups))
        for k, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for k, xs in draws.items():
        xs = sorted(x for x in xs if x == x)
        out[k] = [quantile(xs, lo), quantile(xs, hi)] if xs else [float("nan")] * 2
    return out[None] if list(out) == [None] else out


def paired_gap(loss_a: Sequence[float], loss_b: Sequence[float], tokens: Sequence[float], n_boot: int = 2000,
               seed: int = 0, level: float = 0.95) -> dict:
    """Mean per-token loss of model a minus model b on the same held-out sequences, with its bootstrap
    interval over sequences. `loss_a[i]`, `loss_b[i]`: summed loss of sequence i under each model;
    `tokens[i]`: its scored tokens. Returns {"gap", "ci": [lo, hi], "n"}."""
    if not (len(loss_a) == len(loss_b) == len(tokens)):
        raise ValueError(f"paired_gap needs one loss per sequence from each model: got {len(loss_a)}, "
                         f"{len(loss_b)} losses for {len(tokens)} sequences")
    units = [(float(a), float(b), float(n)) for a, b, n in zip(loss_a, loss_b, tokens)]

    def gap(sample):
        n = sum(u[2] for u in sample)
        return (sum(u[0] for u in sample) - sum(u[1] for u in sample)) / n
    return {"gap": gap(units), "ci": bootstrap(units, statistic=gap, n_boot=n_boot, seed=seed, level=level),
            "n": len(units)}
