"""ladder.data: documents, split by document, tokenizer, packing, batch order."""
import itertools
import json

import pytest
import torch

from ladder.data import (EOS, TokenBlocks, load_documents, load_tokenizer, pack, split_documents,
                         train_tokenizer)


@pytest.fixture(scope="module")
def c4_docs(data_dir):
    return load_documents([data_dir / "text" / "c4_en_first1000" / "c4_sample.jsonl"], max_docs=300)


@pytest.fixture(scope="module")
def tok(c4_docs, tmp_path_factory):
    return train_tokenizer(c4_docs["text"][:200], 400, tmp_path_factory.mktemp("tok"))


def test_split_is_disjoint_complete_and_deterministic(c4_docs):
    train, val = split_documents(c4_docs, 0.2, seed=0)
    assert set(train["text"]).isdisjoint(val["text"])
    assert len(train) + len(val) == len(c4_docs)
    assert 0.1 < len(val) / len(c4_docs) < 0.3
    train2, val2 = split_documents(c4_docs, 0.2, seed=0)
    assert train2["id"] == train["id"] and val2["id"] == val["id"]
    # independent of document order, and a different seed gives a different split
    _, val_shuffled = split_documents(c4_docs.shuffle(seed=1), 0.2, seed=0)
    assert sorted(val_shuffled["id"]) == sorted(val["id"])
    _, val_other = split_documents(c4_docs, 0.2, seed=1)
    assert sorted(val_other["id"]) != sorted(val["id"])


def test_duplicates_are_dropped(tmp_path):
    rows = [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}, {"id": "a", "text": "one"},
            {"id": "c", "text": "two"}]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_documents([f])
    assert ds["id"] == ["a", "b"]


def test_local_fineweb_is_deduplicated(data_dir):
    ds = load_documents([data_dir / "text" / "fineweb_10bt_legal_pilot"])
    assert len(ds) == len(set(ds["id"])) and 2000 < len(ds) <= 2800  # 6,500 rows, 2,800 unique ids


def test_pack_separates_documents_with_eos(tok):
    docs = ["hello world", "a second document", "third"]
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    stream = sum((i + [tok.eos_token_id] for i in ids), [])
    blocks = pack(docs, tok, seq_len=3)
    assert blocks.tokens.shape == (len(stream) // 4, 4) and blocks.seq_len == 3
    assert blocks.tokens.flatten().tolist() == stream[:blocks.tokens.numel()]
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == EOS


def starts_in(lengths, width, n):
    """Brute force: the document each block of `width` tokens starts in, walking the stream token by token."""
    owner = [d for d, n_tok in enumerate(lengths) for _ in range(n_tok)]
    return [owner[i * width] for i in range(n)]


def test_pack_records_the_document_each_block_starts_in(tok, tmp_path):
    docs = ["hello world", "a much longer second document that spans several blocks of three tokens", "x", "third one"]
    lengths = [len(tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs]  # + EOS
    blocks = pack(docs, tok, seq_len=3)
    assert blocks.doc.tolist() == starts_in(lengths, 4, len(blocks))
    assert len(set(blocks.doc.tolist())) >= 3 and blocks.doc.tolist() == sorted(blocks.doc.tolist())
    assert blocks[2:5].doc.tolist() == blocks.doc.tolist()[2:5]  # a slice keeps its blocks' documents
    # token lists of 3, 5 and 9 tokens (+ EOS: 4, 6, 10): block 1 starts exactly where document 1 does
    assert pack([[5] * 3, [6] * 5, [7] * 9], tok, seq_len=3).doc.tolist() == [0, 1, 1, 2, 2] == starts_in([4, 6, 10], 4, 5)
    again = TokenBlocks.load(blocks.save(tmp_path / "b.pt"))
    assert torch.equal(again.doc, blocks.doc) and torch.equal(again.tokens, blocks.tokens)
    torch.save({"tokens": blocks.tokens, "loss_mask": None}, tmp_path / "old.pt")  # saved before `doc` existed
    assert TokenBlocks.load(tmp_path / "old.pt").doc is None
    with pytest.raises(ValueError, match=r"doc shape \(3,\) != \(2,\): one document index per block"):
        TokenBlocks(blocks.tokens[:2], doc=torch.arange(3))


def test_tokenizer_round_trip_and_reload(tok, tmp_path):
    text = "The court ruled on Tuesday."
    assert tok.decode(tok(text)["input_ids"]) == text
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(text)["input_ids"] == tok(text)["input_ids"] and again.eos_token == EOS
    # saved again (as a checkpoint's tokenizer is), it carries no flag of how this machine loaded it
    again.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == EOS and not {"is_local", "local_files_only"} & set(config)


def test_batches_are_deterministic_and_resumable():
    blocks = TokenBlocks(torch.arange(10 * 5).view(10, 5))
    first = list(itertools.islice(blocks.batches(3, seed=7), 8))  # crosses epochs (3 batches per epoch)
    resumed = list(itertools.islice(blocks.batches(3, seed=7, start=5), 3))
    for (x, y), (x2, y2) in zip(first[5:], resumed):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    x, y = first[0]
    assert x.shape == (3, 4) and torch.equal(x[:, 1:], y[:, :-1])
    # an epoch visits every block once; ranks of a data-parallel run split the batches between them
    seen = torch.cat([b[0][:, 0] for b in first[:3]]).tolist()
    assert len(set(seen)) == 9
    r0 = list(itertools.islice(blocks.batches(3, seed=7, rank=0, world_size=2), 2))
    r1 = list(itertools.islice(blocks.batches(3, seed=7, rank=1, world_size=2), 2))
    assert torch.equal(r0[1][0], first[2][0]) and torch.equal(r1[0][0], first[1][0])


def test_loss_mask_sets_ignored_targets():
    t = torch.arange(8).view(2, 4)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    _, y = TokenBlocks(t, mask).inputs_targets()
    assert y.tolist() == [[-100, 2, 3], [5, 6, -100]]


def test_missing_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_corpus"):
        load_documents([tmp_path / "no_such_corpus.jsonl"])


def test_unknown_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown tokenizer 'no-such-tokenizer'"):
        load_tokenizer("no-such-tokenizer")
    with pytest.raises(FileNotFoundError, match="could not load tokenizer"):
        load_tokenizer("nobody/no-such-tokenizer")  # offline: the hub is not reachable


def test_offline_named_tokenizer_has_eos():
    tok = load_tokenizer("gpt2")
    assert tok.eos_token == EOS and tok.eos_token_id == 50256
