"""The data folder (issue 22, items 2, 4, 6): a data file is checked against the manifest's size and sha256
when first read, and a corrupt one is named with the fix; a mistyped LADDER_DATA is an error naming the
variable (the notebooks and ladder.fetch resolve the folder by one rule); the local lm-eval task copies are
scored whenever the data folder has them, with or without HF_HUB_OFFLINE."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ladder import fetch as F
from ladder import paths
from ladder.paths import CorruptDataError, DataFolderError, data_path

ARC = "eval/llm_foundry_icl/arc_easy.jsonl"


def _mirror(data_dir: Path, dest: Path, replace: dict[str, bytes]) -> Path:
    """A data folder whose files link to the shared ones, except `replace`'s (written as given)."""
    for f in data_dir.rglob("*"):
        if f.is_file():
            rel = f.relative_to(data_dir).as_posix()
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel in replace:
                (dest / rel).write_bytes(replace[rel])
            else:
                (dest / rel).symlink_to(f)
    return dest


@pytest.fixture
def use_data(monkeypatch):
    def use(folder: Path):
        monkeypatch.setenv("LADDER_DATA", str(folder))
    return use


@pytest.mark.parametrize("cut", ["mid-line", "line-boundary"])
def test_a_truncated_eval_set_is_named_with_the_fix(cut, data_dir, tmp_path, use_data):
    full = (data_dir / ARC).read_bytes()
    if cut == "mid-line":  # JSONDecodeError: Unterminated string, without the check
        short = full[:len(full) // 2]
    else:  # the lines left parse: a run would silently score fewer examples
        lines = full.splitlines(keepends=True)
        short = b"".join(lines[:len(lines) - 1])
    use_data(_mirror(data_dir, tmp_path / "data", {ARC: short}))
    with pytest.raises(CorruptDataError) as info:
        data_path(*ARC.split("/"))
    msg = str(info.value)
    assert "arc_easy.jsonl" in msg and "corrupt or incomplete" in msg and "make data" in msg
    assert "ladder.fetch" in msg and "\n" not in msg


def test_a_truncated_tokenizer_and_text_are_named(data_dir, tmp_path, use_data):
    from ladder.data import load_tokenizer, local_sources
    tok = "tokenizers/gpt2/tokenizer.json"
    c4 = "text/c4_en_first1000/c4_sample.jsonl"
    use_data(_mirror(data_dir, tmp_path / "data", {tok: (data_dir / tok).read_bytes()[:5000],
                                                   c4: (data_dir / c4).read_bytes()[:-10]}))
    with pytest.raises(CorruptDataError, match=r"gpt2/tokenizer\.json is corrupt"):
        load_tokenizer("gpt2")
    with pytest.raises(CorruptDataError, match=r"c4_sample\.jsonl is corrupt"):
        local_sources()


def test_a_corrupted_byte_is_found_and_the_check_is_cached(data_dir, tmp_path, use_data, monkeypatch):
    rel = "text/tinystories_sample/tinystories_sample.txt"
    good = (data_dir / rel).read_bytes()
    folder = _mirror(data_dir, tmp_path / "data", {rel: good})
    use_data(folder)
    hashed = []
    real = F.sha256
    monkeypatch.setattr(F, "sha256", lambda p: hashed.append(p) or real(p))
    data_path(*rel.split("/"))
    data_path(*rel.split("/"))
    assert hashed == [folder / rel]  # once per process and file version
    (folder / rel).write_bytes(bytes([good[0] ^ 1]) + good[1:])  # same size, another version (mtime)
    os.utime(folder / rel, ns=(1, 1))
    with pytest.raises(CorruptDataError, match="sha256"):
        data_path(*rel.split("/"))


def test_a_mistyped_ladder_data_is_an_error_naming_the_variable(tmp_path, use_data, capsys):
    missing = tmp_path / "no-such-data"
    use_data(missing)
    for call in (paths.data_root, lambda: data_path("eval"), paths.fetch_root):
        with pytest.raises(DataFolderError, match="LADDER_DATA=.*no-such-data: no such folder"):
            call()
    assert not missing.exists()  # never created
    from ladder.analysis import default_checkpoint
    with pytest.raises(DataFolderError):  # not a silent fall-back to a hub model
        default_checkpoint()
    assert F.main([]) == 1  # make data
    err = capsys.readouterr().err
    assert err.startswith("error: LADDER_DATA=") and err.count("\n") == 1 and not missing.exists()


def test_fetch_and_the_notebooks_resolve_the_data_folder_by_one_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("LADDER_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    beside = paths._data_root_choice()
    assert paths.fetch_root() == paths.data_root()
    if paths._data_root_choice()[1].startswith("../shared/data"):
        assert paths.fetch_root() == beside[0]  # not the user cache, as fetch --help used to say
    monkeypatch.setenv("LADDER_DATA", str(tmp_path))
    assert paths.fetch_root() == paths.data_root() == tmp_path


def test_the_offline_error_of_make_data_names_ladder_data(tmp_path, capsys):
    # nothing listens on port 9: the download fails as it does offline
    assert F.main(["--dest", str(tmp_path), "--only", ARC, "--base-url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "arc_easy.jsonl: download from" in err and "set LADDER_DATA to a copy" in err and err.count("\n") == 1


@pytest.mark.parametrize("hf_offline", [False, True])
def test_local_task_copies_are_scored_with_or_without_hf_offline(hf_offline, monkeypatch, stories_dir, data_dir):
    import lm_eval
    import lm_eval.tasks
    from ladder import eval as E
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "LADDER_EVAL_TASKS"):
        monkeypatch.delenv(v, raising=False)
    if hf_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LADDER_DATA", str(data_dir))
    asked = {}

    def fake_evaluate(**kw):
        asked.update(kw)
        return {"results": {t: {"acc,none": 0.5} for t in kw["tasks"]}}
    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_evaluate)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", lambda **kw: asked.setdefault("task_manager_kw", kw))
    out = E.evaluate(stories_dir, ["arc_easy", "sciq"])
    assert asked["tasks"] == ["ladder_arc_easy", "ladder_openbookqa"]  # the book's copies, not the hub's
    assert asked["task_manager_kw"]["include_defaults"] is False
    assert out["sciq"]["substitute"] == "openbookqa"
    # a gpu-profile notebook, or LADDER_EVAL_TASKS=hub, asks for lm-eval's own tasks (when online)
    if not hf_offline:
        monkeypatch.setenv("LADDER_EVAL_TASKS", "hub")
        E.evaluate(stories_dir, ["arc_easy"])
        assert asked["tasks"] == ["arc_easy"]


def test_chapter_1_reads_are_checked_too(data_dir, tmp_path, use_data, stories_dir):
    from ladder import analysis
    rel = "text/tinystories_sample/tinystories_sample.txt"
    use_data(_mirror(data_dir, tmp_path / "data", {rel: (data_dir / rel).read_bytes()[:1000]}))
    assert analysis.default_checkpoint() == str(tmp_path / "data" / "models" / "stories260K" / "hf")
    with pytest.raises(CorruptDataError, match="tinystories_sample.txt is corrupt"):
        analysis.sample_tokens(str(stories_dir), 16)
