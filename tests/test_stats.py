"""ladder.stats: the bootstrap behind every confidence interval the claims table judges."""
import random
import statistics

import pytest

from ladder.stats import bootstrap, paired_gap, quantile


def counter():
    """A statistic that ignores its sample and returns 0, 1, 2, ... per draw: the draws' order statistics are
    then known, so the interval's ends say which quantiles of how many draws were taken."""
    n = iter(range(10**9))
    return lambda *groups: float(next(n))


@pytest.mark.parametrize("level, n_boot, want", [
    (0.95, 2000, [0.025 * 1999, 0.975 * 1999]),  # the defaults' ends fall between draws: interpolated
    (0.9, 2001, [100.0, 1900.0]), (0.5, 101, [25.0, 75.0]), (0.8, 11, [1.0, 9.0])])
def test_the_interval_is_the_central_level_of_the_draws(level, n_boot, want):
    kw = {} if (level, n_boot) == (0.95, 2000) else {"level": level, "n_boot": n_boot}
    assert bootstrap([1.0, 2.0], statistic=counter(), **kw) == pytest.approx(want, abs=1e-9)


def test_the_default_seed_is_zero():
    rng = random.Random(5)
    data = [rng.gauss(0, 1) for _ in range(30)]
    default = bootstrap(data, statistic=statistics.mean, n_boot=300)
    assert default == bootstrap(data, statistic=statistics.mean, n_boot=300, seed=0)
    assert default != bootstrap(data, statistic=statistics.mean, n_boot=300, seed=1)


def test_quantile_interpolates_between_order_statistics():
    assert quantile([0.0, 10.0, 30.0], 0.25) == 5.0 and quantile([0.0, 10.0, 30.0], 0.75) == 20.0
    assert quantile([4.0], 0.3) == 4.0 and quantile([1.0, 2.0], 1.0) == 2.0


def test_nan_draws_are_dropped_and_all_nan_gives_a_nan_interval():
    draws = iter([float("nan") if i % 2 else float(i) for i in range(21)])  # 0, nan, 2, nan, ..., 20
    assert bootstrap([1.0], statistic=lambda g: next(draws), n_boot=21, level=0.5) == pytest.approx([5.0, 15.0])
    out = bootstrap([1.0], statistic=lambda g: float("nan"), n_boot=5)
    assert len(out) == 2 and all(v != v for v in out)


def test_paired_gap_passes_its_bootstrap_settings_on():
    rng = random.Random(3)
    base = [100 * rng.uniform(1.0, 4.0) for _ in range(30)]
    worse = [b + 100 * rng.gauss(0.05, 0.05) for b in base]
    args = (worse, base, [100] * 30)
    default = paired_gap(*args)
    assert default == paired_gap(*args, n_boot=2000, seed=0, level=0.95)  # the documented defaults
    for other in ({"seed": 1}, {"n_boot": 500}, {"level": 0.5}):
        assert paired_gap(*args, **other)["ci"] != default["ci"]
    narrow = paired_gap(*args, level=0.5)["ci"]
    assert default["ci"][0] < narrow[0] < narrow[1] < default["ci"][1]


def test_identical_units_give_a_zero_width_interval():
    assert bootstrap([2.0] * 7, statistic=statistics.mean) == pytest.approx([2.0, 2.0])
    assert bootstrap([3.0], [1.5], statistic=lambda a, b: a[0] / b[0]) == pytest.approx([2.0, 2.0])


def test_interval_covers_the_mean_and_narrows_with_more_units():
    rng = random.Random(1)
    few = [rng.gauss(10, 2) for _ in range(10)]
    many = [rng.gauss(10, 2) for _ in range(400)]
    lo, hi = bootstrap(few, statistic=statistics.mean, n_boot=500)
    assert lo < statistics.mean(few) < hi
    lo2, hi2 = bootstrap(many, statistic=statistics.mean, n_boot=500)
    assert lo2 < 10 < hi2 and hi2 - lo2 < (hi - lo) / 2  # ~sqrt(40) narrower


