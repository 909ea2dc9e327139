"""Pareto fronts over (GMACs, top-1), choosing a schedule under a target, and the Pareto plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tnt_cli.errors import SettingError, TntError
from tnt_cli.eval.grid import Target, make_target
from tnt_cli.eval.sweep import SweepPoint
from tnt_cli.methods.registry import DENSE, REFERENCE, REGISTRY

EPS = 1e-12
__all__ = ["Target", "check_reachable", "choose", "dominates", "make_target", "mark_pareto", "pareto_front"]


def dominates(a: SweepPoint, b: SweepPoint) -> bool:
    """a is at least as cheap and as accurate as b, and strictly better in one."""
    return a.gmacs <= b.gmacs + EPS and a.top1 >= b.top1 - EPS and (a.gmacs < b.gmacs - EPS or a.top1 > b.top1 + EPS)


def pareto_front(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """The points no other point dominates, cheapest first."""
    front = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return sorted(front, key=lambda p: (p.gmacs, -p.top1))


def mark_pareto(points: Sequence[SweepPoint]) -> None:
    """Set `.pareto` within each method's group (dense belongs to TNT's)."""
    groups: dict[str, list[SweepPoint]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    for members in groups.values():
        front = {id(p) for p in pareto_front(members)}
        for p in members:
            p.pareto = id(p) in front


def speedup_of(point: SweepPoint, dense: SweepPoint) -> float:
    """Measured speedup when timed, else the GMACs ratio (what the speedup would be if compute-bound)."""
    return point.speedup if point.speedup is not None else dense.gmacs / point.gmacs


def choose(points: Sequence[SweepPoint], target: Target) -> SweepPoint:
    """The best deployable (TNT or dense) point under `target`; a clear error naming the best reachable one."""
    candidates = [p for p in points if p.group == REFERENCE]
    dense = next(p for p in points if p.method == DENSE)
    if target.kind == "gmacs":
        ok = [p for p in candidates if p.gmacs <= target.value + EPS]
        if not ok:
            cheapest = min(candidates, key=lambda p: (p.gmacs, -p.top1))
            raise SettingError(
                "target {value:g} GMACs is below the cheapest schedule swept: {cheapest}; "
                "raise the target or add lower keep rates ({grid_keep})",
                value=target.value,
                cheapest=_name(cheapest),
            )
        return max(ok, key=lambda p: (p.top1, -p.gmacs))
    if target.kind == "speedup":
        ok = [p for p in candidates if speedup_of(p, dense) >= target.value - EPS]
        if not ok:
            fastest = max(candidates, key=lambda p: (speedup_of(p, dense), p.top1))
            raise TntError(
                f"no schedule swept reaches {target.value:g}x speedup: the best reachable is "
                f"{speedup_of(fastest, dense):.2f}x with {_name(fastest)}"
            )
        return max(ok, key=lambda p: (p.top1, -p.gmacs))
    floor = dense.top1 - target.value / 100
    ok = [p for p in candidates if p.top1 >= floor - EPS]  # dense always qualifies
    return min(ok, key=lambda p: (p.gmacs, -p.top1))


def check_reachable(points: Sequence[SweepPoint], target: Target, *, speed_measured: bool) -> None:
    """Refuse a target no swept schedule can meet before spending time on the sweep (when compute decides it)."""
    if target.kind == "gmacs" or (target.kind == "speedup" and not speed_measured):
        choose([SweepPoint(p.method, p.schedule, p.tome_r, gmacs=p.gmacs, top1=0.0) for p in points], target)


SAME_COST = 0.02  # GMACs within 2% count as the same cost (the matching rule's tolerance for baselines)


def better_baselines(points: Sequence[SweepPoint], chosen: SweepPoint) -> list[str]:
    """One sentence per baseline method whose sweep has a point at least as good as the chosen schedule: as cheap
    and at least as accurate, or more accurate at the same cost (the best such point; none for a dense choice).
    Measured on the calibration images: a reason to try `tnt finetune --method`, not a verdict."""
    if chosen.method == DENSE or chosen.top1 is None:
        return []
    out = []
    for method in dict.fromkeys(p.method for p in points if p.group != REFERENCE):
        better = [p for p in points if p.method == method and p.top1 is not None and _beats(p, chosen)]
        if better:
            best = max(better, key=lambda p: (p.top1, -p.gmacs))
            out.append(
                f"{method} at {_name(best)} is {'cheaper' if best.gmacs < chosen.gmacs - EPS else 'as cheap'} and "
                f"{'more accurate than' if best.top1 > chosen.top1 + EPS else 'as accurate as'} the chosen tnt "
                f"schedule {_name(chosen)} on these images: compare them fine-tuned (`tnt finetune --method "
                f"{method}`, `tnt compare`)"
            )
    return out


def _beats(p: SweepPoint, chosen: SweepPoint) -> bool:
    cheaper = p.gmacs <= chosen.gmacs + EPS and p.top1 >= chosen.top1 - EPS
    same_cost = abs(p.gmacs - chosen.gmacs) <= SAME_COST * chosen.gmacs and p.top1 > chosen.top1 + EPS
    return cheaper or same_cost


def plot_title(points: Sequence[SweepPoint], chosen: SweepPoint | None, *, where: str, target: Target) -> str:
    """The plot's title, from what `plot_pareto` draws: which methods, what the lines and marks are."""
    drawn = [STYLE[m]["label"] for m in STYLE if any(p.method == m for p in points)]
    mark = f"circle: chosen ({target.describe()})" if chosen is not None else f"no schedule meets {target.describe()}"
    line = {"gmacs": "; dashed: the GMACs budget", "max_drop": "; dashed: the accuracy floor"}.get(target.kind, "")
    return (
        f"top-1 vs GMACs of {', '.join(drawn)} and dense (star) on {where}\n"
        f"lines: each method's Pareto front; {mark}{line}"
    )


