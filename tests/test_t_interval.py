"""ladder.stats.t_interval: Student's t interval of a mean over a few paired seeds (claims H5/H6)."""
import pytest

from ladder import stats


@pytest.mark.parametrize("df, p, want", [(1, 0.975, 12.706204736174698), (2, 0.975, 4.302652729911275),
                                         (4, 0.975, 2.7764451051977987), (30, 0.975, 2.0422724563012373),
                                         (2, 0.025, -4.302652729911275), (5, 0.5, 0.0),
                                         (5, 0.6, 0.26718086570414054), (3, 0.8, 0.9784723123633045)])
def test_t_quantile_matches_the_tables(df, p, want):
    assert stats.t_quantile(p, df) == pytest.approx(want, abs=1e-8)


def test_t_interval_of_three_gaps():
    got = stats.t_interval([0.017, 0.028, 0.020])
    assert got["mean"] == pytest.approx(0.021666666666666667) and got["n"] == 3
    assert got["sd"] == pytest.approx(0.005686240703077327)
    assert got["ci"] == pytest.approx([0.00754126, 0.03579207], abs=1e-7)
    assert stats.t_interval([0.01, 0.01, 0.01])["ci"] == pytest.approx([0.01, 0.01])
    # wider than the percentile bootstrap, which never leaves [min, max] of three values
    assert got["ci"][0] < 0.017 and got["ci"][1] > 0.028


def test_t_interval_of_two_values_has_one_degree_of_freedom():
    got = stats.t_interval([0.1, 0.2])
    assert got["ci"] == pytest.approx([0.15 - 12.706204736174698 * 0.05, 0.15 + 12.706204736174698 * 0.05])


def test_t_interval_needs_two_values_and_a_valid_level():
    with pytest.raises(ValueError, match=r"^t_interval needs at least 2 values, got 1$"):
        stats.t_interval([0.1])
    for p, df in ((1.0, 3), (0.0, 3), (0.9, 0), (0.9, -1)):
        with pytest.raises(ValueError, match=rf"^t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}$"):
            stats.t_quantile(p, df)


def _width(n, sd):  # the 95% Student-t interval's width over n runs, from the tables' quantiles
    return 2 * stats.t_quantile(0.975, n - 1) * sd / n ** 0.5


@pytest.mark.parametrize("sd, width, want", [
    # chapter 3's fp32 gaps (sd 0.0275) against H5's 0.02 margin: t(0.975, 32) = 2.0369 -> 0.01986 wide at 33,
    # t(0.975, 31) = 2.0395 -> 0.02019 at 32
    (0.028, 0.02, 33),
    # the gaps 0.017, 0.028, 0.020 (sd 0.00569): 3 seeds give 0.028 wide, 4 seeds (t(3) = 3.182) 0.0181
    (0.005686240703077327, 0.02, 4),
    (0.01, 0.02, 7),     # far from the normal answer (4): t's heavy tails at few runs add three
    (0.0, 0.02, 2),      # no spread: the fewest runs an interval needs
    (1.0, 0.001, 15365838),
])
def test_runs_for_width_is_the_fewest_runs_whose_interval_fits(sd, width, want):
    n = stats.runs_for_width(sd, width)
    assert n == want
    assert _width(n, sd) <= width and (n == 2 or _width(n - 1, sd) > width)


def test_runs_for_width_at_a_width_met_exactly():
    sd = 0.02 * 5 ** 0.5 / (2 * stats.t_quantile(0.975, 4))  # 5 runs give exactly 0.02 (to rounding)
    assert stats.runs_for_width(sd * (1 - 1e-9), 0.02) == 5 and stats.runs_for_width(sd * (1 + 1e-9), 0.02) == 6


def test_runs_for_width_rejects_a_negative_spread_or_no_width():
    for sd, width in ((-0.1, 0.02), (0.1, 0.0), (0.1, -0.02)):
        with pytest.raises(ValueError, match=rf"^runs_for_width needs sd >= 0 and width > 0, got sd={sd}, width={width}$"):
            stats.runs_for_width(sd, width)


def test_the_gpu_path_imports_no_scipy():
    """The GPU machine's image has torch and transformers but no scipy: the modules its check runs must import
    without it (scipy is imported by t_quantile only, which the speed claims never call)."""
    import subprocess
    import sys
    code = ("import sys, ladder.stats, ladder.speedup, ladder.bench, ladder.claims, ladder.link; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
