"""The whole reproduction of Dukler et al. (ICML 2019) as one Snakemake graph.

    snakemake --cores all                          # preset "paper" (GPU; days)
    snakemake --cores all --config preset=cpu      # real CIFAR-10, reduced, 2 CPU cores
    snakemake --cores all --config preset=smoke    # same graph, tiny, offline, CPU
    snakemake --profile profiles/slurm             # on a SLURM cluster

data -> Inception weights and reference FID statistics -> training (FID runs: every
dataset x variant x seed; critic runs for Sec. 4.1-4.2) -> FID/SWD curves -> shift, noise,
neighbours and the motivating example -> every figure -> results table; and fake pools
from the FID runs' generators -> critics trained against them (issue 21) -> their tables
and dose-response figure. Rules live in
rules/*.smk, helpers in rules/common.py; settings in config/presets/<preset>.yaml, chosen
by config/config.yaml's `preset`. A preflight (device, data, weights) runs before any job.
"""

import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("8.0")

sys.path[:0] = [workflow.basedir, os.path.join(workflow.basedir, "rules")]
import common  # noqa: E402  (rules/common.py)


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


try:
    PRESET, S = common.load_settings(workflow.basedir, config)
except common.SettingsError as exc:
    raise WorkflowError(str(exc)) from None


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/experiments.smk"
include: "rules/fixed_fake.smk"
include: "rules/report.smk"


onstart:
    preflight_on_start()


onerror:
    show_failed_jobs()


# The two parts of `all`, each a target of its own, so that a preset too long for one
# sitting runs in two that share nothing but the two fake sources' trainings:
# `snakemake --cores all reproduction` (the paper's figures and the results table) and
# `snakemake --cores all fixed_fake` (issue 21's critics against fixed fakes).
rule reproduction:
    input:
        [f"{FIGURES}/{name}.{ext}" for name in FIGURE_SPECS for ext in ("png", "pdf")],
        f"{RESULTS}/table.md",
        [f"{RESULTS}/bench.json"] if S["bench"] else [],


rule fixed_fake:
    input:
        FF_TARGETS,


rule all:
    default_target: True
    input:
        rules.reproduction.input,
        rules.fixed_fake.input,
