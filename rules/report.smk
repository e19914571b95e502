# Every figure, the results table and the benchmark.


rule figure:
    input:
        lambda w: FIGURE_SPECS[w.name][1],
    output:
        report(f"{FIGURES}/{{name}}.png", caption="../report/figure.rst", category="Figures"),
        f"{FIGURES}/{{name}}.pdf",
    log:
        f"{LOGS}/figures/{{name}}.log",
    conda:
        ENV
    params:
        figure=lambda w: FIGURE_SPECS[w.name][0],
        inputs=lambda w, input: inputs_flags(input),
        out=lambda w, output: shlex.quote(output[0][: -len(".png")]),
    shell:
        'python "$SCRIPTS/figures.py" {params.figure} {params.inputs} --out {params.out} > {log} 2>&1'


rule table:
    input:
        TABLE_INPUTS,
    output:
        md=f"{RESULTS}/table.md",
        csv=report(f"{RESULTS}/table.csv", caption="../report/table.rst", category="Results"),
    log:
        f"{LOGS}/table.log",
    conda:
        ENV
    params:
        inputs=lambda w, input: inputs_flags(input),
        note=shlex.quote(f"snakemake --cores all --config preset={PRESET}"),
    shell:
        'python "$SCRIPTS/table.py" {params.inputs} --out {output.md} --command {params.note} > {log} 2>&1'


rule bench:
    output:
        f"{RESULTS}/bench.json",
    log:
        f"{LOGS}/bench.log",
    conda:
        ENV
    resources:
        gpu=1,
    shell:
        'python "$BENCHMARKS/bench.py" --out {output} > {log} 2>&1'
