# Dream one frame. With blending on, the previous dreamed frame is an input: an explicit DAG edge.


rule dream_frame:
    input:
        frame=f"{WORK}/{{name}}/frames/{{frame}}.{{ext}}",
        previous=previous_dreamed_frame,
    output:
        frame=f"{WORK}/{{name}}/dreamed/{{frame}}.{{ext}}",
    params:
        settings=dream_settings_json,
        previous=lambda wildcards, input: ["--previous", input.previous] if input.previous else [],
    threads: config["resources"]["dream_threads"]
    log:
        f"{WORK}/{{name}}/logs/dream/{{frame}}.{{ext}}.log",
    message:
        "Dreaming frame {wildcards.frame} of {wildcards.name}"
    conda:
        "../../envs/dreamflow.yaml"
    shell:
        "dreamflow dream-frame {input.frame:q} --number {wildcards.frame} {params.previous:q}"
        " --settings {params.settings:q} --threads {threads} -o {output.frame:q} 2> {log:q}"
