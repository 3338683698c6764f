"""Fault injection: run a lowloss command, kill it at its k-th write, rename or fsync (or let that
write find the disk full), run it again, and compare with an uninterrupted run; for every k.

Run by tests/test_faults.py as `python -m tests.faults SPEC.json` with OMP_NUM_THREADS=1: every try
runs in a child forked from this process, which is only safe while OpenMP has started no threads.
The uninterrupted run happens in this process first, counting the calls and warming every import, so
a forked try takes a fraction of a second. Prints one JSON object: per scenario the calls seen, the
outputs, and per mode the tries and the failures found (an empty list when every try behaved).

SPEC is a JSON list of scenarios: {"name", "inputs" (a folder copied for every try), "previous"
(a command run once to leave an earlier version of the outputs, or null), "args" (the command, paths
relative to the working folder), "modes" (any of "kill", "enospc", "tmpfs"), "tmpfs" (a mounted tmpfs
folder for the "tmpfs" mode)}.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from lowloss.cli.main import main
from lowloss.storage.atomic import TEMP_SUFFIX
from lowloss.storage.header import HEADER_KEY
from lowloss.storage.path_table import SECONDS_COLUMNS
from lowloss.storage.weights import load_weights

PATCHED = ("write", "replace", "rename", "fsync")
PAGE = 4096


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_timings(name: str, data: bytes) -> bytes:
    """A file's bytes with what each run measures for itself left out (its seconds, and the checksum over them):
    weight files and sidecars compare by everything else, path tables by their points."""
    if name.endswith(".json"):
        return json.dumps(_untimed(json.loads(data)), sort_keys=True).encode()
    if name.endswith(".safetensors"):
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        metadata = header.get("__metadata__") or {}
        if HEADER_KEY in metadata:
            metadata[HEADER_KEY] = json.dumps(_untimed(json.loads(metadata[HEADER_KEY])), sort_keys=True)
        return json.dumps(header, sort_keys=True).encode() + data[8 + length :]
    if name.endswith(".csv") and data.startswith(b"method,"):
        table = pd.read_csv(io.BytesIO(data))
        return table.drop(columns=[c for c in SECONDS_COLUMNS if c in table.columns]).to_csv(index=False).encode()
    return data


def _untimed(meta: object) -> object:
    """`meta` without its checksum and every `…seconds` key, at any depth (an epoch's history row has its own)."""
    if isinstance(meta, list):
        return [_untimed(item) for item in meta]
    if not isinstance(meta, dict):
        return meta
    return {key: _untimed(value) for key, value in meta.items() if not (key == "checksum" or key.endswith("seconds"))}


class Counter:
    """Counts calls of os.write/replace/rename/fsync; `fault(index, kind)` runs before each (index from 1)."""

    def __init__(self, fault=None):
        self.calls: list[str] = []
        self.fault = fault
        self.originals = {name: getattr(os, name) for name in PATCHED}

    def __enter__(self):
        for name, original in self.originals.items():
            setattr(os, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(os, name, original)

    def _wrap(self, name, original):
        def call(*args, **kwargs):
            self.calls.append(name)
            if self.fault is not None:
                self.fault(len(self.calls), name)
            return original(*args, **kwargs)

        return call


def run_here(args: list[str], folder: Path, fault=None) -> tuple[int, str, list[str]]:
    """Run the command in this process in `folder`: (exit status, stderr, calls)."""
    cwd, err = os.getcwd(), io.StringIO()
    os.chdir(folder)
    try:
        with Counter(fault) as counter, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(cwd)
    return code, err.getvalue(), counter.calls


def run_forked(args: list[str], folder: Path, fault=None) -> tuple[str, int, str]:
    """Run the command in a forked child: ('exit', status, stderr) or ('signal', number, stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child never returns into the caller
            code = 1
            try:
                code, text, _ = run_here(args, folder, fault)
                err.write(text.encode())
                err.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status), text
    return "exit", os.WEXITSTATUS(status), text


def kill_at(k: int):
    def fault(index: int, kind: str) -> None:
        if index == k:
            os.kill(os.getpid(), signal.SIGKILL)

    return fault


def disk_full_at(k: int):
    """The k-th write (counting writes only) fails as on a full disk."""
    seen = []

    def fault(index: int, kind: str) -> None:
        if kind == "write":
            seen.append(index)
            if len(seen) == k:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return fault


class Scenario:
    """One command: its initial folder, its uninterrupted result, and the checks of every try."""

    def __init__(self, spec: dict, scratch: Path):
        self.name, self.args = spec["name"], spec["args"]
        self.scratch = scratch / self.name
        self.initial = self.scratch / "initial"
        shutil.copytree(spec["inputs"], self.initial)
        if spec.get("previous"):
            code, err, _ = run_here(spec["previous"], self.initial)
            assert code == 0, err
        self.before = snapshot(self.initial)
        reference = self._copy("reference")
        code, err, self.calls = run_here(self.args, reference)
        assert code == 0, err
        self.after = snapshot(reference)
        self.outputs = {name for name in self.after if self.before.get(name) != self.after[name]}
        self.failures: list[str] = []  # of the mode being run
        self.tries = 0

    def _copy(self, label: str, root: Path | None = None, source: Path | None = None) -> Path:
        """A fresh copy of the initial folder (or of `source`) at `root/label`."""
        folder = (root or self.scratch) / label
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(source or self.initial, folder)
        return folder

    def check_interrupted(self, label: str, folder: Path) -> None:
        """Every file is absent, its earlier version or its new one; weight files load."""
        now = snapshot(folder)
        for name, data in now.items():
            transient = ".ckpt." in name or name.endswith(TEMP_SUFFIX)
            known = (self.before.get(name), self.after.get(name))
            versions = [without_timings(name, v) for v in known if v is not None]
            if not transient and without_timings(name, data) not in versions:
                self.failures.append(f"{label}: {name} is neither its earlier nor its new version")
        for name in self.before:
            if name not in self.outputs and now.get(name) != self.before[name]:
                self.failures.append(f"{label}: input {name} changed")
        inspected = self._copy("inspect", source=folder)  # reading may rewrite a sidecar: not in `folder`
        for name in now:
            if name.endswith(".safetensors"):
                try:
                    load_weights(inspected / name)
                except Exception as exc:  # any failure to load is the finding
                    self.failures.append(f"{label}: {name} does not load ({exc})")

    def check_rerun(self, label: str, folder: Path) -> None:
        """Running the command again ends with exactly the uninterrupted run's files."""
        kind, code, err = run_forked(self.args, folder)
        if (kind, code) != ("exit", 0):
            self.failures.append(f"{label}: rerun failed ({kind} {code}): {err.strip()[-300:]}")
            return
        now, after = (
            {name: without_timings(name, data) for name, data in files.items()}
            for files in (snapshot(folder), self.after)
        )
        if now != after:
            differ = sorted(n for n in set(now) | set(after) if now.get(n) != after.get(n))
            self.failures.append(f"{label}: rerun differs from an uninterrupted run in {differ}")

    def check_error(self, label: str, folder: Path, kind: str, code: int, err: str) -> None:
        """A failed run exits 2 with one `lowloss: error:` line naming a file of the folder."""
        lines = [line for line in err.splitlines() if line.startswith("lowloss: error:")]
        if (kind, code) != ("exit", 2) or len(lines) != 1 or "Traceback" in err:
            self.failures.append(f"{label}: expected one error line and exit 2, got {kind} {code}: {err[-300:]}")
        elif not re.match(r"lowloss: error: [^/: ][^: ]*: cannot write \(No space left on device\)$", lines[0]):
            self.failures.append(f"{label}: error does not name the file and the full disk: {lines[0]}")

    def run(self, mode: str, tmpfs: str | None) -> tuple[int, list[str]]:
        """Every try of `mode` ("kill", "enospc" or "tmpfs"): (how many, the failures found)."""
        self.failures, self.tries = [], 0
        if mode == "kill":
            self.kill_every_call()
        elif mode == "enospc":
            self.fill_every_write()
        else:
            self.fill_tmpfs(Path(tmpfs))
        return self.tries, self.failures

    def kill_every_call(self) -> None:
        for k in range(1, len(self.calls) + 1):
            label = f"kill at call {k} ({self.calls[k - 1]})"
            folder = self._copy("try")
            kind, code, err = run_forked(self.args, folder, kill_at(k))
            self.tries += 1
            if (kind, code) != ("signal", signal.SIGKILL):
                self.failures.append(f"{label}: was not killed ({kind} {code}): {err[-300:]}")
                continue
            self.check_interrupted(label, folder)
            self.check_rerun(label, folder)

    def fill_every_write(self) -> None:
        for k in range(1, self.calls.count("write") + 1):
            label = f"disk full at write {k}"
            folder = self._copy("try")
            kind, code, err = run_forked(self.args, folder, disk_full_at(k))
            self.tries += 1
            self.check_error(label, folder, kind, code, err)
            self.check_interrupted(label, folder)
            if any(name.endswith(TEMP_SUFFIX) for name in snapshot(folder)):
                self.failures.append(f"{label}: a temp file was left behind")
            self.check_rerun(label, folder)

    def fill_tmpfs(self, mount: Path) -> None:
        """A real full disk: leave `free` bytes on the tmpfs, page by page, until the command fits."""
        free = 0
        while True:
            label = f"tmpfs with {free} bytes free"
            folder = self._copy("try", mount)
            filler = mount / "filler"
            stat = os.statvfs(mount)
            with open(filler, "wb") as handle:
                handle.truncate(0)
                handle.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free))
            kind, code, err = run_forked(self.args, folder)
            self.tries += 1
            filler.unlink()
            if (kind, code) == ("exit", 0):
                return
            self.check_error(label, folder, kind, code, err)
            self.check_interrupted(label, folder)
            self.check_rerun(label, folder)
            free += PAGE
            if free > 1 << 20:
                self.failures.append(f"{label}: still fails with 1 MiB free")
                return


def main_driver(spec_file: str) -> None:
    specs = json.loads(Path(spec_file).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for spec in specs:
            started = time.perf_counter()
            scenario = Scenario(spec, Path(scratch))
            outcome = {"calls": scenario.calls, "outputs": sorted(scenario.outputs), "tries": {}}
            for mode in spec["modes"]:
                outcome["tries"][mode], outcome[mode] = scenario.run(mode, spec.get("tmpfs"))
            outcome["seconds"] = round(time.perf_counter() - started, 1)
            report[spec["name"]] = outcome
    print(json.dumps(report))


if __name__ == "__main__":
    main_driver(sys.argv[1])
