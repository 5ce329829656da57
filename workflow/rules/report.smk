# Tables (mean ± std over seeds), the reproduction ledger and plots. Cheap: runs locally.


localrules:
    report,


rule report:
    input:
        metrics=every_run("metrics.parquet"),
        matrices=every_run("accuracy_matrix.csv"),
        curves=every_run("curves.parquet"),
    output:
        summary_md=f"{RESULTS}/tables/summary.md",
        summary_html=report(
            f"{RESULTS}/tables/summary.html",
            caption="../report/summary.rst",
            category="1. Tables",
            labels={"table": "summary: every method's numbers"},
        ),
        summary_csv=f"{RESULTS}/tables/summary.csv",
        summary_parquet=f"{RESULTS}/tables/summary.parquet",
        ledger=f"{RESULTS}/tables/reproduction.md",
        ledger_html=report(
            f"{RESULTS}/tables/reproduction.html",
            caption="../report/reproduction.rst",
            category="1. Tables",
            labels={"table": "reproduction ledger: ours beside the papers"},
        ),
        ledger_csv=f"{RESULTS}/tables/reproduction.csv",
        comparison_plots=report(
            expand(
                f"{RESULTS}/plots/comparison/{{setting}}.png",
                setting=report_settings(),
            ),
            caption="../report/comparison.rst",
            category="2. Comparison per setting",
        ),
        curve_plots=report(
            expand(
                f"{RESULTS}/plots/{{experiment}}/accuracy_curve.png",
                experiment=sorted({e for e, _ in experiment_points()}),
            ),
            caption="../report/accuracy_curve.rst",
            category="3. Accuracy curves",
        ),
        matrix_plots=report(
            expand(
                f"{RESULTS}/plots/{{ep[0]}}/{{ep[1]}}/accuracy_matrix.png",
                ep=experiment_points(),
            ),
            caption="../report/accuracy_matrix.rst",
            category="4. Accuracy matrices",
        ),
        ledger_plots=report(
            expand(
                f"{RESULTS}/plots/ledger/{{paper}}.png",
                paper=[paper_slug(p) for p in curve_papers()],
            ),
            caption="../report/ledger_curve.rst",
            category="5. Reproduction ledger plots",
        ),
    log:
        f"{RESULTS}/logs/report/report.log",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(2000),
        runtime=attempt_scaled(10),
    params:
        code=REPORT_CODE,
        ledger=ledger_json(),
        decimals=config["report"]["decimals"],
        tolerance=config["report"]["tolerance"],
        tables_dir=subpath(output.summary_md, parent=True),
        plots_dir=lambda wildcards, output: Path(output.summary_md).parent.parent
        / "plots",
    shell:
        "sparsecl report $(printf -- '--metrics %s ' {input.metrics})"
        " $(printf -- '--matrix %s ' {input.matrices}) $(printf -- '--curves %s ' {input.curves})"
        " --ledger {params.ledger:q} --tables-dir {params.tables_dir} --plots-dir {params.plots_dir}"
        " --decimals {params.decimals} --tolerance {params.tolerance} > {log} 2>&1"
