"""Grouped bar charts as standalone SVG (no plotting library): perf/run's charts."""
import math
from xml.sax.saxutils import escape

# one colour per series, in series order (colour-blind friendly: Okabe-Ito)
PALETTE = ["#999999", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9"]


def _nice_max(v):
    """Round the axis maximum up to 1, 2, 2.5 or 5 times a power of ten."""
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def _fmt(v):
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    if abs(v) >= 1:
        return "%.2f" % v
    return "%.3g" % v


def _axis_fmt(v, step):
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    if step >= 1 and step != int(step):
        decimals = 1
    return "%.*f" % (decimals, v)


def grouped_bars(title, unit, groups, series, note=None, width=None, height=360, colours=None):
    """groups: category labels along x; series: list of (name, [value or None per group]);
    colours: optional {series name: colour} so a series keeps its colour across charts.
    Returns the SVG document as a string. Missing values (None) draw a 'n/a' mark."""
    colour_of = lambda si, name: (colours or {}).get(name, PALETTE[si % len(PALETTE)])
    n_g, n_s = len(groups), len(series)
    left, right, top, bottom = 70, 20, 50, 70
    bar_w = 18
    group_w = max(n_s * bar_w + 24, 7 * max([len(g) for g in groups] or [0]) + 12)
    if width is None:
        width = max(480, left + right + n_g * group_w)
    plot_w = width - left - right
    plot_h = height - top - bottom
    group_w = plot_w / max(n_g, 1)
    bar_w = min(bar_w, (group_w - 12) / max(n_s, 1))
    vals = [v for _, vs in series for v in vs if v is not None]
    vmax = _nice_max(max(vals) if vals else 1.0)
    out = []
    add = out.append
    add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
        'viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">' % (width, height, width, height))
    add('<rect width="100%" height="100%" fill="white"/>')
    add('<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>' % (left, escape(title)))
    if note:
        add('<text x="%d" y="36" fill="#555">%s</text>' % (left, escape(note)))
    # y axis with 5 gridlines
    for i in range(6):
        v = vmax * i / 5
        y = top + plot_h - plot_h * i / 5
        add('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, left + plot_w, y, y))
        add('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 6, y + 4, _axis_fmt(v, vmax / 5)))
    add('<text transform="translate(16,%d) rotate(-90)" text-anchor="middle">%s</text>'
        % (top + plot_h // 2, escape(unit)))
    for gi, g in enumerate(groups):
        gx = left + gi * group_w + (group_w - n_s * bar_w) / 2
        for si, (name, vs) in enumerate(series):
            v = vs[gi] if gi < len(vs) else None
            x = gx + si * bar_w
            colour = colour_of(si, name)
            if v is None:
                add('<text x="%.1f" y="%.1f" font-size="9" fill="#999" text-anchor="middle">n/a</text>'
                    % (x + bar_w / 2, top + plot_h - 4))
                continue
            h = plot_h * min(v, vmax) / vmax
            add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>'
                % (x + 1, top + plot_h - h, bar_w - 2, h, colour, escape(name), escape(g), _fmt(v), escape(unit)))
            add('<text x="%.1f" y="%.1f" font-size="8" text-anchor="middle">%s</text>'
                % (x + bar_w / 2, top + plot_h - h - 2, _fmt(v)))
        add('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
            % (left + gi * group_w + group_w / 2, top + plot_h + 16, escape(g)))
    add('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>' % (left, left + plot_w, top + plot_h, top + plot_h))
    # legend
    lx = left
    ly = height - 22
    for si, (name, _) in enumerate(series):
        add('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>' % (lx, ly, colour_of(si, name)))
        add('<text x="%d" y="%d">%s</text>' % (lx + 14, ly + 9, escape(name)))
        lx += 24 + 7 * len(name)
    add("</svg>")
    return "\n".join(out) + "\n"
