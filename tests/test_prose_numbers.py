"""No result number typed by hand in the book's prose.

Scans the book's pages (book/*.md) and the notebooks' markdown cells for numbers. Each must be glued from
the cell that computed it ({glue:text}`name`), or be a number a reader would not call one of our results:
  * part of a name (H1, Llama-3-70B, stories260K, FP16, C4, sha256), of code, math, a link or a glue role;
  * a setting by a rule below (`SETTINGS`: TP degrees, batch sizes, layer / GPU / core counts, chapter
    numbers, the 95% level of every interval, years);
  * or in `ALLOWED`: the paper's figures and published hardware / data facts, each with its source.
Our measurements (speed-ups, shares, losses, gaps, times, scale ratios) are none of these: typed into
prose they fail here and must be glued. `ALLOWED` must stay small and every entry in use."""
from __future__ import annotations

import json
import re

import pytest

from ladder.provenance import REPO_ROOT

# Settings, not results: a number in one of these phrases is a parameter of an experiment or of the text.
SETTINGS = [
    r"TP\s*(?:=|>|<)?\s*\d+(?:\s*(?:,|and|or)\s*\d+)*",     # tensor-parallel degrees: "TP = 8", "TP 2 and 4"
    r"batch(?:es)?(?:-|\s)\d+(?:\s*-\s*\d+)?",              # batch sizes: "batch 1", "batch-1", "batch 1-64"
    r"\d+(?:\s*(?:,|and|or|\(or)\s*\d+\)?)*\s+(?:of\s+\d+\s+)?(?:converted\s+)?layers",  # "16 and 20 of 32 layers"
    r"last\s+\d+(?:\s+\(or\s+\d+\))?(?:\s+of\s+\d+)?",      # "last 16 (or 20) of 32"
    r"\d+-(?:layer|way|core|token|parameter)",               # "16-layer hybrid", "4-way", "2-core machine"
    r"\d+\s+(?:GPUs|cores|nodes|processes|real gloo processes)",  # hardware counts of a setting
    r"(?:chapter|Chapter|chapters)\s+\d+(?:\s*(?:,|and|-)\s*\d+)*",  # cross references
    r"95%\s+(?:CI|intervals?|bound|confidence)",             # the level of every interval in the book
    r"lowest 95% bound",
    r"(?:ICML|year\s*=\s*\{)\s*\d{4}",                       # the paper's year
    r"\d{4}-\d{2}-\d{2}",                                     # dates of the record (when rules were written)
    r"\d+\.\s",                                              # numbered list items
    r"\(\s*(?:factor|link factor)\s+\d+\s*\)",               # "(factor 1)": the links' published rate
    r"(?:NVLink|PCIe|Table|table|Figure|Section)\s+\d+",     # names: hardware generations, the paper's tables
    r"\d+/\d+x\s+to\s+\d+x",                                 # the model's link scale sweep (a parameter)
]
_SETTINGS = re.compile("|".join(f"(?:{p})" for p in SETTINGS))

