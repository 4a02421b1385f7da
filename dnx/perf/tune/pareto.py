"""Pareto fronts over (throughput, p99), the decision's plot and its markdown section.

A point dominates another when it has at least the throughput and at most the p99, and is
strictly better in one. Three fronts: per level (:func:`front_at`, the usual 2-D front); over a
load (:func:`overall_front`: a curve dominates another when it is no worse at every level, a
level it was not measured at counting as the worst); and the operating points of every config
at every level pooled (:func:`operating_front`, the envelope drawn on the plot).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.model_repository.layout import atomic_write_bytes
from dnx.perf.tune.curves import Curve
from dnx.perf.tune.confirm import Confirmation
from dnx.perf.tune.objective import Choice, pct, share

_WORST = (0.0, math.inf)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` = (throughput, p99) dominates ``b``: no worse in both, strictly better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The labels whose (throughput, p99) no other point dominates, by ascending p99."""
    keep = [k for k, v in points.items() if not any(dominates(w, v) for j, w in points.items() if j != k)]
    return sorted(keep, key=lambda k: (points[k][1], -points[k][0]))


def front_at(curves: list[Curve], level: int) -> list[str]:
    """The 2-D front at one concurrency level (curves not measured there are left out)."""
    return front({c.label: (p.throughput, p.p99_ms) for c in curves if not c.failed and (p := c.at(level))})


def _figures(curve: Curve, levels) -> list[tuple[float, float]]:
    return [(p.throughput, p.p99_ms) if (p := curve.at(c)) else _WORST for c in levels]


def curve_dominates(a: Curve, b: Curve, levels) -> bool:
    """``a`` is no worse than ``b`` at every level of ``levels`` and strictly better at one."""
    fa, fb = _figures(a, levels), _figures(b, levels)
    no_worse = all(x[0] >= y[0] and x[1] <= y[1] for x, y in zip(fa, fb))
    return no_worse and any(dominates(x, y) for x, y in zip(fa, fb))


def overall_front(curves: list[Curve], levels) -> list[str]:
    """Labels of the curves no other curve dominates over ``levels`` (failed curves left out)."""
    ok = [c for c in curves if not c.failed]
    return [c.label for c in ok if not any(curve_dominates(o, c, levels) for o in ok if o is not c)]


def operating_front(curves: list[Curve], levels) -> list[tuple[str, int]]:
    """The 2-D front of every (config, level) point of the load pooled: the operating points no
    other config at any level beats on both throughput and p99 (Model Analyzer's view), by p99."""
    pts = {(c.label, p.concurrency): (p.throughput, p.p99_ms)
           for c in curves if not c.failed for p in c.points if p.concurrency in levels}
    keep = [k for k, v in pts.items() if not any(dominates(w, v) for j, w in pts.items() if j != k)]
    return sorted(keep, key=lambda k: (pts[k][1], -pts[k][0]))


def _curves(decision: Choice, curves: list[Curve] | None) -> list[Curve]:
    return list(curves) if curves is not None else [decision.current, *decision.candidates]


# ------------------------------------------------------------------ plot

_TRADE_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _styles(decision: Choice, curves: list[Curve]) -> dict[str, dict]:
    trade = [t.label for t in decision.trade_offs if t.label != decision.winner.label]
    out = {}
    for c in curves:
        if c.label == decision.current.label:
            out[c.label] = dict(color="black", marker="s", lw=2.2, ms=6, ls="-", zorder=4,
                                label=f"current: {c.label}" + ("" if decision.changes else " (stays)"))
        elif c.label == decision.winner.label:
            out[c.label] = dict(color="tab:red", marker="*", lw=2.2, ms=12, ls="-", zorder=5, label=f"chosen: {c.label}")
        elif c.label in trade:
            out[c.label] = dict(color=_TRADE_COLOURS[trade.index(c.label) % len(_TRADE_COLOURS)], marker="o", lw=1.4,
                                ms=4, ls="--", zorder=3, label=f"trade-off: {c.label}")
        else:
            out[c.label] = dict(color="grey", marker="o", lw=0.8, ms=3, ls="-", zorder=2, alpha=0.6)
    return out


