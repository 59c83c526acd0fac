"""The reproduction report: each claim of the paper as a computed check, and the deviations.

Li & Malik (2017, section 4) describe their Figures 1-5 in words only.
Every sentence of that kind becomes a :class:`ClaimCheck` here: a test applied to the runs
of one figure (:class:`l2o.figures.FigureData`), once per *case* the sentence covers (a
panel, or a method on a panel), whose outcome gives the verdict through
:func:`l2o.figures.verdict` (all cases hold: reproduced; some: partly; none: not). The
tests are those of the figure chapters where these give one, so the verdicts agree with
them; where a chapter reports numbers without a verdict, the test is defined here.

Readings of the paper's qualitative words, all on the median curve over seeds unless said
otherwise (a diverged seed counts ``+inf`` there, :func:`l2o.figures.median_curves`):

* *fastest / outperforms*: rank 1 by mean meta-loss ``sum_t f(x_t)`` (the summary table);
* *oscillation*: the mean climb per iteration of each seed's curve, median over seeds
  (:func:`l2o.figures.oscillation`); *initially*: over the first :data:`EARLY_FRACTION`
  of the run;
* *reach the optimum*: the lowest point of the curve lies within ``tol`` (a fraction of
  the best method's descent from ``f(x_0)``) of the lowest point of any method's curve
  (:func:`shortfall`);
* *diverged*: the median ends above where it started (so also when most seeds
  diverged by the runner's rule, :mod:`l2o.experiments`); *slowly diverged*: an upward
  least-squares slope over the second half, or a diverged seed;
* *performs well*: a rank in the better half of the methods.

:func:`paper_claims` builds every check from the figures at hand;
:func:`claims_markdown` renders them as one table. :class:`Setup` collects, from the
result files and the package's configuration, what this reproduction did where the
paper is silent or where it departs from the paper; :func:`deviations` turns it into
rows (what, paper, here, likely effect) for :func:`deviations_markdown`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l2o import experiments, figures, record
from l2o.plotting import SHORT_LABELS, short_label

__all__ = [
    "EARLY_FRACTION",
    "REACH_TOL",
    "ClaimCheck",
    "short_name",
    "shortfall",
    "first_everywhere",
    "ranking_varies",
    "ranks_in_better_half",
    "misses_optimum",
    "oscillates_early",
    "leads_at_end",
    "drifts_upward",
    "no_worse_with_noise",
    "diverge",
    "progress_slowly",
    "oscillates_more",
    "many_oscillate_more",
    "lowest_final",
    "diverge_quickly",
    "continues_beyond",
    "training_objective",
    "paper_claims",
    "verdict_counts",
    "claims_markdown",
    "criteria_markdown",
    "Setup",
    "Deviation",
    "collect_setup",
    "deviations",
    "deviations_markdown",
]

#: "Initially": the first tenth of a run (as in the Figure 2 chapter).
EARLY_FRACTION = 0.1
#: "Reach the optimum": within 5% of the best method's descent from f(x_0).
REACH_TOL = 0.05

FACES, CIFAR10, CIFAR100 = experiments.FIGURE_DATASETS
#: Panel letter of each dataset in the paper's figures.
PANEL = {d: chr(97 + i) for i, d in enumerate(experiments.FIGURE_DATASETS)}
#: Short method names for the evidence column (:data:`l2o.plotting.SHORT_LABELS`).
SHORT = SHORT_LABELS


# ------------------------------------------------------------------------ one claim
@dataclass(frozen=True)
class ClaimCheck:
    """One claim of the paper, the evidence from our runs and the outcome per case.

    Attributes:
        claim: the claim, with the paper's words quoted.
        where: the figure and panels it is about, e.g. ``"Fig. 2 (a, b)"``.
        subject: whose behaviour it describes (``"PSD"``, ``"L2L"``, ...).
        evidence: the computed numbers, in words.
        holds: one entry per case checked (a panel, or a method on a panel).
        test: what counts as holding, for one case.
    """

    claim: str
    where: str
    subject: str
    evidence: str
    holds: tuple[bool, ...]
    test: str = ""

    @property
    def verdict(self) -> str:
        """``reproduced`` / ``partly reproduced`` / ``not reproduced`` (``not checked``
        when no case could be checked, e.g. the panels are missing)."""
        if not self.holds:
            return "not checked"
        return figures.verdict(sum(self.holds), len(self.holds))


# --------------------------------------------------------------------- formatting
def _num(v, spec: str = ".3g") -> str:
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return format(v, spec).replace("-", "−")


def _join(items) -> str:
    return " / ".join(str(i) for i in items)


def short_name(fd: figures.FigureData, d: str) -> str:
    """The panel's dataset without the parenthesis, e.g. ``FER2013``."""
    return fd.names.get(d, d).split(" (")[0]


def _names(fd, panels) -> str:
    return _join(short_name(fd, d) for d in panels)


def _where(fd: figures.FigureData, panels: Sequence[str]) -> str:
    letters = [PANEL.get(d, d) for d in panels]
    return f"Fig. {fd.figure} ({', '.join(letters)})"


def _panels(fd: figures.FigureData, panels: Sequence[str] | None) -> list[str]:
    """The requested panels that ``fd`` has (all of them by default), in fd's order."""
    if panels is None:
        return list(fd.datasets)
    return [d for d in fd.datasets if d in panels]


def _label(m: str) -> str:
    return short_label(m)


# ----------------------------------------------------------------------- measures
def shortfall(medians: Mapping[str, np.ndarray], method: str, lowest: bool = True) -> float:
    """How far ``method`` stays from the best objective any method reaches on one panel.

    With ``f0`` the objective at ``t = 0`` (the same initial iterate for every method)
    and ``opt`` the lowest point of any method's curve, ``v`` the lowest point of
    ``method``'s curve (``lowest=True``) or its last value::

        shortfall = (v - opt) / (f0 - opt)

    the part of the best achievable descent that ``method`` misses: 0 at the optimum,
    1 for no progress at all. Non-finite values count as ``+inf`` (a curve that has
    diverged to the end by then is ``inf``).

    Args:
        medians: ``{method: (T+1,) curve}`` of one panel (:func:`l2o.figures.median_curves`).
        method: the method to measure.
        lowest: the lowest point of the curve (``True``) or its final value.

    Returns:
        The shortfall; NaN when no method descends below ``f0``.
    """
    def clean(c):
        c = np.asarray(c, dtype=np.float64)
        return np.where(np.isfinite(c), c, np.inf)

    curves = {m: clean(c) for m, c in medians.items()}
    f0 = float(np.min([c[0] for c in curves.values()]))
    opt = float(np.min([c.min() for c in curves.values()]))
    own = curves[method]
    v = float(own.min() if lowest else own[-1])
    if not (math.isfinite(f0) and f0 > opt):
        return float("nan")
    return float((v - opt) / (f0 - opt))


