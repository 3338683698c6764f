"""The workflow on a real Slurm: scripts/slurm-local.sh starts a single-node cluster with one fake GPU,
the tiny workflow runs with --profile profiles/slurm, every job completes and exactly the GPU rules
ask for a GPU. Skipped, with the reason, only where Slurm is missing and cannot be installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.test_workflow import EXPERIMENT, ROOT, job_environment, snakemake_command, write_config

SCRIPT = ROOT / "scripts" / "slurm-local.sh"
GPU_RULES = {"train", "fit_connector", "fit_curve", "connect"}
RUN_LIMIT_S = 540

pytestmark = pytest.mark.slow


def why_not_available() -> str | None:
    """Why this machine cannot run the local Slurm, or None when it can."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get is not available"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = why_not_available()
    if reason is not None:
        print(f"skipping the Slurm test: {reason}")
        pytest.skip(reason)
    started = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0 and "apt-get" in started.stderr and "E:" in started.stderr:
        pytest.skip(f"installing Slurm failed: {started.stderr.strip().splitlines()[-1]}")
    assert started.returncode == 0, started.stderr
    ours = "already running" not in started.stderr  # a Slurm started before the test stays up
    try:
        yield
    finally:
        if ours:
            stopped = subprocess.run([SCRIPT, "stop"], capture_output=True, text=True, timeout=120)
            assert stopped.returncode == 0, stopped.stderr


def slurm_jobs() -> dict[int, tuple[str, str, str]]:
    """Every job slurmctld still knows (finished ones for MinJobAge): id -> (comment, state, TRES per job)."""
    listing = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--Format=JobID:|,Comment:|,State:|,tres-per-job:"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    jobs = {}
    for line in listing.splitlines():
        job_id, comment, state, tres = (part.strip() for part in line.split("|")[:4])
        jobs[int(job_id)] = (comment, state, tres)
    return jobs


def test_tiny_workflow_on_slurm_completes_and_gpu_rules_request_a_gpu(slurm, tmp_path):
    def one_pair(config):
        config["methods"] = ["linear", "ot"]  # GPU rules (train, connect) and one without (match)
        config["experiments"] = {EXPERIMENT: {**config["experiments"][EXPERIMENT], "pairs": [[0, 1]]}}

    config = write_config(tmp_path / "slurm.yaml", one_pair)
    before = max(slurm_jobs(), default=0)
    command = [
        "timeout",
        "-s",
        "KILL",
        str(RUN_LIMIT_S),  # the plugin can hang on a broken Slurm
        *snakemake_command(
            "--configfile",
            config,
            "--profile",
            ROOT / "profiles" / "slurm",
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--seconds-between-status-checks",
            "1",  # the tiny jobs end within seconds
            "--default-resources",
            "runtime=10",
            "mem_mb=1000",
            "cpus_per_task=1",
        ),
    ]
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = subprocess.run(command, cwd=workdir, env=job_environment(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    ours = {job_id: job for job_id, job in slurm_jobs().items() if job_id > before}
    rules = {
        job_id: re.match(r"rule_(\w+?)(_wildcards|$)", comment).group(1) for job_id, (comment, _, _) in ours.items()
    }
    assert Counter(rules.values()) == Counter(train=2, match=1, connect=2, report=1)
    for job_id, (comment, state, tres) in ours.items():
        assert state == "COMPLETED", (comment, state)
        assert ("gpu:1" in tres) == (rules[job_id] in GPU_RULES), (comment, tres)
    assert (workdir / "results" / "report" / "test-tiny" / "table1.csv").is_file()
    assert Path(workdir / "results" / "mlflow.db").is_file()
