# Model weights. Jobs never download: a torchvision model's weights are fetched into the torch
# cache ($TORCH_HOME/hub/checkpoints) by local rules, which on a cluster run on the login node (the
# one with internet); compute jobs only read the file. `snakemake fetch_models` fetches them ahead.


localrules:
    fetch_model,
    fetch_models,


# Fetch one torchvision model's weights file into the torch cache.
rule fetch_model:
    output:
        weights=os.path.join(torch_cache_dir(), "{weights_file}"),
    log:
        f"{LAYOUT.work}/logs/fetch_model/{{weights_file}}.log",
    conda:
        "../../envs/dreamflow.yaml"
    params:
        model=lambda wildcards: model_of_weights_file(wildcards.weights_file),
    message:
        "Fetching {output.weights}"
    shell:
        "dreamflow fetch-models --model {params.model} > {log:q} 2>&1"


# Every weights file the configured inputs need.
rule fetch_models:
    input:
        PLAN.weights_cache_files,
