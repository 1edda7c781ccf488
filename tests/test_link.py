"""Emulated links: the modelled cost is a lower bound on every all-reduce, and results stay exact.

Only lower bounds on time are asserted: a slow machine can make things later, never earlier.
"""
import time

import pytest
import torch

from ladder import build_model, preset
from ladder.link import NAMES, PRESETS, EmulatedLink, Link, custom, describe, get
from ladder.launch import launch_local
from ladder.tp import SingleDevice


def test_ring_allreduce_cost():
    link = custom(1e-3, 1e9)
    assert link.allreduce_time(1e6, 1) == 0.0
    assert link.allreduce_time(1e6, 2) == pytest.approx(1e-3 + 1e-3)  # 2*(1/2)*1e6/1e9
    assert link.allreduce_time(1e6, 8) == pytest.approx(1e-3 + 2 * 7 / 8 * 1e-3)
    assert link.allreduce_time(2e6, 4) > link.allreduce_time(1e6, 4)
    assert link.scaled(2).allreduce_time(1e6, 4) == pytest.approx(2 * link.allreduce_time(1e6, 4))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_latency_grows_with_the_group_as_documented(name):
    """alpha + 2 (p - 1) step: a ring all-reduce's 2(p-1) steps each cost one hop's latency."""
    link = PRESETS[name]
    assert link.step_s > 0
    lat = [link.latency(p) for p in (2, 4, 8, 16)]
    assert lat == sorted(lat) and lat[0] < lat[-1]
    for p in (2, 4, 8, 16):
        assert link.latency(p) == pytest.approx(link.alpha_s + 2 * (p - 1) * link.step_s)
        assert link.allreduce_time(1e3, p) == pytest.approx(
            link.alpha_s + 2 * (p - 1) * link.step_s + 2 * (p - 1) / p * 1e3 / link.bandwidth_Bps)
    assert link.latency(1) == 0.0


def test_custom_link_with_a_step_latency():
    link = get("custom:0.001:1e9:0.0001")
    assert link.step_s == 1e-4 and link.allreduce_time(0, 4) == pytest.approx(1e-3 + 6e-4)
    assert get({"alpha_s": 0.0, "bandwidth_Bps": 1e9, "step_s": 2e-6}).latency(8) == pytest.approx(28e-6)
    assert link.scaled(2).latency(4) == pytest.approx(2 * link.latency(4))


def test_presets_and_lookup():
    assert PRESETS["nvlink4"].bandwidth_Bps == 450e9
    assert PRESETS["pcie5-nop2p"].bandwidth_Bps < PRESETS["nvlink4"].bandwidth_Bps
    assert PRESETS["net100g"].bandwidth_Bps < PRESETS["net400g"].bandwidth_Bps
    assert get("nvlink4") is PRESETS["nvlink4"]
    assert get(None) is None and get("none") is None
    assert get("custom:0.005:1e9").alpha_s == 0.005
    assert get({"alpha_s": 0.002, "bandwidth_Bps": 1e8}).bandwidth_Bps == 1e8


def test_links_in_words_with_one_all_reduce_time():
    assert set(NAMES) == set(PRESETS)  # every preset has a name a reader understands
    # 10 us + 14 steps x 2.5 us + 2 x 7/8 x 16 KB / 25 GB/s: a 70B decode message (8192 x 2 bytes) at 8 ranks
    assert describe("pcie5-nop2p", 8, 8192 * 2) == "PCIe 5.0 without peer-to-peer, 46 µs per all-reduce at 8 ranks"
    assert describe("pcie5-nop2p", 2) == "PCIe 5.0 without peer-to-peer, at least 15 µs per all-reduce at 2 ranks"
    assert describe("custom:0.0004:2e8", 2) == "custom link at 0.2 GB/s, at least 400 µs per all-reduce at 2 ranks"
    assert describe("custom:0.002:1e12", 4) == "custom link at 1 TB/s, at least 2 ms per all-reduce at 4 ranks"
    assert describe("nvlink4", 2) == "NVLink 4 (H100 SXM), at least 6.4 µs per all-reduce at 2 ranks"
    assert describe("nvlink4") == describe("nvlink4", 1) == "NVLink 4 (H100 SXM)"
    assert describe(None) == describe("none") == "no emulated link"
    with pytest.raises(ValueError, match="link"):
        describe("warp-drive")


@pytest.mark.parametrize("bad", ["warp-drive", "custom:abc", "custom:1:2:3:4", 3])
def test_bad_link_names_the_problem(bad):
    with pytest.raises(ValueError, match="link"):
        get(bad)


