"""The strategy: which candidates to try, in which order, over an ``Evaluator`` (Polygraphy's markers, as functions).

Order: baselines; whole-model levers (clamp sentinels, per-channel weights, outlier-robust
calibration, and any other registered ``scope="model"`` lever), each tried once and kept only if
it helps; then suspects ranked by a cheap sensitivity pass are searched as *sets*: galloping and
bisection over the ranked list for the shortest prefix that meets the target (int16 first, so the
model stays integer-only when that suffices, float after, as the evidence says), then pruning of
nodes that turn out not to be needed. Nothing here quantizes, runs or times a model: the
evaluator does, and every evaluation lands in its trace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from quantdebug.fix._evaluator import BudgetSpent, Evaluator
from quantdebug.fix._int16 import first_lever_share, lever_order
from quantdebug.fix._result import Candidate
from quantdebug.fix.levers import REGISTRY, LeverContext
from quantdebug.pipeline.plan import Plan

Best = tuple[Candidate, float]  # a candidate and its quality
ORDERED_BY_EVIDENCE = ("int16", "float")  # the precision levers ``_int16`` orders from its measurement


def search(evaluator: Evaluator, plan: Plan) -> tuple[Best, float, float, str]:
    """Best candidate found, the float and int8 qualities, and a message prefix (the budget ran out, or "")."""
    float_q = evaluator.evaluate_float()
    evaluator.set_target(float_q)
    int8_q = evaluator.evaluate(Candidate(), "int8")
    best: Best = (Candidate(), int8_q)
    context = evaluator.context(plan)
    active = list(evaluator.options.levers)  # a lever the model cannot take (int16 past opset 21) leaves
    message = ""
    try:
        if not evaluator.meets(int8_q):
            best = whole_model_levers(evaluator, best, context, active)
            if not evaluator.meets(best[1]):
                best = precision_search(evaluator, best, context, active)
    except BudgetSpent:
        message = f"the evaluation budget (max_evals={evaluator.max_evals}) ran out; "
        best = best_evaluated(evaluator, best)  # the search step that ran out held its own best
    return best, float_q, int8_q, message


def try_once(evaluator: Evaluator, best: Best, candidate: Candidate, step: str) -> Best:
    """``candidate`` if it evaluates better than ``best``, else ``best``."""
    if candidate == best[0]:
        return best
    quality = evaluator.evaluate(candidate, step)
    return (candidate, quality) if evaluator.better(quality, best[1]) else best


def whole_model_levers(evaluator: Evaluator, best: Best, context: LeverContext, active: Sequence[str]) -> Best:
    """Each whole-model lever in its ``order``, one evaluation each, kept only when the quality improves."""
    handlers = sorted((REGISTRY[n] for n in active if REGISTRY[n].scope == "model"), key=lambda h: h.order)
    reserve = search_reserve(evaluator, active)
    for lever in handlers:
        if lever.only_while_unmet and evaluator.meets(best[1]):
            continue
        if lever.after_reserve and evaluator.remaining - 1 < reserve:
            continue  # its evaluation would leave the per-node search too few
        if not lever.available(context):
            continue
        changes = lever.propose(context)
        if not changes:
            continue
        tried = try_once(evaluator, best, lever.apply(best[0], changes), lever.label(changes))
        if (
            lever.after_reserve
            and best[0].per_channel
            and not evaluator.meets(tried[1])
            and evaluator.remaining - 1 >= reserve
        ):
            # a weight lever can do far better on per-tensor weights than on the per-channel ones
            # kept before it (the PP-OCRv4 detector: adaround 0.80 on top of per-channel weights on 36
            # nodes, 0.975 on per-tensor weights): one more evaluation, kept if it is the better
            alone = lever.apply(best[0].merged(per_channel=()), changes)
            tried = try_once(evaluator, tried, alone, lever.label(changes) + ", without per-channel weights")
        best = tried
    return best


def search_reserve(evaluator: Evaluator, active: Sequence[str]) -> int:
    """Evaluations the per-node search needs to gallop and bisect over L ranked nodes (``2*ceil(log2 L)``):
    the weight levers (``after_reserve``) spend the budget only beyond it, so a small ``max_evals``
    still reaches the per-node levers. No per-node lever, no reserve."""
    if not any(REGISTRY[n].scope == "node" for n in active):
        return 0
    return 2 * math.ceil(math.log2(max(evaluator.quantized_nodes, 2)))


def still_available(name: str, context: LeverContext, active: list[str]) -> bool:
    """Whether a per-node lever in ``active`` can run; one that cannot leaves ``active`` for the rest of the search."""
    if name in active and not REGISTRY[name].available(context):
        active.remove(name)
    return name in active


def node_lever_order(
    evaluator: Evaluator, start: Candidate, ranked: Sequence[str], context: LeverContext, active: list[str]
) -> list[str]:
    """The per-node levers in the order to try: int16 and float as the evidence favours (``_int16``), then the rest."""
    gain = None
    if all(n in active for n in ORDERED_BY_EVIDENCE) and still_available("int16", context, active):
        gain = evaluator.int16_gain_db(start, ranked)
    others = [n for n in active if REGISTRY[n].scope == "node" and n not in ORDERED_BY_EVIDENCE]
    return [*lever_order(active, gain), *others]


def precision_search(evaluator: Evaluator, best: Best, context: LeverContext, active: list[str]) -> Best:
    """The shortest prefix of the ranked suspects that meets the target under one per-node lever, pruned."""
    if not any(REGISTRY[n].scope == "node" for n in active):
        return best  # no per-node lever: the ranking would cost its runs for nothing
    start = best[0]
    plan = context.plan if start == Candidate() else evaluator.plan_for(start)
    ranked = evaluator.rank(plan)
    if not ranked:
        return best
    order = node_lever_order(evaluator, start, ranked, context, active)
    share = first_lever_share(evaluator.remaining, order)
    for name in order:
        if not still_available(name, context, active):
            continue
        limit = evaluator.evaluations + share if share is not None and name == order[0] else None
        best, found = gallop_and_bisect(evaluator, best, context, start, ranked, name, limit)
        if found is not None:
            return prune(evaluator, found, context, start, name)
    return best


def with_nodes(context: LeverContext, start: Candidate, lever: str, nodes: Sequence[str]) -> Candidate:
    """``start`` with the per-node ``lever`` applied to ``nodes``."""
    handler = REGISTRY[lever]
    return handler.apply(start, handler.propose(context, nodes))


def gallop_and_bisect(
    evaluator: Evaluator,
    best: Best,
    context: LeverContext,
    start: Candidate,
    ranked: Sequence[str],
    lever: str,
    limit: int | None,
) -> tuple[Best, tuple[list[str], float] | None]:
    """The best seen so far, and the shortest prefix of ``ranked`` meeting the target with its quality (or None).

    Galloping: prefixes of 1, 2, 4, ... nodes until one meets the target, then bisection between
    the last two; cheap when few nodes are to blame, and robust when changing every node at once
    fails where changing a few succeeds. ``limit``: stop galloping at this many evaluations.
    """
    qualities: dict[int, float] = {}
    lo, k = 0, 1
    while True:
        if limit is not None and evaluator.evaluations >= limit:
            break  # the rest of the budget is the other lever's
        k = min(k, len(ranked))
        candidate = with_nodes(context, start, lever, ranked[:k])
        qualities[k] = evaluator.evaluate(candidate, f"{lever}: first {k} ranked")
        if evaluator.better(qualities[k], best[1]):
            best = (candidate, qualities[k])
        if evaluator.meets(qualities[k]) or k == len(ranked):
            break
        lo, k = k, 2 * k
    if k not in qualities or not evaluator.meets(qualities[k]):
        return best, None
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        qualities[mid] = evaluator.evaluate(
            with_nodes(context, start, lever, ranked[:mid]), f"{lever}: bisect first {mid}"
        )
        if evaluator.meets(qualities[mid]):
            hi = mid
        else:
            lo = mid
    return best, (list(ranked[:hi]), qualities[hi])


def prune(
    evaluator: Evaluator, found: tuple[list[str], float], context: LeverContext, start: Candidate, lever: str
) -> Best:
    """Drop the nodes ``found`` (last ranked first) that the target does not need; a spent budget ends it quietly."""
    chosen, quality = found
    best = (with_nodes(context, start, lever, chosen), quality)
    for node in reversed(list(chosen)):
        if len(chosen) <= 1:
            break
        trial = [n for n in chosen if n != node]
        candidate = with_nodes(context, start, lever, trial)
        try:
            quality = evaluator.evaluate(candidate, f"{lever}: prune {node}")
        except BudgetSpent:
            break
        if evaluator.meets(quality):
            chosen = trial
            best = (candidate, quality)
    return best


def best_evaluated(evaluator: Evaluator, best: Best) -> Best:
    """Among every candidate evaluated: the one meeting the target with the fewest nodes out of int8
    (fewest in float next, then the best quality), or the best quality if none meets it."""
    seen = [
        (e.candidate, e.quality) for e in evaluator.trace.entries if e.step != "float" and not math.isnan(e.quality)
    ]
    seen.append(best)
    met = [(c, q) for c, q in seen if evaluator.meets(q)]
    if met:
        sign = -1.0 if evaluator.higher else 1.0
        return min(met, key=lambda cq: (cq[0].non_int8, len(cq[0].float_nodes), sign * cq[1]))
    return max(seen, key=lambda cq: cq[1]) if evaluator.higher else min(seen, key=lambda cq: cq[1])