def _name(p: SweepPoint) -> str:
    accuracy = f", top-1 {100 * p.top1:.2f}%" if p.images else ""
    return f"{p.describe()} ({p.gmacs:.4g} GMACs{accuracy})"


STYLE = {m.name: dict(color=m.style[0], marker=m.style[1], label=m.label) for m in REGISTRY if m.reduces}


def plot_pareto(
    points: Sequence[SweepPoint], chosen: SweepPoint | None, path: Path, *, where: str, target: Target
) -> None:
    """Top-1 vs GMACs: every method's points, each method's Pareto front as a line, dense and the choice marked.

    `where` names the model, data and images; the title (also the PNG's Title) says what is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tnt_cli.terminal import LITERAL, printable

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    dense = next(p for p in points if p.method == DENSE)
    for group, style in STYLE.items():
        members = [p for p in points if p.method == group]
        if not members:
            continue
        ax.scatter([p.gmacs for p in members], [100 * p.top1 for p in members], s=18, alpha=0.45, **style)
        front = pareto_front(members + ([dense] if group == REFERENCE else []))
        ax.plot([p.gmacs for p in front], [100 * p.top1 for p in front], color=style["color"], lw=1.4)
    ax.scatter([dense.gmacs], [100 * dense.top1], marker="*", s=160, color="black", label="dense", zorder=4)
    if chosen is not None:  # None: no schedule met the target, the sweep is still plotted
        ax.scatter(
            [chosen.gmacs], [100 * chosen.top1], s=260, facecolors="none", edgecolors="red", lw=2,
            label=f"chosen: {chosen.describe()}", zorder=5,
        )  # fmt: skip
    if target.kind == "gmacs":
        ax.axvline(target.value, color="red", ls="--", lw=0.8)
    elif target.kind == "max_drop":
        ax.axhline(100 * dense.top1 - target.value, color="red", ls="--", lw=0.8)
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("top-1 (%)")
    title = printable(plot_title(points, chosen, where=where, target=target))  # names the model and the data
    ax.set_title(title, fontsize=8, **LITERAL)  # drawn as written
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, metadata={"Title": title.replace("\n", " ")})
    plt.close(fig)
