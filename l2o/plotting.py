"""One figure style for the whole book: colours, labels, loss curves and the 3-panel layout.

Every figure of the book goes through this module so that a method has the same colour
and label in every chapter (:data:`METHOD_STYLE`), every figure has the same fonts and
sizes (:func:`use_style`), and divergence is drawn the same way everywhere
(:func:`plot_curves`).

Curves
    A *curve* is the true objective ``f(x_t)`` of one run at the plotted steps. The curves
    of one method are given as an array ``(n_seeds, n_steps)`` (one row per seed), as a
    single ``(n_steps,)`` curve, or as a sequence of run results that have a
    ``true_loss`` attribute (for example :class:`l2o.experiments.RunResult`; their
    ``evaluated_steps`` are used when present). A run that diverged is NaN or infinite
    from its divergence on, as :func:`l2o.experiments.train` records it.

Divergence
    Seeds are summarised by their median and a quantile band (default: interquartile).
    A diverged seed counts as ``+inf`` from its divergence on, so the median diverges
    once more than half of the seeds have. The median line then rises to the top of the
    axes and stops there with an ``x`` in the method's colour; the legend explains the
    ``x`` as "(diverged)". Finite values above the axis are clipped by the axes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "METHOD_STYLE",
    "METHOD_ORDER",
    "PANEL_TITLES",
    "XLABEL",
    "YLABEL",
    "CurveSummary",
    "use_style",
    "method_style",
    "summarize_curves",
    "plot_curves",
    "figure_panels",
]

#: Colour, label and line of every method, fixed across all figures. The learned
#: optimizers are drawn solid and on top, Predicted Step Descent thickest.
METHOD_STYLE: dict[str, dict[str, Any]] = {
    "sgd": dict(label="SGD", color="#1f77b4", linestyle="-", linewidth=1.4, zorder=2),
    "momentum": dict(label="Momentum", color="#17becf", linestyle="-", linewidth=1.4,
                     zorder=2),
    "cg": dict(label="Conjugate gradient", color="#8c564b", linestyle="--", linewidth=1.4,
               zorder=2),
    "lbfgs": dict(label="L-BFGS", color="#9467bd", linestyle="--", linewidth=1.4,
                  zorder=2),
    "adam": dict(label="Adam", color="#ff7f0e", linestyle="-", linewidth=1.4, zorder=2),
    "adagrad": dict(label="AdaGrad", color="#2ca02c", linestyle="-.", linewidth=1.4,
                    zorder=2),
    "rmsprop": dict(label="RMSprop", color="#e377c2", linestyle="-.", linewidth=1.4,
                    zorder=2),
    # Beyond the paper: the line-search variants, dotted, in their fixed-step
    # counterparts' hue family.
    "lbfgs_wolfe": dict(label="L-BFGS, strong Wolfe", color="#4b2a7b", linestyle=":",
                        linewidth=1.6, zorder=2),
    "cg_pr_wolfe": dict(label="CG (PR+), strong Wolfe", color="#bcbd22", linestyle=":",
                        linewidth=1.6, zorder=2),
    "l2l": dict(label="L2L (Andrychowicz et al.)", color="#7f7f7f", linestyle="-",
                linewidth=1.8, zorder=3),
    "psd": dict(label="Predicted Step Descent", color="#d62728", linestyle="-",
                linewidth=2.2, zorder=4),
}

#: Legend order: hand-engineered methods as in the paper, the line-search extras, then
#: the learned ones.
METHOD_ORDER: tuple[str, ...] = tuple(METHOD_STYLE)

#: Panel titles of the paper's 3-panel figures, by dataset key.
PANEL_TITLES: dict[str, str] = {
    "tfd": "TFD",
    "faces": "faces",
    "fer2013": "FER2013 (TFD stand-in)",
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}

XLABEL = "iteration"
YLABEL = "true objective $f(x)$"

#: Legend entry of the divergence marker.
DIVERGED_LABEL = "(diverged)"

# Values at least this large stand for +inf inside the quantile computation.
_INF_SENTINEL = 1e300

_RC = {
    # PNG output, mathtext (never LaTeX), sizes readable at the book's column width.
    "text.usetex": False,
    "mathtext.fontset": "dejavusans",
    "font.size": 11.0,
    "axes.titlesize": 12.0,
    "axes.labelsize": 11.0,
    "xtick.labelsize": 10.0,
    "ytick.labelsize": 10.0,
    "legend.fontsize": 9.5,
    "legend.frameon": False,
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.format": "png",
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 6.0,
    "image.cmap": "viridis",
    "svg.hashsalt": "l2o",
}


def use_style() -> None:
    """Set the book's matplotlib style; call once at the top of a chapter.

    Sets PNG output for inline figures (when running inside IPython), mathtext instead
    of LaTeX, and the font and figure sizes of every figure in the book.
    """
    import matplotlib as mpl

    mpl.rcParams.update(_RC)
    try:  # inline figures as PNG (not SVG/retina) so that every figure is the same kind
        from IPython import get_ipython

        if get_ipython() is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - IPython is part of the pinned environment
        pass


def method_style(method: str) -> dict[str, Any]:
    """The fixed line style of ``method`` (a key of :data:`METHOD_STYLE`).

    Raises:
        KeyError: for a method without a fixed style, naming the known ones.
    """
    try:
        return dict(METHOD_STYLE[method])
    except KeyError:
        raise KeyError(f"No style for method {method!r}; known methods: "
                       f"{', '.join(METHOD_STYLE)}") from None


@dataclass(frozen=True)
class CurveSummary:
    """Median and band over seeds of one method's curves.

    Attributes:
        steps: ``(n_steps,)`` iteration of each column.
        median: ``(n_steps,)`` median over seeds; ``+inf`` once more than half of
            the seeds have diverged.
        lower: ``(n_steps,)`` lower quantile of the band (``+inf`` when it diverged).
        upper: ``(n_steps,)`` upper quantile of the band (``+inf`` when it diverged).
        diverged_at: index into ``steps`` of the first infinite median, or None.
        n_seeds: number of seeds.
        n_diverged: number of seeds that diverged at some step.
    """

    steps: np.ndarray
    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    diverged_at: int | None
    n_seeds: int
    n_diverged: int


def _as_array(curves: Any, steps: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Curves of one method as ``(n_seeds, n_steps)`` float64 and the matching steps."""
    if isinstance(curves, (list, tuple)) and curves and hasattr(curves[0], "true_loss"):
        rows, run_steps = [], None
        for run in curves:
            loss = np.asarray(run.true_loss, dtype=np.float64)
            idx = getattr(run, "evaluated_steps", None)
            if idx is not None:
                idx = np.asarray(idx)
                loss = loss[idx]
                run_steps = idx if run_steps is None else run_steps
            rows.append(loss)
        array = np.vstack(rows)
        if steps is None and run_steps is not None:
            steps = run_steps
    else:
        array = np.asarray(curves, dtype=np.float64)
        if array.ndim == 1:
            array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"curves must be (n_seeds, n_steps), got shape {array.shape}")
    steps = np.arange(array.shape[1]) if steps is None else np.asarray(steps)
    if steps.shape != (array.shape[1],):
        raise ValueError(f"steps has shape {steps.shape}, curves have {array.shape[1]} "
                         "columns")
    return array, steps


