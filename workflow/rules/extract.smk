# Probe an input (fps, size, rotation, audio, frame count), then extract its frames.


rule probe:
    input:
        lambda wildcards: PLAN[wildcards.name].path,
    output:
        probe=LAYOUT.probe,
    log:
        LAYOUT.log("probe"),
    message:
        "Probing input {wildcards.name}"
    conda:
        "../../envs/dreamflow.yaml"
    shell:
        "dreamflow probe {input:q} -o {output.probe:q} 2> {log:q}"


# A checkpoint: how many frames there are is known only after extraction.
checkpoint extract_frames:
    input:
        probe=rules.probe.output.probe,
    output:
        frames=directory(LAYOUT.frames),
    params:
        settings=lambda wildcards: PLAN[wildcards.name].frames_settings,
    threads: PLAN.ffmpeg_threads
    log:
        LAYOUT.log("extract"),
    message:
        "Extracting frames of {wildcards.name}"
    conda:
        "../../envs/dreamflow.yaml"
    shell:
        "dreamflow extract --probe {input.probe:q} --settings {params.settings:q}"
        " --threads {threads} -o {output.frames:q} 2> {log:q}"
