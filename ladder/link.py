"""Emulated interconnects: make every all-reduce cost a modelled time on a machine without a real fabric.

A `Link` is an alpha-beta model of one interconnect: a ring all-reduce of `n` bytes over `p` ranks costs

    alpha + 2 (p - 1) * step + 2 (p - 1) / p * n / bandwidth

A ring all-reduce is a reduce-scatter then an all-gather: 2(p-1) steps, each a hop to the next rank
(`step`: one hop's latency: a flag write and its poll by the peer), and each rank sends and receives
2(p-1)/p of the message. `alpha` is what does not grow with p (kernel launch, the first synchronisation).
So the latency term grows linearly with the group size, as a ring's does; NCCL's tree and low-latency (LL)
protocols grow more slowly for small messages (a tree's depth is log2 p), so for them this is an upper
estimate. This one `Link` is what the emulation (`EmulatedLink`) and the performance model
(ladder/perfmodel.py) both call, so the two cannot disagree.

`EmulatedLink` wraps a communicator (ladder.tp.SingleDevice / TensorParallel): `start` launches the
real collective (so results stay exact) and notes a deadline, issue time + modelled cost (collectives
go over the link one at a time, in issue order, as NCCL runs them on one stream: a collective issued
while another is in flight starts when that one ends); `wait` does
the real wait and then waits until the deadline (`wait_until`: a sleep, then a short spin so it ends on
time). The link uses no CPU while the code computes, like a DMA engine moving bytes while the cores compute: in the standard wiring the caller waits at once and pays the full cost; in the
ladder wiring `wait` is called one module later, so compute in between hides the cost.

These are emulations: numbers measured under them are labelled "emulated link" wherever they are shown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .tp import SingleDevice, WrappedComm

GB = 1e9


@dataclass(frozen=True)
class Link:
    """An interconnect: fixed latency `alpha_s` (s), per-ring-step latency `step_s` (s) and per-direction
    bandwidth `bandwidth_Bps` (bytes/s)."""
    name: str
    alpha_s: float
    bandwidth_Bps: float
    step_s: float = 0.0

    def __post_init__(self):
        if self.alpha_s < 0:
            raise ValueError(f"link {self.name!r}: alpha_s must be >= 0, got {self.alpha_s}")
        if not self.bandwidth_Bps > 0:
            raise ValueError(f"link {self.name!r}: bandwidth_Bps must be > 0, got {self.bandwidth_Bps}")
        if self.step_s < 0:
            raise ValueError(f"link {self.name!r}: step_s must be >= 0, got {self.step_s}")

    def latency(self, p: int) -> float:
        """The size-independent part of one all-reduce over `p` ranks: alpha + 2 (p - 1) step."""
        return self.alpha_s + 2 * (p - 1) * self.step_s if p > 1 else 0.0

    def allreduce_time(self, nbytes: float, p: int) -> float:
        """Seconds for a ring all-reduce of an `nbytes` message over `p` ranks (0 when p == 1)."""
        if p < 1:
            raise ValueError(f"number of ranks must be >= 1, got {p}")
        if p == 1:
            return 0.0
        return self.latency(p) + 2 * (p - 1) / p * nbytes / self.bandwidth_Bps

    def scaled(self, factor: float, name: str | None = None) -> "Link":
        """The same link `factor` times slower (alpha and step x factor, bandwidth / factor)."""
        return Link(name or f"{self.name}x{factor:g}", self.alpha_s * factor, self.bandwidth_Bps / factor,
                    self.step_s * factor)


def custom(alpha_s: float, bandwidth_Bps: float, name: str | None = None, step_s: float = 0.0) -> Link:
    """A link with the given latency (s), per-direction bandwidth (bytes/s) and per-ring-step latency (s)."""
    return Link(name or f"custom(alpha={alpha_s:g}s, bw={bandwidth_Bps:g}B/s)", alpha_s, bandwidth_Bps, step_s)


# Named presets. Bandwidths are published per-direction line rates. Latency = alpha + 2 (p - 1) step:
# the figures below are ESTIMATES (no published per-step number was found for these fabrics) chosen to
# land in the range small-message nccl-tests all-reduce latencies are reported in; each comment gives
# the resulting latency at the group size the paper uses.
PRESETS: dict[str, Link] = {
    # NVLink 4 on H100 SXM: 18 links x 50 GB/s = 900 GB/s bidirectional, i.e. 450 GB/s per direction
    # (NVIDIA H100 Tensor Core GPU datasheet; Hopper architecture whitepaper); through NVSwitch every pair
    # of the 8 GPUs gets the full rate. NCCL's ring reaches ~370 GB/s bus bandwidth of it (protocol
    # overhead ~20%; NCCL maintainer in NVIDIA/nccl-tests issue #212) - the performance model's fitted link
    # factor absorbs that. Latency (estimate): 5 us + 0.7 us per ring step -> 14.8 us at p = 8, 9.2 us at
    # p = 4, within the ~10-25 us small-message range of 8-GPU nccl-tests runs.
    "nvlink4": Link("nvlink4", 5e-6, 450 * GB, 0.7e-6),
    # PCIe 5.0 x16: 32 GT/s x 16 lanes, 128b/130b encoding -> ~63 GB/s per direction (PCI-SIG PCIe 5.0
    # specification). With NCCL_P2P_DISABLE=1 traffic is staged through host memory, roughly halving it
    # (estimate: 25 GB/s); every hop is a host-memory round trip (estimate: 10 us + 2.5 us per step ->
    # 45 us at p = 8).
    "pcie5-nop2p": Link("pcie5-nop2p", 10e-6, 25 * GB, 2.5e-6),
    # 100 Gb/s network (e.g. InfiniBand EDR / 100 GbE RoCE): 12.5 GB/s per direction; estimate 10 us +
    # 2 us per step (a network hop) -> 38 us at p = 8.
    "net100g": Link("net100g", 10e-6, 12.5 * GB, 2e-6),
    # 400 Gb/s network (InfiniBand NDR ConnectX-7, one NIC per GPU on DGX H100): 50 GB/s per direction;
    # estimate 10 us + 1 us per step -> 40 us at p = 16 (two nodes; one alpha-beta link stands in for
    # NVLink inside a node plus InfiniBand across).
    "net400g": Link("net400g", 10e-6, 50 * GB, 1e-6),
}


# The presets in words, for tables a reader scans (ladder.claims): `describe` adds one all-reduce's time.
NAMES = {"nvlink4": "NVLink 4 (H100 SXM)", "pcie5-nop2p": "PCIe 5.0 without peer-to-peer",
         "net100g": "100 Gb/s network", "net400g": "400 Gb/s InfiniBand (NDR)"}


def describe(link: "str | Link | dict | None", ranks: int | None = None, nbytes: float | None = None) -> str:
    """A link in words with one all-reduce's modelled time at `ranks` ranks: 'PCIe 5.0 without peer-to-peer,
    46 µs per all-reduce at 8 ranks' (an `nbytes` message); without `nbytes`, the size-independent part
    ('at least 45 µs ...'). A custom link is named by its bandwidth."""
    got = get(link)
    if got is None:
        return "no emulated link"
    spec = link if isinstance(link, str) else got.name
    bw = got.bandwidth_Bps / GB
    name = NAMES.get(spec) or f"custom link at {f'{bw / 1e3:g} TB/s' if bw >= 1e3 else f'{bw:g} GB/s'}"
    if not ranks or ranks < 2:
        return name
    t = got.allreduce_time(nbytes or 0.0, ranks)
    time_ = f"{t * 1e3:.3g} ms" if t >= 1e-3 else f"{t * 1e6:.0f} µs" if t >= 1e-5 else f"{t * 1e6:.1f} µs"
    return f"{name}, {'' if nbytes else 'at least '}{time_} per all-reduce at {ranks} ranks"


def get(link: str | Link | dict | None) -> Link | None:
    """A Link from a preset name, a Link, a dict {alpha_s, bandwidth_Bps[, name]}, or None (no emulation).

    Strings of the form "custom:ALPHA:BW[:STEP]" (seconds, bytes/s, seconds) give a custom link.
    """
    if link is None or isinstance(link, Link):
        return link
    if isinstance(link, dict):
        return custom(float(link["alpha_s"]), float(link["bandwidth_Bps"]), link.get("name"),
                      float(link.get("step_s", 0.0)))
    if isinstance(link, str):
        if link in ("none", ""):
            return None
        if link.startswith("custom:"):
            try:
                _, a, b, *step = link.split(":")
                if len(step) > 1:
                    raise ValueError
                return custom(float(a), float(b), link, float(step[0]) if step else 0.0)
            except ValueError:
                raise ValueError(f"custom link {link!r} must look like 'custom:ALPHA_S:BANDWIDTH_BPS[:STEP_S]'") from None
        if link in PRESETS:
            return PRESETS[link]
    raise ValueError(f"unknown link {link!r}; choose one of {', '.join(PRESETS)}, 'custom:ALPHA_S:BANDWIDTH_BPS' "
                     "or None")


class WallClock:
    """Wall time (time.perf_counter); a wait sleeps until its deadline (`wait_until`)."""

    def __init__(self):
        self.waited_s = 0.0  # wall time spent waiting on the link (sleep overshoot included)

    def now(self) -> float:
        return time.perf_counter()

    def wait_until(self, deadline: float) -> None:
        t0 = time.perf_counter()
        wait_until(deadline)
        self.waited_s += time.perf_counter() - t0


class VirtualClock:
    """Simulated time that advances by this thread's CPU time while the code computes, and jumps to the
    deadline when a wait reaches past it: nothing sleeps, so the core never idles and no wake-up is paid.

    Why: on a shared CPU, wall time moves with whatever else runs (another process stretches every module,
    and the wiring that waits more pays more scheduler wake-ups); this thread's CPU time does not. A run on
    this clock executes the real wiring code, in its real order of starts and waits, and charges the link
    exactly its modelled time. Only valid when this thread does all the compute: one torch thread."""

    def __init__(self):
        if torch.get_num_threads() != 1:
            raise ValueError(f"the virtual clock counts this thread's CPU time, so torch must run one thread "
                             f"(torch.set_num_threads(1)); it runs {torch.get_num_threads()}")
        self.waited_s = 0.0  # simulated time spent waiting on the link

    def now(self) -> float:
        return time.thread_time() + self.waited_s

    def wait_until(self, deadline: float) -> None:
        self.waited_s += max(deadline - self.now(), 0.0)


CLOCKS = {"wall": WallClock, "virtual": VirtualClock}


def clock_named(name: str):
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; choose one of {', '.join(CLOCKS)}")
    return CLOCKS[name]()


class EmulatedLink(WrappedComm):
    """A communicator whose every all-reduce costs at least the modelled time of `link`.

    Same API as ladder.tp.SingleDevice / TensorParallel (start / wait / all_reduce / count / size / rank).
    `ranks` overrides the p used in the cost model (default: the wrapped communicator's size). `clock` is
    what the link's time runs on: wall time (`WallClock`, the default: a wait sleeps) or simulated time
    (`VirtualClock`: compute counts as CPU time, a wait advances the clock); time the run with `clock.now`.
    """

    def __init__(self, comm, link: Link, ranks: int | None = None, clock=None):
        super().__init__(comm)
        self.link = link
        self.p = ranks or comm.size
        self.clock = clock or WallClock()
        self.modelled_s = 0.0  # total modelled communication time issued so far
        self._busy_until = 0.0  # when the link finishes the collectives issued so far
        # what the link really cost the waiting code: waits that reached past a deadline, and by how much
        self.waited = 0     # waits that found their collective still "in flight"
        self.late_s = 0.0   # sum over those waits of (return time - deadline): the emulation's own error

    def start(self, partial: torch.Tensor):
        refuse_cuda(partial)
        cost = self.link.allreduce_time(partial.numel() * partial.element_size(), self.p)
        self.modelled_s += cost
        self._busy_until = max(self.clock.now(), self._busy_until) + cost
        return _Pending(self.comm.start(partial), self._busy_until)

    def wait(self, handle):
        if not isinstance(handle, _Pending):
            return self.comm.wait(handle)
        out = self.comm.wait(handle.inner)
        if self.clock.now() < handle.deadline:
            self.clock.wait_until(handle.deadline)
            self.waited += 1
            self.late_s += self.clock.now() - handle.deadline
        return out


# A sleep returns late (timer slack, then the scheduler must wake the thread: ~0.1 ms here, more under
# load), and only the wiring that waits pays it, which biased the emulation toward ladder. So sleep until
# shortly before the deadline and spin the rest: the wait ends within microseconds of it. The core spins
# only while this (single-threaded) rank has nothing else to run anyway.
SPIN_S = 1e-3


def wait_until(deadline: float) -> None:
    """Return at `deadline` (time.perf_counter), not after it: sleep, then spin the last SPIN_S."""
    coarse = deadline - SPIN_S - time.perf_counter()
    if coarse > 0:
        time.sleep(coarse)
    while time.perf_counter() < deadline:
        pass


class _Pending:
    """A collective in flight plus the wall time before which its result may not be used."""
    __slots__ = ("inner", "deadline")

    def __init__(self, inner, deadline: float):
        self.inner = inner
        self.deadline = deadline


class VirtualRanks(SingleDevice):
    """One rank of a `size`-rank tensor-parallel group whose peers are not there (a single process).

    The model is built with this rank's local sizes, so compute is exactly one rank's; every all-reduce
    returns the local partial unchanged (so, like the upper_bound wiring, the outputs are not a valid
    model). Wrapped in EmulatedLink, each all-reduce then costs only the modelled time: the timeline of
    one rank with a perfect, CPU-free interconnect, free of the noise of a real CPU collective.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"VirtualRanks size must be >= 1, got {size}")
        self.size, self.rank, self.group = size, 0, None
        self.n_collectives = 0

    def start(self, partial: torch.Tensor):
        self.n_collectives += 1
        return partial

    def count(self) -> int:
        return self.n_collectives