def render_png(decision: Choice, curves: list[Curve] | None = None, title: str | None = None) -> bytes:
    """The decision's figure as PNG bytes (matplotlib, Agg backend, imported here).

    Left: throughput per level for every config: the current one (black) with its refusal band
    (``slack`` below it), the chosen one (red stars), trade-offs (dashed, coloured), the rest grey.
    Right: throughput vs p99, each config's points joined in concurrency order (same styles),
    the pooled operating-point Pareto front (dashed envelope) and the chosen points labelled.
    """
    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = lazy_import("matplotlib.pyplot")
    curves = [c for c in _curves(decision, curves) if not c.failed]
    levels = decision.load.levels
    styles = _styles(decision, curves)
    cur, win = decision.current.label, decision.winner.label
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    order = sorted(curves, key=lambda c: styles[c.label]["zorder"])

    for c in order:
        st = styles[c.label]
        left.plot([p.concurrency for p in c.points], [p.throughput for p in c.points], **st)
        if c.label == cur and decision.objective == "load":
            band = [(p.concurrency, p.throughput) for p in c.points if p.concurrency in levels]
            if band:
                bx, by = zip(*band)
                left.fill_between(bx, [y * (1 - decision.slack) for y in by], by, color="black", alpha=0.12,
                                  label=f"refusal line: current - {share(decision.slack)}")
    left.set_xscale("log", base=2)
    left.set_xticks(sorted({p.concurrency for c in curves for p in c.points}))
    left.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.set(xlabel="concurrency (requests in flight)", ylabel="throughput (infer/s)",
             title=f"each config over the load ({decision.load.describe()})")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")

    for c in order:
        pts = [p for p in c.points if p.concurrency in levels]
        st = {k: v for k, v in styles[c.label].items() if k != "label"}
        right.plot([p.p99_ms for p in pts], [p.throughput for p in pts], **st)
        if c.label in (cur, win):
            for p in pts:
                right.annotate(f"c{p.concurrency}", (p.p99_ms, p.throughput), fontsize=7, color=st["color"],
                               textcoords="offset points", xytext=(5, 4 if c.label == win else -10))
    by_key = {(c.label, p.concurrency): p for c in curves for p in c.points}
    on = [by_key[k] for k in operating_front(curves, levels)]
    if on:
        right.step([p.p99_ms for p in on], [p.throughput for p in on], where="post", color="tab:green", lw=1.2,
                   ls=":", zorder=1, label="Pareto front (all configs, all levels)")
        right.scatter([p.p99_ms for p in on], [p.throughput for p in on], s=90, facecolor="none",
                      edgecolor="tab:green", linewidth=1.4, zorder=6)
    right.set_xscale("log")
    right.set(xlabel="p99 latency (ms, log)", ylabel="throughput (infer/s)",
              title="throughput vs p99 (points in concurrency order)")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"{decision.objective} objective: "
                 + (f"{win} replaces the current config" if decision.changes else "the current config stays"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_pareto(decision: Choice, path: str | Path, curves: list[Curve] | None = None, title: str | None = None) -> Path:
    """Write :func:`render_png` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, render_png(decision, curves, title))
    return path


# ------------------------------------------------------------------ markdown


def _cell(curve: Curve, level: int, current: Curve, is_current: bool) -> str:
    p = curve.at(level)
    if p is None:
        return "-"
    ref = current.throughput(level)
    change = "" if is_current or not ref else f" ({pct(p.throughput / ref - 1)})"
    return f"{p.throughput:.1f}{change}"


def report_markdown(decision: Choice, curves: list[Curve] | None = None, confirmation: Confirmation | None = None,
                    plot: str | None = None, heading: str = "###") -> str:
    """A markdown section: the rules, each config per level, the verdicts, why the choice is the
    one a person reading the plot would make, the trade-offs, instability and the rerun.

    ``plot``: the PNG's path relative to the report (embedded when given).
    """
    d = decision
    curves = _curves(d, curves)
    levels = d.load.levels
    cur, win = d.current.label, d.winner.label
    on_front = set(overall_front(curves, levels))
    title = f"`{win}` replaces `{cur}`" if d.changes else f"`{cur}` stays"
    rules = [f"objective **{d.objective}**, load `--concurrency {d.load}` ({d.load.describe()}); aggregate: {d.aggregate}"]
    if d.objective == "load":
        rules.append(f"a candidate more than {share(d.slack)} slower than the current config at any level is refused")
    if d.latency_budget_ms is not None:
        rules.append(f"p99 must stay within {d.latency_budget_ms:g} ms" + (" at every level" if d.objective == "load" else ""))
    rules.append(f"a winner must gain at least {share(d.min_gain)} on the aggregate (measurement noise)")
    lines = [f"{heading} {title}", "", f"**{'Chosen' if d.changes else 'Kept'}**: {d.why}.", ""]
    lines += [f"- {r}" for r in rules] + [""]
    if plot:
        lines += [f"![each config over the load; throughput vs p99]({plot})", ""]

    lines += ["| config | " + " | ".join(f"c{c} infer/s" for c in levels) + " | aggregate | Pareto | verdict |",
              "|---|" + "---|" * len(levels) + "---|---|---|"]
    for c in curves:
        verdict = ("current, **stays**" if c.label == cur and not d.changes else "**chosen**" if c.label == win
                   else "current" if c.label == cur else (d.refusal(c.label).reason if d.refusal(c.label) else "-"))
        score = d.scores.get(c.label)
        agg = "-" if score is None else (f"p99 {1000 / score:.1f} ms" if d.objective == "latency" else f"{score:.1f}")
        pareto = "failed" if c.failed else "front" if c.label in on_front else "dominated"
        name = f"`{c.label}`" + (" (current)" if c.label == cur else "")
        lines.append(f"| {name} | " + " | ".join(_cell(c, lv, d.current, c.label == cur) for lv in levels)
                     + f" | {agg} | {pareto} | {verdict} |")
    lines += ["", "| config | " + " | ".join(f"c{c} p99 ms" for c in levels) + " |", "|---|" + "---|" * len(levels)]
    for c in curves:
        if not c.failed:
            lines.append(f"| `{c.label}` | " + " | ".join(f"{p.p99_ms:.1f}" if (p := c.at(lv)) else "-" for lv in levels) + " |")

    lines += ["", "**Why this one**: " + _why_plot(d, curves, on_front), ""]
    if d.trade_offs:
        under = "" if d.objective == "load" else "; the load each would be chosen under is the load objective's"
        lines += [f"**Trade-offs** (faster at some levels, slower at others{under}):", ""]
        for t in d.trade_offs:
            name = f"`{t.label}`" + (" (chosen)" if t.label == win else "")
            stays = f"; `{cur}` stays unless you state that load" if not d.changes else ""
            lines.append(f"- {name}: {t.summary()}{stays}: {t.advice()}.")
        lines.append("")
    if d.unstable:
        lines += ["**Unstable figures** (repeats of one level differ by more than the threshold; other load on "
                  "the machine overlapped the measurement):", ""]
        lines += [f"- `{k}`: " + ", ".join(f"c{c} {share(s)}" for c, s in v.items()) for k, v in d.unstable.items()]
        lines.append("")
    if confirmation is not None:
        w = confirmation.written
        others = [c.label for c in confirmation.rerun.candidates if c.label != d.winner.label]
        who = "current config and winner" + (f", with the runners-up {', '.join(f'`{o}`' for o in others)}," if others else "")
        lines += [f"**Rerun** ({who} back to back, interleaved at every level): {confirmation.reason}.", "",
                  f"Figures recorded for `{w.label}` (the rerun's): "
                  + ", ".join(f"c{p.concurrency} {p.throughput:.1f} infer/s (p99 {p.p99_ms:.1f} ms)" for p in w.points)
                  + ".", ""]
    return "\n".join(lines)


def _why_plot(d: Choice, curves: list[Curve], on_front: set[str]) -> str:
    cur, win = d.current.label, d.winner.label
    front_words = ("it is on the Pareto front over the load (no other config has more throughput and a lower "
                   "p99 at every level)")
    if d.objective != "load":
        base = (f"`{win}` wins on the {d.aggregate}" if d.changes else f"no candidate beats `{cur}` on the {d.aggregate}"
                f" by {share(d.min_gain)}")
        price = next((f"; it pays for that at low load: {t.summary()}" for t in d.trade_offs if t.label == win), "")
        return base + (f"; {front_words}" if win in on_front else "") + price + "."
    if d.changes:
        at_front = [c for c in d.load.levels if win in front_at(curves, c)]
        where = f"; at {', '.join(f'c{c}' for c in at_front)} it is on that level's front too" if at_front else ""
        # Rule 7: a config within the noise margin of the highest geometric mean that changes fewer settings.
        ahead = sorted((r.label for r in d.refused
                        if r.kind == "not-best" and (d.scores.get(r.label) or 0) > d.scores[win]),
                       key=lambda label: -d.scores[label])
        rank = (f"it is within {share(d.min_gain)} of the highest geometric mean (`{ahead[0]}`) and changes fewer "
                "settings" if ahead else "it has the highest geometric mean")
        front = front_words if win in on_front else "it is within the noise margin of the Pareto front over the load"
        return (f"on the left plot `{win}`'s curve never drops below the current config's {share(d.slack)} band, "
                f"and of the curves that stay above it, {rank}; {front}{where}.")
    above = [c.label for c in curves if c.label != cur and not c.failed and d.refusal(c.label) is not None
             and d.refusal(c.label).kind in ("no-gain", "not-best")]
    if above:
        text = (f"the curves that stay above the current config's {share(d.slack)} band gain less than "
                f"{share(d.min_gain)} on the geometric mean, within measurement noise")
    elif d.trade_offs:
        text = (f"every faster curve drops below the current config's {share(d.slack)} band at some level "
                f"(the trade-offs below): it would make the service slower at a load it sees")
    else:
        text = f"no candidate's curve stays above the current config's {share(d.slack)} band at every level"
    dominated_by = [c.label for c in curves if c.label != cur and not c.failed and d.refusal(c.label) is not None
                    and d.refusal(c.label).kind in ("no-gain", "not-best") and curve_dominates(c, d.current, d.load.levels)]
    tail = (f"; `{', '.join(dominated_by)}` dominates it by less than the noise margin" if dominated_by
            else f"; `{cur}` is on the Pareto front over the load" if cur in on_front else "")
    return text + tail + "."