def _osc(fd, d, m, start=0, stop=None) -> float:
    return figures.oscillation(figures.curves_of(fd, d, m), start, stop)


# ------------------------------------------------------------------- claim checks
def first_everywhere(fd: figures.FigureData, claim: str, method: str = "psd",
                     panels: Sequence[str] | None = None) -> ClaimCheck:
    """``method`` ranks first by mean meta-loss on every panel (Figures 1-3, 5)."""
    panels = _panels(fd, panels)
    ranks = [figures.rank_of(fd.tables[d], method) for d in panels]
    n = len(fd.tables[panels[0]]) if panels else 0
    best = [_label(figures.best_method(fd.tables[d])) for d in panels]
    evidence = (f"{_label(method)} ranks {_join(ranks)} of {n} by meta-loss "
                f"({_names(fd, panels)}); first: {_join(best)}")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(r == 1 for r in ranks), "rank 1 by mean meta-loss on the panel")


def ranking_varies(fd: figures.FigureData, claim: str) -> ClaimCheck:
    """The order of the seven hand-engineered methods differs between panels (Fig. 1).

    Cases: with ``k`` distinct orders over ``n`` panels, ``k - 1`` of ``n - 1`` hold, so
    the verdict is "reproduced" when every panel has its own order and "not" when all
    share one.
    """
    panels = list(fd.datasets)
    orders = [tuple(figures.hand_engineered_order(fd.tables[d])) for d in panels]
    k, n = len(set(orders)), len(panels)
    first = [_label(o[0]) if o else "n/a" for o in orders]
    evidence = (f"{k} distinct orders of the {len(orders[0]) if orders else 0} "
                f"hand-engineered methods over {n} panels; best of them: {_join(first)}")
    holds = (True,) * (k - 1) + (False,) * (n - k) if n > 1 else ()
    return ClaimCheck(claim, _where(fd, panels), "hand-engineered", evidence, holds,
                      "each panel orders the hand-engineered methods (by meta-loss) "
                      "differently from the others")


