"""Shared fixtures: small trained digits endpoints (trained once per session) and CLI runner."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import settings

from lowloss.cli.main import main
from lowloss.methods.context import Context, Options
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from lowloss.nets.spec import permute
from lowloss.storage.model_files import load_model
from lowloss.storage.path_table import SECONDS_COLUMNS
from lowloss.storage.weights import load_weights, save_weights, sidecar_path
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.train import train_endpoint

torch.set_num_threads(2)
LOG_LEVELS = ("INFO ", "WARNING ")


SMALL = {
    "onehidden": {"width": 16},
    "fc3": {"widths": [12, 10]},
    "conv2fc1": {"channels": [6, 8]},
    "vgg16": {"width_multiplier": 1 / 32},
}
"""A small network of every architecture (8x8 inputs)."""


def random_params(seed: int, width: int = 16, arch: str = "onehidden", options: dict | None = None) -> dict:
    """The freshly initialised weights of a digits-shaped network (torch's initialisation, seeded)."""
    torch.manual_seed(seed)
    model = build_model(arch, (1, 8, 8), 10, options or ({"width": width} if arch == "onehidden" else SMALL[arch]))
    return {key: value.detach() for key, value in model.state_dict().items()}


def network_of(arch: str = "onehidden", options: dict | None = None, width: int = 16) -> Network:
    """A digits-shaped network of `arch` (eval mode) seen as layers."""
    options = options or ({"width": width} if arch == "onehidden" else SMALL[arch])
    return Network(build_model(arch, (1, 8, 8), 10, options).eval())


def context(network: Network, data=None, **options) -> Context:
    """A method context without progress bars."""
    return Context(network, data, Options(progress=False, **options))


def method_path(
    method: str,
    a: Path,
    b: Path,
    data,
    connector: Path | None = None,
    curve: Path | None = None,
    matching: Path | None = None,
    **options,
):
    """(network, path, artifact A, artifact B): the method's path between two model files, as `lowloss connect`
    builds it."""
    from lowloss.methods.registry import get_method
    from lowloss.storage.model_files import load_model
    from lowloss.storage.weights import load_weights

    model_a, artifact_a = load_model(a)
    _, artifact_b = load_model(b)
    files = {
        name: None if file is None else load_weights(file)
        for name, file in (("connector", connector), ("curve", curve), ("matching", matching))
    }
    ctx = Context(Network(model_a), data, Options(progress=False, **options), (artifact_a, artifact_b), **files)
    path = get_method(method).build(artifact_a.tensors, artifact_b.tensors, ctx)
    return ctx.network, path, artifact_a, artifact_b


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m lowloss ARGS` and capture its output."""
    result = subprocess.run([sys.executable, "-m", "lowloss", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"lowloss {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI in this process (no interpreter start-up), captured like `run_cli`."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def copy_model(source: Path, target: Path) -> Path:
    """Copy a weight file and its sidecar; returns the copy's path."""
    shutil.copy(source, target)
    shutil.copy(sidecar_path(source), sidecar_path(target))
    return target


def copy_with_meta(source: Path, target: Path, **changes) -> Path:
    """A copy of a model file whose metadata says something else (same tensors, so the same hash)."""
    artifact = load_weights(source)
    save_weights(target, artifact.tensors, {**artifact.meta, **changes})
    return target


def evaluated_points(table: Path | pd.DataFrame) -> pd.DataFrame:
    """A path table's points without its seconds, which are each run's own (to compare two runs' tables)."""
    table = pd.read_csv(table) if isinstance(table, Path) else table
    return table.drop(columns=[column for column in SECONDS_COLUMNS if column in table.columns])


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The CLI's error contract: exit 2, one stderr line starting `lowloss: error:`, no traceback.

    Progress lines logged before it (`INFO …: loading dataset …`) may precede it.
    """
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(LOG_LEVELS)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lowloss: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def hashes(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file by the hash of its bytes, anything else by what it is."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"link to {os.readlink(path)}"
        elif path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[name] = "folder" if path.is_dir() else f"mode {path.lstat().st_mode:o}"
    return found


@pytest.fixture
def no_data(monkeypatch):
    """Loading a dataset fails the test: every refusal here comes before any data is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded before the refusal")

    monkeypatch.setattr("lowloss.training.data.load_dataset", refuse)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def few_digits(digits):
    """The first 256 training and 128 test digits: for comparing strategies, where every point is evaluated twice."""
    from dataclasses import replace

    return replace(
        digits,
        x_train=digits.x_train[:256],
        y_train=digits.y_train[:256],
        x_test=digits.x_test[:128],
        y_test=digits.y_test[:128],
    )


@pytest.fixture(scope="session")
def digits_endpoints(tmp_path_factory, digits) -> callable:
    """`get(width, seed, epochs=20)` -> path of a trained onehidden digits endpoint, trained once."""
    cache: dict[tuple[int, int, int], Path] = {}
    folder = tmp_path_factory.mktemp("endpoints")

    def get(width: int, seed: int, epochs: int = 20) -> Path:
        key = (width, seed, epochs)
        if key not in cache:
            out = folder / f"w{width}-s{seed}-e{epochs}.safetensors"
            train_endpoint(
                "onehidden", {"width": width}, digits, TrainConfig(epochs=epochs, seed=seed), out, progress=False
            )
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def odd_endpoints(tmp_path_factory, digits):
    """A width-32 onehidden and an fc3 endpoint (one epoch each: only their shape matters), for the errors
    of commands given models of different widths or architectures."""
    folder = tmp_path_factory.mktemp("odd")
    narrow, fc3 = folder / "narrow.safetensors", folder / "fc3.safetensors"
    train_endpoint("onehidden", {"width": 32}, digits, TrainConfig(epochs=1), narrow, progress=False)
    train_endpoint("fc3", {"widths": [16, 8]}, digits, TrainConfig(epochs=1), fc3, progress=False)
    return narrow, fc3


RESNET_PAIR_OPTIONS = {"width_multiplier": 1 / 16, "norm": "batch"}


@pytest.fixture(scope="session")
def resnet_pair(tmp_path_factory, few_digits):
    """Two resnet20 endpoints with BatchNorm (width 1/16: 1, 2 and 4 channels), trained briefly on 256 digits."""
    folder = tmp_path_factory.mktemp("resnet")
    paths = []
    for seed in (0, 1):
        out = folder / f"seed{seed}.safetensors"
        train_endpoint(
            "resnet20", RESNET_PAIR_OPTIONS, few_digits, TrainConfig(epochs=3, lr=0.05, seed=seed), out, progress=False
        )
        paths.append(out)
    return paths


def planted(network: Network, theta: dict, seed: int) -> tuple[dict, dict]:
    """Θ permuted in every group, and the permutations."""
    gen = torch.Generator().manual_seed(seed)
    shuffles = {group: torch.randperm(network.spec.size(theta, group), generator=gen) for group in network.spec.groups}
    return permute(theta, network.spec, shuffles), shuffles


def scaled_copy(theta: dict, model: torch.nn.Module, factor: float) -> dict:
    """The same function as `theta`: every conv before a BatchNorm scaled by `factor`, its running mean by `factor`
    and its running variance by `factor`²; a straight line to it mixes the variances wrongly on the way."""
    scaled = dict(theta)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            conv = name.replace("norm", "conv").replace("shortcut.1", "shortcut.0")
            scaled[f"{conv}.weight"] = theta[f"{conv}.weight"] * factor
            scaled[f"{name}.running_mean"] = theta[f"{name}.running_mean"] * factor
            scaled[f"{name}.running_var"] = theta[f"{name}.running_var"] * factor**2
    return scaled


@pytest.fixture(scope="session")
def rescaled_resnet_copy(tmp_path_factory, few_digits) -> tuple[Network, dict, dict]:
    """(network, Θ^A, Θ^B): a BatchNorm resnet20 (width 1/8) trained briefly on 256 digits, and a copy with every
    group permuted and every conv scaled by 3 — the same function, with other running statistics."""
    out = tmp_path_factory.mktemp("rescaled") / "a.safetensors"
    train_endpoint(
        "resnet20",
        {"width_multiplier": 1 / 8, "norm": "batch"},
        few_digits,
        TrainConfig(epochs=4, lr=0.05, seed=0),
        out,
        progress=False,
    )
    model, artifact = load_model(out)
    network = Network(model)
    theta_b, _ = planted(network, scaled_copy(artifact.tensors, model, 3.0), seed=1)
    return network, artifact.tensors, theta_b


USER_MODEL = "tests.user_models:TinyCNN"
"""The reference of the user's own network in the tests (importable from the project's root)."""


@pytest.fixture(scope="session")
def user_checkpoints(tmp_path_factory, digits):
    """(A, B, [model A, model B]): two TinyCNNs trained by a plain PyTorch loop on digits and saved as users do:
    A as a training checkpoint (.pt, the state dict under `state_dict` with DataParallel's `module.` prefix,
    beside the epoch), B as plain safetensors."""
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from tests.user_models import TinyCNN

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = TinyCNN()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(8):
            for index in torch.randperm(len(digits.y_train)).split(64):
                loss = F.cross_entropy(model(digits.x_train[index]), digits.y_train[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        models.append(model.eval())
    folder = tmp_path_factory.mktemp("user")
    a, b = folder / "a.pt", folder / "b.safetensors"
    torch.save({"epoch": 8, "state_dict": {f"module.{k}": v for k, v in models[0].state_dict().items()}}, a)
    save_file(models[1].state_dict(), str(b))
    return a, b, models


settings.register_profile("lowloss", derandomize=True, max_examples=40, deadline=None)
settings.load_profile("lowloss")
"""Hypothesis' examples are derandomized (every run tries the same ones) and few, so the suite stays quick."""
