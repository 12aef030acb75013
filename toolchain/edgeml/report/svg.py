"""Plot primitives for the build report, written as SVG text: scales with ticks, axes, lines, points, bars, a heatmap.

No plotting library: every element is a string, every name from the data is
escaped (:func:`esc`; a column may be called ``<b>&"x"``), and nothing varies
between two runs (ids come from the caller, numbers are formatted with
:func:`num`). The look (colours, fonts) is the page's CSS (:mod:`edgeml.report.page`), keyed by class names.

>>> s = Scale(0, 10, 0, 100)
>>> s(5), s.ticks()
(50.0, [0, 2, 4, 6, 8, 10])
>>> esc('<a & "b">')
'&lt;a &amp; &quot;b&quot;&gt;'
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field


def esc(value) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def num(value: float) -> str:
    """A number as a person reads it: four significant digits, no exponent for everyday sizes."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def distinct_labels(ticks: list[float], fmt=num) -> list[str]:
    """The ticks' labels by ``fmt``, or with as many significant digits as it takes to tell them apart (a narrow
    range: 0.89849, 0.89851 rather than 0.8985 twice).

    >>> distinct_labels([0.89849, 0.8985, 0.89851])
    ['0.89849', '0.8985', '0.89851']
    """
    labels = [fmt(t) for t in ticks]
    digits = 5
    while len(set(labels)) < len(labels) and digits <= 12:
        labels = [f"{t:.{digits}g}" for t in ticks]
        digits += 1
    return labels


