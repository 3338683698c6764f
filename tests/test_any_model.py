"""Any PyTorch model end to end: zoo models and the user's own modules, whose specs are inferred from their graphs
(`lowloss.nets.inference.model_spec`), connected from Python and the command line; what cannot be inferred is one
line. (A planted permutation recovered on zoo models: tests/test_inference.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import lowloss
from lowloss.errors import LowlossError
from lowloss.nets.external import build_reference
from tests.conftest import assert_one_line_error, run_cli, run_main

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` with random norm statistics (fresh ones are all 0 and 1, which any permutation keeps)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def test_a_hand_written_attention_is_refused_by_name(tmp_path, capsys):
    from tests.user_models import HandAttention

    with pytest.raises(LowlossError) as error:
        lowloss.infer_spec(HandAttention(), (1, 8, 8))
    assert "\n" not in str(error.value) and any(name in str(error.value) for name in ("qkv", "matmul", "softmax"))
    result = run_main(capsys, "info", "--model", "tests.user_models:HandAttention", "--input-size", "1,8,8")
    assert_one_line_error(result)


def test_a_model_that_does_not_trace_is_one_line(capsys):
    result = run_main(capsys, "info", "--model", "tests.user_models:Untraceable", "--input-size", "1,8,8")
    assert_one_line_error(result, "Untraceable")


def test_the_command_line_connects_torchvision_checkpoints(tmp_path, capsys):
    files = []
    for seed, name in ((0, "a.pt"), (1, "b.safetensors")):
        torch.manual_seed(seed)
        state = randomised(build_reference("torchvision:resnet18", {"num_classes": 10}), seed).state_dict()
        files.append(tmp_path / name)
        if name.endswith(".pt"):
            torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, files[-1])
        else:
            save_file(state, str(files[-1]))
    model = ["--model", "torchvision:resnet18", "--model-args", "num_classes=10", "--input-size", "3,16,16"]
    data = ["--dataset", "synthetic-cifar", "--points", "2", "--no-progress"]
    # linear only: a permutation stage between random ResNet-18s has about a thousand swap legs, each a full
    # pass; the permuting methods run on SmallCNN below, and the route on ResNet-18 in tests/test_inference.py
    result = run_main(capsys, "connect", *files, *model, *data, "--method", "linear", "--out", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["legs"] == 1
    result = run_main(capsys, "info", files[0], *model)
    assert result.returncode == 0 and "stages" in result.stdout and "methods that apply: linear" in result.stdout


def test_the_examples_small_cnn_connects_from_the_command_line(tmp_path):
    sys.path.insert(0, EXAMPLES)
    from fashion_cnn import SmallCNN

    files = [tmp_path / "cnn-a.pt", tmp_path / "cnn-b.safetensors"]
    for seed, file in enumerate(files):
        torch.manual_seed(seed)
        state = randomised(SmallCNN(4), seed).state_dict()
        torch.save(state, file) if file.suffix == ".pt" else save_file(state, str(file))
    model = ["--model", "fashion_cnn:SmallCNN", "--model-args", "width=4", "--dataset", "synthetic-mnist"]
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [EXAMPLES, env_path]))
    try:
        for method, extra in (("linear", []), ("weight-matching", ["--bn-batches", "8"]), ("ot+wa", [])):
            out = tmp_path / f"{method}.csv"
            run_cli("connect", *files, *model, "--method", method, *extra, "--points", "2", "--out", out, check=True)
    finally:
        os.environ["PYTHONPATH"] = env_path


def test_the_quickstart_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "quickstart.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "worst test accuracy" in result.stdout and (tmp_path / "quickstart.png").is_file()