def test_a_dict_statistic_gives_an_interval_per_name_and_drops_nan():
    out = bootstrap([1.0, 2.0, 3.0], statistic=lambda x: {"min": min(x), "nan": float("nan")}, n_boot=200)
    assert set(out) == {"min", "nan"} and out["min"][0] == 1.0 and out["min"][1] <= 3.0
    assert all(v != v for v in out["nan"])


def test_groups_are_resampled_independently():
    """Two groups of different sizes: the statistic sees each resampled to its own size."""
    sizes = set()
    bootstrap([1, 2, 3], [4, 5], statistic=lambda a, b: sizes.add((len(a), len(b))) or 0.0, n_boot=20)
    assert sizes == {(3, 2)}
    with pytest.raises(ValueError, match="^bootstrap needs at least one unit in every group$"):
        bootstrap([1.0], [], statistic=lambda a, b: 0.0)


def test_paired_gap_cancels_what_the_sequences_share():
    """Sequences of very different difficulty: model a is 0.05 nats/token worse on each, with a little noise.
    The paired interval is tight around 0.05; resampling the two models' losses separately would be wide."""
    rng = random.Random(0)
    tokens = [100] * 60
    base = [100 * rng.uniform(1.0, 4.0) for _ in tokens]           # summed loss of model b per sequence
    worse = [b + 100 * (0.05 + rng.gauss(0, 0.01)) for b in base]  # model a
    out = paired_gap(worse, base, tokens, n_boot=500)
    assert out["n"] == 60 and out["gap"] == pytest.approx((sum(worse) - sum(base)) / 6000)
    lo, hi = out["ci"]
    assert lo < out["gap"] < hi and 0.045 < lo and hi < 0.055
    unpaired = bootstrap(worse, base, statistic=lambda a, b: (sum(a) - sum(b)) / 6000, n_boot=500)
    assert unpaired[1] - unpaired[0] > 10 * (hi - lo)


def test_paired_gap_weighs_sequences_by_their_tokens():
    out = paired_gap([10.0, 1.0], [0.0, 0.0], [10, 90], n_boot=50)
    assert out["gap"] == pytest.approx(11 / 100)  # per token, not a mean of per-sequence means (0.5056)
    with pytest.raises(ValueError, match=r"^paired_gap needs one loss per sequence from each model: got 2, 1 losses "
                                         r"for 2 sequences$"):
        paired_gap([1.0, 2.0], [1.0], [5, 5])


def test_paired_gap_resamples_documents_whole():
    """Sequences cut from one document repeat its gap: counted as independent they narrow the interval as if
    there were more documents. With `clusters`, three copies of each of 20 documents' sequences give the
    interval of the 20 documents alone (same draws: the seed picks the same documents)."""
    rng = random.Random(1)
    base = [100 * rng.uniform(1.0, 4.0) for _ in range(20)]
    worse = [b + 100 * (0.05 + rng.gauss(0, 0.05)) for b in base]
    alone = paired_gap(worse, base, [100] * 20, n_boot=400)
    copies = paired_gap(worse * 3, base * 3, [100] * 60, n_boot=400, clusters=list(range(20)) * 3)
    assert copies["n"] == 20 and copies["sequences"] == 60 and alone["n"] == alone["sequences"] == 20
    assert copies["gap"] == pytest.approx(alone["gap"]) and copies["ci"] == pytest.approx(alone["ci"])
    as_sequences = paired_gap(worse * 3, base * 3, [100] * 60, n_boot=400)
    width = lambda r: r["ci"][1] - r["ci"][0]
    assert width(as_sequences) < 0.7 * width(alone)  # ~1/sqrt(3) of it: the too-narrow interval this avoids
    # one document per sequence is the plain sequence bootstrap, draw for draw
    assert paired_gap(worse, base, [100] * 20, n_boot=400, clusters=list("abcdefghijklmnopqrst"))["ci"] == alone["ci"]
    with pytest.raises(ValueError, match=r"for 2 sequences and 3 document labels"):
        paired_gap([1.0, 2.0], [1.0, 2.0], [5, 5], clusters=[0, 0, 1])