def _px(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Scale:
    """Data ``lo``..``hi`` onto pixels ``a``..``b`` (``b < a`` for a y axis), linear or logarithmic."""

    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    @staticmethod
    def around(values, a: float, b: float, *, log: bool = False, zero: bool = False, pad: float = 0.05) -> Scale:
        """A scale spanning ``values`` (and 0 with ``zero``), padded a little, never empty."""
        vs = [v for v in values if v is not None and (v > 0 or not log)]
        lo, hi = (min(vs), max(vs)) if vs else (1.0, 10.0)
        if zero and not log:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        span = hi - lo
        lo, hi = (lo if zero and lo == 0 else lo - pad * span), hi + pad * span
        return Scale(10 ** lo, 10 ** hi, a, b, True) if log else Scale(lo, hi, a, b)

    def __call__(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(max(v, 1e-300)), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        return round(self.a + (v - lo) / (hi - lo) * (self.b - self.a), 1)

    def ticks(self, n: int = 5) -> list[float]:
        """Round values inside the scale: 1-2-5 steps, or powers of ten (and their 2× and 5×) on a log scale."""
        if self.log:
            out = [m * 10 ** e for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
                   for m in (1, 2, 5)]
            out = [t for t in out if self.lo <= t <= self.hi]
            if len(out) >= 2:
                return out if len(out) <= n + 2 else [t for t in out if math.log10(t) % 1 == 0] or out[:1]
            return Scale(self.lo, self.hi, self.a, self.b).ticks(n)  # less than a decade: round linear steps
        raw = (self.hi - self.lo) / max(n, 1)
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
        first = math.ceil(self.lo / step - 1e-9)
        return [round(k * step, 10) for k in range(first, math.floor(self.hi / step + 1e-9) + 1)]


@dataclass
class Plot:
    """One chart: a frame of ``width`` × ``height`` with margins, a scale each way, and the elements drawn on it."""

    id: str
    title: str
    x: Scale
    y: Scale
    width: int = 420
    height: int = 300
    xlabel: str = ""
    ylabel: str = ""
    parts: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)  #: data-* attributes of the <svg> (read by tests and people alike)

    MARGIN = (16, 16, 44, 78)  # top, right, bottom, left: room for an 8-character tick beside the y label

    @staticmethod
    def frame(width: int = 420, height: int = 300) -> tuple[float, float, float, float]:
        """The pixel box the data is drawn in: left, right, bottom, top."""
        top, right, bottom, left = Plot.MARGIN
        return left, width - right, height - bottom, top

    def axes(self, xfmt=num, yfmt=num) -> Plot:
        left, right, bottom, top = Plot.frame(self.width, self.height)
        out = [f'<rect class="frame" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}"/>']
        xs, ys = self.x.ticks(), self.y.ticks()
        for t, label in zip(xs, distinct_labels(xs, xfmt), strict=True):
            px = _px(self.x(t))
            out.append(f'<line class="grid" x1="{px}" x2="{px}" y1="{top}" y2="{bottom}"/>'
                       f'<text class="tick" x="{px}" y="{bottom + 14}" text-anchor="middle">{esc(label)}</text>')
        for t, label in zip(ys, distinct_labels(ys, yfmt), strict=True):
            py = _px(self.y(t))
            out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{py}" y2="{py}"/>'
                       f'<text class="tick" x="{left - 6}" y="{py}" dy="0.32em" text-anchor="end">'
                       f'{esc(label)}</text>')
        out.append(f'<text class="label" x="{(left + right) / 2:g}" y="{self.height - 6}" text-anchor="middle">'
                   f'{esc(self.xlabel)}</text>')
        out.append(f'<text class="label" transform="translate(14 {(top + bottom) / 2:g}) rotate(-90)" '
                   f'text-anchor="middle">{esc(self.ylabel)}</text>')
        self.parts[:0] = out
        return self

    def line(self, points, cls: str = "series") -> Plot:
        path = " ".join(f"{_px(self.x(x))},{_px(self.y(y))}" for x, y in points)
        self.parts.append(f'<polyline class="{cls}" points="{path}"/>')
        return self

    def dots(self, points, cls: str = "dot", r: float = 3, titles=None) -> Plot:
        for i, (x, y) in enumerate(points):
            tip = f"<title>{esc(titles[i])}</title>" if titles else ""
            self.parts.append(f'<circle class="{cls}" cx="{_px(self.x(x))}" cy="{_px(self.y(y))}" r="{r:g}">{tip}'
                              "</circle>")
        return self

    def mark(self, x: float, y: float, label: str, cls: str = "chosen") -> Plot:
        """A ringed point with its label: the chosen model, the decision threshold."""
        px, py = self.x(x), self.y(y)
        anchor, dx = ("end", -10) if px > (self.width * 0.6) else ("start", 10)
        self.parts.append(f'<g class="{cls}"><circle cx="{_px(px)}" cy="{_px(py)}" r="7"/>'
                          f'<text x="{_px(px + dx)}" y="{_px(py - 8)}" text-anchor="{anchor}">{esc(label)}</text></g>')
        return self

    def rule(self, *, x: float | None = None, y: float | None = None, label: str = "", cls: str = "budget") -> Plot:
        """A dashed line across the frame at ``x`` (vertical) or ``y`` (horizontal), labelled: a budget."""
        left, right, bottom, top = Plot.frame(self.width, self.height)
        if x is not None:
            px = _px(self.x(x))
            self.parts.append(f'<g class="{cls}"><line x1="{px}" x2="{px}" y1="{top}" y2="{bottom}"/>'
                              f'<text x="{px}" y="{top + 12}" dx="-4" text-anchor="end">{esc(label)}</text></g>')
        if y is not None:
            py = _px(self.y(y))
            self.parts.append(f'<g class="{cls}"><line x1="{left}" x2="{right}" y1="{py}" y2="{py}"/>'
                              f'<text x="{right - 4}" y="{py}" dy="-4" text-anchor="end">{esc(label)}</text></g>')
        return self

    def svg(self) -> str:
        attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in self.data.items())
        return (f'<svg id="{esc(self.id)}" class="plot" data-plot="{esc(self.id)}"{attrs} role="img" '
                f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
                f'xmlns="http://www.w3.org/2000/svg"><title>{esc(self.title)}</title>'
                + "".join(self.parts) + "</svg>")


