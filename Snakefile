# sparsecl: sparse-network continual learning, one Snakemake DAG per config.
#
#   snakemake all --cores 4 --resources gpu=1                  # embedded default (digits)
#   snakemake all --cores 8 --resources gpu=1 --configfile config/papers/<name>.yaml  # a paper's grid
#   snakemake --report results/report.html                     # default: tables, plots, provenance
#   snakemake --configfile config/papers/<name>.yaml --report results/<name>/report.html
# Targets go before --resources and --configfile: both take every following word.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default; a --configfile given on the command line replaces it instead of merging.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


onstart:
    start_stage_server()


onsuccess:
    stop_stage_server()


onerror:
    stop_stage_server()


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/stages.smk"
include: "workflow/rules/summarize.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.report.output,


# `snakemake data`: download, prepare and split the config's datasets, train nothing.
rule data:
    input:
        all_data(),
