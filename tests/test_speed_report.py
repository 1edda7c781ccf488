"""ladder.speed_report: chapter 2's sections, each one call returning the values its prose cites, its table
or figure and its result data."""
import pytest

from ladder import speed_report as report
from ladder import speedup as sp


def test_mechanism_section_counts_hidden_all_reduces_per_wiring():
    from ladder.config import ModelConfig
    shape = ModelConfig(n_layers=4, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=128, max_seq_len=32)
    s = report.mechanism_section(shape, tp=2)
    assert s.values["mech_standard"] == 0 and s.values["mech_ladder"] == 7 and s.values["mech_hybrid"] == 3
    assert s.values["mech_n"] == 8 and s.values["mech_tp"] == 2
    assert [r["wiring"] for r in s.data["mechanism"]][:3] == ["standard", "parallel", "ladder"]


def test_regimes_section_reads_each_claims_ratio_off_the_regimes(model_vs_paper):
    from ladder import replay
    mv = model_vs_paper
    s = report.regimes_section(mv, {"H1": "paper, NVLink", "H2": "paper, P2P off"})
    want = {r["short"]: r["a/c"] for r in replay.regimes(mv["hw"], sp.paper_table("speed_grid.csv"), 1.6)}
    assert s.values == {"ratio_H1": pytest.approx(want["paper, NVLink"]), "ratio_H2": pytest.approx(0.6)}
    assert s.data["ratios"] == want
    with pytest.raises(KeyError):
        report.regimes_section(mv, {"H1": "a regime nobody published"})


def test_placeholders_fill_every_cpu_only_value():
    s = report.cpu_only_placeholders("gpu1")
    assert set(s.values) == set(report.CPU_ONLY_VALUES) | set(report.CPU_ONLY_FIGURES)
    assert all(s.values[k] != s.values[k] for k in report.CPU_ONLY_VALUES)  # NaN


def test_chapter_params_names_what_the_parameters_cell_lacks():
    ns = {k: i for i, k in enumerate(report.CHAPTER_PARAMS)}
    assert report.chapter_params({**ns, "other": 1}) == ns
    del ns["rivals_batch"]
    with pytest.raises(KeyError, match="rivals_batch"):
        report.chapter_params(ns)


def test_write_chapter_merges_sections_and_their_raw_records(tmp_path):
    import json
    sections = [report.Section(data={"mechanism": [1], "raw_records": [{"a": 1}], "_records": ["kept out"]}),
                report.Section(data={"regimes": [2], "ratios": {"x": 0.4}}),
                report.Section(data={"raw_records": [{"b": 2}]})]
    out = json.loads(report.write_chapter(tmp_path / "speedup.json", {}, sections, {"tp": 2}, 12.5).read_text())
    assert out["raw_records"] == [{"a": 1}, {"b": 2}] and out["mechanism"] == [1] and out["regimes"] == [2]
    assert "_records" not in out and "ratios" not in out and out["elapsed_s"] == 12.5
    assert out["experiment"] == "speedup" and out["provenance"]["params"] == {"tp": 2}


def test_every_value_a_section_glues_is_a_plain_python_number_or_a_figure(model_vs_paper):
    """myst-nb renders a glued numpy scalar as its repr ("np.float64(0.75)") and warns: plain types only."""
    import numbers
    s = report.model_section(model_vs_paper)
    for name, v in s.values.items():
        assert name.startswith("fig_") or (isinstance(v, numbers.Number) and type(v).__module__ == "builtins"), name


def test_rivals_section_glues_plain_numbers(tmp_path):
    import numbers

    from ladder.config import ModelConfig
    shape = ModelConfig(n_layers=2, dim=64, n_heads=4, n_kv_heads=4, ffn_dim=128, vocab_size=128, max_seq_len=64)
    s = report.rivals_section(shape, 1.0, batch=2, tp=2, prompt_len=4, new_tokens=4, samples=2, warmup=0,
                              module_reps=5, figure_path=tmp_path / "rivals.png")
    assert (tmp_path / "rivals.png").is_file() and len(s.data["rivals"]) == 5
    for name, v in s.values.items():
        assert name.startswith("fig_") or (isinstance(v, numbers.Number) and type(v).__module__ == "builtins"), name


