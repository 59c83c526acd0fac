"""The claim checks of the reproduction report, on small synthetic figures."""

import math

import numpy as np
import pytest

from l2o import experiments, figures, report
from l2o.experiments import RunResult

T = 20
t = np.arange(T + 1, dtype=np.float64)


def _run(optimizer, curve, seed, dataset):
    curve = np.asarray(curve, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(curve))
    return RunResult(true_loss=curve, minibatch_loss=curve[:-1].copy(), optimizer=optimizer,
                     hparams={"lr": 0.1}, seed=seed, horizon=curve.size - 1, wall_time=0.0,
                     problem={"name": dataset, "architecture": "1-1-1", "batch_size": 1},
                     diverged=bool(bad.size), diverged_at=int(bad[0]) if bad.size else None)


def _fd(curves, figure=1):
    """FigureData from ``{dataset: {method: [curve of seed 0, seed 1, ...]}}``."""
    results = {d: [_run(m, c, s, d) for m, cs in per.items() for s, c in enumerate(cs)]
               for d, per in curves.items()}
    tables = {d: experiments.summary_table(r) for d, r in results.items()}
    first = next(iter(next(iter(curves.values())).values()))
    setting = dict(experiments.FIGURES[figure], horizon=len(first[0]) - 1)
    names = {"faces": "FER2013 (TFD stand-in)", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
    return figures.FigureData(figure, setting, list(range(len(first))), list(curves),
                              {d: names.get(d, d) for d in curves}, results, tables)


def _descent(rate, start=2.0, floor=0.0):
    """A smooth descent from ``start`` towards ``floor``."""
    return floor + (start - floor) * np.exp(-rate * t)


def _panel(**methods):
    """Each method: one curve used for two seeds (a (2, T+1) block)."""
    return {m: [c, c] for m, c in methods.items()}


ZIGZAG = np.where(t % 2 == 0, 0.0, 1.0)  # jumps by 1 every other step


# ------------------------------------------------------------------ basic pieces
def test_verdict_of_a_check():
    def check(*holds):
        return report.ClaimCheck("c", "w", "PSD", "e", tuple(holds))

    assert check(True, True).verdict == "reproduced"
    assert check(True, False).verdict == "partly reproduced"
    assert check(False).verdict == "not reproduced"
    assert check().verdict == "not checked"
    counts = report.verdict_counts([check(True), check(False), check(), check(True)])
    assert counts == {"reproduced": 2, "partly reproduced": 0, "not reproduced": 1,
                      "not checked": 1}


def test_shortfall_is_the_missed_part_of_the_best_descent():
    med = {"a": np.array([2.0, 1.0, 0.5]), "b": np.array([2.0, 1.1, 1.4]),
           "c": np.array([2.0, np.inf, np.inf])}
    assert report.shortfall(med, "a") == 0.0
    assert report.shortfall(med, "b") == pytest.approx((1.1 - 0.5) / 1.5)
    assert report.shortfall(med, "b", lowest=False) == pytest.approx((1.4 - 0.5) / 1.5)
    assert report.shortfall(med, "c") == pytest.approx(1.0)       # never below its start
    assert report.shortfall(med, "c", lowest=False) == math.inf
    assert math.isnan(report.shortfall({"a": np.array([1.0, 1.0])}, "a"))


# ---------------------------------------------------------------- figure 1 claims
def test_first_everywhere_counts_panels():
    fd = _fd({"faces": _panel(psd=_descent(0.5), adam=_descent(0.2)),
              "cifar10": _panel(psd=_descent(0.1), adam=_descent(0.3))})
    c = report.first_everywhere(fd, "PSD fastest")
    assert c.holds == (True, False) and c.verdict == "partly reproduced"
    assert "ranks 1 / 2 of 2" in c.evidence and "FER2013 / CIFAR-10" in c.evidence
    assert c.where == "Fig. 1 (a, b)"


def test_ranking_varies():
    same = _panel(sgd=_descent(0.1), adam=_descent(0.3), psd=_descent(0.5))
    swap = _panel(sgd=_descent(0.3), adam=_descent(0.1), psd=_descent(0.5))
    assert report.ranking_varies(_fd({"faces": same, "cifar10": same,
                                      "cifar100": same}), "c").verdict == "not reproduced"
    c = report.ranking_varies(_fd({"faces": same, "cifar10": swap, "cifar100": same}), "c")
    assert c.holds == (True, False) and c.evidence.startswith("2 distinct orders")
    assert report.ranking_varies(_fd({"faces": same}), "c").verdict == "not checked"


def test_ranks_in_better_half_and_misses_optimum():
    panel = _panel(psd=_descent(0.5), l2l=_descent(0.3, floor=0.5), adam=_descent(0.1))
    fd = _fd({"faces": panel, "cifar10": panel})
    c = report.ranks_in_better_half(fd, "L2L well", "l2l", ("cifar10", "cifar100"))
    assert c.holds == (True,) and c.where == "Fig. 1 (b)"     # rank 2 of 3
    c = report.misses_optimum(fd, "L2L short", "l2l", ("faces",))
    gap = report.shortfall(figures.median_curves(fd)["faces"], "l2l")
    assert gap > 0.2 and c.holds == (True,)
    assert report.misses_optimum(fd, "PSD short", "psd", ("faces",)).holds == (False,)


# ---------------------------------------------------------------- figure 2 claims
def test_oscillates_early_against_the_hand_engineered_median():
    shaky = _descent(0.3) + ZIGZAG * (t <= 4)
    fd = _fd({"faces": _panel(psd=shaky, sgd=_descent(0.1), adam=_descent(0.2)),
              "cifar10": _panel(psd=_descent(0.3), sgd=_descent(0.1) + ZIGZAG,
                                adam=_descent(0.2) + ZIGZAG)}, figure=2)
    c = report.oscillates_early(fd, "bit of oscillation", ("faces", "cifar10"))
    assert c.holds == (True, False)
    assert "iterations 0–2" in c.evidence       # max(2, 10% of 20)


def test_leads_at_end():
    late = np.where(t < 10, 2.0, _descent(0.5, floor=-1.0))
    fd = _fd({"faces": _panel(psd=late, adam=_descent(0.2)),
              "cifar10": _panel(psd=_descent(0.05), adam=_descent(0.2))}, figure=2)
    c = report.leads_at_end(fd, "overtook", ("faces", "cifar10"))
    lead = figures.lead_from(figures.median_curves(fd)["faces"], "psd")
    assert c.holds == (True, False) and f"{lead} / never" in c.evidence


def test_drifts_upward():
    rising = np.minimum(_descent(0.5), 2.0) + 0.01 * np.maximum(t - 10, 0)
    diverged = np.where(t < 15, _descent(0.3), np.nan)
    fd = _fd({"faces": _panel(l2l=rising, adam=_descent(0.2)),
              "cifar10": {"l2l": [_descent(0.3), diverged], "adam": [_descent(0.2)] * 2},
              "cifar100": _panel(l2l=_descent(0.3), adam=_descent(0.2))}, figure=2)
    c = report.drifts_upward(fd, "slowly diverged", "l2l", ("faces", "cifar10", "cifar100"))
    assert c.holds == (True, True, False)
    assert "0/2 / 1/2 / 0/2" in c.evidence


# ---------------------------------------------------------------- figure 3 claims
def test_no_worse_with_noise():
    base = _fd({"faces": _panel(psd=_descent(0.1), adam=_descent(0.3)),
                "cifar10": _panel(psd=_descent(0.5), adam=_descent(0.3))}, figure=1)
    noisy = _fd({"faces": _panel(psd=_descent(0.5), adam=_descent(0.3)),
                 "cifar10": _panel(psd=_descent(0.1), adam=_descent(0.3))}, figure=3)
    c = report.no_worse_with_noise(noisy, base, "fairly well")
    assert c.holds == (True, False)
    assert "minibatch 64 → 10: 2 → 1 / 1 → 2" in c.evidence


def test_diverge_and_progress_slowly():
    up = np.where(t < 12, _descent(0.3), np.nan)          # both seeds diverge
    slow = 2.0 - 0.02 * t                                  # descending, far from optimum
    fd = _fd({"faces": _panel(cg=slow, l2l=up, psd=_descent(0.5)),
              "cifar10": _panel(cg=slow, l2l=_descent(0.6), psd=_descent(0.5))}, figure=3)
    c = report.diverge(fd, "both diverged", ("cg", "l2l"), "faces")
    assert c.holds == (False, True) and "L2L 2/2 seeds diverged" in c.evidence
    assert c.where == "Fig. 3 (a)"
    c = report.progress_slowly(fd, "both slowly", ("cg", "l2l"), "cifar10")
    assert c.holds == (True, False)                        # L2L reaches the optimum
    # descending at the end, but from above its start: no progress towards the optimum
    relapse = np.where(t < 10, 2.0 + 0.2 * t, 4.0 - 0.1 * (t - 10))
    fd = _fd({"cifar10": _panel(cg=relapse, psd=_descent(0.5))}, figure=3)
    assert report.progress_slowly(fd, "x", ("cg",), "cifar10").holds == (False,)
    assert report.diverge(fd, "x", ("cg",), "cifar100").verdict == "not checked"
    # hovering just above the start is not divergence; a clear rise or one diverged seed is
    hover = np.full_like(t, 2.0) + 0.01 * (t > 0)
    rise = 2.0 + 0.02 * t
    fd = _fd({"faces": _panel(cg=hover, l2l=rise, psd=_descent(0.5))}, figure=3)
    assert report.diverge(fd, "x", ("cg", "l2l"), "faces").holds == (False, True)
    one = [_descent(0.3), np.where(t < 12, _descent(0.3), np.nan)]  # seed 1 diverges
    fd = _fd({"faces": {"cg": one, "psd": [_descent(0.5)] * 2}}, figure=3)
    assert report.diverge(fd, "x", ("cg",), "faces").holds == (True,)


# ---------------------------------------------------------------- figure 4 claims
def test_oscillation_comparisons_between_minibatch_sizes():
    calm = _panel(psd=_descent(0.3), sgd=_descent(0.1), adam=_descent(0.2),
                  cg=_descent(0.05))
    rough = _panel(psd=_descent(0.3) + ZIGZAG, sgd=_descent(0.1) + ZIGZAG,
                   adam=_descent(0.2) + ZIGZAG, cg=_descent(0.05))
    base = _fd({"faces": calm, "cifar10": calm}, figure=2)
    noisy = _fd({"faces": rough, "cifar10": calm}, figure=4)
    c = report.oscillates_more(noisy, base, "significant oscillations", ("faces", "cifar10"))
    assert c.holds == (True, False) and "minibatch 64 → 10" in c.evidence
    c = report.many_oscillate_more(noisy, base, "many oscillate")
    assert c.holds == (True, False) and c.evidence.startswith("2 / 0 of 3")


def test_lowest_final_and_diverge_quickly():
    gone = np.where(t < 5, 2.0, np.nan)
    fd = _fd({"faces": {"psd": [_descent(0.5)] * 3, "adam": [_descent(0.2)] * 3,
                        "l2l": [gone, gone, _descent(0.1)]},
              "cifar10": {"psd": [_descent(0.1)] * 3, "adam": [_descent(0.2)] * 3,
                          "l2l": [gone, _descent(0.1), _descent(0.1)]}}, figure=4)
    c = report.lowest_final(fd, "much better")
    assert c.holds == (True, False)
    c = report.diverge_quickly(fd, "fairly quickly", "l2l", ("faces", "cifar10"))
    assert c.holds == (True, False) and "2/3 / 1/3" in c.evidence
    assert "median at 5" in c.evidence


# ---------------------------------------------------------------- figure 5 claim
def test_continues_beyond():
    rebound = np.minimum(_descent(0.5), 5.0) + 0.05 * np.maximum(t - 10, 0)
    fd = _fd({"faces": _panel(psd=_descent(0.2), adam=_descent(0.1)),
              "cifar10": _panel(psd=rebound, adam=_descent(0.1)),
              "cifar100": {"psd": [_descent(0.2), np.where(t < 15, 1.0, np.nan)],
                           "adam": [_descent(0.1)] * 2}}, figure=5)
    c = report.continues_beyond(fd, "reasonably", 10)
    assert c.holds == (True, False, False)
    assert "from iteration 10 to 20" in c.evidence


# ---------------------------------------------------------- training objective
def _comparison(psd_ml):
    rows = [dict(optimizer=m, meta_loss_mean=ml, final_mean=ml / 100, n_diverged=0,
                 n_seeds=5, problem="MNIST", architecture="48-48-10", batch_size=64)
            for m, ml in (("adagrad", 180.0), ("momentum", 250.0), ("psd", psd_ml),
                          ("cg", 900.0))]
    for rank, r in enumerate(sorted(rows, key=lambda r: r["meta_loss_mean"]), start=1):
        r["rank"] = rank
    return {"rows": rows}


def test_training_objective():
    assert report.training_objective(_comparison(270.0)).holds == (False, False)
    assert report.training_objective(_comparison(200.0)).verdict == "partly reproduced"
    c = report.training_objective(_comparison(150.0))
    assert c.verdict == "reproduced" and "rank 1 of 4" in c.evidence
    assert "MNIST 48-48-10" in c.where


# ------------------------------------------------------------------ all together
def _all_figures():
    panel = _panel(psd=_descent(0.5), l2l=_descent(0.3), cg=_descent(0.02),
                   sgd=_descent(0.1), adam=_descent(0.2))
    data = {d: panel for d in experiments.FIGURE_DATASETS}
    return {k: _fd(data, figure=k) for k in experiments.FIGURES}


def test_paper_claims_covers_what_the_figures_allow():
    figs = _all_figures()
    checks = report.paper_claims(figs, _comparison(150.0))
    assert len(checks) == 1 + 4 + 4 + 4 + 4 + 1
    assert checks[0].where.startswith("training objective")
    assert [c.where[:6] for c in checks[1:]] == (["Fig. 1"] * 4 + ["Fig. 2"] * 4
                                                 + ["Fig. 3"] * 4 + ["Fig. 4"] * 4
                                                 + ["Fig. 5"])
    # claims comparing two figures need both
    assert len(report.paper_claims({3: figs[3]})) == 3
    assert len(report.paper_claims({4: figs[4]})) == 2
    assert all(c.verdict != "not checked" for c in checks)


def test_markdown_tables():
    checks = report.paper_claims(_all_figures())
    md = report.claims_markdown(checks).splitlines()
    assert md[0].startswith("| # | claim | paper figure | evidence") and len(md) == 2 + len(checks)
    assert all(line.count(" | ") == 4 for line in md[2:])
    odd = report.ClaimCheck("a | b", "w", "PSD", "e", (True,), "t")
    assert "a \\| b" in report.claims_markdown([odd])
    assert report.criteria_markdown([odd]) == "1. t (1 of 1 cases hold)"


# ------------------------------------------------------------------- deviations
def _setup(**kw):
    data = {"faces": dict(display_name="FER2013 (TFD stand-in)", n_train=3303, n_full=None,
                          is_subset=True),
            "cifar10": dict(display_name="CIFAR-10", n_train=20000, n_full=50000,
                            is_subset=True),
            "cifar100": dict(display_name="CIFAR-100", n_train=50000, n_full=50000,
                             is_subset=False)}
    base = dict(data=data, gps_config={"num_iterations": 5, "num_samples": 10, "seed": 0},
                gps_defaults={"num_iterations": 15, "num_samples": 20, "seed": 0},
                hparams={"cg": {"lr": 1e-4}, "lbfgs": {"lr": 1.0, "history_size": 10}},
                horizons={1: 400, 5: 800}, paper_horizons={1: 400, 5: 800})
    base.update(kw)
    return report.Setup(**base)


def test_deviations_rows():
    rows = {r.what: r for r in report.deviations(_setup())}
    assert "TFD itself" in rows["faces dataset (panel a)"].effect
    assert "20,000 images (1.3 epochs" in rows["CIFAR-10 training set"].here
    assert "CIFAR-100 training set" not in rows                       # complete: no row
    gps = rows["meta-training budget of PSD (GPS)"].here
    assert "num_iterations 5 (default 15)" in gps and "seed" not in gps
    assert "17% of the default" in gps
    assert "lr = 0.0001" in rows["conjugate gradient"].here
    assert "scale of this run" not in rows and "Figure 5 beyond the paper" not in rows
    md = report.deviations_markdown(list(rows.values())).splitlines()
    assert md[0].startswith("| deviation | paper |") and len(md) == 2 + len(rows)


def test_deviations_follow_the_setup():
    tfd = _setup()
    tfd.data["faces"].update(display_name="TFD", is_subset=False)
    assert {r.what: r for r in report.deviations(tfd)}["faces dataset (panel a)"].effect \
        == "none"
    small = {r.what: r for r in report.deviations(_setup(
        n_seeds=2, horizons={1: 20, 5: 20},
        extension={"datasets": ["cifar10"], "horizon": 2000}))}
    assert "Fig. 1: 20, Fig. 5: 20" in small["scale of this run"].here
    assert "2000 iterations, on CIFAR-10 only" in small["Figure 5 beyond the paper"].here


def test_collect_setup_reads_the_result_files(data_dir):
    fd = _fd({"faces": _panel(psd=_descent(0.5), cg=_descent(0.02))})
    s = report.collect_setup({1: fd})
    assert s.data["faces"]["n_train"] > 0 and s.data["faces"]["display_name"]
    assert s.hparams["cg"] == {"lr": 0.1} and s.horizons == {1: T}
    assert s.n_seeds == 2 and s.paper_horizons == {1: 400}
    rows = report.deviations(s)
    assert any(r.what == "scale of this run" for r in rows)


def test_compare_verdicts_pairs_claims_and_marks_changes():
    from l2o.report import ClaimCheck, compare_verdicts, comparison_markdown

    a = [ClaimCheck("c1", "Fig. 1", "PSD", "", (False, False)),
         ClaimCheck("c2", "Fig. 1", "PSD", "", (True,))]
    b = [ClaimCheck("c1", "Fig. 1", "PSD", "", (True, False)),
         ClaimCheck("c2", "Fig. 1", "PSD", "", (True,)),
         ClaimCheck("c3", "Fig. 2", "L2L", "", ())]
    rows = compare_verdicts(a, b)
    assert [(r["claim"], r["before"], r["after"], r["changed"]) for r in rows] == [
        ("c1", "not reproduced", "partly reproduced", True),
        ("c2", "reproduced", "reproduced", False),
        ("c3", "not checked", "not checked", False)]
    md = comparison_markdown(rows, "cut budget", "final")
    assert "| cut budget | final |" in md and "**partly reproduced**" in md
    assert md.count("\n") == 4


def test_teacher_name_reads_the_provenance():
    from l2o.report import teacher_name

    assert teacher_name({"teacher": {"name": "adam", "lr": 0.01}}) == "adam"
    assert teacher_name({"teacher": {"lr": 0.3, "momentum": 0.5}}) == "momentum"
    assert teacher_name({}) == "momentum"


def test_extra_rows_effect_reports_rank_and_verdict_changes():
    base = {"psd": [_descent(0.5)] * 2, "l2l": [_descent(0.2)] * 2,
            "adam": [_descent(0.3)] * 2, "sgd": [_descent(0.1)] * 2}
    panels = {d: dict(base) for d in ("faces", "cifar10", "cifar100")}
    fd = _fd(panels)
    # an extra row faster than PSD on one panel
    with_extra = {d: dict(p, pi_es=[_descent(0.9 if d == "cifar10" else 0.05)] * 2)
                  for d, p in panels.items()}
    fdx = _fd(with_extra)
    eff = report.extra_rows_effect(fd, fdx)
    assert eff["extras"] == ["pi_es"]
    assert eff["panels"]["cifar10"] == {"psd_rank": 1, "psd_rank_x": 2, "n": 4, "n_x": 5,
                                        "best": "psd", "best_x": "pi_es"}
    assert eff["panels"]["faces"]["psd_rank_x"] == 1
    fastest = [r for r in eff["verdicts"] if "fastest" in r["claim"]][0]
    assert (fastest["before"], fastest["after"]) == ("reproduced", "partly reproduced")
    assert fastest["claim"] in eff["changed"]
    md = report.extra_rows_markdown(fd, eff)
    assert "| CIFAR-10 | 1 of 4 | 2 of 5 | PSD | π (ES) |" in md


def test_the_choices_that_hold_whatever_the_run_are_the_chapters_prose():
    """D2, D3, D5, D6, D8, D10, D12, the divergence rule and the qualitative words are
    a markdown table in chapter 12; the code supplies only their numbers."""
    import json

    s = _setup(teacher={"name": "adam", "lr": 0.01}, init_std=0.1, n_seeds=5,
               divergence_factor=1e3)
    values = report.design_values(s)
    assert values == {"teacher": "Adam", "init_std": "0.1", "n_seeds": "5",
                      "divergence_factor": "1000"}
    whats = {r.what for r in report.deviations(s)}
    static = ("D2:", "D3:", "D5:", "D6:", "D8:", "D10:", "D12:", "divergence",
              "qualitative words")
    assert not [w for w in whats if w.startswith(static)]
    nb = json.loads((experiments.ROOT / "book" / "12_report.ipynb").read_text())
    md = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for what in static:
        assert f"| {what}" in md, what
    for name in values:                      # every number has its place in the prose
        assert f"{{glue:text}}`rep_design_{name}`" in md, name


def test_figure5_chapter_continues_what_the_package_runs():
    """The report takes Figure 5's continuation from l2o.figures.EXTENSION (it no longer
    reads a notebook); the chapter's defaults must show the same runs."""
    from l2o import book

    defaults = book.notebook_defaults(experiments.ROOT / "book" / "11_figure5.ipynb")
    assert defaults["extension_horizon"] == figures.EXTENSION["horizon"]
    assert list(defaults["extension_datasets"]) == list(figures.EXTENSION["datasets"])
