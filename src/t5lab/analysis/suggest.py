"""Which shape to pick for a budget: from measurements when there are some, else the DeepNarrow advice.

Measured mode: among result rows (`t5lab scale-study`, or any JSONL with name, cost and loss), the shape
with the lowest held-out loss within the budget. It is on the cost/loss Pareto frontier by construction;
the reason says where, what the next frontier shape would buy beyond the budget, and the runner-up.

Analytic mode, the advice of Tay et al. 2021 ("Scale Efficiently: Insights from Pre-training and
Fine-tuning Transformers"): at a fixed budget, a deeper and narrower model beats the standard sizes
("DeepNarrow": add depth before width); the gains level off around 32-36 layers; e.g. a 16-layer Small
(134M parameters) matches T5-Base (223M) in quality at about 40% higher training speed. As a rule over the
registered T5-efficient sizes (tiny ... xxl, deepened in steps of nl8/12/16/24/32/36, never past 36 layers a
stack): the usual pick is the widest standard size that fits; the DeepNarrow pick is the widest size that
still fits when made deeper than its standard depth, at the most layers that fit. At T5-Base's 223M that is
Small with 24 layers (193M); at 140M, Small with 16 (the paper's example). This is a reading of the
paper's advice, not a prediction: measure with `t5lab scale-study` when the choice matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from t5lab.analysis.counting import count_parameters, forward_flops
from t5lab.analysis.pareto import Point, frontier
from t5lab.errors import T5LabError
from t5lab.shapes import T5_EFFICIENT, from_name

Kind = Literal["params", "flops", "tokens_per_s"]
DEPTHS = (8, 12, 16, 24, 32, 36)  # nl steps tried beyond a size's own depth; 32-36 is where gains level off
CITATION = "Tay et al. 2021, Scale Efficiently (arXiv:2109.10686)"
UNITS = {"params": "parameters", "flops": "forward FLOPs per example", "tokens_per_s": "training tokens/s"}


@dataclass(frozen=True)
class Suggestion:
    name: str
    reason: str


def _num(x: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def within(kind: Kind, value: float, amount: float) -> bool:
    """Parameters and FLOPs are ceilings; a throughput is a floor."""
    return value >= amount if kind == "tokens_per_s" else value <= amount


# --------------------------------------------------------------------------------------------------------
def from_measurements(rows: list[dict], kind: Kind, amount: float) -> Suggestion:
    """The lowest-loss measured shape within the budget (rows need `name`, `kind` and `loss`)."""
    points = [Point(str(r["name"]), float(r[kind]), float(r["loss"])) for r in rows]
    minimise_x = kind != "tokens_per_s"
    front = frontier(points, minimise_x=minimise_x, minimise_y=True)
    fitting = sorted((p for p in points if within(kind, p.x, amount)), key=lambda p: p.y)
    if not fitting:
        edge = min(points, key=lambda p: p.x) if minimise_x else max(points, key=lambda p: p.x)
        raise T5LabError(f"no measured shape within {_num(amount)} {UNITS[kind]}; the closest is {edge.name} at "
                         f"{_num(edge.x)}")
    best = fitting[0]
    on_front = [p for p in front if p.name == best.name and p.x == best.x]
    position = front.index(on_front[0]) + 1 if on_front else None
    reason = [f"lowest held-out loss ({best.y:.4g}) of the {len(fitting)} measured shapes within "
              f"{_num(amount)} {UNITS[kind]} (it has {_num(best.x)})"]
    if position is not None:
        reason.append(f"point {position} of {len(front)} on the {kind}/loss Pareto frontier (cheapest first)")
    beyond = [p for p in front if not within(kind, p.x, amount) and p.y < best.y]
    if beyond:
        nxt = beyond[0]
        reason.append(f"beyond the budget, {nxt.name} would lower the loss by {best.y - nxt.y:.3g} at "
                      f"{_num(nxt.x)} {UNITS[kind]}")
    if len(fitting) > 1:
        reason.append(f"runner-up {fitting[1].name} (loss {fitting[1].y:.4g}, {_num(fitting[1].x)})")
    return Suggestion(best.name, "; ".join(reason))


# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    name: str
    width: int  # index into the size table, narrowest first
    layers: int  # per stack
    params: int
    flops: int  # forward per example


def candidates(input_length: int, target_length: int, vocab_size: int | None) -> list[Candidate]:
    """The T5-efficient sizes at their own depth and deepened along `DEPTHS` (never made shallower)."""
    result = []
    for width, (size, row) in enumerate(T5_EFFICIENT.items()):
        for depth in (row.encoder_layers, *(d for d in DEPTHS if d > row.encoder_layers)):
            name = f"t5-efficient-{size}" + (f"-nl{depth}" if depth != row.encoder_layers else "")
            config = from_name(name)
            if vocab_size is not None:
                config = config.replace(vocab_size=vocab_size)
            result.append(Candidate(name, width, depth, count_parameters(config).total,
                                    forward_flops(config, input_length, target_length).total))
    return result


def deep_narrow(kind: Literal["params", "flops"], amount: float, *, input_length: int = 512,
                target_length: int = 114, vocab_size: int | None = None) -> Suggestion:
    """The DeepNarrow pick for a ceiling on parameters or forward FLOPs per example (see module doc)."""
    pool = candidates(input_length, target_length, vocab_size)
    cost = {c.name: c.params if kind == "params" else c.flops for c in pool}
    fits = [c for c in pool if cost[c.name] <= amount]
    standard = [c for c in fits if c.layers == T5_EFFICIENT[c.name.split("-")[2]].encoder_layers]
    deepened = [c for c in fits if c not in standard]
    if not standard:
        smallest = min(pool, key=lambda c: cost[c.name])
        raise T5LabError(f"no registered T5-efficient shape fits in {_num(amount)} {UNITS[kind]}; the smallest, "
                         f"{smallest.name}, has {_num(cost[smallest.name])} (a smaller --vocab_size shrinks it)")
    wide = max(standard, key=lambda c: c.width)
    pick = max(deepened, key=lambda c: (c.width, c.layers)) if deepened else wide
    unit = UNITS[kind]
    if pick == wide:
        reason = (f"the widest standard size within {_num(amount)} {unit} ({_num(cost[pick.name])}); no deeper "
                  f"variant of it or of a narrower size fits")
    else:
        reason = (f"DeepNarrow: {pick.layers}+{pick.layers} layers at {_num(cost[pick.name])} {unit} instead of "
                  f"the usual pick {wide.name} ({wide.layers}+{wide.layers} layers, {_num(cost[wide.name])})")
    reason += ("; Tay et al. find depth before width pays at a fixed budget, leveling off around 32-36 layers "
               "(a 16-layer Small, 134M, matches Base, 223M, at ~40% higher training speed) "
               f"[{CITATION}]; no measurements given: an analytic count, not a prediction")
    return Suggestion(pick.name, reason)