def summarize_curves(curves: Any, steps: Sequence[int] | None = None,
                     band: tuple[float, float] = (0.25, 0.75)) -> CurveSummary:
    """Median and quantile band over seeds, with diverged seeds counted as ``+inf``.

    Args:
        curves: the curves of one method (see the module docstring).
        steps: iteration of each column; default ``0..n_steps-1`` (or the runs'
            ``evaluated_steps``).
        band: lower and upper quantile of the band.

    Returns:
        A :class:`CurveSummary`.
    """
    lo_q, hi_q = band
    if not 0.0 <= lo_q <= 0.5 <= hi_q <= 1.0:
        raise ValueError(f"Invalid band: {band} (need 0 <= lower <= 0.5 <= upper <= 1)")
    array, steps = _as_array(curves, steps)
    bad = ~np.isfinite(array)
    # A run stays diverged after its first non-finite value.
    bad = np.logical_or.accumulate(bad, axis=1)
    filled = np.where(bad, _INF_SENTINEL, array)
    med, lower, upper = np.quantile(filled, [0.5, lo_q, hi_q], axis=0)
    med, lower, upper = (np.where(q >= _INF_SENTINEL * 1e-10, np.inf, q)
                         for q in (med, lower, upper))
    inf_med = np.flatnonzero(np.isinf(med))
    return CurveSummary(steps=steps, median=med, lower=lower, upper=upper,
                        diverged_at=int(inf_med[0]) if inf_med.size else None,
                        n_seeds=array.shape[0], n_diverged=int(bad[:, -1].sum()))