# --------------------------------------------------------------------------------------------- on a GPU
def refuse_cuda(t) -> None:
    """The host-sleep link cannot model a link that is busy while the GPU computes: refuse CUDA tensors."""
    if getattr(t, "is_cuda", False):
        raise ValueError("EmulatedLink sleeps on the host and cannot emulate a link for CUDA tensors; use "
                         "ladder.link.CudaEmulatedLink (or ladder.link.emulate(comm, link, device))")


def emulate(comm, link: "Link | str | dict | None", device="cpu", ranks: int | None = None, clock: str = "wall"):
    """`comm` with every all-reduce costing `link`'s modelled time: the host EmulatedLink on CPU (on wall time,
    or on a `VirtualClock` with clock="virtual"), the spin-kernel CudaEmulatedLink on CUDA; `comm` itself when
    `link` is None."""
    link = get(link)
    if link is None:
        if clock != "wall":
            raise ValueError(f"clock={clock!r} times an emulated link, and there is none")
        return comm
    if torch.device(device).type == "cuda":
        if clock != "wall":
            raise ValueError("the virtual clock counts host CPU time; a CUDA run's link is timed on the GPU (wall)")
        return CudaEmulatedLink(comm, link, device, ranks)
    return EmulatedLink(comm, link, ranks, clock_named(clock))


