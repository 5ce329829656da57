# Dataset preparation into the uint8 format and scenario (task split) files.


def raw_inputs(wildcards):
    """Raw files a dataset's prepare step reads ([] for built-in datasets such as digits)."""
    return []


rule prepare_data:
    input:
        raw_inputs,
    output:
        meta="resources/data/{dataset}/meta.json",
        train_images="resources/data/{dataset}/train/images.npy",
        train_labels="resources/data/{dataset}/train/labels.npy",
        test_images="resources/data/{dataset}/test/images.npy",
        test_labels="resources/data/{dataset}/test/labels.npy",
    log:
        "results/logs/prepare_data/{dataset}.log",
    params:
        raw_dir="resources/raw/{dataset}",
        out_dir=subpath(output.meta, parent=True),
        seed=config["data"]["split_seed"],
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/sparsecl.yaml"
    shell:
        "sparsecl data prepare {wildcards.dataset} --raw-dir {params.raw_dir}"
        " --out-dir {params.out_dir} --seed {params.seed} > {log} 2>&1"


rule scenario:
    input:
        meta="resources/data/{dataset}/meta.json",
        train_labels="resources/data/{dataset}/train/labels.npy",
    output:
        json="resources/scenarios/{dataset}/{scenario}.json",
        index="resources/scenarios/{dataset}/{scenario}.npz",
    log:
        "results/logs/scenario/{dataset}/{scenario}.log",
    params:
        spec=scenario_spec_json,
        data_dir=subpath(input.meta, parent=True),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/sparsecl.yaml"
    shell:
        "sparsecl data scenario {wildcards.dataset} --data-dir {params.data_dir}"
        " --spec {params.spec:q} --out {output.json} > {log} 2>&1"
