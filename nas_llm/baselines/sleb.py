"""``sleb`` (Song et al. 2024, "SLEB: Streamlining LLMs through Redundancy Verification and Elimination
of Transformer Blocks", Alg. 1; official code jiwonsong-dev/SLEB ``sleb.py``).

Greedy: remove one block at a time, each time the block whose removal (on top of the ones already
removed) gives the lowest calibration NLL, re-evaluated after every removal, until the ratio is met.
As in their code the first and the last block are never candidates (``early_barrier = 1``,
``latter_barrier = 1``; ``barriers=(1, 1)``) and the criterion is the summed NLL over the
calibration windows (monotone in their perplexity). A removed block is skipped exactly as a dropped
layer of our space (``nas_llm.model.masking.masked``), so the result is a ``Subnet`` with dropped
layers and the same slicing/export path as everything else.

Differences: the calibration set is the caller's protocol (theirs: 128 x 2048 tokens of WikiText-2
train); the number of removed blocks is the one whose decoder-param ratio is nearest the request
(theirs: a given count). The greedy order is computed once per model and calibration set and its
prefixes serve every ratio.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from search_spaces import Plan, Ranking, SubnetError, SubnetSpace, get_family
from search_spaces.plan import LayerPlan

from nas_llm.model.importance import LayerStats, fingerprint
from nas_llm.model.masking import masked
from nas_llm.model.metrics import nll_sum

from .base import Baseline, check_ratio, forward_batches, memo, register, require
from .shortgpt import n_to_drop


def _plan(dims, skipped: set[int]) -> Plan:
    return Plan(tuple(LayerPlan(i not in skipped, tuple(range(dims.num_kv_heads)), tuple(range(dims.intermediate)))
                      for i in range(dims.num_layers)))


def calibration_nll(model: nn.Module, input_ids: torch.Tensor, removed: list[int], batch_size: int = 4) -> float:
    """Mean next-token NLL of ``model`` with the blocks ``removed`` skipped."""
    with masked(model, _plan(SubnetSpace.from_model(model).dims, set(removed))):
        total, count = nll_sum(model, input_ids, batch_size)
    return total / count


def _layer_inputs(model: nn.Module, batches: list[torch.Tensor], removed: list[int]) -> list[list[torch.Tensor]]:
    """inputs[j][b]: hidden state entering block j on batch b, blocks ``removed`` skipped."""
    fam = get_family(model)
    layers = fam.decoder_layers(model)
    rec: list[list[torch.Tensor]] = [[] for _ in layers]

    def hook(j: int):
        def pre(mod, args, kwargs):
            rec[j].append(args[0] if args else kwargs["hidden_states"])
        return pre

    handles = [layer.register_forward_pre_hook(hook(j), with_kwargs=True) for j, layer in enumerate(layers)]
    with masked(model, _plan(fam.dims(model), set(removed))):
        forward_batches(model, batches, handles)
    return rec


def _candidate_nll(model: nn.Module, batches: list[torch.Tensor], removed: list[int], j: int,
                   inputs: list[list[torch.Tensor]]) -> float:
    """Mean NLL with ``removed + [j]`` skipped, starting from the cached input of block j (blocks < j unchanged)."""
    fam = get_family(model)
    L = len(fam.decoder_layers(model))
    if set(removed) | set(range(j + 1)) >= set(range(L)):  # nothing after j runs: a plan must keep a block
        return calibration_nll(model, torch.cat(batches), removed + [j], batches[0].shape[0])
    box: dict = {}

    def start(mod, args, kwargs):  # block 0 (skipped like every block <= j) receives block j's cached input
        return ((box["h"], *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": box["h"]})

    handle = fam.decoder_layers(model)[0].register_forward_pre_hook(start, with_kwargs=True)
    total, count = 0.0, 0
    try:
        with masked(model, _plan(fam.dims(model), set(removed) | set(range(j + 1)))):
            for b, ids in enumerate(batches):
                box["h"] = inputs[j][b]
                t, c = nll_sum(model, ids, batch_size=ids.shape[0])
                total, count = total + t, count + c
    finally:
        handle.remove()
    return total / count


def removal_order(model: nn.Module, input_ids: torch.Tensor, n: int, barriers: tuple[int, int] = (1, 1),
                  batch_size: int = 4, progress: bool = False) -> tuple[list[int], list[float]]:
    """The first ``n`` blocks SLEB removes, and the calibration NLL after each removal (memoised, extended on demand).

    Every candidate of a step shares the blocks before it with the current model, so their inputs
    are computed once per step and each candidate runs only from its own block on (about half the
    work of full forwards; ``calibration_nll`` is the plain definition the tests compare with).
    """
    L = SubnetSpace.from_model(model).num_layers
    early, latter = barriers
    state = memo(fingerprint(model, input_ids, f"sleb{early},{latter}", 0.0), lambda: {"removed": [], "nll": []})
    removed, nlls = state["removed"], state["nll"]
    device = next(model.parameters()).device
    batches = [input_ids[i : i + batch_size].to(device) for i in range(0, input_ids.shape[0], batch_size)]
    with tqdm(total=n, initial=min(len(removed), n), desc="SLEB", disable=not progress, leave=False) as bar:
        while len(removed) < n:
            cands = [j for j in range(early, L - latter) if j not in removed]
            if not cands:
                raise SubnetError(f"SLEB cannot remove {n} of {L} blocks with barriers {barriers} (first/last blocks kept)")
            inputs = _layer_inputs(model, batches, removed)
            scores = [(_candidate_nll(model, batches, removed, j, inputs), j) for j in cands]
            del inputs
            best = min(scores)  # lowest NLL; ties: the earlier block, as their strict '<' scan
            removed.append(best[1])
            nlls.append(best[0])
            bar.update(1)
    return list(removed[:n]), list(nlls[:n])


def resume_removal_order(model: nn.Module, input_ids: torch.Tensor, removed: list[int], nlls: list[float],
                         barriers: tuple[int, int] = (1, 1)) -> None:
    """Start ``removal_order`` from a prefix measured earlier on the same model and calibration (e.g. a
    cached table row), so a later ratio only pays for the blocks beyond it; a longer memo is kept."""
    if len(removed) != len(nlls) or len(set(removed)) != len(removed):
        raise ValueError(f"SLEB prefix: {len(removed)} blocks {removed} with {len(nlls)} NLLs; expected distinct "
                         "blocks, one NLL each")
    L = SubnetSpace.from_model(model).num_layers
    early, latter = barriers
    bad = [j for j in removed if not early <= j < L - latter]
    if bad:
        raise ValueError(f"SLEB prefix: blocks {bad} are outside [{early}, {L - latter}) for barriers {barriers}")
    state = memo(fingerprint(model, input_ids, f"sleb{early},{latter}", 0.0), lambda: {"removed": [], "nll": []})
    if len(state["removed"]) < len(removed):
        state["removed"][:], state["nll"][:] = list(removed), [float(x) for x in nlls]


@register("sleb", paper="Song et al. 2024 (SLEB)", needs="calib", structure="depth", granularity=None, reform=None,
          head_unit=None)
def sleb(model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None,
         calib: torch.Tensor | None = None, barriers: tuple[int, int] = (1, 1), batch_size: int = 4,
         progress: bool = False) -> Baseline:
    """Greedy block removal by calibration perplexity, as many blocks as bring the ratio nearest ``ratio``."""
    check_ratio(ratio)
    require(calib, "sleb", "calib")
    space = space or SubnetSpace.from_model(model)
    if not space.allow_layer_drop:
        raise SubnetError("sleb removes blocks, but this space disallows layer dropping")
    n = n_to_drop(space, ratio)
    removed, nlls = removal_order(model, calib, n, barriers, batch_size, progress)
    subnet = space.uniform(drop=removed)
    d = space.dims
    L = d.num_layers
    order_score = np.full(L, float(L))  # layer score: removed earlier = less important
    order_score[removed] = np.arange(len(removed))
    ranking = Ranking([np.arange(d.num_kv_heads)] * L, [np.arange(d.intermediate)] * L, order_score, "sleb")
    return Baseline("sleb", ratio, subnet, ranking, info={"removed": removed, "calibration_nll": nlls, "barriers": list(barriers)},
                    space=space)


__all__ = ["calibration_nll", "removal_order", "resume_removal_order", "sleb"]