# (page, phrase containing the numbers, source). Paper figures and published facts only.
PAPER = "Zhang et al. 2025"
ALLOWED = [
    ("book/index.md", "about 30% faster", f"{PAPER}, abstract (claims.csv H1)"),
    ("book/index.md", "about 2 h on 2 cores", "the pipeline's run time from scratch (README.md), not a result"),
    ("book/methods.md", "about 17 times slower", "chapter 3's training loop in bf16 against fp32 on a 2-core AVX2 "
     "machine, 2026-12-07 (README.md), not a result"),
    ("book/methods.md", "its 85 minutes", "chapter 3's run time in fp32 (README.md), not a result"),
    ("book/methods.md", "1B-405B shapes", f"{PAPER}: the model shapes of its speed tables (ladder/config.py presets)"),
    ("book/methods.md", "the paper's ~100B", f"{PAPER}, Table 3 caption (ladder/paper/pretraining.csv)"),
    ("book/methods.md", "first 1,000 documents", "data/manifest.csv: the C4 file holds its first 1,000 documents"),
    ("book/methods.md", "(1.9k tokens:", "data/manifest.csv: the TinyStories sample's size"),
    ("book/methods.md", "about 0.007 nats of WikiText perplexity; its 3B difference, called slightly worse, about 0.029",
     f"{PAPER}, Table 3: ln(18.42 / 18.54) and ln(14.90 / 14.48) (ladder/paper/pretraining.csv)"),
    ("book/methods.md", "a 1-point accuracy", f"{PAPER}, Table 3: the 1B wirings' average accuracies differ by ~1 point"),
    ("notebooks/02_speedup.ipynb", "a 1.29-1.31x end-to-end", f"{PAPER}, abstract and batch table (claims.csv H1)"),
    ("notebooks/02_speedup.ipynb", "up to ~1.6x", f"{PAPER}, P2P-disabled results (claims.csv H2)"),
    ("notebooks/02_speedup.ipynb", "over 1.3x for", f"{PAPER}, multi-node 405B results (claims.csv H3)"),
    ("notebooks/02_speedup.ipynb", "a ~38% communication", f"{PAPER} (claims.csv H4)"),
    ("notebooks/02_speedup.ipynb", "the ~38% communication", f"{PAPER} (claims.csv H4)"),
    ("notebooks/02_speedup.ipynb", "989 TFLOP/s dense\nFP16, 3.35 TB/s", "NVIDIA H100 SXM5 datasheet (ladder/perfmodel.py)"),
    ("notebooks/02_speedup.ipynb", "(450 GB/s per direction)", "NVLink 4 per-direction rate (ladder/link.py)"),
    ("notebooks/02_speedup.ipynb", "by 400 Gb/s NICs", "DGX H100 NICs (ladder/link.py net400g)"),
    ("notebooks/03_pretraining.ipynb", "AdamW (0.9, 0.95), weight decay 0.1, eps 1e-10", f"{PAPER}: training recipe"),
    ("notebooks/03_pretraining.ipynb", "cosine to 0.1 x peak, init N(0, 0.02)", f"{PAPER}: training recipe"),
    ("notebooks/03_pretraining.ipynb", "on ~100B FineWeb-edu", f"{PAPER}, Table 3 caption"),
    ("notebooks/03_pretraining.ipynb", "after ~100B tokens", f"{PAPER}, Table 3 caption"),
    ("notebooks/03_pretraining.ipynb", "first 1,000 documents", "data/manifest.csv"),
    ("notebooks/03_pretraining.ipynb", "(25% for 4-way, 50% for 2-way)", "chance accuracy of 4- and 2-way choices"),
    ("notebooks/03_pretraining.ipynb", "at n = 200", "the profile's eval_limit (profiles/cpu/03_pretraining.yaml)"),
    ("notebooks/03_pretraining.ipynb", "have 1.2B and 3.5B parameters (40 layers, width 1536 / 2304) and see ~100B",
     f"{PAPER}: its 1B and 3B shapes (ladder/config.py presets) and Table 3 caption"),
    ("notebooks/04_llama_adaptation.ipynb", "(average 56.11 → 41.65; GSM8K 85 → 11)", f"{PAPER}, adaptation table (ladder/paper/adaptation.csv)"),
    ("notebooks/04_llama_adaptation.ipynb", "about 3B tokens", f"{PAPER}, adaptation section"),
    ("notebooks/04_llama_adaptation.ipynb", "original average (56.24)", f"{PAPER}, adaptation table (ladder/paper/adaptation.csv)"),
    ("notebooks/04_llama_adaptation.ipynb", "about 21–23% faster", f"{PAPER}, adaptation section (claims.csv H8)"),
    ("notebooks/04_llama_adaptation.ipynb", "the paper's ~21–23%", f"{PAPER}, adaptation section (claims.csv H8)"),
    ("notebooks/04_llama_adaptation.ipynb", "the paper's 21–23%", f"{PAPER}, adaptation section (claims.csv H8)"),
    ("notebooks/04_llama_adaptation.ipynb", "a full fine-tune of 8B parameters with AdamW holds 128 GB of state",
     "8B parameters x 16 bytes (fp32 weights, gradients, two AdamW moments)"),
    ("notebooks/04_llama_adaptation.ipynb", "on 3B tokens and", f"{PAPER}, adaptation section"),
    ("notebooks/04_llama_adaptation.ipynb", "3B tokens of instruction", f"{PAPER}, adaptation section"),
    ("notebooks/04_llama_adaptation.ipynb", "(a 1.9k-token sample", "data/manifest.csv: the TinyStories sample's size"),
    ("notebooks/04_llama_adaptation.ipynb", "(0 tokens: right", "the start of retraining (a definition)"),
]
# book/gpu.md (how to run on GPU nodes) and book/cite.md (the citation) hold settings and commands, no result
PAGES = ["book/index.md", "book/methods.md", "book/gpu.md", "book/cite.md"]
SETTING_PAGES = {"book/gpu.md": "instructions: its numbers are the gpu profile's settings, hardware sizes and "
                                "command lines; no result is reported there (results are in the chapters)",
                 "book/cite.md": "the citation"}

