"""Endpoint training: accuracy on digits, the schedule, determinism and resume-after-interrupt."""

import pytest
import torch
from safetensors.torch import load_file

from lowloss.storage.checkpoints import checkpoint_path, discard_checkpoint
from lowloss.storage.header import sidecar_path
from lowloss.storage.weights import read_meta
from lowloss.training.config import TrainConfig
from lowloss.training.train import SCHEDULE, learning_rate, train_endpoint


def test_digits_onehidden_reaches_95_percent(digits_endpoints):
    from lowloss.storage.weights import read_meta

    meta = read_meta(digits_endpoints(256, 0, 20))
    assert meta["test_acc"] >= 0.95
    assert 0.0 <= meta["train_acc"] <= 1.0


def test_schedule_is_constant_then_linear_to_one_percent():
    config = TrainConfig(epochs=100, lr=0.1)
    assert learning_rate(0.0, config) == learning_rate(0.5, config) == 0.1
    assert learning_rate(0.7, config) == pytest.approx(0.1 * (1 - 0.5 * 0.99))
    assert learning_rate(0.9, config) == pytest.approx(0.001)
    assert learning_rate(0.99, config) == pytest.approx(0.001)


def test_a_one_epoch_run_anneals_within_its_epoch(digits, tmp_path):
    """The schedule runs per step: a single epoch ends at 1 % of the rate, as a long run's last epochs do."""
    meta = train_endpoint(
        "onehidden", {"width": 16}, digits, TrainConfig(epochs=1, lr=0.05), tmp_path / "m.safetensors", progress=False
    )
    assert meta["history"][0]["lr"] == pytest.approx(0.0005)
    assert meta["schedule"] == SCHEDULE  # in the identity: a checkpoint of another schedule is not resumed


def _train(digits, out, epochs=4, interrupt_after=None, seed=3):
    def stop(epoch, row, model):
        if epoch == interrupt_after:
            raise KeyboardInterrupt

    return train_endpoint(
        "onehidden",
        {"width": 64},
        digits,
        TrainConfig(epochs=epochs, seed=seed),
        out,
        on_epoch_end=stop,
        progress=False,
    )


def test_same_seed_gives_bit_identical_weights(digits, tmp_path):
    _train(digits, tmp_path / "a.safetensors")
    _train(digits, tmp_path / "b.safetensors")
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(_train_other_seed(digits, tmp_path))
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def _train_other_seed(digits, tmp_path):
    out = tmp_path / "c.safetensors"
    _train(digits, out, seed=4)
    return out


def test_interrupted_run_resumes_to_the_same_weights(digits, tmp_path):
    whole = tmp_path / "whole.safetensors"
    _train(digits, whole)
    resumed = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(digits, resumed, interrupt_after=2)
    assert not resumed.exists() and checkpoint_path(resumed).exists()
    meta = _train(digits, resumed)
    assert [row["epoch"] for row in meta["history"]] == [1, 2, 3, 4]
    a, b = load_file(whole), load_file(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not checkpoint_path(resumed).exists()


def test_a_checkpoint_sidecar_left_without_its_weights_by_an_identical_run_is_removed(digits, tmp_path):
    """Two identical runs: one may remove the checkpoint between the other's write of its weights and of its
    sidecar. The sidecar left behind is this run's and goes with its checkpoint; another run's stays."""
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(digits, out, interrupt_after=2)
    side = sidecar_path(checkpoint_path(out))
    orphan = side.read_text()
    _train(digits, out)
    assert not side.exists()
    side.write_text(orphan)
    discard_checkpoint(out)
    assert not side.exists()
    side.write_text(orphan.replace(read_meta(out)["config_hash"], "0" * 16))
    discard_checkpoint(out)
    assert side.exists()


def test_a_stale_checkpoint_of_another_configuration_is_set_aside(digits, tmp_path, caplog):
    out = tmp_path / "changed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(digits, out, epochs=4, interrupt_after=2)
    stale = checkpoint_path(out).read_bytes()
    meta = _train(digits, out, epochs=3)  # the configuration changed after the interruption
    asides = list(tmp_path.glob("changed.ckpt.*.safetensors"))
    assert len(asides) == 1 and asides[0].read_bytes() == stale  # kept, under the identity of its configuration
    assert asides[0].name == f"changed.ckpt.{read_meta(asides[0])['identity']}.safetensors"
    assert f"set aside as {asides[0].name}, starting afresh" in caplog.text
    assert [row["epoch"] for row in meta["history"]] == [1, 2, 3]
    reference = tmp_path / "reference.safetensors"
    _train(digits, reference, epochs=3)
    a, b = load_file(out), load_file(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_that_cannot_be_trusted_is_set_aside_and_training_starts_afresh(digits, tmp_path, caplog):
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(digits, out, interrupt_after=2)
    ckpt = checkpoint_path(out)
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last weight: the hash in the header no longer matches
    ckpt.write_bytes(bytes(data))
    meta = _train(digits, out)
    assert "set aside as m.ckpt.untrusted.safetensors, starting afresh" in caplog.text
    assert [row["epoch"] for row in meta["history"]] == [1, 2, 3, 4]
    reference = tmp_path / "reference.safetensors"
    _train(digits, reference)
    a, b = load_file(out), load_file(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ckpt.with_name("m.ckpt.untrusted.safetensors").read_bytes() == bytes(data) and not ckpt.exists()


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="thread-independent products need MKL (x86 builds)")
def test_one_or_two_threads_give_the_same_bytes(digits, tmp_path):
    """The README's promise: CPU training is bit-identical whatever the thread count. Width 2000 is where
    the matrix products split their sums across threads (without MKL's strict mode they differ by ~1e-8)."""
    threads = torch.get_num_threads()
    outs = [tmp_path / "threads1.safetensors", tmp_path / "threads2.safetensors"]
    try:
        for count, out in enumerate(outs, start=1):
            torch.set_num_threads(count)
            train_endpoint("onehidden", {"width": 2000}, digits, TrainConfig(epochs=1), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert outs[0].read_bytes() == outs[1].read_bytes()
