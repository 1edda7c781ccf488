"""The one table style of the chapters (ladder.tables.styled)."""
import re

import pandas as pd

from ladder.tables import is_prose, styled, words


def cells(html: str) -> list[str]:
    """The text of every cell and label of a Styler's HTML, the word-keeping spans removed."""
    found = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", html, re.S)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in found]


def test_numbers_are_rounded_by_the_unit_in_their_label_and_missing_values_marked():
    df = pd.DataFrame({"name": ["a", "b"], "acc (%)": [12.345, None], "speed-up (×)": [1.23456, 0.5],
                       "ppl": [5.0712, 12.0], "wall (s)": [3.14159, 2.0], "loss (nats)": [2.71828, 1.0]})
    html = styled(df, caption="cap").to_html()
    got = cells(html)
    assert {"12.3", "1.23", "5.07", "–", "3.1", "2.718"} <= set(got) and "12.35" not in got and "cap" in html
    assert "0" not in got  # a 0, 1, ... index is hidden
    assert "5.071" in cells(styled(df, precision=3).to_html())
    assert "5.0712" in cells(styled(df, formats={"ppl": "{:.4f}"}).to_html())


def test_integers_get_separators_booleans_read_yes_no_and_text_passes_through():
    df = pd.DataFrame({"params": [2557632, 12], "reused": [True, False], "CI (×)": ["0.80–1.10", "–"],
                       "runs": [3, 4], "replay (×)": [1.5, "–"]})
    got = cells(styled(df).to_html())
    assert {"2,557,632", "12", "yes", "no", "0.80–1.10", "–", "3", "1.50"} <= set(got)


def test_labels_rename_for_the_page_only():
    df = pd.DataFrame({"val_loss": [5.4281], "tokens_per_s": [1875.4]})
    labels = {"val_loss": "held-out loss (nats)", "tokens_per_s": "speed (tokens/s)"}
    got = cells(styled(df, labels=labels).to_html())
    assert got == ["held-out loss (nats)", "speed (tokens/s)", "5.428", "1,875"]
    assert list(df.columns) == ["val_loss", "tokens_per_s"]  # the DataFrame keeps its names
    assert "5.43e+00" in cells(styled(df, labels=labels, formats={"val_loss": "{:.2e}"}).to_html())  # own name


def test_words_wrap_only_between_words_and_are_escaped():
    assert words("ARC-C (%)") == ('<span style="white-space: nowrap">ARC-C</span> '
                                  '<span style="white-space: nowrap">(%)</span>')
    assert words("a<b") == '<span style="white-space: nowrap">a&lt;b</span>'


def test_every_cell_and_label_keeps_its_words_whole():
    df = pd.DataFrame({"ARC-C (%)": [25.0], "model": ["Standard-1B (seed 0)"]},
                      index=pd.Index(["Ladder-3B (seed 1)"], name="run"))
    html = styled(df).to_html()
    raw = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", html, re.S)
    for label in ("ARC-C (%)", "Standard-1B (seed 0)", "Ladder-3B (seed 1)", "25.0"):
        assert words(label) in [r.strip() for r in raw], label
    assert "white-space: normal" not in html and "padding: 3px 6px" in html


def test_every_unit_has_its_own_rounding_also_in_two_level_labels():
    df = pd.DataFrame({"speed-up (×)": [1.23456], "step (ms)": [12.345], "rate (tokens/s)": [1234.5]})
    assert cells(styled(df, precision=4).to_html())[3:] == ["1.23", "12.3", "1,234"]  # not 4 decimals
    two = pd.DataFrame([[12.345, 1.23456]], columns=pd.MultiIndex.from_tuples([("ARC-C (%)", "ours"), ("ppl", "")]))
    assert cells(styled(two, precision=3).to_html())[-2:] == ["12.3", "1.235"]


def test_the_layout_the_page_relies_on():
    html = styled(pd.DataFrame({"a": [1.0]}), caption="c").to_html()
    css = " ".join(html.split())
    for rule in (" th { padding: 3px 6px; vertical-align: top; }", " td { padding: 3px 6px; vertical-align: top; }",
                 " td { text-align: right; }",
                 "caption { caption-side: top; text-align: left; padding: 4px 0; }"):
        assert rule in css, rule


def _aligned_left(html: str) -> set[str]:
    """The columns (col0, col1, ...) whose cells the Styler aligns left, by a rule as specific as the table's
    "td" rule and later (a rule on a cell's id alone would lose to it: tests/test_book.py checks the browser)."""
    return set(re.findall(r"#T_\w+ td\.(col\d+)\s*{\s*text-align: left;", html))


def test_prose_aligns_left_and_numbers_written_as_text_stay_right():
    df = pd.DataFrame({"claim": ["H1", "H2"], "ours": ["ladder hid 98.5% of the wait", "1.51x"],
                       "CI (×)": ["1.40–1.56", "–"], "speed-up": ["1.41x", None], "ppl": [5.1, 6.2]})
    assert _aligned_left(styled(df).to_html()) == {"col1"}  # "H1" and "1.41x" are not words to read
    two = pd.DataFrame([["a long phrase", 1.0]], columns=pd.MultiIndex.from_tuples([("x", "what"), ("y", "n")]))
    assert _aligned_left(styled(two).to_html()) == {"col0"}
    assert _aligned_left(styled(df[["CI (×)", "ppl"]]).to_html()) == set()


def test_prose_is_two_letters_in_a_row():
    assert [is_prose(v) for v in ("ab", "1.41x (1.25–1.41)", "a1b", "+0.070 nats", "–", None, 3.0)] == \
        [True, False, False, True, False, False, False]