def bars(id: str, title: str, labels: list[str], values: list[float], *, xlabel: str = "", width: int = 420,
         fmt=num, data: dict | None = None) -> str:
    """Horizontal bars, one row per label (top to bottom as given), each with its value written beside it."""
    row, left = 20, min(180, 12 + 7 * max((len(str(label)) for label in labels), default=4))
    height = 30 + row * max(len(labels), 1)
    x = Scale.around([*values, 0.0], left, width - 56, zero=True, pad=0.02)
    out = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y0 = 8 + i * row
        a, b = sorted((x(0.0), x(v)))
        short = str(label) if len(str(label)) <= 24 else str(label)[:23] + "…"
        out.append(f'<g class="bar" data-label="{esc(label)}" data-value="{esc(v)}"><title>{esc(label)}: '
                   f'{esc(fmt(v))}</title>'
                   f'<text class="tick" x="{left - 6}" y="{y0 + row / 2:g}" dy="0.32em" text-anchor="end">'
                   f'{esc(short)}</text><rect x="{_px(a)}" y="{y0 + 3}" width="{_px(max(b - a, 0.5))}" '
                   f'height="{row - 6}"/><text class="value" x="{_px(b + 4)}" y="{y0 + row / 2:g}" dy="0.32em">'
                   f'{esc(fmt(v))}</text></g>')
    zero = _px(x(0.0))
    out.append(f'<line class="axis" x1="{zero}" x2="{zero}" y1="6" y2="{height - 20}"/>')
    out.append(f'<text class="label" x="{(left + width - 56) / 2:g}" y="{height - 4}" text-anchor="middle">'
               f'{esc(xlabel)}</text>')
    attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in (data or {}).items())
    return (f'<svg id="{esc(id)}" class="plot bars" data-plot="{esc(id)}"{attrs} role="img" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{esc(title)}</title>" + "".join(out) + "</svg>")


def heatmap(id: str, title: str, matrix: list[list[int]], rows: list[str], columns: list[str], *,
            xlabel: str = "", ylabel: str = "") -> str:
    """A matrix of counts as shaded cells with the count in each (darker: more rows of its true class)."""
    cell, left, top = 56, min(150, 16 + 7 * max(len(str(r)) for r in rows)), 26
    width, height = left + cell * len(columns) + 10, top + cell * len(rows) + 36
    out = []
    for j, c in enumerate(columns):
        out.append(f'<text class="tick" x="{left + cell * j + cell / 2:g}" y="{top - 8}" text-anchor="middle">'
                   f"{esc(str(c)[:10])}</text>")
    for i, (r, counts) in enumerate(zip(rows, matrix, strict=True)):
        total = max(sum(counts), 1)
        y0 = top + cell * i
        out.append(f'<text class="tick" x="{left - 6}" y="{y0 + cell / 2:g}" dy="0.32em" text-anchor="end">'
                   f"{esc(str(r)[:20])}</text>")
        for j, v in enumerate(counts):
            share = v / total
            dark = " dark" if share > 0.55 else ""
            out.append(f'<g class="cell{dark}" data-row="{i}" data-column="{j}" data-count="{v}">'
                       f'<title>true {esc(r)}, predicted {esc(columns[j])}: {v}</title>'
                       f'<rect x="{left + cell * j}" y="{y0}" width="{cell - 2}" height="{cell - 2}" '
                       f'style="fill-opacity:{0.06 + 0.94 * share:.3f}"/>'
                       f'<text x="{left + cell * j + cell / 2 - 1:g}" y="{y0 + cell / 2:g}" dy="0.32em" '
                       f'text-anchor="middle">{v}</text></g>')
    out.append(f'<text class="label" x="{left + cell * len(columns) / 2:g}" y="{height - 8}" text-anchor="middle">'
               f"{esc(xlabel)}</text>")
    out.append(f'<text class="label" x="4" y="{top - 8}">{esc(ylabel)}</text>')
    return (f'<svg id="{esc(id)}" class="plot heatmap" data-plot="{esc(id)}" role="img" viewBox="0 0 {width} '
            f'{height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{esc(title)}</title>" + "".join(out) + "</svg>")


__all__ = ["Plot", "Scale", "bars", "esc", "heatmap", "num"]
