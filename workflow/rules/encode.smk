# Encode the dreamed frames at the planned fps, with the source's audio muxed back.


rule encode:
    input:
        probe=rules.probe.output.probe,
        frames=dreamed_frames,
    output:
        video=LAYOUT.video,
    log:
        LAYOUT.log("encode"),
    conda:
        "../../envs/dreamflow.yaml"
    threads: PLAN.ffmpeg_threads
    params:
        settings=lambda wildcards: PLAN[wildcards.name].encode_settings,
        frames_dir=lambda wildcards, input: os.path.dirname(input.frames[0]),
        frame_count=lambda wildcards, input: len(input.frames),
    message:
        "Encoding {output.video}"
    shell:
        "dreamflow encode --probe {input.probe:q} --settings {params.settings:q}"
        " --frames-dir {params.frames_dir:q} --count {params.frame_count} --threads {threads}"
        " -o {output.video:q} 2> {log:q}"


# A single image needs no video: its one dreamed frame is the result.
rule publish_image:
    input:
        frame=lambda wildcards: PLAN[wildcards.name].dreamed_frame(1),
    output:
        image=LAYOUT.image,
    log:
        LAYOUT.log("publish.{ext}"),
    conda:
        "../../envs/dreamflow.yaml"
    message:
        "Publishing {output.image}"
    shell:
        "cp {input.frame:q} {output.image:q} 2> {log:q}"