_SPIN_CALIBRATION: dict = {}
WARM_UP_S = 5e-3  # spin this long before timing a link: these GPUs idle at low clocks (book/gpu.md)


def warm_up(seconds: float = WARM_UP_S, cycles_per_s: float = 2e9) -> None:
    """Keep the GPU busy for ~`seconds` (one spin kernel) so its clocks ramp up before a timing: after idle
    time a short spin reads long (the first short calibration on the H200 read 1,737 instead of ~1,965
    cycles/us). `cycles_per_s` only sizes the spin; 2 GHz is at or above any data-centre GPU's SM clock, so
    the spin lasts at least ~`seconds`."""
    torch.cuda._sleep(int(seconds * cycles_per_s))


def _time_spin(cycles: int, reps: int) -> float:
    """Median seconds of one `torch.cuda._sleep(cycles)` between two CUDA events on the current stream.

    A busy spin is queued first, so the host has enqueued event, spin and event before the GPU reaches
    them: the elapsed time is the GPU's, not the launch latency of an idle stream.
    """
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(200_000)
        a.record()
        torch.cuda._sleep(cycles)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


def calibrate_spin(device=None) -> tuple[float, float]:
    """(cycles per second, fixed overhead in seconds) of the spin kernel on `device`, cached per device.

    A linear fit through two spin lengths (~50 us and ~5 ms at 2 GHz) after a warm-up: the first short
    spins read low while the clock ramps up (a first H200 run, in the project's GPU notes: 1,737 then ~1,965
    cycles/us). book/gpu.md says how the link is set up on a GPU.
    """
    device = torch.device(device or "cuda")
    key = torch.cuda.current_device() if device.index is None else device.index
    if key not in _SPIN_CALIBRATION:
        with torch.cuda.device(key):
            warm_up()
            _time_spin(2_000_000, 5)
            c1, c2 = 100_000, 10_000_000
            t1, t2 = _time_spin(c1, 7), _time_spin(c2, 7)
            rate = (c2 - c1) / (t2 - t1)
            _SPIN_CALIBRATION[key] = (rate, max(t1 - c1 / rate, 0.0))
    return _SPIN_CALIBRATION[key]