_STRIP = [
    re.compile(r"```.*?```", re.S),                      # fenced code and directives' bodies kept below
    re.compile(r"\$\$.*?\$\$", re.S), re.compile(r"\$[^$\n]+\$"),  # math
    re.compile(r"\{glue:[a-z]+\}`[^`]*`"),               # glued numbers
    re.compile(r"\{[a-z]+\}`[^`]*`"),                    # other roles ({doc}, {numref})
    re.compile(r"`[^`]*`"),                              # inline code
    re.compile(r"\]\([^)]*\)"), re.compile(r"https?://\S+"),  # link targets, URLs
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"^:[a-z-]+:.*$", re.M),                  # directive options (":width: 100%")
    re.compile(r"^---\n.*?\n---\n", re.S),               # front matter
]
# a number standing alone: not glued to a name on its left (H1, Llama-3-70B, stories260K, WikiText-2)
_NUMBER = re.compile(r"(?<![\w.\-/:=])(?<![A-Za-z]-)[~≈]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[%x×]|[A-Za-z]+)?")
# spelled-out results: "five orders of magnitude", "a few milliseconds", "twice as fast"
_WORDS = re.compile(r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|a few|several|twice|half)\s+"
                    r"(?:orders? of magnitude|(?:milli|micro)?seconds|percent|times\s+(?:faster|slower|more|fewer)"
                    r"|as (?:fast|slow|much))\b", re.I)


def prose_sources():
    for page in PAGES:
        yield page, (REPO_ROOT / page).read_text()
    for nb in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        yield f"notebooks/{nb.name}", text


def _fenced_text(text: str) -> str:
    """Code fences removed, except MyST directives' prose bodies ({figure} captions), which are kept."""
    def keep(m):
        block = m.group(0)
        return block.split("\n", 1)[1].rsplit("```", 1)[0] if re.match(r"```\{(figure|note|warning|admonition)\}", block) else " "
    return re.sub(r"```.*?```", keep, text, flags=re.S)


def numbers_in(page: str, text: str, allowed=None) -> list[tuple[str, str]]:
    """The numbers of `text` that are neither glued, names, settings nor in the allow-list: (number, context)."""
    if page in SETTING_PAGES:
        return []
    text = _fenced_text(text)
    for pat in _STRIP[1:]:
        text = pat.sub(" ", text)
    text = " ".join(text.split())
    spans = [m.span() for m in _SETTINGS.finditer(text)]
    for p, phrase, _ in (ALLOWED if allowed is None else allowed):
        if p == page:
            spans += [m.span() for m in re.finditer(re.escape(" ".join(phrase.split())), text)]
    out = []
    for m in _NUMBER.finditer(text):
        if any(a <= m.start() and m.end() <= b for a, b in spans):
            continue
        tail = m.group()
        if re.fullmatch(r"[~≈]?\d+(?:\.\d+)?(?:B|K|M|BT)", tail) and not re.search(r"\d+(?:\.\d+)?[BKM]\s+(?:tokens|parameters)", text[m.start():m.end() + 12]):
            continue  # a model or data-set name (70B, 405B, 8B, 10BT), not a quantity of tokens or parameters
        out.append((tail, text[max(0, m.start() - 40):m.end() + 30]))
    out += [(m.group(), text[max(0, m.start() - 40):m.end() + 30]) for m in _WORDS.finditer(text)]
    return out


@pytest.mark.parametrize("page, text", list(prose_sources()), ids=lambda x: x if isinstance(x, str) and len(x) < 60 else "")
def test_no_hand_typed_result_numbers(page, text):
    found = numbers_in(page, text)
    assert not found, (f"{page}: numbers typed into prose that are neither glued, a setting, nor an allowed paper "
                       "figure (glue them from the cell that computes them, or add the paper's figure with its "
                       "source to ALLOWED):\n" + "\n".join(f"  {n!r} in '...{c}...'" for n, c in found))


def test_every_allowed_phrase_is_in_use_and_has_a_source():
    texts = dict(prose_sources())
    for page, phrase, source in ALLOWED:
        assert " ".join(phrase.split()) in " ".join(texts[page].split()), \
            f"{page}: allowed phrase {phrase!r} is no longer there: remove it"
        assert source.strip(), phrase
    assert len(ALLOWED) <= 40  # small on purpose


@pytest.mark.parametrize("typed", [
    "the ladder wiring recovered 84% of the gain",
    "a decode step of 18.4 ms",
    "about 2.7 orders of magnitude fewer parameters",
    "ladder is 1.77x faster",
    "a gap of +0.023 nats",
    "trained on 2,457,600 tokens",
    "the model has 2.6M parameters",
    "the emulated link costs 0.42 ms",
    "about five orders of magnitude fewer parameters",
    "a decode step of a few milliseconds",
])
def test_the_scan_catches_typed_results(typed):
    assert numbers_in("book/methods.md", f"Some prose: {typed}, and more.")


@pytest.mark.parametrize("fine", [
    "the Llama-3-70B shape at TP = 8, batch 1", "claims H1-H4 and H8", "a {glue:text}`h1_measured:.2f` speed-up",
    "`python -m ladder.claims --profile cpu`", "stories260K (5-layer)", "the last 16 (or 20) of 32 layers",
    "lowest 95% bound", "see chapter 3", "sample-10BT documents", "on H100s with FP16",
])
def test_the_scan_leaves_names_code_glue_and_settings_alone(fine):
    assert numbers_in("book/methods.md", fine) == [], fine
