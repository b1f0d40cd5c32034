# Encode the dreamed frames at the planned fps, with the source's audio muxed back.


rule encode:
    input:
        probe=rules.probe.output.probe,
        frames=dreamed_frames,
    output:
        video=f"{RESULTS}/{{name}}/{{name}}.mp4",
    params:
        settings=lambda wildcards: settings_json(wildcards.name, "frames", "encode"),
        frames_dir=lambda wildcards, input: os.path.dirname(input.frames[0]),
        frame_count=lambda wildcards, input: len(input.frames),
    threads: config["resources"]["ffmpeg_threads"]
    log:
        f"{WORK}/{{name}}/logs/encode.log",
    message:
        "Encoding {output.video}"
    conda:
        "../../envs/dreamflow.yaml"
    shell:
        "dreamflow encode --probe {input.probe:q} --settings {params.settings:q}"
        " --frames-dir {params.frames_dir:q} --count {params.frame_count} --threads {threads}"
        " -o {output.video:q} 2> {log:q}"


# A single image needs no video: its one dreamed frame is the result.
rule publish_image:
    input:
        frame=lambda wildcards: rules.dream_frame.output.frame.format(
            name=wildcards.name, frame=frame_name(1), ext=wildcards.ext),
    output:
        image=f"{RESULTS}/{{name}}/{{name}}.{{ext}}",
    log:
        f"{WORK}/{{name}}/logs/publish.{{ext}}.log",
    message:
        "Publishing {output.image}"
    shell:
        "cp {input.frame:q} {output.image:q} 2> {log:q}"
