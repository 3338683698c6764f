"""The header is the whole truth (issue: nothing lost): the sidecar never overrides it, every bit of the metadata
is covered by its checksum, the schema refuses what lowloss cannot use before anything is allocated, NaN never
reaches JSON, and a reader overlapping a writer neither calls a good file corrupt nor writes a stale sidecar."""

from __future__ import annotations

import json
import os
import resource
import struct

import pytest
import torch
from safetensors.torch import save

from lowloss.errors import LowlossError
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import identify
from lowloss.storage.header import (
    FORMAT,
    HEADER_KEY,
    UNCHECKED_FORMAT,
    meta_checksum,
    read_consistent,
    read_header,
    read_meta,
)
from lowloss.storage.model_files import load_model
from lowloss.storage.weights import load_weights, save_weights, sidecar_path
from tests.conftest import assert_one_line_error, copy_model, hashes, run_main

WIDTH = 16


@pytest.fixture
def pair(digits_endpoints, tmp_path):
    return [copy_model(digits_endpoints(WIDTH, seed, 2), tmp_path / f"seed{seed}.safetensors") for seed in (0, 1)]


def rewrite_header(path, change, checksum: bool = True) -> None:
    """Rewrite `path` with its metadata changed by `change(meta)` (the checksum recomputed, as a forger would)."""
    artifact = load_weights(path)
    meta = dict(artifact.meta)
    change(meta)
    if checksum:
        meta["checksum"] = meta_checksum(meta)
    path.write_bytes(save(artifact.tensors, metadata={HEADER_KEY: json.dumps(meta)}))


def test_the_sidecar_never_overrides_the_header(pair, capsys, tmp_path):
    """A kill between the weight file's rename and the sidecar's leaves the sidecar of the old version; an edited
    sidecar says the model is a curve: both are refreshed from the header and the model is used as a model."""
    a, b = pair
    side = json.loads(sidecar_path(a).read_text())
    sidecar_path(a).write_text(json.dumps({**side, "kind": "curve"}))
    sidecar_path(b).write_text(json.dumps({**side, "kind": "connector", "sha256": "0" * 64}))
    assert identify(a) == ("model", "a trained model (from `lowloss train`)")
    assert run_main(capsys, "model-set", a, b, "--out", tmp_path / "V.json").returncode == 0
    result = run_main(capsys, "connect", a, b, "--method", "linear", "--points", "2", "--out", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    for path in pair:
        assert json.loads(sidecar_path(path).read_text()) == read_meta(path)


def test_every_single_bit_flip_of_the_header_is_refused_or_harmless(tmp_path):
    """Flip every bit of a model's header (metadata and tensor table): each read either fails with one line naming
    the file or returns exactly the original metadata and tensors."""
    path = tmp_path / "m.safetensors"
    tensors = {"fc1.weight": torch.randn(3, 4), "fc1.bias": torch.randn(3), "fc2.weight": torch.randn(2, 3)}
    meta = {"kind": "model", "arch": "onehidden", "arch_options": {"width": 3}, "input_shape": [1, 2, 2]}
    meta.update(num_classes=2, dataset="digits", seed=1, epochs=2, train_acc=0.5, test_loss=1.25)
    save_weights(path, tensors, meta)
    original, good = path.read_bytes(), load_weights(path)
    (length,) = struct.unpack("<Q", original[:8])
    sidecar_path(path).unlink()
    outcomes = {"refused": 0, "same": 0}
    writer = open(path, "r+b")  # one handle flips every bit in place, then puts it back
    for byte in range(8 + length):
        for bit in range(8):
            writer.seek(byte)
            writer.write(bytes([original[byte] ^ 1 << bit]))
            writer.flush()
            try:
                read_consistent(path, read_header)  # the header alone first: most flips stop here, quickly
                artifact = load_weights(path)
            except ArtifactError as exc:
                assert str(exc).startswith(f"{path}") and "\n" not in str(exc)
                outcomes["refused"] += 1
                continue
            assert artifact.meta == good.meta  # a flip nobody reads (none so far); never another value
            assert all(torch.equal(artifact.tensors[k], v) for k, v in good.tensors.items())
            outcomes["same"] += 1
        writer.seek(byte)
        writer.write(original[byte : byte + 1])
        writer.flush()
    writer.close()
    assert path.read_bytes() == original
    assert outcomes == {"refused": 8 * (8 + length), "same": 0}  # here not one flip is harmless


def test_a_header_claiming_a_huge_network_is_refused_before_anything_is_allocated(pair, tmp_path, capsys):
    a, b = pair
    forged = tmp_path / "forged.safetensors"
    copy_model(a, forged)
    rewrite_header(forged, lambda meta: meta["arch_options"].update(width=10**7))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_main(capsys, "connect", forged, b, "--method", "linear", "--out", tmp_path / "p.csv")
    assert_one_line_error(
        result, f"{forged}: tensors do not fit architecture 'onehidden' with options {{'width': 10000000}}"
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500_000  # KiB: not the 2.5 GB it claims


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda m: m.update(input_shape=None), "metadata key input_shape: None is not of type 'array'"),
        (lambda m: m["tensors"]["fc1.weight"].pop("shape"), "metadata key tensors.fc1.weight: 'shape' is a required"),
        (lambda m: m.update(num_classes="10"), "metadata key num_classes: '10' is not of type 'integer'"),
        (lambda m: m.update(arch_options=[16]), "metadata key arch_options: [16] is not of type 'object'"),
        (lambda m: m.update(test_acc=1.5), "metadata key test_acc: 1.5 is greater than the maximum of 1"),
        (lambda m: m.update(tensors=None), "metadata key tensors: None is not of type 'object'"),
        (lambda m: m.update(kind=None), "metadata key kind: None is not of type 'string'"),
    ],
)
def test_header_fields_of_the_wrong_type_are_named(pair, tmp_path, capsys, change, fragment):
    """Null, missing or mistyped fields: one line naming the file and the key (not a TypeError or KeyError)."""
    a, b = pair
    rewrite_header(a, change)
    before = hashes(tmp_path)
    for args in (["info", a], ["connect", a, b, "--method", "linear", "--out", tmp_path / "p.csv"]):
        assert_one_line_error(run_main(capsys, *args), f"{a}: {fragment}")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"width": "16"}, "metadata describes no network (empty(): argument 'size'"),
        ({"width": None}, "metadata describes no network"),
        ({"width": -5}, "metadata describes no network (Trying to create tensor with negative dimension"),
        ({"depth": 3}, "metadata describes no network (architecture 'onehidden' has no option(s) ['depth']"),
    ],
)
def test_architecture_options_that_build_no_network_are_named(pair, tmp_path, capsys, options, fragment):
    a, b = pair
    rewrite_header(a, lambda meta: meta.update(arch_options=options))
    result = run_main(capsys, "connect", a, b, "--method", "linear", "--out", tmp_path / "p.csv")
    assert_one_line_error(result, f"{a}: {fragment}")


