# Geometry or strength? (issue 21): critics trained from scratch against FIXED fake pools
# drawn from the preset's own FID runs, so that two critics differ by their penalty only
# (scripts/fixed_fake_critics.py). One job per (group, pool, family, seed): each trains
# the family's lams at that seed and writes its JSON atomically, so the list resumes in
# parts; the tables pool a pool's jobs. Settings: `fixed_fake` in the preset.


rule fixed_fake_pool:
    input:
        lambda w: f"{ff_source_run(w.source)}/train.done",
        data_inputs(FF_DATASET) if FF else [],
    output:
        f"{FF_RESULTS}/pools/{{source}}.npz",
    log:
        f"{LOGS}/fixed_fake/pools/{{source}}.log",
    conda:
        ENV
    threads: S["threads"]["eval"]
    resources:
        gpu=1,
    params:
        source=ff_source_path,
        num_train=FF.get("pool", {}).get("num_train"),
        num_eval=FF.get("pool", {}).get("num_eval"),
        device=S["device"],
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/fixed_fake_critics.py" pool '
        "--source {params.source} --num-train {params.num_train} --num-eval {params.num_eval} "
        "--device {params.device} --out {output} > {log} 2>&1"


rule fixed_fake_critic:
    input:
        pool=f"{FF_RESULTS}/pools/{{source}}.npz",
        data=data_inputs(FF_DATASET) if FF else [],
    output:
        f"{FF_RESULTS}/{{ffgroup}}/{{source}}/{{family}}-seed{{seed}}.json",
    log:
        f"{LOGS}/fixed_fake/{{ffgroup}}/{{source}}/{{family}}-seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fixed_fake/{{ffgroup}}/{{source}}/{{family}}-seed{{seed}}.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    resources:
        gpu=1,
    params:
        flags=ff_critic_flags,
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/fixed_fake_critics.py" train '
        "--pool {input.pool} {params.flags} --seed {wildcards.seed} --out {output} > {log} 2>&1"


rule fixed_fake_table:
    input:
        lambda w: ff_results(w.source, ("sweep",)),
    output:
        table=f"{FF_FIGURES}/table-{{source}}.md",
        json=f"{FF_FIGURES}/table-{{source}}.json",
        separation=f"{FF_FIGURES}/separation-{{source}}.md",
    log:
        f"{LOGS}/fixed_fake/table-{{source}}.log",
    conda:
        ENV
    params:
        results=lambda w, input: " ".join(f"--results {shlex.quote(p)}" for p in input),
        reference=common.FIXED_FAKE_REFERENCE,
    shell:
        # paired at matched lam_eff (the question), then at matched real-vs-fake separation
        # (so that smoothness is not just a weaker critic)
        'python "$SCRIPTS/fixed_fake_critics.py" table {params.results} '
        "--reference {params.reference} --match lam_eff --out-md {output.table} "
        "--out-json {output.json} > {log} 2>&1 && "
        'python "$SCRIPTS/fixed_fake_critics.py" table {params.results} '
        "--reference {params.reference} --match separation --out-md {output.separation} "
        ">> {log} 2>&1"


rule fixed_fake_ablation:
    input:
        lambda w: ff_results(w.source, FF_MAIN),
    output:
        md=f"{FF_FIGURES}/ablation-{{source}}.md",
        json=f"{FF_FIGURES}/ablation-{{source}}.json",
    log:
        f"{LOGS}/fixed_fake/ablation-{{source}}.log",
    conda:
        ENV
    params:
        results=lambda w, input: " ".join(f"--results {shlex.quote(p)}" for p in input),
        pairs=ff_pair_flags,
    shell:
        'python "$SCRIPTS/fixed_fake_critics.py" table {params.results} {params.pairs} '
        "--match lam_eff --out-md {output.md} --out-json {output.json} > {log} 2>&1"


rule fixed_fake_verdict:
    input:
        [r for s in FF_TABLE_SOURCES for r in ff_results(s, FF_MAIN)],
    output:
        md=f"{FF_FIGURES}/verdict.md",
        json=f"{FF_FIGURES}/verdict.json",
    log:
        f"{LOGS}/fixed_fake/verdict.log",
    conda:
        ENV
    params:
        results=lambda w, input: " ".join(f"--results {shlex.quote(p)}" for p in input),
        reference=common.FIXED_FAKE_REFERENCE,
    shell:
        # geometry, strength or neither per pool, family and claim, by the rule the
        # output states first; and the controls against their base family
        'python "$SCRIPTS/fixed_fake_critics.py" verdict {params.results} '
        "--reference {params.reference} --out-md {output.md} --out-json {output.json} "
        "> {log} 2>&1"


rule fixed_fake_wide:
    input:
        lambda w: ff_results(w.source, ("wide",)),
    output:
        f"{FF_FIGURES}/wide-{{source}}.md",
    log:
        f"{LOGS}/fixed_fake/wide-{{source}}.log",
    conda:
        ENV
    params:
        results=lambda w, input: " ".join(f"--results {shlex.quote(p)}" for p in input),
        reference=common.FIXED_FAKE_REFERENCE,
    shell:
        'python "$SCRIPTS/fixed_fake_critics.py" table {params.results} '
        "--reference {params.reference} --match lam_eff --out-md {output} > {log} 2>&1"


rule fixed_fake_figure:
    input:
        lambda w: ff_results(w.source, ("sweep",))
        + ff_results(w.source, ("ablation",), common.FIXED_FAKE_CONTROLS),
    output:
        report(
            f"{FF_FIGURES}/dose-response-{{source}}.png",
            caption="../report/fixed_fake.rst",
            category="Figures",
        ),
        f"{FF_FIGURES}/dose-response-{{source}}.pdf",
    log:
        f"{LOGS}/fixed_fake/dose-response-{{source}}.log",
    conda:
        ENV
    params:
        inputs=lambda w, input: inputs_flags(input),
        out=lambda w, output: shlex.quote(output[0][: -len(".png")]),
    shell:
        'python "$SCRIPTS/figures.py" dose-response {params.inputs} --out {params.out} > {log} 2>&1'
