# Download a URL input, probe an input (fps, size, rotation, audio, frame count), then extract
# its frames.


# Snakemake asks the server for the URL's Last-Modified (url_input); the job downloads it.
rule download:
    input:
        url_input,
    output:
        remote.local_copy(LAYOUT.work, "{name}", "{url_suffix}"),
    log:
        LAYOUT.log("download{url_suffix}"),
    conda:
        "../../envs/dreamflow.yaml"
    message:
        "Downloading input {wildcards.name}"
    shell:
        "dreamflow download -o {output:q} -- {input:q} 2> {log:q}"


rule probe:
    input:
        lambda wildcards: PLAN[wildcards.name].path,
    output:
        probe=LAYOUT.probe,
    log:
        LAYOUT.log("probe"),
    conda:
        "../../envs/dreamflow.yaml"
    message:
        "Probing input {wildcards.name}"
    shell:
        "dreamflow probe -o {output.probe:q} -- {input:q} 2> {log:q}"


# A checkpoint: how many frames there are is known only after extraction.
checkpoint extract_frames:
    input:
        probe=rules.probe.output.probe,
    output:
        frames=directory(LAYOUT.frames),
    log:
        LAYOUT.log("extract"),
    conda:
        "../../envs/dreamflow.yaml"
    threads: PLAN.ffmpeg_threads
    params:
        settings=lambda wildcards: PLAN[wildcards.name].frames_settings,
    message:
        "Extracting frames of {wildcards.name}"
    shell:
        "dreamflow extract --probe {input.probe:q} --settings {params.settings:q}"
        " --threads {threads} -o {output.frames:q} 2> {log:q}"


# The scene cuts of an input that blends: chains restart at each (a checkpoint: the chains, and so
# the DAG of the dream jobs, are known only once it has run).
checkpoint scenes:
    input:
        frames=LAYOUT.frames,
    output:
        scenes=LAYOUT.scenes,
    log:
        LAYOUT.log("scenes"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        settings=lambda wildcards: PLAN[wildcards.name].scenes_settings,
        format=lambda wildcards: PLAN[wildcards.name].frame_format,
    message:
        "Finding the scene cuts of {wildcards.name}"
    shell:
        "dreamflow scenes --frames {input.frames:q} --format {params.format}"
        " --settings {params.settings:q} -o {output.scenes:q} 2> {log:q}"