def ranks_in_better_half(fd: figures.FigureData, claim: str, method: str,
                         panels: Sequence[str]) -> ClaimCheck:
    """``method`` ranks in the better half of the methods on each panel ("performs well")."""
    panels = _panels(fd, panels)
    ranks = [figures.rank_of(fd.tables[d], method) for d in panels]
    ns = [len(fd.tables[d]) for d in panels]
    cut = [(n + 1) // 2 for n in ns]
    evidence = (f"{_label(method)} ranks {_join(ranks)} of {_join(sorted(set(ns)))} "
                f"({_names(fd, panels)})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(r <= c for r, c in zip(ranks, cut)),
                      "rank in the better half (at most (n + 1) / 2 of n) by meta-loss")


def misses_optimum(fd: figures.FigureData, claim: str, method: str, panels: Sequence[str],
                   tol: float = REACH_TOL) -> ClaimCheck:
    """The lowest point of ``method``'s median curve misses the optimum by more than ``tol``
    (:func:`shortfall`) on each panel."""
    panels = _panels(fd, panels)
    med = figures.median_curves(fd)
    gaps = [shortfall(med[d], method) for d in panels]
    evidence = (f"{_label(method)}'s lowest objective misses the lowest of all methods by "
                f"{_join(_num(100 * g, '.0f') + '%' for g in gaps)} of the best descent "
                f"({_names(fd, panels)})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(bool(g > tol) for g in gaps),
                      f"shortfall of the lowest point above {tol:.0%} "
                      "(see `l2o.report.shortfall`)")


def oscillates_early(fd: figures.FigureData, claim: str, panels: Sequence[str],
                     method: str = "psd", fraction: float = EARLY_FRACTION) -> ClaimCheck:
    """Over the first ``fraction`` of the run, ``method`` climbs back more per iteration
    than the median hand-engineered method (the Figure 2 chapter's test)."""
    panels = _panels(fd, panels)
    early = max(2, int(fd.setting["horizon"] * fraction))
    own = [_osc(fd, d, method, 0, early) for d in panels]
    hand = [float(np.nanmedian([_osc(fd, d, m, 0, early)
                                for m in figures.hand_engineered_order(fd.tables[d])]))
            for d in panels]
    evidence = (f"mean climb per iteration over iterations 0–{early}: {_label(method)} "
                f"{_join(_num(v, '.2g') for v in own)}, median hand-engineered method "
                f"{_join(_num(v, '.2g') for v in hand)} ({_names(fd, panels)})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(bool(a > b) for a, b in zip(own, hand)),
                      f"over the first {fraction:.0%} of the run, a larger mean climb per "
                      "iteration than the median hand-engineered method")


def leads_at_end(fd: figures.FigureData, claim: str, panels: Sequence[str],
                 method: str = "psd") -> ClaimCheck:
    """``method``'s median curve becomes and stays the lowest of all (Fig. 2 "overtook")."""
    panels = _panels(fd, panels)
    med = figures.median_curves(fd)
    lead = [figures.lead_from(med[d], method) for d in panels]
    evidence = (f"{_label(method)}'s median curve is the lowest from iteration "
                f"{_join('never' if t is None else t for t in lead)} "
                f"({_names(fd, panels)})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(t is not None for t in lead),
                      "the median curve is the lowest of all methods from some iteration "
                      "to the end")


def drifts_upward(fd: figures.FigureData, claim: str, method: str,
                  panels: Sequence[str]) -> ClaimCheck:
    """Slow divergence: an upward slope of the median over the second half, or a diverged
    seed (the Figure 2 chapter's test)."""
    panels = _panels(fd, panels)
    med = figures.median_curves(fd)
    half = fd.setting["horizon"] // 2
    slope = [100 * figures.trend(med[d][method], half) for d in panels]
    div = [figures.row_of(fd.tables[d], method)["n_diverged"] for d in panels]
    n = len(fd.seeds)
    evidence = (f"{_label(method)}'s median slope after iteration {half}: "
                f"{_join(_num(s, '+.2g') for s in slope)} per 100 iterations; diverged "
                f"seeds {_join(f'{k}/{n}' for k in div)} ({_names(fd, panels)})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(bool(s > 0) or k > 0 for s, k in zip(slope, div)),
                      "an upward least-squares slope of the median curve over the second "
                      "half, or at least one diverged seed")


def no_worse_with_noise(noisy: figures.FigureData, base: figures.FigureData, claim: str,
                        method: str = "psd") -> ClaimCheck:
    """With smaller minibatches, ``method`` keeps (or improves) its rank and no seed
    diverges ("handles the increased stochasticity fairly well", Fig. 3 against Fig. 1)."""
    panels = [d for d in noisy.datasets if d in base.datasets]
    r0 = [figures.rank_of(base.tables[d], method) for d in panels]
    r1 = [figures.rank_of(noisy.tables[d], method) for d in panels]
    div = [figures.row_of(noisy.tables[d], method)["n_diverged"] for d in panels]
    b0, b1 = base.setting["batch_size"], noisy.setting["batch_size"]
    evidence = (f"{_label(method)}'s rank at minibatch {b0} → {b1}: "
                f"{_join(f'{a} → {b}' for a, b in zip(r0, r1))}; diverged seeds "
                f"{_join(div)} ({_names(noisy, panels)})")
    return ClaimCheck(claim, _where(noisy, panels), _label(method), evidence,
                      tuple(b <= a and k == 0 for a, b, k in zip(r0, r1, div)),
                      f"no diverged seed, and a rank no worse than at minibatch {b0}")


def diverge(fd: figures.FigureData, claim: str, methods: Sequence[str],
            panel: str, tol: float = REACH_TOL) -> ClaimCheck:
    """Each of ``methods`` diverges on ``panel``: a seed diverged by the runner's rule,
    or the median ends above its start by more than ``tol · |f(x_0)|`` (a curve that
    merely hovers at its start has not diverged)."""
    panels = _panels(fd, [panel])
    parts, holds = [], []
    medians = figures.median_curves(fd)
    for d in panels:
        med = medians[d]
        for m in methods:
            c = np.asarray(med[m], dtype=np.float64)
            end = c[-1] if np.isfinite(c[-1]) else np.inf
            rise = end - c[0]
            k = figures.row_of(fd.tables[d], m)["n_diverged"]
            parts.append(f"{_label(m)} {k}/{len(fd.seeds)} seeds diverged, median end "
                         f"minus start {_num(rise, '+.2g')}")
            holds.append(bool(k > 0 or rise > tol * abs(c[0])))
    evidence = f"{_names(fd, panels)}: " + "; ".join(parts) if panels else "panel missing"
    return ClaimCheck(claim, _where(fd, panels), " and ".join(_label(m) for m in methods),
                      evidence, tuple(holds),
                      f"for each method, a seed diverged, or the median objective ends "
                      f"more than {100 * tol:.0f}% of f(x0) above its start")


def progress_slowly(fd: figures.FigureData, claim: str, methods: Sequence[str], panel: str,
                    tol: float = REACH_TOL) -> ClaimCheck:
    """Each of ``methods`` still descends at the end, below its start but short of the
    optimum on ``panel`` ("progressing slowly towards the optimum")."""
    panels = _panels(fd, [panel])
    half = fd.setting["horizon"] // 2
    parts, holds = [], []
    medians = figures.median_curves(fd)
    for d in panels:
        med = medians[d]
        for m in methods:
            slope = 100 * figures.trend(med[m], half)
            gap = shortfall(med, m, lowest=False)
            finite = bool(np.isfinite(med[m][-1]))
            parts.append(f"{_label(m)} slope {_num(slope, '+.2g')} per 100 iterations "
                         f"after {half}, final shortfall {_num(100 * gap, '.0f')}%")
            holds.append(finite and bool(slope < 0) and bool(tol < gap < 1))
    evidence = f"{_names(fd, panels)}: " + "; ".join(parts) if panels else "panel missing"
    return ClaimCheck(claim, _where(fd, panels), " and ".join(_label(m) for m in methods),
                      evidence, tuple(holds),
                      "for each method, a finite median still descending over the second "
                      f"half (negative slope) and ending below its start but more than "
                      f"{tol:.0%} short of the optimum")


def oscillates_more(noisy: figures.FigureData, base: figures.FigureData, claim: str,
                    panels: Sequence[str], method: str = "psd") -> ClaimCheck:
    """``method`` climbs back more per iteration over the whole run in ``noisy`` than in
    ``base`` (Fig. 4 against Fig. 2, the Figure 4 chapter's test)."""
    panels = [d for d in _panels(noisy, panels) if d in base.datasets]
    a = [_osc(base, d, method) for d in panels]
    b = [_osc(noisy, d, method) for d in panels]
    b0, b1 = base.setting["batch_size"], noisy.setting["batch_size"]
    pairs = [_num(x, ".2g") + " → " + _num(y, ".2g") for x, y in zip(a, b)]
    evidence = (f"{_label(method)}'s mean climb per iteration, minibatch {b0} → {b1}: "
                f"{_join(pairs)} ({_names(noisy, panels)})")
    return ClaimCheck(claim, _where(noisy, panels), _label(method), evidence,
                      tuple(bool(y > x) for x, y in zip(a, b)),
                      f"a larger mean climb per iteration at minibatch {b1} than at {b0}")


def many_oscillate_more(noisy: figures.FigureData, base: figures.FigureData,
                        claim: str) -> ClaimCheck:
    """More than half of the hand-engineered methods climb back more per iteration in
    ``noisy`` than in ``base``, per panel (the Figure 4 chapter's test)."""
    panels = [d for d in noisy.datasets if d in base.datasets]
    counts, sizes = [], []
    for d in panels:
        hand = figures.hand_engineered_order(noisy.tables[d])
        counts.append(sum(_osc(noisy, d, m) > _osc(base, d, m) for m in hand))
        sizes.append(len(hand))
    b0, b1 = base.setting["batch_size"], noisy.setting["batch_size"]
    evidence = (f"{_join(counts)} of {_join(sorted(set(sizes)))} hand-engineered methods "
                f"climb back more per iteration at minibatch {b1} than at {b0} "
                f"({_names(noisy, panels)})")
    return ClaimCheck(claim, _where(noisy, panels), "hand-engineered", evidence,
                      tuple(k > n / 2 for k, n in zip(counts, sizes)),
                      "more than half of the hand-engineered methods have a larger mean "
                      f"climb per iteration than at minibatch {b0}")


def lowest_final(fd: figures.FigureData, claim: str, method: str = "psd") -> ClaimCheck:
    """``method``'s mean final objective is below every other method's (Fig. 4)."""
    panels = list(fd.datasets)
    gaps = [-figures.margin_over(fd.tables[d], method) for d in panels]
    evidence = (f"{_label(method)}'s final objective minus the best other method's: "
                f"{_join(_num(g, '+.3g') for g in gaps)} ({_names(fd, panels)}; "
                "negative: lowest)")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(bool(g < 0) for g in gaps),
                      "mean final objective below every other method's")


