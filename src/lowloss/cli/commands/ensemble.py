"""Ensemble trained models: Ind, or a WA-ensemble sharing model 1's backbone (paper §6, Fig. 7)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lowloss.cli.options import (
    MAX_WA_LAYER,
    add_dataset_options,
    add_device_option,
    add_model_options,
    add_seed_option,
    add_wa_samples_option,
    count,
    model_inputs,
    output_path,
)
from lowloss.errors import LowlossError
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import ENSEMBLE, MODEL

if TYPE_CHECKING:
    from lowloss.api.models import Endpoints
    from lowloss.ensemble.backbone import Ensemble
    from lowloss.nets.network import Network
    from lowloss.storage.weights import Artifact

NAME = "ensemble"
HELP = "ensemble trained models: Ind, or WA(n) on model 1's backbone (§6); accuracy, loss and cost as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="+",
        type=Path,
        help="trained models (.safetensors), or with --model checkpoints, of one architecture, width and "
        "dataset; the first is model 1, whose backbone a WA-ensemble shares",
    )
    method = parser.add_mutually_exclusive_group(required=True)
    method.add_argument(
        "--wa-layer",
        type=count(1, MAX_WA_LAYER),
        metavar="N",
        help="WA(N): re-fit every member's N-th layer from the last to read model 1's features "
        f"(1: the last layer, saved as one ordinary model; at most {MAX_WA_LAYER})",
    )
    method.add_argument("--independent", action="store_true", help="Ind: the usual ensemble of the unchanged models")
    add_dataset_options(parser, user_data=True)
    add_device_option(parser)
    add_wa_samples_option(parser, "WA(N)")
    add_seed_option(parser, "seed of the --wa-samples subset")
    parser.add_argument(
        "--out",
        type=output_path,
        required=True,
        help="the ensemble (.safetensors + .json sidecar; WA(1): an ordinary model file)",
    )
    add_model_options(parser)


def check(args: argparse.Namespace) -> None:
    if args.independent and args.wa_samples is not None:
        raise LowlossError("--wa-samples applies to WA(N) ensembles (--wa-layer N), not to --independent")
    kind = MODEL if args.wa_layer == 1 else ENSEMBLE  # WA(1) is one averaged network
    check_files(model_inputs(args, args.models), [weights_output("--out", args.out, kind)])


def checked_network(models: Endpoints, wa_layer: int | None) -> Network:
    """The members' network, checked to hold members that fit it and, for WA(n), an n-th layer to re-fit."""
    import torch

    from lowloss.ensemble import backbone as ensemble

    network = models.network(torch.device("cpu"))
    ensemble.check_members(network, [artifact.tensors for artifact in models.artifacts])
    if wa_layer is not None:
        ensemble.split_layer(network, wa_layer)
    return network


def summarise(
    artifacts: list[Artifact], ind: Ensemble, wa: Ensemble | None, scores: dict, input_shape: tuple[int, ...]
) -> dict:
    """What the command reports and the ensemble's sidecar records: every member's, Ind's and WA's scores
    (flat, for MLflow), and the inference cost and stored parameters of one model, Ind and WA(n)."""
    from lowloss.ensemble.backbone import IND, Ensemble, flat_scores

    built = wa or ind
    members = [
        {
            "path": str(artifact.path),
            "seed": artifact.meta.get("seed"),
            "sha256": artifact.meta["sha256"],
            **flat_scores(member),
        }
        for artifact, member in zip(artifacts, scores["members"])
    ]
    result = {
        "method": built.method,
        "wa_layer": built.wa_layer,
        "size": len(artifacts),
        "members": members,
        **flat_scores(scores["members"][0], "single"),
        "best_single_test_acc": max(member["test_acc"] for member in members),
        **flat_scores(scores[IND], IND),
    }
    costs = {"single": Ensemble(ind.network, {}, ind.heads[:1]).costs(input_shape), IND: ind.costs(input_shape)}
    if wa is not None:
        result.update(adjusted_layer=wa.network.layers[wa.split].name, **flat_scores(scores["wa"], "wa"))
        for member, adjusted in zip(members[1:], scores["adjusted"]):
            member.update(flat_scores(adjusted, "adjusted"))
        costs["wa"] = wa.costs(input_shape)
    for name, cost in costs.items():
        result.update({f"{name}_{kind}": value for kind, value in cost.items()})
    return result


def run(args: argparse.Namespace) -> dict:
    from lowloss.api.models import for_data
    from lowloss.cli.options import dataset_from_args, endpoints_from_args
    from lowloss.ensemble import backbone as ensemble
    from lowloss.methods.adjust import fitting_samples
    from lowloss.storage.model_files import model_meta
    from lowloss.storage.weights import save_weights

    started = time.perf_counter()
    models = endpoints_from_args(args, args.models, "ensemble members")
    described = "input_shape" in models.meta  # model files: checked before the data are loaded
    network = checked_network(models, args.wa_layer) if described else None
    models, data = for_data(models, dataset_from_args(args, models.model))
    network = network or checked_network(models, args.wa_layer)
    artifacts = list(models.artifacts)
    device = data.x_train.device
    network.model.to(device)
    members = [{key: value.to(device) for key, value in artifact.tensors.items()} for artifact in artifacts]
    ind, wa, extra = ensemble.independent(network, members), None, {}
    if args.wa_layer is not None:
        x = fitting_samples(data.x_train, args.wa_samples, args.seed)
        wa = ensemble.weight_adjusted(network, members, args.wa_layer, x)
        extra["wa_samples"] = len(x)
    scores = ensemble.evaluate(ind, wa, data)
    result = {**summarise(artifacts, ind, wa, scores, data.input_shape), **extra}
    meta = {**model_meta(artifacts[0].meta), **result}
    if wa is not None and wa.averages_logits:  # one network: an ordinary model file
        save_weights(args.out, wa.averaged(), {**meta, "kind": MODEL, **ensemble.flat_scores(scores["wa"])})
    else:
        ensemble.save_ensemble(args.out, wa or ind, meta)
    return {**result, "out": str(args.out), "seconds": round(time.perf_counter() - started, 3)}
