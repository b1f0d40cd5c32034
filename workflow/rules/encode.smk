# Encode the dreamed frames at the planned fps, with the source's audio muxed back.


rule encode:
    input:
        probe=rules.probe.output.probe,
        frames=final_frames,
    output:
        video=report(
            LAYOUT.video,
            caption="../report/result.rst",
            category="{name}",
            subcategory="Result",
            labels={"input": "{name}", "figure": "dreamed video"},
        ),
    log:
        LAYOUT.log("encode"),
    conda:
        "../../envs/dreamflow.yaml"
    threads: PLAN.ffmpeg_threads
    params:
        settings=lambda wildcards: PLAN[wildcards.name].encode_settings,
        frames=chains_params,
    message:
        "Encoding {output.video}"
    shell:
        "dreamflow encode --probe {input.probe:q} --settings {params.settings:q}"
        " {params.frames:q} --threads {threads} -o {output.video:q} 2> {log:q}"


# A single image needs no video: its one dreamed frame is the result.
rule publish_image:
    input:
        frame=lambda wildcards: PLAN[wildcards.name].dreamed_frame(1),
    output:
        image=report(
            LAYOUT.image,
            caption="../report/result.rst",
            category="{name}",
            subcategory="Result",
            labels={"input": "{name}", "figure": "dreamed image"},
        ),
    log:
        LAYOUT.log("publish.{ext}"),
    conda:
        "../../envs/dreamflow.yaml"
    message:
        "Publishing {output.image}"
    shell:
        "dreamflow publish -o {output.image:q} -- {input.frame:q} 2> {log:q}"


# How coherent the dreamed video is: the warping error of the dreamed and the raw frames along
# the raw frames' optical flow, and the dream strength (see dreamflow.coherence).
rule coherence:
    input:
        unpack(coherence_inputs),
    output:
        figures=LAYOUT.coherence,
        plot=report(
            LAYOUT.coherence_plot,
            caption="../report/coherence.rst",
            category="{name}",
            subcategory="Coherence",
            labels={"input": "{name}", "figure": "warping error per frame"},
        ),
    log:
        LAYOUT.log("coherence"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        frames=chains_params,
        scenes=lambda wildcards, input: (
            ["--scenes", input.scenes] if "scenes" in input.keys() else []
        ),
    message:
        "Measuring the coherence of {wildcards.name}"
    shell:
        "dreamflow coherence {input.raw:q} {params.frames:q} {params.scenes:q}"
        " -o {output.figures:q} --plot {output.plot:q} 2> {log:q}"
