# Training runs, their FID/SWD curves and sample grids.


rule train:
    input:
        lambda w: data_inputs(w.dataset),
    output:
        # A marker, not checkpoint.pt: Snakemake deletes the outputs of an interrupted
        # job, and the checkpoint is what a rerun resumes from.
        touch(f"{RESULTS}/{RUN}/train.done"),
    log:
        f"{LOGS}/{RUN}/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/{RUN}/train.tsv"
    conda:
        ENV
    threads: S["threads"]["train"]
    resources:
        gpu=NPROC,
    params:
        flags=train_flags,
        out=lambda w, output: shlex.quote(os.path.dirname(output[0])),
        launcher=TRAIN,
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train {params.flags} --out {params.out} "
        "--no-progress > {log} 2>&1"


rule fid_curve:
    input:
        done=f"{RESULTS}/{RUN}/train.done",
        stats=lambda w: [fid_stats(w.dataset)] if S["fid"] else [],
        weights=fid_weights(),
    output:
        f"{RESULTS}/{RUN}/fid_curve.csv",
    log:
        f"{LOGS}/{RUN}/fid_curve.log",
    benchmark:
        f"{RESULTS}/benchmarks/{RUN}/fid_curve.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    resources:
        gpu=1,
    params:
        run=lambda w, input: shlex.quote(os.path.dirname(input.done)),
        fid=curve_flags,
        root=lambda w: shlex.quote(data_root(w.dataset)),
        num_samples=S["curve_samples"],
        # Snakemake deletes a failed job's output; the scored snapshots of an interrupted
        # job stay in this file (one per sample count), which the rerun resumes from.
        partial=lambda w, output: shlex.quote(
            os.path.join(
                os.path.dirname(output[0]), f".fid_curve-{S['curve_samples']}.partial.csv"
            )
        ),
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/fid.py" curve {params.run} {params.fid} '
        "--dataset {wildcards.dataset} --data-root {params.root} "
        "--num-samples {params.num_samples} --out {params.partial} > {log} 2>&1 && "
        "mv {params.partial} {output}"


rule samples:
    input:
        f"{RESULTS}/{RUN}/train.done",
    output:
        f"{RESULTS}/{RUN}/samples.png",
    log:
        f"{LOGS}/{RUN}/samples.log",
    conda:
        ENV
    params:
        run=lambda w, input: shlex.quote(os.path.dirname(input[0])),
    shell:
        "python -m wwgan samples {params.run} --out {output} > {log} 2>&1"
