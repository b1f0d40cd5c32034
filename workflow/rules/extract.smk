# Probe an input (fps, size, rotation, audio, frame count), then extract its frames.


rule probe:
    input:
        input_path,
    output:
        probe=f"{WORK}/{{name}}/probe.json",
    log:
        f"{WORK}/{{name}}/logs/probe.log",
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
        frames=directory(f"{WORK}/{{name}}/frames"),
    params:
        settings=lambda wildcards: dreamflow_config.canonical_json(SETTINGS[wildcards.name]["frames"]),
    threads: config["resources"]["ffmpeg_threads"]
    log:
        f"{WORK}/{{name}}/logs/extract.log",
    message:
        "Extracting frames of {wildcards.name}"
    conda:
        "../../envs/dreamflow.yaml"
    shell:
        "dreamflow extract --probe {input.probe:q} --settings {params.settings:q}"
        " --threads {threads} -o {output.frames:q} 2> {log:q}"