def test_bad_link_parameters():
    with pytest.raises(ValueError, match="alpha_s"):
        Link("x", -1.0, 1e9)
    with pytest.raises(ValueError, match="bandwidth"):
        Link("x", 0.0, 0.0)
    with pytest.raises(ValueError, match="step_s"):
        Link("x", 0.0, 1e9, -1e-6)


def test_single_device_emulation_with_virtual_ranks():
    comm = EmulatedLink(SingleDevice(), custom(5e-3, 1e12), ranks=2)
    x = torch.randn(8)
    t0 = time.perf_counter()
    out = comm.all_reduce(x)
    assert time.perf_counter() - t0 >= 5e-3
    assert torch.equal(out, x)


LINK = custom(5e-3, 1e12)  # 5 ms latency, bandwidth high enough not to matter


def _blocking_and_async(comm):
    emu = EmulatedLink(comm, LINK)
    x = torch.arange(16, dtype=torch.float32) * (comm.rank + 1)
    blocking = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = emu.all_reduce(x.clone())
        blocking.append(time.perf_counter() - t0)
    issued = time.perf_counter()
    handle = emu.start(x.clone())
    modelled = LINK.allreduce_time(x.numel() * 4, comm.size)
    async_out = emu.wait(handle)
    done = time.perf_counter()
    return {"blocking": blocking, "issued": issued, "done": done, "modelled": modelled,
            "out": out, "async_out": async_out, "count": emu.count()}


def test_emulated_allreduce_is_a_lower_bound_and_exact():
    ranks = launch_local(_blocking_and_async, 2)
    expected = torch.arange(16, dtype=torch.float32) * 3  # rank 0 x 1 + rank 1 x 2
    for r in ranks:
        assert min(r["blocking"]) >= 5e-3
        assert r["modelled"] >= 5e-3
        assert r["done"] >= r["issued"] + r["modelled"]
        torch.testing.assert_close(r["out"], expected)
        torch.testing.assert_close(r["async_out"], expected)
        assert r["count"] == 4


def _model_logits(comm, states, tok):
    out = {}
    for wiring, state in states.items():
        for emulate in (False, True):
            model = build_model(preset("tiny", wiring=wiring), comm)
            model.load_full_state_dict(state)
            if emulate:
                model.comm = EmulatedLink(comm, custom(1e-4, 1e9))
            with torch.inference_mode():
                model.setup_cache(tok.shape[0], 16)
                before = model.comm.count()
                out[wiring, emulate] = model(tok, torch.arange(tok.shape[1])), model.comm.count() - before
    return out


def test_emulation_does_not_change_results():
    states = {w: build_model(preset("tiny", wiring=w), seed=3).state_dict() for w in ("standard", "ladder")}
    tok = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    for rank in launch_local(_model_logits, 2, states, tok):
        for wiring in states:
            (plain, n_plain), (emulated, n_emulated) = rank[wiring, False], rank[wiring, True]
            torch.testing.assert_close(emulated, plain, rtol=0, atol=0)
            assert n_plain == n_emulated == 2 * preset("tiny").n_layers


def test_collectives_in_flight_go_over_the_link_one_at_a_time():
    comm = EmulatedLink(SingleDevice(), custom(3e-3, 1e12), ranks=2)
    t0 = time.perf_counter()
    handles = [comm.start(torch.ones(4)) for _ in range(3)]
    for h in handles:
        comm.wait(h)
    assert time.perf_counter() - t0 >= 3 * 3e-3


class _CudaLike:
    """Stands in for a CUDA tensor: only what the refusal looks at."""
    is_cuda = True


def test_host_link_refuses_cuda_tensors_and_points_to_the_gpu_link():
    from ladder.link import emulate, refuse_cuda
    with pytest.raises(ValueError, match="CudaEmulatedLink"):
        refuse_cuda(_CudaLike())
    refuse_cuda(torch.ones(2))  # CPU tensors pass
    with pytest.raises(ValueError, match="CudaEmulatedLink"):
        EmulatedLink(SingleDevice(), custom(1e-6, 1e12), ranks=2).start(_CudaLike())


def test_emulate_picks_the_host_link_on_cpu():
    from ladder.link import emulate
    comm = SingleDevice()
    assert emulate(comm, None, "cpu") is comm
    emu = emulate(comm, "nvlink4", "cpu", ranks=8)
    assert isinstance(emu, EmulatedLink) and emu.p == 8 and emu.link is PRESETS["nvlink4"]


class _FakeClock:
    """A clock whose sleeps overshoot by `overshoot` (timer slack + wake-up) and whose reads take 1 us."""

    def __init__(self, overshoot: float):
        self.t, self.overshoot, self.sleeps = 100.0, overshoot, []

    def perf_counter(self):
        self.t += 1e-6
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s + self.overshoot