def _auto_ylim(summaries: Mapping[str, CurveSummary], logy: bool) -> tuple[float, float]:
    """Limits that show every method that stays near the descent.

    Bottom: the lowest median or lower-band value. Top: the starting value ``f(x_0)``
    (the same for every method), raised to the 90th percentile of the medians when
    most of the curves hover above it (noisy minibatches), but never by more than the
    whole descent ``f(x_0) − bottom``, so one runaway curve cannot flatten the others.
    """
    starts = [s.median[0] for s in summaries.values() if np.isfinite(s.median[0])]
    medians = [s.median[np.isfinite(s.median)] for s in summaries.values()]
    finite = np.concatenate(medians + [s.lower[np.isfinite(s.lower)]
                                       for s in summaries.values()])
    if finite.size == 0:
        return (1e-3, 1.0) if logy else (0.0, 1.0)
    bottom = float(finite.min())
    top = max(starts) if starts else float(finite.max())
    med = np.concatenate(medians)
    if starts and med.size:
        top = max(top, min(float(np.quantile(med, 0.9)), top + (top - bottom)))
    if logy:
        bottom = max(bottom, 1e-12)
        return bottom / 1.5, top * 1.5
    pad = 0.05 * max(top - bottom, 1e-12)
    return bottom - pad, top + 2 * pad


def plot_curves(ax, curves_by_method: Mapping[str, Any], steps: Sequence[int] | None = None,
                band: tuple[float, float] | None = (0.25, 0.75),
                ylim: tuple[float | None, float | None] | None = None, logy: bool = False,
                legend: bool = True, styles: Mapping[str, Mapping[str, Any]] | None = None,
                ) -> dict[str, CurveSummary]:
    """Draw the median over seeds and a quantile band for every method on ``ax``.

    A method whose median diverges is drawn up to its divergence, then to the top of the
    axes, and marked there with an ``x`` (legend: "(diverged)").

    Args:
        ax: a matplotlib ``Axes``.
        curves_by_method: method key (of :data:`METHOD_STYLE`) -> curves (see the module
            docstring). Methods are drawn in :data:`METHOD_ORDER`, unknown keys last.
        steps: iteration of each column, shared by all methods (default: per method).
        band: quantiles of the shaded band; None draws the median only.
        ylim: ``(bottom, top)``; a None entry is chosen from the data (top: the largest
            starting value plus a margin).
        logy: logarithmic y axis.
        legend: add a legend to ``ax``.
        styles: extra or overriding line styles by method key (for methods outside
            :data:`METHOD_STYLE`, e.g. an ablation); needs at least ``label``.

    Returns:
        The :class:`CurveSummary` of each method.
    """
    styles = dict(styles or {})
    order = sorted(curves_by_method, key=lambda m: (METHOD_ORDER.index(m)
                                                    if m in METHOD_ORDER else len(METHOD_ORDER)))
    summaries = {m: summarize_curves(curves_by_method[m], steps,
                                     band if band is not None else (0.5, 0.5))
                 for m in order}
    auto = _auto_ylim(summaries, logy) if summaries else (0.0, 1.0)
    bottom, top = ylim if ylim is not None else (None, None)
    bottom = auto[0] if bottom is None else bottom
    top = auto[1] if top is None else top
    if logy:
        ax.set_yscale("log")
    ax.set_ylim(bottom, top)

    any_diverged = False
    for m in order:
        s = summaries[m]
        style = {**(METHOD_STYLE.get(m, {})), **styles.get(m, {})}
        if "label" not in style:
            raise KeyError(f"No style for method {m!r}; known methods: "
                           f"{', '.join(METHOD_STYLE)} (or pass styles={{...}})")
        color = style.get("color")
        end = len(s.steps) if s.diverged_at is None else s.diverged_at + 1
        x = s.steps[:end].astype(float)
        y = np.minimum(s.median[:end], top)  # the diverged point is drawn at the top edge
        (line,) = ax.plot(x, y, **{k: v for k, v in style.items() if k != "color"},
                          color=color)
        color = line.get_color()
        if band is not None and s.n_seeds > 1:
            ok = np.isfinite(s.lower[:end])
            ax.fill_between(x, np.where(ok, s.lower[:end], np.nan),
                            np.where(ok, np.minimum(s.upper[:end], top), np.nan),
                            color=color, alpha=0.15, linewidth=0,
                            zorder=style.get("zorder", 2) - 0.5)
        if s.diverged_at is not None:
            any_diverged = True
            ax.plot([x[-1]], [top], marker="x", markersize=9, markeredgewidth=2.2,
                    linestyle="none", color=color, clip_on=False,
                    zorder=style.get("zorder", 2) + 1)
            logger.debug("%s: median diverged at step %s", m, x[-1])
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(YLABEL)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if any_diverged:
            handles.append(_diverged_handle())
            labels.append(DIVERGED_LABEL)
        ax.legend(handles, labels)
    return summaries