def test_a_model_header_without_its_network_is_named(pair, tmp_path, capsys):
    a, b = pair
    rewrite_header(a, lambda meta: meta.pop("arch"))
    result = run_main(capsys, "connect", a, b, "--method", "linear", "--out", tmp_path / "p.csv")
    assert_one_line_error(result, f"{a}: metadata lacks 'arch'; is this a trained model?")


def test_an_edited_header_without_its_checksum_is_refused(pair, capsys):
    a, b = pair
    rewrite_header(a, lambda meta: meta.update(seed=7), checksum=False)
    assert_one_line_error(run_main(capsys, "info", a), f"{a}: metadata does not match its checksum")
    rewrite_header(b, lambda meta: meta.update(format=UNCHECKED_FORMAT), checksum=False)  # 3 -> 2, checksum kept
    assert_one_line_error(run_main(capsys, "info", b), f"{b}: metadata key (top level)")


def test_files_of_format_2_stay_readable(pair):
    a, _ = pair
    meta = read_meta(a)
    rewrite_header(a, lambda m: (m.pop("checksum"), m.update(format=UNCHECKED_FORMAT)), checksum=False)
    old = load_weights(a).meta
    assert old["format"] == UNCHECKED_FORMAT and {k: v for k, v in meta.items() if k not in ("checksum", "format")} == {
        k: v for k, v in old.items() if k != "format"
    }
    assert load_model(a)[1].meta["sha256"] == meta["sha256"]


def test_nan_and_infinity_never_reach_json(pair, tmp_path):
    a, _ = pair
    data = a.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + length].decode().replace('\\"test_loss\\":', '\\"test_loss\\":NaN,\\"x\\":', 1)
    header = header.ljust(len(header) + (-len(header)) % 8)
    a.write_bytes(struct.pack("<Q", len(header)) + header.encode() + data[8 + length :])
    with pytest.raises(ArtifactError, match="metadata in the header is not valid JSON .NaN is not a finite number"):
        read_meta(a)
    with pytest.raises(ArtifactError, match="metadata value 'train_loss' is not a finite number"):
        save_weights(tmp_path / "n.safetensors", {"w": torch.ones(2)}, {"kind": "test", "train_loss": float("nan")})
    assert not (tmp_path / "n.safetensors").exists() and not (tmp_path / "n.json").exists()