@pytest.mark.parametrize("overshoot", [0.0, 2e-4, 9e-4])
def test_a_wait_ends_at_its_deadline_not_after_a_late_sleep(monkeypatch, overshoot):
    """The emulated link costs what it says: the sleep stops SPIN_S short and the rest is spun, so a sleep
    that returns late (up to SPIN_S) does not make the waiting wiring pay more than the modelled time."""
    from ladder import link as lk
    clock = _FakeClock(overshoot)
    monkeypatch.setattr(lk.time, "perf_counter", clock.perf_counter)
    monkeypatch.setattr(lk.time, "sleep", clock.sleep)
    deadline = clock.t + 5e-3
    lk.wait_until(deadline)
    assert deadline <= clock.t <= deadline + 2e-6
    assert clock.sleeps and clock.sleeps[0] == pytest.approx(5e-3 - lk.SPIN_S, abs=1e-5)
    # through the communicator: the wait is counted, and its lateness is the clock's read step, not the overshoot
    emu = EmulatedLink(SingleDevice(), custom(5e-3, 1e12), ranks=2)
    t0 = clock.t
    emu.all_reduce(torch.ones(4))
    assert emu.waited == 1 and 0 <= emu.late_s <= 3e-6  # a few 1-us reads (the clock times its own wait)
    assert clock.t - t0 == pytest.approx(5e-3, abs=1e-5)
    assert emu.clock.waited_s == pytest.approx(5e-3, abs=1e-5)  # the wall clock's record of the wait
    late = emu.late_s
    emu.all_reduce(torch.ones(4))  # a second wait adds to both records
    assert emu.waited == 2 and late < emu.late_s <= 2 * late + 2e-6
    assert emu.clock.waited_s == pytest.approx(10e-3, abs=2e-5)


def test_a_wait_after_the_deadline_costs_nothing_more():
    emu = EmulatedLink(SingleDevice(), custom(1e-4, 1e12), ranks=2)
    h = emu.start(torch.ones(4))
    time.sleep(2e-3)  # the code computed past the collective's end (ladder hides it)
    emu.wait(h)
    assert emu.waited == 0 and emu.late_s == 0.0  # nothing was waited for: no sleep, no spin, no lateness


class _FakeEvent:
    """A stand-in for torch.cuda.Event that logs its records (CPU: no GPU to time)."""
    log: list = []

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        _FakeEvent.log.append("record")
        self.t = len(_FakeEvent.log)

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return 0.01


def test_the_gpu_link_warms_the_gpu_up_before_timing_a_duration(monkeypatch):
    """Issue 18, item 6: these GPUs idle at low clocks, so `achieved` (the link's measured duration) spins
    ~5 ms before its first timed event. CPU seam: the CUDA calls replaced by recorders."""
    import contextlib

    from ladder import link as L
    log = _FakeEvent.log
    log.clear()
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: log.append(("spin", cycles)), raising=False)
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    link = L.CudaEmulatedLink.__new__(L.CudaEmulatedLink)
    link.link, link.p, link.device = PRESETS["nvlink4"], 8, torch.device("cuda", 0)
    link.cycles_per_s, link.overhead_s = 1.9e9, 1e-6
    link.achieved(10e-6, reps=3)
    before_first_timing = log[:log.index("record")]
    spun = sum(c for e, c in before_first_timing if e == "spin")
    assert spun >= 0.9 * L.WARM_UP_S * link.cycles_per_s, before_first_timing


# ------------------------------------------------------------------------------------------ the virtual clock
class _CpuClock:
    """This thread's CPU time, advanced by hand: `compute(s)` is s seconds of work."""

    def __init__(self):
        self.t = 10.0

    def thread_time(self):
        return self.t

    def compute(self, s):
        self.t += s


