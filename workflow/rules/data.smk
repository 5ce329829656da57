# Raw files -> prepared uint8 arrays -> scenario (task split) files; the unlabeled image pool.
#
# Raw files are fetched on the host that runs Snakemake (cluster compute nodes often have no
# internet) and are protected: once verified, they are fetched again only when their source
# override in the config changes.
# Files behind a login (miniImageNet, the Tiny Images pool) are taken from resources/manual/;
# `sparsecl data manual` lists them, and the download job fails with one line saying what to do.
# A failing data job's log (its one-line error) is shown by the profiles' `show-failed-logs`.


localrules:
    download,
    synth_raw,
    scenario,


rule download:
    input:
        synthetic_raw,
    output:
        protected(f"{RESOURCES}/raw/{{dataset}}/{{filename}}"),
    log:
        f"{RESULTS}/logs/download/{{dataset}}/{{filename}}.log",
    wildcard_constraints:
        dataset="|".join(data_sources.source_names()),
        filename=r"[^/]+",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(500),
        runtime=attempt_scaled(240),
    params:
        sources=data_sources_json(),
    shell:
        "sparsecl data download {wildcards.dataset} --file {wildcards.filename:q} --out {output:q}"
        " --sources {params.sources:q} > {log} 2>&1"


# A rehearsal's raw files: format-exact synthetic stand-ins (sparsecl/data/synth.py), byte-identical
# on every run, so the download step verifies them against their recorded checksums.
rule synth_raw:
    output:
        directory(f"{RESOURCES}/synth/{{dataset}}"),
    log:
        f"{RESULTS}/logs/synth_raw/{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(data_sources.source_names()),
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(2000),
        runtime=attempt_scaled(10),
    shell:
        "sparsecl data synth {wildcards.dataset} --out {output:q} > {log} 2>&1"


rule prepare_data:
    input:
        raw_inputs,
    output:
        meta=f"{RESOURCES}/data/{{dataset}}/meta.json",
        train_images=f"{RESOURCES}/data/{{dataset}}/train/images.npy",
        train_labels=f"{RESOURCES}/data/{{dataset}}/train/labels.npy",
        test_images=f"{RESOURCES}/data/{{dataset}}/test/images.npy",
        test_labels=f"{RESOURCES}/data/{{dataset}}/test/labels.npy",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(60),
    params:
        code=data_code,
        raw_dir=raw_dir,
        out_dir=subpath(output.meta, parent=True),
        seed=config["data"]["split_seed"],
        cap=f" --per-class {rehearsal.PER_CLASS}" if REHEARSAL else "",
    shell:
        "sparsecl data prepare {wildcards.dataset} --raw-dir {params.raw_dir}"
        " --out-dir {params.out_dir} --seed {params.seed}{params.cap} > {log} 2>&1"


rule scenario:
    input:
        meta=f"{RESOURCES}/data/{{dataset}}/meta.json",
        train_labels=f"{RESOURCES}/data/{{dataset}}/train/labels.npy",
    output:
        json=f"{RESOURCES}/scenarios/{{dataset}}/{{scenario}}.json",
        index=f"{RESOURCES}/scenarios/{{dataset}}/{{scenario}}.npz",
    log:
        f"{RESULTS}/logs/scenario/{{dataset}}/{{scenario}}.log",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(2000),
        runtime=attempt_scaled(10),
    params:
        code=SCENARIO_CODE,
        spec=scenario_spec_json,
        data_dir=subpath(input.meta, parent=True),
    shell:
        "sparsecl data scenario {wildcards.dataset} --data-dir {params.data_dir}"
        " --spec {params.spec:q} --out {output.json} > {log} 2>&1"


rule prepare_unlabeled:
    input:
        lambda wildcards: pool_sources(wildcards.pool, RESOURCES),
    output:
        pool=f"{RESOURCES}/data/unlabeled/{{pool}}/pool.npy",
        meta=f"{RESOURCES}/data/unlabeled/{{pool}}/meta.json",
    log:
        f"{RESULTS}/logs/prepare_unlabeled/{{pool}}.log",
    wildcard_constraints:
        pool="|".join(p for p in POOLS if p != "none") + "|none/[a-z0-9_]+",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(30),
    params:
        code=POOL_CODE,
        source=lambda w, input: (
            input[0] if w.pool == "tiny_images" else Path(input[0]).parent
        ),
        pool=lambda wildcards: wildcards.pool.split("/")[0],
        out_dir=subpath(output.meta, parent=True),
        cap=f" --limit {rehearsal.POOL_IMAGES}" if REHEARSAL else "",
    shell:
        "sparsecl data unlabeled {params.pool} --source {params.source} --out-dir {params.out_dir}{params.cap} > {log} 2>&1"
