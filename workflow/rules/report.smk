# Tables (mean ± std over seeds), the reproduction ledger and plots. Cheap: runs locally.


localrules:
    report,


rule report:
    input:
        metrics=all_metrics(),
        matrices=all_matrices(),
        curves=all_curves(),
    output:
        summary_md=report(
            f"{RESULTS}/tables/summary.md",
            caption="../report/summary.rst",
            category="Tables",
        ),
        summary_csv=f"{RESULTS}/tables/summary.csv",
        summary_parquet=f"{RESULTS}/tables/summary.parquet",
        ledger=report(
            f"{RESULTS}/tables/reproduction.md",
            caption="../report/reproduction.rst",
            category="Tables",
        ),
        ledger_csv=f"{RESULTS}/tables/reproduction.csv",
        matrix_plots=report(
            expand(
                f"{RESULTS}/plots/{{ep[0]}}/{{ep[1]}}/accuracy_matrix.png",
                ep=experiment_points(),
            ),
            caption="../report/accuracy_matrix.rst",
            category="Accuracy matrices",
        ),
        curve_plots=report(
            expand(
                f"{RESULTS}/plots/{{experiment}}/accuracy_curve.png",
                experiment=sorted({e for e, _ in experiment_points()}),
            ),
            caption="../report/accuracy_curve.rst",
            category="Accuracy curves",
        ),
        ledger_plots=report(
            expand(
                f"{RESULTS}/plots/ledger/{{paper}}.png",
                paper=[paper_slug(p) for p in curve_papers()],
            ),
            caption="../report/ledger_curve.rst",
            category="Reproduction ledger",
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
