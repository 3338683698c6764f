"""Where a command may write: its outputs can never destroy anything but themselves.

Every command that writes checks its inputs and outputs here first, before it loads data or imports torch
(`check_files`). An input must be a readable file of the kind the command reads. An output is refused when
it is, or aliases, an input or an input's sidecar (the same file under another name, a hard link, a
symbolic link); when it is not a regular file (a device, a FIFO, a folder, a symbolic link, dangling or
not), since the atomic rename would replace it; when it is a lowloss file of another kind (another
artifact's sidecar or checkpoint, a model where a table goes); or when a file it brings along (a weight
file's sidecar `x.json`, a resumable run's checkpoint `x.ckpt.safetensors` and its sidecar) would replace a
file the command did not make. A refusal is one line naming the option, the file and what it is.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lowloss.errors import LowlossError
from lowloss.storage.atomic import ArtifactError, file_type, require_file
from lowloss.storage.file_kinds import (
    CHECKPOINT,
    KINDS,
    REPORT_TABLE,
    SIDECAR,
    WEIGHTS_SUFFIX,
    checkpoint_path,
    identify,
    require_kind,
)
from lowloss.storage.header import read_consistent, read_header, sidecar_path

WEIGHT_FORMATS = "lowloss-weights/"
"""The prefix of every weight file format (and of its sidecar's `format`)."""
REPORT_FILES = {
    "table*.csv": REPORT_TABLE,
    **dict.fromkeys(("*.csv", "*.md", "*.tex", "*.json", "*.png", "*.svg", "*.pdf", "*.html")),
}
"""What a report writes into its folder, by pattern: report tables (which the next report rewrites) and
files of no lowloss kind. An input, or another lowloss file, under such a name there is refused."""


@dataclass(frozen=True)
class Output:
    """One output of a command: the option that names it, its path, the kind of file the command writes
    there (None: a file of no lowloss kind, such as a figure), and what comes with it.

    A weight file brings its sidecar, and when `resumable` its checkpoint and the checkpoint's sidecar. A
    folder (`files` given) is written into: `files` maps the names written there to their kind, and
    `patterns` are the glob patterns of names that depend on the run (`breakpoint-*.safetensors`)."""

    option: str
    path: Path
    kind: str | None = None
    weights: bool = False
    resumable: bool = False
    files: Mapping[str, str | None] | None = None
    patterns: Mapping[str, str | None] = field(default_factory=dict)


def weights_output(option: str, path: Path, kind: str, resumable: bool = False) -> Output:
    """A weight file (`x.safetensors` with its sidecar; a checkpoint beside it while a resumable run goes on)."""
    return Output(option, Path(path), kind, weights=True, resumable=resumable)


def file_output(option: str, path: Path, kind: str | None = None) -> Output:
    """A single file: a table, a manifest."""
    return Output(option, Path(path), kind)


def folder_output(
    option: str, path: Path, files: Mapping[str, str | None], patterns: Mapping[str, str | None] | None = None
) -> Output:
    """A folder the command writes `files` (and names matching `patterns`) into."""
    return Output(option, Path(path), files=dict(files), patterns=dict(patterns or {}))


def check_files(
    inputs: Mapping[Path, str | None] | Iterable[Path], outputs: Iterable[Output], also_read: Iterable[Path] = ()
) -> None:
    """Refuse, with one line, inputs that cannot be read (or are of another kind than the one given for
    them) and outputs that could destroy anything but themselves: an input, `also_read` (files the inputs
    name, checked when the command reads them) or a neighbour. Reads headers and JSON only."""
    expected = inputs if isinstance(inputs, Mapping) else dict.fromkeys(inputs)
    for path, kind in expected.items():
        require_file(path)
        if kind is not None:
            require_kind(path, kind)
    read = [*map(Path, expected), *map(Path, also_read)]
    guarded = _identities({path: f"input {path}" for path in read})
    sidecars = {sidecar_path(path): f"the sidecar of input {path}" for path in read if path.suffix == WEIGHTS_SUFFIX}
    guarded = {**_identities(sidecars), **guarded}
    for output in outputs:
        _check_output(output, guarded)


def model_set_members(manifest: Path) -> list[Path]:
    """The members a model set manifest names, resolved against its folder (none when it does not parse:
    the command's own reading of it says why)."""
    try:
        members = json.loads(Path(manifest).read_text())["models"]
        return [Path(manifest).parent / member["path"] for member in members]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _check_output(output: Output, guarded: dict) -> None:
    if output.files is not None:
        _check_folder(output, guarded)
        return
    path, option = output.path, output.option
    if output.weights and path.suffix != WEIGHTS_SUFFIX:
        raise LowlossError(
            f"{option} {path}: a weight file's name ends in {WEIGHTS_SUFFIX} (its sidecar is the .json beside it)"
        )
    _check_target(option, path, output.kind, guarded, "", any_weights=output.weights)
    if not output.weights:
        return
    _check_sidecar(option, sidecar_path(path), path, guarded)
    if output.resumable:  # a checkpoint of any configuration: one of another is set aside when the run starts
        checkpoint = checkpoint_path(path)
        _check_target(option, checkpoint, CHECKPOINT, guarded, f"its checkpoint {checkpoint.name} ")
        _check_sidecar(option, sidecar_path(checkpoint), checkpoint, guarded)


def _check_target(
    option: str, path: Path, kind: str | None, guarded: dict, role: str, any_weights: bool = False
) -> None:
    """A file the command would replace: absent, or a regular file that is no input and no lowloss file of
    another kind than `kind` (with `any_weights`, a weight file of any kind but a checkpoint: a weight file
    replaces one whole, sidecar included)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LowlossError(f"{option} {path}: {role}cannot be checked ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        target = f" (to {os.readlink(path)})" if stat.S_ISLNK(info.st_mode) else ""
        raise LowlossError(
            f"{option} {path}: {role}is {file_type(info.st_mode)}{target}, not a regular file; "
            f"outputs replace only regular files"
        )
    if (info.st_dev, info.st_ino) in guarded:
        what = guarded[(info.st_dev, info.st_ino)]
        raise LowlossError(f"{option} {path}: {role}is {what}; an output never replaces an input")
    found, description = identify(path)
    replaces_weights = any_weights and path.suffix == WEIGHTS_SUFFIX and found != CHECKPOINT
    if found is not None and found != kind and not replaces_weights:
        wanted = f"; this command writes {KINDS[kind]} there" if kind in KINDS else ""
        raise LowlossError(f"{option} {path}: {role}is {description}{wanted}; choose another name or move it")


def _check_sidecar(option: str, side: Path, weights: Path, guarded: dict) -> None:
    """The sidecar a weight file brings: absent, the sidecar of `weights` (a lowloss weight file), or a lowloss
    sidecar whose weight file is gone; never an input, another artifact or a file of the user's."""
    _check_target(option, side, SIDECAR, guarded, f"its sidecar {side.name} ")
    if _is_weight_file(weights):
        return
    try:
        content = json.loads(side.read_text())
    except FileNotFoundError:  # none (or gone meanwhile)
        return
    except (OSError, ValueError):
        content = None
    if not (isinstance(content, dict) and str(content.get("format", "")).startswith(WEIGHT_FORMATS)):
        raise LowlossError(
            f"{option} {weights}: its sidecar would replace {side}, which is no lowloss sidecar; "
            f"choose another name or move it"
        )


def _check_folder(output: Output, guarded: dict) -> None:
    """A folder: absent or a folder (or a link to one); every file the command writes in it checked as a
    file output, the names it writes by pattern among the files already there."""
    folder, option = output.path, output.option
    if os.path.lexists(folder) and not folder.is_dir():
        raise LowlossError(f"{option} {folder}: is {file_type(os.lstat(folder).st_mode)}, not a folder")
    written = dict(output.files)
    if folder.is_dir() and output.patterns:
        for entry in sorted(os.listdir(folder)):
            kinds = [kind for pattern, kind in output.patterns.items() if fnmatch.fnmatchcase(entry, pattern)]
            if kinds:
                written[entry] = kinds[0]
    for name, kind in written.items():
        _check_target(option, folder / name, kind, guarded, f"{name} ")


def _is_weight_file(path: Path) -> bool:
    try:
        read_consistent(path, read_header)
    except ArtifactError:
        return False
    return True


def _identities(paths: Mapping[Path, str]) -> dict[tuple[int, int], str]:
    """(device, inode) of every existing file of `paths` -> what it is, in words (a link to it is the same)."""
    found = {}
    for path, role in paths.items():
        try:
            info = os.stat(path)
        except OSError:
            continue
        found.setdefault((info.st_dev, info.st_ino), role)
    return found