def diverge_quickly(fd: figures.FigureData, claim: str, method: str,
                    panels: Sequence[str]) -> ClaimCheck:
    """Most seeds of ``method`` diverge by the runner's rule (the Figure 4 chapter's
    test); the iterations are reported, not tested."""
    panels = _panels(fd, panels)
    at = [sorted(r.diverged_at for r in fd.results[d] if r.optimizer == method and r.diverged)
          for d in panels]
    n = len(fd.seeds)
    when = [f"median at {int(np.median(a))}" if a else "none" for a in at]
    evidence = (f"{_label(method)} seeds diverged: {_join(f'{len(a)}/{n}' for a in at)} "
                f"({_join(when)}; {_names(fd, panels)}; horizon {fd.setting['horizon']})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(len(a) > n / 2 for a in at),
                      "more than half of the seeds diverge (f > 1000 f(x_0) or not finite)")


def continues_beyond(fd: figures.FigureData, claim: str, trained: int,
                     method: str = "psd") -> ClaimCheck:
    """Beyond iteration ``trained`` no seed of ``method`` diverges and its median does not
    rise from ``trained`` to the end (the Figure 5 chapter's test)."""
    panels = list(fd.datasets)
    med = figures.median_curves(fd)
    T = fd.setting["horizon"]
    change, div = [], []
    for d in panels:
        curves = figures.curves_of(fd, d, method)
        div.append(int((~np.isfinite(curves[:, -1])).sum()))
        change.append(float(med[d][method][T] - med[d][method][trained]))
    evidence = (f"{_label(method)}'s median change from iteration {trained} to {T}: "
                f"{_join(_num(c, '+.3g') for c in change)}; diverged seeds {_join(div)} "
                f"({_names(fd, panels)})")
    return ClaimCheck(claim, _where(fd, panels), _label(method), evidence,
                      tuple(k == 0 and bool(c <= 0) for c, k in zip(change, div)),
                      f"no diverged seed and no net rise of the median after iteration "
                      f"{trained}")


def teacher_name(provenance: Mapping) -> str:
    """The registry name of the teacher a GPS run started from (its ``provenance.json``).

    Runs that record only hyperparameters (the first ones) imitated tuned momentum.
    """
    t = provenance.get("teacher") or {}
    return str(t.get("name", "momentum"))


def psd_state(psd_dir: str | Path = "results/psd") -> str:
    """One sentence on the shipped PSD policy, for the figure chapters' introductions.

    Read from the GPS run's ``provenance.json`` and ``comparison.json`` in ``psd_dir``
    (relative to the repository root): the budget against the package's defaults, the
    teacher, the iteration chosen, and the policy's rank on its own training objective.
    """
    from l2o import gps

    root = Path(psd_dir)
    root = root if root.is_absolute() else experiments.ROOT / root
    prov = record.read_json(root / "provenance.json") or {}
    comp = record.read_json(root / "comparison.json") or {}
    if not prov:
        return f"no GPS run in {root} (run `python -m l2o.gps train --out {psd_dir}`)"
    cfg, dflt = prov.get("config", {}), dataclasses.asdict(gps.GPSConfig())
    its, n = cfg.get("num_iterations"), cfg.get("num_samples")
    share = its * n / (dflt["num_iterations"] * dflt["num_samples"]) if its and n else None
    budget = ("the package's default budget" if share is not None and share >= 1
              else f"{share:.0%} of the package's default budget" if share is not None
              else "an unrecorded budget")
    wall = prov.get("wall_time_s")
    meta = comp.get("psd_meta") or {}
    chosen = (f", π of iteration {meta['iteration']} chosen on validation seeds"
              if meta.get("iteration") is not None else "")
    out = (f"meta-trained by GPS at {budget} ({its} iterations of {n} ψ trajectories"
           + (f", {wall / 60:.0f} min on one core" if wall else "")
           + f"{chosen}), with tuned {_label(teacher_name(prov))} as its teacher")
    rows = {r["optimizer"]: r for r in comp.get("rows", [])}
    if "psd" in rows:
        ahead = [_label(r["optimizer"]) for r in sorted(rows.values(), key=lambda r: r["rank"])
                 if r["rank"] < rows["psd"]["rank"]]
        out += (f"; on its own training objective it ranks {rows['psd']['rank']} of "
                f"{len(rows)}" + (f", behind {_join(ahead)}" if ahead else ""))
    return out


def training_objective(comparison: Mapping, teacher: str = "momentum",
                       method: str = "psd") -> ClaimCheck:
    """The premise: on its training objective, ``method`` beats its teacher and ranks first.

    Cases: beats the teacher's mean meta-loss; ranks first. Reads the rows of
    ``results/psd/comparison.json`` (:func:`l2o.experiments.summary_table` rows);
    ``teacher`` is the registry name of the run's teacher (:func:`teacher_name`).
    """
    rows = {r["optimizer"]: r for r in comparison["rows"]}
    own, ref = rows[method], rows[teacher]
    best = min(rows.values(), key=lambda r: r["rank"])
    evidence = (f"meta-loss {_label(method)} {_num(own['meta_loss_mean'], '.4g')} (rank "
                f"{own['rank']} of {len(rows)}), its teacher {_label(teacher)} "
                f"{_num(ref['meta_loss_mean'], '.4g')}, best {_label(best['optimizer'])} "
                f"{_num(best['meta_loss_mean'], '.4g')}")
    holds = (bool(own["meta_loss_mean"] < ref["meta_loss_mean"]), own["rank"] == 1)
    arch = own.get("architecture", "")
    return ClaimCheck(
        "(premise, no figure in the paper) meta-training yields an optimizer that beats "
        "the hand-engineered ones on its own training objective",
        f"training objective: {own.get('problem', '')} {arch}, minibatch "
        f"{own.get('batch_size', '')}", _label(method), evidence, holds,
        "two cases: a lower mean meta-loss than the teacher; rank 1")