def test_virtual_clock_charges_exactly_the_link_time_the_compute_did_not_hide(monkeypatch):
    """On the virtual clock a wait advances simulated time to its all-reduce's end, nothing sleeps, and the
    link is one stream: an all-reduce issued while another is in flight starts when that one ends."""
    from ladder import link as lk
    cpu = _CpuClock()
    monkeypatch.setattr(lk.time, "thread_time", cpu.thread_time)
    monkeypatch.setattr(lk.time, "sleep", lambda s: pytest.fail("the virtual clock must not sleep"))
    torch.set_num_threads(1)
    emu = EmulatedLink(SingleDevice(), custom(5e-3, 1e12), ranks=2, clock=lk.VirtualClock())
    t0 = emu.clock.now()
    h = emu.start(torch.ones(4))        # standard: wait at once -> pays all 5 ms
    emu.wait(h)
    assert emu.clock.now() - t0 == pytest.approx(5e-3) and emu.clock.waited_s == pytest.approx(5e-3)
    h = emu.start(torch.ones(4))        # ladder: 3 ms of compute in between -> pays the 2 ms left
    cpu.compute(3e-3)
    emu.wait(h)
    assert emu.clock.waited_s == pytest.approx(7e-3)
    h = emu.start(torch.ones(4))        # compute longer than the link: nothing left to wait
    cpu.compute(6e-3)
    emu.wait(h)
    assert emu.clock.waited_s == pytest.approx(7e-3) and emu.waited == 2 and emu.late_s == pytest.approx(0)
    cpu.t = 20.0                        # compute that ends exactly at the deadline: no wait either
    h = emu.start(torch.ones(4))
    cpu.t = h.deadline - emu.clock.waited_s
    emu.wait(h)
    assert emu.waited == 2 and emu.clock.waited_s == pytest.approx(7e-3)
    h1, h2 = emu.start(torch.ones(4)), emu.start(torch.ones(4))  # two in flight: one link, in issue order
    emu.wait(h1)
    emu.wait(h2)
    assert emu.clock.waited_s == pytest.approx(17e-3)
    assert emu.modelled_s == pytest.approx(30e-3)


def test_virtual_clock_needs_one_thread_and_a_host_link():
    from ladder import link as lk
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match=r"^the virtual clock counts this thread's CPU time, so torch must run "
                                             r"one thread \(torch.set_num_threads\(1\)\); it runs 2$"):
            lk.VirtualClock()
    finally:
        torch.set_num_threads(n)
    with pytest.raises(ValueError, match="^unknown clock 'sundial'; choose one of wall, virtual$"):
        lk.clock_named("sundial")
    with pytest.raises(ValueError, match="^clock='virtual' times an emulated link, and there is none$"):
        lk.emulate(SingleDevice(), None, clock="virtual")
    with pytest.raises(ValueError, match=r"^the virtual clock counts host CPU time; a CUDA run's link is timed on "
                                         r"the GPU \(wall\)$"):
        lk.emulate(SingleDevice(), "nvlink4", device="cuda", clock="virtual")
    # the defaults: a host link on wall time
    emu = lk.emulate(SingleDevice(), "nvlink4")
    assert isinstance(emu, EmulatedLink) and isinstance(emu.clock, lk.WallClock)
    assert isinstance(lk.emulate(SingleDevice(), "nvlink4", clock="virtual").clock, lk.VirtualClock)


def test_a_cuda_link_on_wall_time_goes_to_the_spin_kernel_link(monkeypatch):
    from ladder import link as lk
    monkeypatch.setattr(lk, "CudaEmulatedLink", lambda comm, link, device, ranks: ("cuda link", link.name, device))
    assert lk.emulate(SingleDevice(), "nvlink4", device="cuda") == ("cuda link", "nvlink4", "cuda")


def test_bench_config_refuses_a_virtual_clock_it_cannot_run():
    from ladder.bench import BenchConfig
    with pytest.raises(ValueError, match="clock must be one of"):
        BenchConfig(clock="sundial")
    for bad in (dict(ranks="processes", link="nvlink4"), dict(ranks="virtual", link=None)):
        with pytest.raises(ValueError, match="needs ranks='virtual', device='cpu' and a link"):
            BenchConfig(tp=2, clock="virtual", **bad)


def test_the_standard_wiring_pays_compute_plus_every_link_time_on_the_virtual_clock():
    """A real decode on the virtual clock: standard's time spent waiting is the number of decode all-reduces
    times their modelled cost (less the few microseconds of Python between a start and its wait), and
    ladder waits less: each of its all-reduces runs behind a module's compute."""
    from ladder.bench import BenchConfig, run_one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = 2e-3
        base = dict(preset="tiny", tp=2, ranks="virtual", clock="virtual", link=f"custom:{a}:1e12", prompt_len=4,
                    new_tokens=5, samples=2, warmup=0, temperature=0.0)
        std = run_one(BenchConfig(wiring="standard", **base))
        per_step = std["allreduces_per_generation"] / 5  # prefill + 4 decode steps
        expect = 4 * per_step * a
        for wait, total in zip(std["samples_decode_wait_s"], std["samples_decode_s"]):
            assert expect * 0.98 <= wait <= expect
            assert total > wait  # plus the compute
        lad = run_one(BenchConfig(wiring="ladder", **base))
        assert lad["allreduces_per_generation"] == std["allreduces_per_generation"]
        assert max(lad["samples_decode_wait_s"]) < min(std["samples_decode_wait_s"])
    finally:
        torch.set_num_threads(n)