def _diverged_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="x", markersize=8, markeredgewidth=2.0, linestyle="none",
                  color="0.25")


def figure_panels(curves_by_panel: Mapping[str, Mapping[str, Any]],
                  steps: Sequence[int] | None = None, titles: Sequence[str] | None = None,
                  suptitle: str | None = None, logy: bool = False,
                  ylims: Mapping[str, tuple[float | None, float | None]] | None = None,
                  band: tuple[float, float] | None = (0.25, 0.75),
                  figsize: tuple[float, float] | None = None,
                  styles: Mapping[str, Mapping[str, Any]] | None = None):
    """The paper's figure layout: one panel per dataset (faces, CIFAR-10, CIFAR-100).

    Args:
        curves_by_panel: dataset key -> (method -> curves), in panel order (usually
            three panels). Keys of :data:`PANEL_TITLES` get their display name.
        steps: iteration of each column, shared by all panels.
        titles: panel titles; default "(a) TFD", "(b) CIFAR-10", ... from the keys.
        suptitle: title of the whole figure.
        logy: logarithmic y axes.
        ylims: per-panel ``(bottom, top)`` overrides by dataset key.
        band: quantile band, as in :func:`plot_curves`.
        figsize: default ``(4.3 * n_panels, 3.9)``.
        styles: extra line styles, as in :func:`plot_curves`.

    Returns:
        ``(fig, axes, summaries)`` with ``summaries[panel][method]`` a
        :class:`CurveSummary`. One legend for the whole figure sits below the panels.
    """
    import matplotlib.pyplot as plt

    panels = list(curves_by_panel)
    if not panels:
        raise ValueError("figure_panels needs at least one panel")
    if titles is None:
        titles = [f"({chr(ord('a') + i)}) {PANEL_TITLES.get(p, p)}"
                  for i, p in enumerate(panels)]
    if len(titles) != len(panels):
        raise ValueError(f"{len(titles)} titles for {len(panels)} panels")
    fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained",
                             figsize=figsize or (4.3 * len(panels), 3.9))
    axes = axes[0]
    summaries, entries, diverged = {}, {}, False
    for ax, panel, title in zip(axes, panels, titles):
        summaries[panel] = plot_curves(ax, curves_by_panel[panel], steps=steps, band=band,
                                       ylim=(ylims or {}).get(panel), logy=logy,
                                       legend=False, styles=styles)
        diverged |= any(s.diverged_at is not None for s in summaries[panel].values())
        ax.set_title(title)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(lab, h)
    for ax in axes[1:]:
        ax.set_ylabel("")
    handles, labels = list(entries.values()), list(entries)
    if diverged:
        handles.append(_diverged_handle())
        labels.append(DIVERGED_LABEL)
    fig.legend(handles, labels, loc="outside lower center",
               ncol=min(len(labels), 5))
    if suptitle:
        fig.suptitle(suptitle)
    return fig, axes, summaries


# ------------------------------------------------------------------ numbers in prose
def sig(value, digits: int = 4) -> float:
    """A plain float rounded to ``digits`` significant digits (for ``glue`` and prints)."""
    return float(f"{float(value):.{digits}g}")


def sci(value, digits: int = 2) -> str:
    """A number as text in the form '3.0 × 10⁻⁵' (for ``glue``)."""
    mantissa, exponent = f"{float(value):.{digits - 1}e}".split("e")
    sup = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
    return f"{mantissa} × 10{str(int(exponent)).translate(sup)}"