class CudaEmulatedLink(WrappedComm):
    """A communicator whose every all-reduce costs `link`'s modelled time on the GPU's own timeline.

    `start` makes ONE communication stream wait for the producing stream (an event), then runs a spin
    kernel (`torch.cuda._sleep`) of the modelled duration on it and records a `done` event; `wait` makes
    the current stream wait for `done`. Collectives therefore serialise in issue order, as NCCL runs them
    on one stream, while the compute stream keeps going: the dataflow decides what is hidden. Everything
    is stream/event work, so a decode step using it can be captured in one CUDA graph
    (ladder.cudagraph), and the captured order of waits is exactly the wiring's.

    The wrapped `comm` still runs (VirtualRanks: identity; a real communicator: the real collective), so
    the cost is at least the modelled time. Caveat: the spin occupies one thread block, not the SMs and
    HBM traffic of a real NCCL all-reduce, so the overlap it shows is an upper estimate.
    """

    def __init__(self, comm, link: Link, device=None, ranks: int | None = None):
        super().__init__(comm)
        self.link = link
        self.p = ranks or comm.size
        self.device = torch.device(device or "cuda")
        self.stream = torch.cuda.Stream(self.device)
        self.cycles_per_s, self.overhead_s = calibrate_spin(self.device)
        self.modelled_s = 0.0

    def cycles(self, seconds: float) -> int:
        """Spin cycles for a duration of `seconds` (the fixed kernel overhead taken off)."""
        return max(int(round((seconds - self.overhead_s) * self.cycles_per_s)), 0)

    def start(self, partial: torch.Tensor):
        cost = self.link.allreduce_time(partial.numel() * partial.element_size(), self.p)
        self.modelled_s += cost
        inner = self.comm.start(partial)
        if cost <= 0:
            return inner
        self.stream.wait_stream(torch.cuda.current_stream())  # the link starts when the data exists
        with torch.cuda.stream(self.stream):
            torch.cuda._sleep(self.cycles(cost))
            done = torch.cuda.Event()
            done.record()
        return _Spinning(inner, done)

    def wait(self, handle):
        if not isinstance(handle, _Spinning):
            return self.comm.wait(handle)
        torch.cuda.current_stream().wait_event(handle.done)
        return self.comm.wait(handle.inner)

    def achieved(self, seconds: float, reps: int = 9) -> float:
        """Measured duration (s, median of `reps`) of the spin that stands for `seconds` of link time,
        after a ~5 ms warm-up spin (`warm_up`): a GPU that sat idle reads short spins long."""
        with torch.cuda.device(self.device):
            warm_up(WARM_UP_S, self.cycles_per_s)
            return _time_spin(self.cycles(seconds), reps)

    def calibration(self) -> dict:
        """The spin calibration this link uses, for a stored record."""
        return {"cycles_per_s": self.cycles_per_s, "overhead_s": self.overhead_s,
                "device": torch.cuda.get_device_name(self.device)}

    def durations(self, nbytes: float, reps: int = 9) -> dict:
        """One all-reduce of `nbytes` on this link: modelled seconds and the spin's measured seconds."""
        requested = self.link.allreduce_time(nbytes, self.p)
        return {"link": self.link.name, "p": self.p, "nbytes": nbytes, "requested_s": requested,
                "achieved_s": self.achieved(requested, reps)}


class _Spinning:
    """A collective in flight on the GPU link: the wrapped handle and the event after its spin."""
    __slots__ = ("inner", "done")

    def __init__(self, inner, done):
        self.inner, self.done = inner, done