def _cells(styler) -> list[list[str]]:
    """A Styler's body cells as the page shows them (the nowrap spans of ladder.tables removed)."""
    import re
    html = styler.to_html()
    rows = re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)
    cell = lambda c: re.sub(r"<[^>]+>", "", c).strip()
    return [[cell(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)] for r in rows if "<td" in r]


def test_mechanism_table_leaves_blank_what_a_wiring_that_hides_nothing_hides_behind():
    import pandas as pd
    mech = pd.DataFrame([
        {"wiring": "standard", "all-reduces per step": 8, "behind a whole module": 0, "exposed": 8,
         "hidden behind": "-", "MB of weights behind each": 0.0, "MFLOPs behind each": 0.0},
        {"wiring": "ladder", "all-reduces per step": 8, "behind a whole module": 1, "exposed": 7,
         "hidden behind": "attn", "MB of weights behind each": 8.524, "MFLOPs behind each": 0.0}])
    rows = _cells(report.mechanism_table(mech))
    assert rows[0] == ["standard", "8", "0", "8", "–", "–", "–"]
    # one hidden all-reduce is enough to show its module, and a real 0.00 stays a number
    assert rows[1] == ["ladder", "8", "1", "7", "attn", "8.52", "0.00"]
    assert mech.loc[0, "hidden behind"] == "-" and mech.loc[0, "MB of weights behind each"] == 0.0  # data kept


def test_regimes_table_labels_its_columns_and_blanks_what_the_paper_does_not_give(model_vs_paper):
    s = report.regimes_section(model_vs_paper, {"H1": "paper, NVLink"})
    import re
    heads = [re.sub(r"<[^>]+>", "", h).strip()
             for h in re.findall(r"<th[^>]*>(.*?)</th>", s.table.to_html(), flags=re.S)]
    assert heads == ["regime", "setting", "shape", "TP", "a (µs)", "c (µs, model)", "a/c", "note", "source"]
    rows = {r[0]: r for r in _cells(s.table)}
    assert rows["paper, NVLink"][4:7] == ["–", "–", f"{s.values['ratio_H1']:.2f}"]
    assert all(c.count(".") <= 1 for c in rows["H100 one-shot"][4:7])  # each number rounded on its own


def test_entries_table_names_evidence_as_the_claims_table_does_and_keeps_trailing_zeros():
    from ladder.claims import EVIDENCE, ClaimEntry
    e = ClaimEntry(evidence="cpu-emulated-link", quantity="speedup", value=1.42, speedup=1.42, how="h",
                   ci={"speedup": [1.4, 1.5623]}, n=5)
    m = ClaimEntry(evidence="model-in-sample", quantity="speedup", value=1.27, speedup=1.27, how="h")
    t = report.entries_table({"H3": [e, m]})
    assert list(t.evidence) == [EVIDENCE["cpu-emulated-link"][0], EVIDENCE["model-in-sample"][0]]
    assert t.loc[0, "95% CI"] == "1.40–1.56" and list(t.claim) == ["H3", "H3"]
    assert t.loc[1, "95% CI"] != t.loc[1, "95% CI"]  # none: NaN, shown as "–"


def test_slow_links_table_has_a_row_per_setting_and_link_factor_and_a_column_per_batch():
    import pandas as pd
    slow = pd.DataFrame([{"setting": s, "link factor": f, "batch": b, "ladder_speedup": 1 + b / 100 + (f == "spec")}
                         for s in ("70B NVLink", "405B 2 nodes") for f in ("fitted", "spec") for b in (1, 64)])
    t = report.slow_links_table(slow)
    assert list(t.columns) == ["setting", "link factor", "batch 1 (×)", "batch 64 (×)"] and len(t) == 4
    row = t[(t.setting == "70B NVLink") & (t["link factor"] == "spec")].iloc[0]
    assert row["batch 1 (×)"] == pytest.approx(2.01) and row["batch 64 (×)"] == pytest.approx(2.64)