@pytest.mark.parametrize("dtype,fragment", [(torch.float16, "dtype F16"), (torch.int64, "first difference")])
def test_tensors_of_a_dtype_no_model_holds_are_refused(pair, tmp_path, capsys, dtype, fragment):
    a, b = pair
    odd = tmp_path / "odd.safetensors"
    artifact = load_weights(a)
    tensors = {**artifact.tensors, "fc1.weight": artifact.tensors["fc1.weight"].to(dtype)}
    if dtype == torch.float16:  # save_weights refuses it; a file from elsewhere can hold it
        meta = {**artifact.meta, "sha256": "0" * 64}
        odd.write_bytes(save(tensors, metadata={HEADER_KEY: json.dumps(meta)}))
    else:
        save_weights(odd, tensors, artifact.meta)
    result = run_main(capsys, "connect", odd, b, "--method", "linear", "--out", tmp_path / "p.csv")
    assert_one_line_error(result, f"{odd}: ", fragment)


def test_a_reader_overlapping_a_writer_reads_one_whole_version_and_writes_no_stale_sidecar(pair):
    """The writer replaces the file while the reader reads it: the reader returns the version it opened, whole,
    and leaves the sidecar to the writer (the new version's)."""
    a, b = pair
    new = load_weights(b)

    def read_while_replaced(path, handle, size):
        save_weights(path, new.tensors, new.meta)  # the writer's rename lands in the middle of the read
        return read_header(path, handle, size)

    old_meta = read_meta(a)
    header, current = read_consistent(a, read_while_replaced)
    assert header.meta == old_meta and not current
    assert load_weights(a).meta["sha256"] == new.meta["sha256"]
    assert json.loads(sidecar_path(a).read_text())["sha256"] == new.meta["sha256"]


def test_a_file_rewritten_in_place_while_it_is_read_is_read_again(pair):
    """A copy into place (not lowloss's writer) is met half written: the reader retries instead of calling the
    file corrupt."""
    a, _ = pair
    whole = a.read_bytes()
    a.write_bytes(whole[: len(whole) // 2])
    calls = []

    def read_as_copied(path, handle, size):
        calls.append(size)
        if len(calls) == 1:
            with open(path, "r+b") as writer:  # the copy goes on meanwhile
                writer.seek(0, os.SEEK_END)
                writer.write(whole[len(whole) // 2 :])
        return read_header(path, handle, size)

    header, current = read_consistent(a, read_as_copied)
    assert current and header.meta["sha256"] == load_weights(a).meta["sha256"] and len(calls) == 2


def test_a_corrupt_file_that_does_not_change_is_not_read_again_and_again(pair):
    a, _ = pair
    a.write_bytes(a.read_bytes()[:100])
    calls = []

    def read(path, handle, size):
        calls.append(size)
        return read_header(path, handle, size)

    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        read_consistent(a, read)
    assert len(calls) == 1


def test_format_3_is_what_lowloss_writes(pair):
    meta = read_meta(pair[0])
    assert meta["format"] == FORMAT and meta["checksum"] == meta_checksum(meta)
    with pytest.raises(LowlossError):  # a weight file is refused by the kind a model set expects
        from lowloss.storage.file_kinds import require_kind

        require_kind(pair[0], "curve")


def test_a_sidecar_written_just_as_a_writer_replaces_the_file_is_made_again_from_the_newer_header(pair, monkeypatch):
    """The reader's sidecar lands after the writer's: the reader sees the file replaced and writes the newer
    header's copy, so the sidecar never ends describing the version that is gone."""
    import lowloss.storage.header as header

    a, b = pair
    new = load_weights(b)
    real = header.write_text_atomic
    writes = []

    def overtaken(path, text):
        if not writes:  # the writer's whole save happens just before the reader's sidecar write
            save_weights(a, new.tensors, new.meta)
        writes.append(path)
        real(path, text)

    sidecar_path(a).unlink()  # so that the reader rewrites it
    monkeypatch.setattr(header, "write_text_atomic", overtaken)
    old = read_meta(a)
    assert old["sha256"] != new.meta["sha256"] and len(writes) == 2
    assert json.loads(sidecar_path(a).read_text()) == read_meta(a) and read_meta(a)["sha256"] == new.meta["sha256"]