# ------------------------------------------------------------------ all the claims
def paper_claims(figs: Mapping[int, figures.FigureData], comparison: Mapping | None = None,
                 tol: float = REACH_TOL, teacher: str = "momentum") -> list[ClaimCheck]:
    """Every claim of section 4 that ``figs`` can check, in the paper's order.

    Args:
        figs: ``{figure number: FigureData}``; claims of a missing figure are left out
            (claims comparing two figures need both: 3 with 1, 4 with 2).
        comparison: the content of ``results/psd/comparison.json``, for the premise
            checked first (:func:`training_objective`); None leaves it out.
        tol: the "reach the optimum" tolerance (:func:`shortfall`).
        teacher: the teacher of the premise (:func:`teacher_name`).

    Returns:
        A list of :class:`ClaimCheck`.
    """
    out = []
    if comparison is not None:
        out.append(training_objective(comparison, teacher))
    two = (FACES, CIFAR10)
    if 1 in figs:
        fd = figs[1]
        out += [
            first_everywhere(fd, "PSD “consistently descends to the optimum the fastest "
                             "across all datasets”"),
            ranking_varies(fd, "“the relative ranking of other algorithms varies by "
                           "dataset”"),
            ranks_in_better_half(fd, "L2L “performs well on CIFAR”", "l2l",
                                 (CIFAR10, CIFAR100)),
            misses_optimum(fd, "L2L “is unable to reach the optimum on TFD”", "l2l",
                           (FACES,), tol),
        ]
    if 2 in figs:
        fd = figs[2]
        out += [
            first_everywhere(fd, "on the enlarged net, PSD “consistently outperforms other "
                             "algorithms on each dataset”"),
            oscillates_early(fd, "PSD “exhibited a bit of oscillation initially on TFD and "
                             "CIFAR-10”", two),
            leads_at_end(fd, "PSD “quickly recovered and overtook other algorithms”", two),
            drifts_upward(fd, "L2L “experienced difficulties on TFD and CIFAR-10 as well, "
                          "but slowly diverged”", "l2l", two),
        ]
    if 3 in figs:
        fd = figs[3]
        out.append(first_everywhere(fd, "at minibatch 10, PSD “still outperforms all other "
                                    "algorithms”"))
        if 1 in figs:
            out.append(no_worse_with_noise(fd, figs[1], "PSD “is able to handle the "
                                           "increased stochasticity fairly well”"))
        out += [
            diverge(fd, "CG and L2L on TFD: “both diverged”", ("cg", "l2l"), FACES),
            progress_slowly(fd, "CG and L2L on CIFAR-10: “both were progressing slowly "
                            "towards the optimum”", ("cg", "l2l"), CIFAR10, tol),
        ]
    if 4 in figs:
        fd = figs[4]
        if 2 in figs:
            out.append(oscillates_more(fd, figs[2], "PSD “experienced some significant "
                                       "oscillations on TFD and CIFAR-10”", two))
        out.append(lowest_final(fd, "PSD “still managed to achieve a much better "
                                "objective value than all the other algorithms”"))
        if 2 in figs:
            out.append(many_oscillate_more(fd, figs[2], "“Many hand-engineered algorithms "
                                           "also experienced much greater oscillations "
                                           "than previously”"))
        out.append(diverge_quickly(fd, "L2L “diverged fairly quickly” on TFD and CIFAR-10",
                                   "l2l", two))
    if 5 in figs:
        fd = figs[5]
        # Figure 5 doubles the meta-training horizon: the second half lies beyond it
        out.append(continues_beyond(fd, "PSD “behaves reasonably beyond the number of "
                                    "iterations it is trained for”",
                                    fd.setting["horizon"] // 2))
    return out


def compare_verdicts(before: Sequence[ClaimCheck], after: Sequence[ClaimCheck]) -> list[dict]:
    """The verdict of each claim under two sets of runs, paired by claim (in ``after``'s
    order; a claim missing from one side has verdict ``"not checked"`` there).

    Returns rows ``{"claim", "where", "before", "after", "changed"}``, e.g. the cut-budget
    PSD against the final one, or a figure's nine methods against the same panels with
    extra rows.
    """
    old = {c.claim: c for c in before}
    new = {c.claim: c for c in after}
    claims = list(dict.fromkeys([*new, *old]))
    rows = []
    for claim in claims:
        a, b = old.get(claim), new.get(claim)
        va = a.verdict if a is not None else "not checked"
        vb = b.verdict if b is not None else "not checked"
        rows.append({"claim": claim, "where": (b or a).where, "before": va, "after": vb,
                     "changed": va != vb})
    return rows


def comparison_markdown(rows: Sequence[Mapping], before: str = "before",
                        after: str = "after") -> str:
    """One Markdown table of :func:`compare_verdicts`: # | claim | figure | two verdicts."""
    lines = [f"| # | claim | paper figure | {before} | {after} |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, start=1):
        mark = (lambda v: f"**{v}**") if r["changed"] else (lambda v: v)
        lines.append(f"| {i} | {_cell(r['claim'])} | {_cell(r['where'])} | "
                     f"{mark(r['before'])} | {mark(r['after'])} |")
    return "\n".join(lines)


def extra_rows_effect(fd: figures.FigureData, fdx: figures.FigureData,
                      tol: float = REACH_TOL) -> dict:
    """What a figure's extra rows change: ``fd`` holds the paper's nine methods, ``fdx``
    the same panels with extra rows (:func:`l2o.figures.load_figure` with ``extras``).

    Returns ``{"extras": [names], "panels": {dataset: {"psd_rank", "psd_rank_x", "n",
    "n_x", "best", "best_x"}}, "verdicts": compare_verdicts(...), "changed": [claims]}``,
    the verdicts being this figure's own claims (:func:`paper_claims` of one figure).
    """
    extras = [m for m in dict.fromkeys(r.optimizer for d in fdx.datasets
                                       for r in fdx.results[d])
              if all(m != r["optimizer"] for r in fd.tables[fdx.datasets[0]])]
    panels = {}
    for d in fd.datasets:
        panels[d] = {"psd_rank": figures.rank_of(fd.tables[d], "psd"),
                     "psd_rank_x": figures.rank_of(fdx.tables[d], "psd"),
                     "n": len(fd.tables[d]), "n_x": len(fdx.tables[d]),
                     "best": figures.best_method(fd.tables[d]),
                     "best_x": figures.best_method(fdx.tables[d])}
    rows = compare_verdicts(paper_claims({fd.figure: fd}, tol=tol),
                            paper_claims({fdx.figure: fdx}, tol=tol))
    return {"extras": extras, "panels": panels, "verdicts": rows,
            "changed": [r["claim"] for r in rows if r["changed"]]}


def extra_rows_markdown(fd: figures.FigureData, effect: Mapping) -> str:
    """:func:`extra_rows_effect` as a Markdown table per panel: PSD's rank and the best
    method, among the nine and with the extra rows."""
    lines = ["| panel | PSD's rank (nine) | PSD's rank (with extras) | first (nine) "
             "| first (with extras) |", "|---|---|---|---|---|"]
    for d, p in effect["panels"].items():
        lines.append(f"| {fd.names[d]} | {p['psd_rank']} of {p['n']} | {p['psd_rank_x']} of "
                     f"{p['n_x']} | {_label(p['best'])} | {_label(p['best_x'])} |")
    return "\n".join(lines)


def verdict_counts(checks: Sequence[ClaimCheck]) -> dict[str, int]:
    """How many checks have each verdict (all four keys always present)."""
    counts = dict.fromkeys(("reproduced", "partly reproduced", "not reproduced",
                            "not checked"), 0)
    for c in checks:
        counts[c.verdict] += 1
    return counts


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(checks: Sequence[ClaimCheck]) -> str:
    """One Markdown table: # | claim | paper figure | evidence (computed) | verdict."""
    lines = ["| # | claim | paper figure | evidence (computed) | verdict |",
             "|---|---|---|---|---|"]
    for i, c in enumerate(checks, start=1):
        lines.append(f"| {i} | {_cell(c.claim)} | {_cell(c.where)} | {_cell(c.evidence)} "
                     f"| **{c.verdict}** |")
    return "\n".join(lines)


def criteria_markdown(checks: Sequence[ClaimCheck]) -> str:
    """A numbered Markdown list: what counts as holding for each check, and how many
    cases hold."""
    return "\n".join(f"{i}. {_cell(c.test)} ({sum(c.holds)} of {len(c.holds)} cases hold)"
                     for i, c in enumerate(checks, start=1))


# -------------------------------------------------------------------- deviations
@dataclass(frozen=True)
class Setup:
    """What this reproduction used where the paper is silent or differs.

    Attributes:
        data: per dataset of the figures: ``display_name``, ``n_train``, ``n_full``
            (the complete training set's size, or None when unknown) and ``is_subset``.
        figure_horizon: the paper's horizon of Figure 1 (for the epoch counts).
        figure_batch: the paper's minibatch size of Figure 1.
        gps_config: the shipped GPS run's configuration (``results/psd/provenance.json``).
        gps_defaults: :class:`l2o.gps.GPSConfig`'s defaults, as a dict.
        teacher: the tuned momentum the policy started from: ``lr``, ``momentum``.
        comparison: ``results/psd/comparison.json`` (rows on the training objective).
        l2l: L2L's meta-training: ``epochs``, ``horizon``, ``unroll``, ``hidden_size``,
            ``num_layers``, ``best_epoch``.
        hparams: hyperparameters the figure runs used, per baseline.
        tuning_edges: baselines whose tuned value lies at the edge of its grid, with the
            parameter names.
        features: :class:`l2o.features.FeatureConfig` of the policy file, as a dict.
        policy: :class:`l2o.policy.PolicyConfig` of the policy file, as a dict.
        init_std: standard deviation of the initial weights.
        divergence_factor: the runner's divergence threshold factor.
        n_seeds: seeds per curve in this run of the report.
        horizons: the horizon of each figure in this run.
        paper_horizons: the paper's horizon of each figure.
        extension: Figure 5's continuation beyond the paper: ``datasets``, ``horizon``
            (the defaults of its chapter), or None.
        gps_wall_s, l2l_wall_s: wall time of the two meta-training runs, in seconds.
    """

    data: dict
    figure_horizon: int = 400
    figure_batch: int = 64
    gps_config: dict = field(default_factory=dict)
    gps_defaults: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    comparison: dict | None = None
    l2l: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)
    tuning_edges: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    init_std: float = 0.01
    divergence_factor: float = experiments.DIVERGENCE_FACTOR
    n_seeds: int = len(experiments.EVAL_SEEDS)
    horizons: dict = field(default_factory=dict)
    paper_horizons: dict = field(default_factory=dict)
    extension: dict | None = None
    gps_wall_s: float | None = None
    l2l_wall_s: float | None = None


@dataclass(frozen=True)
class Deviation:
    """One row of the deviations table."""

    what: str
    paper: str
    here: str
    effect: str


def collect_setup(figs: Mapping[int, figures.FigureData], psd_dir="results/psd",
                  l2l_dir="results/l2l", tuning_file="results/tuning/chosen.json") -> Setup:
    """Gather a :class:`Setup` from the figures, the result files and the package.

    Relative paths are taken from the repository root. Missing files leave their
    fields empty (the corresponding rows of :func:`deviations` then say so).  Figure
    5's continuation is the package's (:data:`l2o.figures.EXTENSION`, what ``python -m
    l2o.figures --all`` runs and Figure 5's chapter shows by default).
    """
    from l2o import data, gps, problems

    def under_root(p):
        p = Path(p)
        return p if p.is_absolute() else experiments.ROOT / p

    fds = [figs[k] for k in sorted(figs)]
    datasets = list(dict.fromkeys(d for fd in fds for d in fd.datasets))
    info = {}
    for d in datasets:
        fd = next(f for f in fds if d in f.datasets)
        p = data.prepare(d, fd.setting["n_in"])
        full = data.FULL_SIZES.get(p.name, (None,))[0]
        info[d] = dict(display_name=p.display_name, n_train=int(p.x.shape[0]),
                       n_full=full, is_subset=bool(p.is_subset))
    hparams = {}
    for fd in fds:
        for runs in fd.results.values():
            for r in runs:
                hparams.setdefault(r.optimizer, dict(r.hparams))
    prov = record.read_json(under_root(psd_dir) / "provenance.json") or {}
    lprov = record.read_json(under_root(l2l_dir) / "provenance.json") or {}
    chosen = record.read_json(under_root(tuning_file)) or {}
    edges = {k: v.get("at_grid_edge", []) for k, v in chosen.get("details", {}).items()
             if v.get("at_grid_edge")}
    lcfg = lprov.get("config", {})
    l2l = dict(epochs=lprov.get("epochs"), horizon=lcfg.get("horizon"),
               unroll=lcfg.get("unroll"), hidden_size=lcfg.get("hidden_size"),
               num_layers=lcfg.get("num_layers"),
               best_epoch=lprov.get("best", {}).get("epoch"))
    features, policy = {}, {}
    pfile = under_root(psd_dir) / "psd_mnist48.pt"
    if pfile.exists():
        pol, fcfg, _ = gps.load_policy(pfile)
        features, policy = dataclasses.asdict(fcfg), dataclasses.asdict(pol.config)
    extension = dict(datasets=list(figures.EXTENSION["datasets"]),
                     horizon=figures.EXTENSION["horizon"])
    init_std = inspect.signature(problems.MLPProblem).parameters["init_std"].default
    paper = experiments.FIGURES
    return Setup(
        data=info, figure_horizon=paper[1]["horizon"], figure_batch=paper[1]["batch_size"],
        gps_config=prov.get("config", {}),
        gps_defaults=dataclasses.asdict(gps.GPSConfig()), teacher=prov.get("teacher", {}),
        comparison=record.read_json(under_root(psd_dir) / "comparison.json"), l2l=l2l,
        hparams=hparams, tuning_edges=edges, features=features, policy=policy,
        init_std=float(init_std), divergence_factor=experiments.DIVERGENCE_FACTOR,
        n_seeds=len(fds[0].seeds) if fds else 0,
        horizons={k: figs[k].setting["horizon"] for k in figs},
        paper_horizons={k: paper[k]["horizon"] for k in figs}, extension=extension,
        gps_wall_s=prov.get("wall_time_s"), l2l_wall_s=lprov.get("wall_time_s"))


def _hp(hp: Mapping) -> str:
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                     for k, v in hp.items())


def _demo_effect(s: Setup) -> str:
    """How much of chapter 5's recipe the shipped PSD's meta-training uses."""
    if s.features.get("grad_scale") != "rms":
        return "none on the figures, whose PSD uses the paper's features"
    c = s.gps_config
    fixed = c.get("min_step_mult") == c.get("max_step_mult") == 1
    used = ["RMS-scaled gradient features"]
    if s.teacher.get("name") == "adam":
        used.append("Adam as ψ0")
    if fixed:
        used.append("a fixed trust region")
    step = "" if fixed else ", with GPS's reference step-size rule"
    listed = used[0] if len(used) == 1 else ", ".join(used[:-1]) + " and " + used[-1]
    return (f"the figures' PSD is meta-trained at the paper's scale with {listed}{step} "
            "(chapter 6), so its features are not the paper's")


def design_values(s: Setup) -> dict[str, str]:
    """The numbers of the chapter's table of choices that do not depend on the run
    (its prose is the chapter's markdown): the teacher's short name, the initial
    weights' standard deviation, the seeds per curve, the divergence threshold."""
    return {"teacher": short_label(s.teacher.get("name", "momentum")),
            "init_std": f"{s.init_std:g}", "n_seeds": str(s.n_seeds),
            "divergence_factor": f"{s.divergence_factor:g}"}


def deviations(s: Setup) -> list[Deviation]:
    """The rows of the deviations table that follow the run, from a :class:`Setup`.

    Covers the data (faces, CIFAR subsets), the two baselines whose form the paper
    leaves open (CG, L-BFGS) and the tuning, the meta-training budgets of PSD and L2L,
    the design choices whose content is read from the run (D1, D4, D7) and chapter 5's
    recipe, a reduced-scale run of this report, and Figure 5's continuation.  The
    choices that hold whatever the run (D2, D3, D5, D6, D8, D10, D12, the divergence
    rule, the readings of qualitative words) are a table of prose in chapter 12, with
    the numbers of :func:`design_values`.
    """
    rows = []
    epochs = s.figure_horizon * s.figure_batch
    for d, label in ((FACES, "faces"), (CIFAR10, "CIFAR-10"), (CIFAR100, "CIFAR-100")):
        if d not in s.data:
            continue
        info = s.data[d]
        n = info["n_train"]
        if d == FACES:
            if info["display_name"] == "TFD":
                rows.append(Deviation("faces dataset (panel a)", "TFD",
                                      f"TFD, user-supplied ({n:,} training images)",
                                      "none"))
            else:
                rows.append(Deviation(
                    "faces dataset (panel a)",
                    "TFD: grey faces, 7 expressions (licence-restricted)",
                    f"{info['display_name']}: {n:,} training images of the same 7 "
                    "expressions, 48×48 grey, JPEG-decoded, class-balanced",
                    "web photos with label noise: a harder objective with a higher "
                    "optimum than TFD's; every claim about TFD (L2L short of the optimum, "
                    "CG and L2L diverging at minibatch 10, PSD's oscillation) is tested "
                    "on a different objective, so its verdict says nothing definite about "
                    "TFD itself"))
        elif info["is_subset"]:
            full = info["n_full"]
            rows.append(Deviation(
                f"{label} training set", f"complete ({full:,} images)" if full else
                "complete",
                f"class-balanced subset: {n:,} images "
                f"({epochs / n:.2g} epochs in {s.figure_horizon} iterations of "
                f"{s.figure_batch}, against {epochs / full:.2g} on the complete set)"
                if full else
                f"class-balanced subset: {n:,} images",
                "the true objective averages over fewer images, so it can be driven "
                "lower and minibatches repeat sooner; all methods see the same data, so "
                "the ranking should change little"))
    cg, lb = s.hparams.get("cg"), s.hparams.get("lbfgs")
    rows_c = {r["optimizer"]: r for r in (s.comparison or {}).get("rows", [])}
    if cg is not None:
        extra = ""
        if "cg" in rows_c:
            best = min(rows_c.values(), key=lambda r: r["rank"])
            extra = (f"; on the training objective it ends at "
                     f"{_num(rows_c['cg']['final_mean'])} against "
                     f"{_num(best['final_mean'])} for the best method")
        rows.append(Deviation(
            "conjugate gradient", "variant not stated",
            f"Fletcher–Reeves with a fixed step, no line search ({_hp(cg)}, tuned on "
            f"MNIST-48){extra}; beside it, as an extra row of every figure chapter, "
            "Polak–Ribière+ CG with restarts and a strong-Wolfe line search on the "
            "minibatch, tuned the same way",
            "a tuned fixed step must be tiny to keep Fletcher–Reeves from blowing up "
            "under minibatch noise, so CG barely moves and cannot diverge the way the "
            "paper's did: the CG claims test another algorithm; the figure chapters say "
            "whether the line-search variant changes any verdict"))
    if lb is not None:
        extra = ""
        if "lbfgs" in rows_c:
            r = rows_c["lbfgs"]
            extra = (f"; {r['n_diverged']}/{r['n_seeds']} seeds diverge on the training "
                     "objective")
        rows.append(Deviation(
            "L-BFGS", "variant not stated",
            f"two-loop recursion, fixed step, no line search ({_hp(lb)}){extra}; beside "
            "it, as an extra row, L-BFGS with a strong-Wolfe line search on the "
            "minibatch (torch.optim.LBFGS), tuned the same way",
            "a diverged seed ranks it last wherever it happens; the line-search extra "
            "row shows how a user's L-BFGS fares on the same panels"))
    if s.hparams:
        edge = "; ".join(f"{_label(k)}'s tuned {', '.join(v)} at the edge of its grid"
                         for k, v in s.tuning_edges.items())
        rows.append(Deviation(
            "baseline tuning", "“tuned on the training objective”, grids not stated",
            "grid search by mean meta-loss on MNIST-48 (minibatch 64, 400 iterations, "
            "tuning seeds disjoint from the figure seeds), then frozen for every figure"
            + (f"; {edge}" if edge else ""),
            "as the paper describes; how strong each baseline is depends on our grids. "
            "Figure 1's chapter also tunes them on each of its datasets and reports "
            "whether PSD's rank moves"))
    if s.gps_config and s.gps_defaults:
        changed = [k for k, v in s.gps_config.items()
                   if k in s.gps_defaults and s.gps_defaults[k] != v]
        c, dflt = s.gps_config, s.gps_defaults
        share = (c["num_iterations"] * c["num_samples"]
                 / (dflt["num_iterations"] * dflt["num_samples"]))
        rank = ""
        if "psd" in rows_c:
            rank = (f"; the result ranks {rows_c['psd']['rank']} of {len(rows_c)} on its "
                    "own training objective")
        wall = f", {s.gps_wall_s / 60:.0f} min of wall time on one core" if s.gps_wall_s else ""
        if share < 1:
            rows.append(Deviation(
                "meta-training budget of PSD (GPS)", "not stated",
                "cut to fit the CPU budget: " + ", ".join(
                    f"{k} {c[k]} (default {dflt[k]})" for k in changed)
                + f"; {share:.0%} of the default number of ψ trajectories" + wall + rank,
                "the main cause of the PSD verdicts: the policy is a damped copy of its "
                "teacher rather than a converged meta-training, so every claim about PSD "
                "is tested on a weaker optimizer than the paper's"))
        else:
            meta = (s.comparison or {}).get("psd_meta") or {}
            chosen = (f"; π of iteration {meta['iteration']} chosen on validation seeds"
                      if meta.get("iteration") is not None else "")
            rows.append(Deviation(
                "meta-training budget of PSD (GPS)", "not stated",
                f"the package's defaults, {c['num_iterations']} iterations of "
                f"{c['num_samples']} ψ trajectories" + wall + chosen + rank,
                "the paper's budget (and hardware) is unknown, so a longer meta-training "
                "might rank PSD higher; claims that PSD beats every method fail first "
                "where it is not yet the best on its own training objective"))
    if s.l2l.get("epochs"):
        L = s.l2l
        rows.append(Deviation(
            "meta-training budget of L2L",
            "as Andrychowicz et al. (their code: 10,000 epochs of 100-step trajectories)",
            f"{L['epochs']} epochs of one {L['horizon']}-step trajectory in unrolls of "
            f"{L['unroll']}, {L['num_layers']}-layer LSTM of {L['hidden_size']} cells; "
            f"best checkpoint at epoch {L['best_epoch']}"
            + (f"; {s.l2l_wall_s / 3600:.1f} h of wall time" if s.l2l_wall_s else ""),
            "L2L may be under-trained (its best checkpoint comes late), which would "
            "weaken it on every panel and make its divergence claims easier to "
            "reproduce"))
    f, p = s.features, s.policy
    if f:
        dX = 1 + f["history"] + f["n_grad_terms"] + f["history"]
        rows.append(Deviation(
            "D1: per-coordinate state Φ",
            "gradient family indexed to 25, the others to 24; where the bars go is "
            "ambiguous",
            f"{f['n_grad_terms']} gradient terms, objective form "
            f"'{f['objective_form']}', x_j included: {dX} state features per coordinate",
            "changes only ψ's state during meta-training; the policy used in the "
            "figures reads the three observation features Ψ, which are unambiguous"))
    if p:
        how = ("one shared LSTM with a group code" if p["share_across_groups"]
               else "a separate LSTM per coordinate group")
        rows.append(Deviation(
            "D4: parameter sharing", "shared within a group",
            f"{how} ({p['hidden_size']} cells), groups matched by role (hidden or output "
            "layer, weight or bias) across architectures",
            "lets the MNIST-48 policy run on the 100-200 nets and on 7 or 100 outputs; "
            "a shared LSTM might transfer differently"))
    rows.append(Deviation(
        "learning demonstration (chapter 5)", "not part of the paper",
        "on a small objective (MNIST-8, 8-8-10 net, T = 100) GPS beats its teacher, tuned "
        "Adam, only with three changes: gradient features divided by a running RMS of "
        "each coordinate's gradient instead of |ḡ| + 1, Adam as ψ0, and a fixed trust "
        "region instead of GPS's step-size rule; π is chosen on validation seeds",
        _demo_effect(s)))
    if s.teacher:
        t = {k: v for k, v in s.teacher.items() if k != "name"}
        name = _label(s.teacher.get("name", "momentum"))
        rows.append(Deviation(
            "D7: initial policy ψ0", "not stated (the 2016 paper imitated tuned momentum)",
            f"{name} tuned on MNIST-48 ({_hp(t)}), fitted by least squares per time "
            f"step and group; π pre-trained on it for {s.gps_config.get('pretrain_steps')} "
            "Adam steps per group",
            f"PSD starts as {name}; with few GPS iterations it stays close to it"))
    short = {k: h for k, h in s.horizons.items() if h != s.paper_horizons.get(k, h)}
    if short or s.n_seeds < len(experiments.EVAL_SEEDS):
        rows.append(Deviation(
            "scale of this run", f"{len(experiments.EVAL_SEEDS)} seeds (ours), the "
            "figures' horizons",
            f"{s.n_seeds} seeds; horizons "
            + ", ".join(f"Fig. {k}: {h}" for k, h in sorted(s.horizons.items())),
            "a reduced-scale run checks that the report computes; its verdicts mean "
            "nothing"))
    if s.extension:
        e = s.extension
        names = ", ".join(s.data.get(d, {}).get("display_name", d) for d in e["datasets"])
        where = ("on every panel" if set(e["datasets"]) >= set(experiments.FIGURE_DATASETS)
                 else f"on {names} only (CPU budget)")
        rows.append(Deviation(
            "Figure 5 beyond the paper", "800 iterations",
            f"also continued to {e['horizon']} iterations, {where}",
            "none on the paper's claim, which is checked on the 800-iteration runs of "
            "all panels"))
    return rows


def deviations_markdown(rows: Sequence[Deviation]) -> str:
    """One Markdown table: deviation | paper | this reproduction | likely effect."""
    lines = ["| deviation | paper | this reproduction | likely effect |",
             "|---|---|---|---|"]
    lines += [f"| {_cell(r.what)} | {_cell(r.paper)} | {_cell(r.here)} | {_cell(r.effect)} |"
              for r in rows]
    return "\n".join(lines)
