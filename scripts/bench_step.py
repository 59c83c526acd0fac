"""Benchmark: the cost of one step of Predicted Step Descent and of L2L, relative to Adam.

Each optimizer trains its own copy of a ReLU net ``n_in-n_hidden-10`` on a fixed random
minibatch of 64 (softmax cross-entropy); a step is ``opt.step(closure)`` with the
closure doing forward and backward, so the ratios include the model's own cost, as a
user sees them.  The optimizers are timed in turns (interleaved repeats, the order
rotated every repeat) and the median per-step time of each is compared, so that load
from other processes on the machine affects every side alike; the clock is this
process's CPU time, which time-slicing with other processes does not inflate.  Every
repeat restarts from the same weights with fresh optimizer state.  ``floor`` times the
matrix products of PSD's LSTM alone, the part no implementation in float32 avoids.

Peak memory is measured in a child process per optimizer on a net of about 10⁶
parameters: the peak resident set size after a few optimizer steps minus the peak after
the same number of forward/backward passes without an optimizer, per parameter.

Prints numbers; asserts nothing (the targets of issue 16 are printed alongside).

    python scripts/bench_step.py [--repeats 9] [--steps 10] [--threads 1]
                                 [--no-memory] [--large-repeats 3]
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PSD_FILE = ROOT / "results" / "psd" / "psd_mnist48.pt"
L2L_FILE = ROOT / "results" / "l2l" / "l2l_mnist48.pt"
NETS = {"48-48-10": (48, 48), "100-200-10": (100, 200)}
LARGE = (1000, 1000)   # 1,011,010 parameters
TARGETS = {"48-48-10": 12.0, "100-200-10": 60.0}
MEMORY_TARGET = 1536.0  # bytes per parameter beyond the model (1.5 KB)
BATCH = 64


def make_net(n_in: int, n_hidden: int, seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 10))
    g = torch.Generator().manual_seed(seed + 1)
    xb = torch.randn(BATCH, n_in, generator=g)
    yb = torch.randint(0, 10, (BATCH,), generator=g)
    return net, xb, yb


def make_optimizer(name: str, params):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if name == "psd":
        from l2o.gps import load_policy
        from l2o.policy import PredictedStepDescent

        policy, fcfg, _ = load_policy(PSD_FILE)
        return PredictedStepDescent(params, policy, fcfg)
    if name == "l2l":
        from l2o.l2l import L2LOptimizer

        return L2LOptimizer(params, str(L2L_FILE))
    raise ValueError(name)


class Runner:
    """One optimizer on its own copy of the net, restartable from the initial weights."""

    def __init__(self, name: str, n_in: int, n_hidden: int):
        self.name = name
        self.net, self.xb, self.yb = make_net(n_in, n_hidden)
        self.init = {k: v.clone() for k, v in self.net.state_dict().items()}
        self.opt = make_optimizer(name, list(self.net.parameters()))
        self.loss_fn = nn.CrossEntropyLoss()

    def closure(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.net(self.xb), self.yb)
        loss.backward()
        return loss

    def restart(self):
        self.net.load_state_dict(self.init)
        self.opt.state.clear()

    def time_steps(self, steps: int, warmup: int = 1) -> float:
        """Seconds per step over ``steps`` steps after ``warmup`` untimed ones."""
        self.restart()
        for _ in range(warmup):
            self.opt.step(self.closure)
        t0 = time.process_time()
        for _ in range(steps):
            self.opt.step(self.closure)
        return (time.process_time() - t0) / steps


class GemmFloor:
    """The matrix products of PSD's LSTM alone: ``[h | Ψ] (k, 131) @ (131, 512)`` per tensor.

    134 kFLOP per coordinate and step, in the row chunks of the fused step; the rest of
    a step (gates, cell, features, the model's forward and backward) comes on top, so
    ``floor / adam`` bounds what the PSD/Adam ratio can reach on this machine.
    """

    name = "floor"

    def __init__(self, n_in: int, n_hidden: int, hidden: int = 128):
        from l2o import policy

        # the fused step's row chunks (1,024 rows at 128 cells; also for older code)
        rows = getattr(policy, "STEP_CHUNK_ELEMENTS", 2**19) // (4 * hidden)
        sizes = [n_in * n_hidden, n_hidden, n_hidden * 10, 10]
        self.chunks = [max(1, min(rows, k)) for k in sizes]
        self.sizes = sizes
        rows = max(self.chunks)
        self.x = torch.randn(rows, hidden + 3)
        self.w = torch.randn(hidden + 3, 4 * hidden) * 0.1
        self.b = torch.randn(4 * hidden)
        self.out = torch.empty(rows, 4 * hidden)

    def _step(self):
        for k, chunk in zip(self.sizes, self.chunks):
            for r0 in range(0, k, chunk):
                n = min(chunk, k - r0)
                torch.addmm(self.b, self.x[:n], self.w, out=self.out[:n])

    def time_steps(self, steps: int, warmup: int = 1) -> float:
        for _ in range(warmup):
            self._step()
        t0 = time.process_time()
        for _ in range(steps):
            self._step()
        return (time.process_time() - t0) / steps


def time_net(n_in: int, n_hidden: int, names, repeats: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each optimizer (and of the floor), interleaved repeats."""
    runners = [Runner(n, n_in, n_hidden) for n in names] + [GemmFloor(n_in, n_hidden)]
    for r in runners:  # warm every code path once
        r.time_steps(1)
    times = {r.name: [] for r in runners}
    for rep in range(repeats):
        k = rep % len(runners)
        for r in runners[k:] + runners[:k]:
            times[r.name].append(r.time_steps(steps))
    return {n: statistics.median(v) for n, v in times.items()}


def n_params(n_in: int, n_hidden: int) -> int:
    return n_in * n_hidden + n_hidden + n_hidden * 10 + 10


def peak_rss() -> int:
    """Peak resident set size of this process in bytes.

    ``VmHWM`` of ``/proc/self/status`` (Linux): unlike ``getrusage``'s ``ru_maxrss``,
    it does not inherit the parent's peak across fork and exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(name: str, steps: int = 3) -> None:
    """Print the peak RSS added by ``steps`` optimizer steps, bytes per parameter."""
    torch.set_num_threads(1)
    r = Runner("adam", *LARGE)           # the model and its gradients, no state yet
    for _ in range(steps):
        r.closure()
    before = peak_rss()
    r.opt = make_optimizer(name, list(r.net.parameters()))
    for _ in range(steps):
        r.opt.step(r.closure)
    after = peak_rss()
    print((after - before) / n_params(*LARGE))


def measure_memory(name: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", name],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats per net")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    ap.add_argument("--large-repeats", type=int, default=3,
                    help="repeats of one step on the 1M-parameter net (0: skip its timing)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizers", nargs="+", default=["psd", "l2l"])
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.memory_child:
        memory_child(a.memory_child)
        return
    names = ["adam", *a.optimizers]
    print(f"torch {torch.__version__}, {a.threads} thread(s), median of {a.repeats} "
          f"interleaved repeats of {a.steps} steps (forward + backward + step)")
    print(f"{'net':<14}{'params':>10}" + "".join(f"{n + ' ms':>11}" for n in names)
          + "".join(f"{n + '/adam':>11}" for n in a.optimizers)
          + f"{'floor/adam':>12}   target")
    nets = [(label, *shape, a.repeats, a.steps) for label, shape in NETS.items()]
    if a.large_repeats > 0:
        nets.append(("1000-1000-10", *LARGE, a.large_repeats, 1))
    for label, n_in, n_hidden, repeats, steps in nets:
        t = time_net(n_in, n_hidden, names, repeats, steps)
        target = f"<= {TARGETS[label]:.0f}x" if label in TARGETS else ""
        print(f"{label:<14}{n_params(n_in, n_hidden):>10}"
              + "".join(f"{1e3 * t[n]:>11.3f}" for n in names)
              + "".join(f"{t[n] / t['adam']:>10.1f}x" for n in a.optimizers)
              + f"{t['floor'] / t['adam']:>11.1f}x   {target}", flush=True)
    print("floor: PSD's LSTM matrix products alone (134 kFLOP per coordinate), "
          "the lower bound of psd/adam here")
    if not a.no_memory:
        print(f"peak memory beyond the model on {LARGE[0]}-{LARGE[1]}-10 "
              f"({n_params(*LARGE):,} parameters), bytes per parameter "
              f"(target <= {MEMORY_TARGET:.0f}):")
        for n in names:
            print(f"  {n:<6}{measure_memory(n):>10.0f}", flush=True)


if __name__ == "__main__":
    main()
