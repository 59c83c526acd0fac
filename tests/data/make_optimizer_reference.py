"""Write ``optimizer_reference.pt``: the steps of the shipped learned optimizers.

Run once on a commit whose numbers are the reference (it was generated on bc08979,
before the robustness changes of issue 15)::

    python tests/data/make_optimizer_reference.py

The file holds only tensors (``torch.load(..., weights_only=True)`` reads it):
for each optimizer and parameter dtype, the parameters of a small MLP after each
of a few steps on fixed data.  ``tests/test_robustness.py`` replays the same steps
and requires bit-identical parameters.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("optimizer_reference.pt")
STEPS = 6


def model_and_data(dtype):
    """A 6-5-3 MLP and a minibatch drawn from fixed generators (no global RNG)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    xb = torch.randn(16, 6, generator=g, dtype=torch.float64).to(dtype)
    yb = torch.randint(0, 3, (16,), generator=g)
    return model, xb, yb


def run(make_opt, dtype):
    """Parameters after each step: ``(STEPS, n_params)`` in ``dtype``."""
    model, xb, yb = model_and_data(dtype)
    opt = make_opt(model.parameters())
    rows = []
    for _ in range(STEPS):
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            return loss

        opt.step(closure)
        rows.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
    return torch.stack(rows)


def main():
    from l2o import l2l
    from l2o.gps import load_policy
    from l2o.policy import PredictedStepDescent

    out = {}
    for tag, rel in (("psd", "results/psd/psd_mnist48.pt"),
                     ("psd_rms", "results/psd_rms/psd_mnist48.pt")):
        policy, fcfg, _ = load_policy(ROOT / rel)
        for dtype in (torch.float32, torch.float64):
            out[f"{tag}_{str(dtype).split('.')[-1]}"] = run(
                lambda ps: PredictedStepDescent(ps, policy, fcfg), dtype)
    net = l2l.load_l2l(ROOT / "results/l2l/l2l_mnist48.pt")
    for dtype in (torch.float32, torch.float64):
        out[f"l2l_{str(dtype).split('.')[-1]}"] = run(lambda ps: l2l.L2LOptimizer(ps, net), dtype)
    torch.save(out, OUT)
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.abs().sum()))


if __name__ == "__main__":
    main()
