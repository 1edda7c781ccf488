"""A wiring added the way a user adds one: one record and one layer function (imported by
tests/test_registry.py, and by the spawned ranks of its TP = 2 check, which unpickle `tp_worker` from here)."""
from ladder.config import Wiring
from ladder.model import Stream, add_pending, register_wiring
from ladder.verify import cached_logits


def mlp_ladder_layer(block, s: Stream, comm, **ctx) -> Stream:
    """Ladder on the MLP only: attention reads a stream without the previous MLP's output (whose all-reduce
    runs behind it); attention's own all-reduce blocks, as in the standard wiring."""
    x = add_pending(s.x, s.attn, comm)
    h = block.attention(block.input_layernorm(x), **ctx)
    x = add_pending(x, s.mlp, comm)  # the previous MLP's all-reduce ran behind the attention above
    x = x + comm.all_reduce(h)
    return Stream(x, mlp=comm.start(block.feed_forward(block.post_attention_layernorm(x))))


register_wiring(Wiring("mlp_ladder"), mlp_ladder_layer)


def tp_worker(comm, config, state_dict, tokens, prefill_len):
    logits, n = cached_logits(config, state_dict, tokens, prefill_len, comm)
    return logits, n
