"""One figure style for the whole book: colours, labels, loss curves and the 3-panel layout.

Every figure of the book goes through this module so that a method has the same colour,
line style, marker and label in every chapter (:data:`METHOD_STYLE`), every figure has the
same fonts, sizes and resolution (:func:`use_style`), legends sit outside the data
(:func:`legend_outside`), and divergence is drawn the same way everywhere
(:func:`plot_curves`).

Colours
    The Okabe-Ito palette, which stays distinguishable under the common forms of colour
    blindness, plus grey for the ninth method. Colour is never the only cue: each method
    also has its own line style and marker, so the nine curves stay apart in greyscale
    (markers are spread along a curve with ``markevery``, at offsets that differ between
    methods). Series that are not methods (groups, runs, phases) take the same palette in
    the order of :data:`SERIES_COLORS`, each with its own line style
    (``axes.prop_cycle``).

Resolution
    Figures render at :data:`DPI` dots per inch (inline PNG), and their sizes are chosen
    for the book's text column (about 7 inches on a 1280-pixel screen), so that tick
    labels print at 10 points or more there.

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
    "DPI",
    "OKABE_ITO",
    "SERIES_COLORS",
    "use_style",
    "method_style",
    "legend_outside",
    "summarize_curves",
    "plot_curves",
    "figure_panels",
]

#: The Okabe-Ito colours (Okabe & Ito 2008), safe for colour-blind readers.
OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00",
    "reddish purple": "#CC79A7", "black": "#000000",
}
#: Colours of series that are not methods, in order (``C0``, ``C1``, ...): the palette
#: without yellow, which is faint as a thin line on white, then grey.
SERIES_COLORS: tuple[str, ...] = (
    OKABE_ITO["blue"], OKABE_ITO["vermillion"], OKABE_ITO["bluish green"],
    OKABE_ITO["reddish purple"], OKABE_ITO["orange"], OKABE_ITO["sky blue"],
    OKABE_ITO["black"], "#999999")
_SERIES_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)),
                      (0, (1, 1)), (0, (8, 2)))

#: Colour, line style, marker and label of every method, fixed across all figures. The
#: learned optimizers are drawn on top, Predicted Step Descent thickest. Yellow (the
#: least visible colour) goes to conjugate gradient, whose curve is the flattest, with
#: dark-edged markers.
METHOD_STYLE: dict[str, dict[str, Any]] = {
    "sgd": dict(label="SGD", color=OKABE_ITO["sky blue"], linestyle=":", marker="v",
                linewidth=1.6, zorder=2),
    "momentum": dict(label="Momentum", color=OKABE_ITO["blue"], linestyle="--",
                     marker="^", linewidth=1.4, zorder=2),
    "cg": dict(label="Conjugate gradient", color=OKABE_ITO["yellow"], linestyle="-.",
               marker="s", markeredgecolor="0.25", linewidth=1.8, zorder=2),
    "lbfgs": dict(label="L-BFGS", color=OKABE_ITO["reddish purple"],
                  linestyle=(0, (3, 1, 1, 1, 1, 1)), marker="D", linewidth=1.4, zorder=2),
    "adam": dict(label="Adam", color=OKABE_ITO["orange"], linestyle="-", marker="o",
                 linewidth=1.4, zorder=2),
    "adagrad": dict(label="AdaGrad", color=OKABE_ITO["bluish green"], linestyle="--",
                    marker="P", linewidth=1.4, zorder=2),
    "rmsprop": dict(label="RMSprop", color="#999999", linestyle="-.", marker="X",
                    linewidth=1.4, zorder=2),
    # Beyond the paper: the line-search variants, dotted, in their fixed-step
    # counterparts' colours and markers, the markers open.
    "lbfgs_wolfe": dict(label="L-BFGS, strong Wolfe", color=OKABE_ITO["reddish purple"],
                        linestyle=":", marker="D", markerfacecolor="white", linewidth=1.6,
                        zorder=2),
    "cg_pr_wolfe": dict(label="CG (PR+), strong Wolfe", color=OKABE_ITO["yellow"],
                        linestyle=":", marker="s", markerfacecolor="white",
                        markeredgecolor="0.25", linewidth=1.8, zorder=2),
    "l2l": dict(label="L2L (Andrychowicz et al.)", color=OKABE_ITO["black"],
                linestyle="-", marker="d", linewidth=1.8, zorder=3),
    # Beyond the paper: π meta-trained without GPS (chapter "What limits PSD"), in PSD's
    # colour, dotted or dashed, the star open.
    "pi_bptt": dict(label="π by truncated BPTT (no GPS)", color=OKABE_ITO["vermillion"],
                    linestyle=":", marker="*", markerfacecolor="white", markersize=9,
                    linewidth=1.8, zorder=3),
    "pi_es": dict(label="π by ES (no GPS)", color=OKABE_ITO["vermillion"],
                  linestyle="--", marker="*", markerfacecolor="white", markersize=9,
                  linewidth=1.8, zorder=3),
    "psd": dict(label="Predicted Step Descent", color=OKABE_ITO["vermillion"],
                linestyle="-", marker="*", markersize=9, linewidth=2.4, zorder=4),
}

#: Legend order: hand-engineered methods as in the paper, the line-search extras, then
#: the learned ones.
METHOD_ORDER: tuple[str, ...] = tuple(METHOD_STYLE)

#: Short names of the methods, for tables and running text (the legends use
#: :data:`METHOD_STYLE`'s labels); the one other table of method names.
SHORT_LABELS: dict[str, str] = {
    "psd": "PSD", "l2l": "L2L", "sgd": "SGD", "momentum": "momentum", "cg": "CG",
    "lbfgs": "L-BFGS", "adam": "Adam", "adagrad": "AdaGrad", "rmsprop": "RMSprop",
    "lbfgs_wolfe": "L-BFGS (Wolfe)", "cg_pr_wolfe": "CG-PR+ (Wolfe)",
    "pi_bptt": "π (BPTT)", "pi_es": "π (ES)"}


def short_label(method: str) -> str:
    """:data:`SHORT_LABELS`' name, else the label an optimizer was registered with
    (:func:`l2o.baselines.register_optimizer`), else ``method`` itself."""
    if method in SHORT_LABELS:
        return SHORT_LABELS[method]
    from l2o.baselines import OPTIMIZERS

    entry = OPTIMIZERS.get(method)
    return entry.label if entry is not None and entry.label else method

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

#: Resolution of every figure (inline PNG), dots per inch.
DPI = 160

_RC = {
    # PNG output, mathtext (never LaTeX), sizes readable at the book's column width.
    "text.usetex": False,
    "mathtext.fontset": "dejavusans",
    "font.size": 11.0,
    "axes.titlesize": 12.0,
    "axes.labelsize": 11.0,
    "xtick.labelsize": 10.0,
    "ytick.labelsize": 10.0,
    "legend.fontsize": 10.0,
    "legend.frameon": False,
    "figure.figsize": (6.8, 4.0),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.format": "png",
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
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
    from cycler import cycler

    mpl.rcParams.update(_RC)
    mpl.rcParams["axes.prop_cycle"] = (cycler(color=list(SERIES_COLORS))
                                       + cycler(linestyle=list(_SERIES_LINESTYLES)))
    try:  # inline figures as PNG (not SVG/retina) so that every figure is the same kind
        from IPython import get_ipython

        if get_ipython() is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - IPython is part of the pinned environment
        pass


def method_style(method: str) -> dict[str, Any]:
    """The fixed line style of ``method`` (a key of :data:`METHOD_STYLE`); an optimizer a
    user registered (:func:`l2o.baselines.register_optimizer`) gets a grey dash-dotted
    line labelled with its registered label (or name).

    Raises:
        KeyError: for a method that is neither, naming the known ones.
    """
    if method in METHOD_STYLE:
        return dict(METHOD_STYLE[method])
    from l2o.baselines import OPTIMIZERS

    entry = OPTIMIZERS.get(method)
    if entry is not None:
        return dict(label=entry.label or method, color="#555555", linestyle="-.",
                    marker="s", markersize=4)
    raise KeyError(f"No style for method {method!r}; known methods: "
                   f"{', '.join(METHOD_STYLE)}, or a registered optimizer")


def legend_outside(target, handles=None, labels=None, where: str = "right", **kwargs):
    """A legend that never covers data: beside the axes, or below the figure.

    Args:
        target: an ``Axes`` (legend to its right, top-aligned) or a ``Figure`` (one
            legend for all panels, outside them; needs constrained layout, the book's
            default).
        handles, labels: as for ``legend``; default: the artists' own labels.
        where: ``"right"`` or ``"below"`` (figure legends; ``"right"`` for an axes).
        kwargs: passed on (``ncol``, ``title``, ...).

    Returns:
        The legend.
    """
    args = [] if handles is None else [handles, labels]
    if hasattr(target, "get_legend_handles_labels"):  # an Axes
        if handles is None:
            args = list(target.get_legend_handles_labels())
        return target.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                             borderaxespad=0.0, **kwargs)
    if handles is None:
        entries = {}
        for ax in target.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(lab, h)
        args = [list(entries.values()), list(entries)]
    loc = {"right": "outside right upper", "below": "outside lower center"}[where]
    return target.legend(*args, loc=loc, **kwargs)


def _markevery(n_points: int, rank: int, n_marks: int = 8):
    """Every ``n_points / n_marks``-th point, starting at an offset that depends on
    ``rank`` so that the markers of different methods do not sit on top of each other."""
    step = max(1, n_points // n_marks)
    return (int(step * ((rank % 9) + 0.5) / 9), step)


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
        legend: add a legend to the right of ``ax`` (:func:`legend_outside`).
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
        kw = {k: v for k, v in style.items() if k != "color"}
        if kw.get("marker"):
            kw.setdefault("markevery", _markevery(len(x), order.index(m)))
        (line,) = ax.plot(x, y, **kw, color=color)
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
        legend_outside(ax, handles, labels)
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
        figsize: default ``(3.6 * n_panels, 4.4)``: three panels fill the text column
            with tick labels at 10 points.
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
                             figsize=figsize or (3.6 * len(panels), 4.4))
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
    legend_outside(fig, handles, labels, where="below", ncol=min(len(labels), 4))
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
