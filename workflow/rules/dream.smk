# Dream one frame, or one node of a chain (see dreamflow.chains: an overlap frame of a long chain
# is dreamed by both segments, its second dream named 000123-lead). In a blend chain the dream
# starts from the blend step's start image; a zoom frame from the previous dream, an explicit DAG
# edge, so frames are dreamed in order and deleting frame k redoes k..end of its chain.
#
# The job is a torch-free client that hands the frame to this node's model server, which runs
# under the Python that installed dreamflow; the conda environment documents that software.


rule dream_frame:
    input:
        unpack(dream_frame_inputs),
    output:
        frame=LAYOUT.dreamed,
    log:
        LAYOUT.log("dream/{frame}.{ext}"),
    group:
        cluster_only(chain_group)
    conda:
        "../../envs/dreamflow.yaml"
    threads: PLAN.uniform_threads or dream_frame_threads
    params:
        # few functions: Snakemake calls every input and params function once per job, which
        # dominates DAG building for long videos. The settings stay a param of their own: params
        # derived from input are left out of Snakemake's rerun-on-params-change check.
        settings=dream_frame_settings,
        paths=dream_frame_paths,
    message:
        "Dreaming frame {wildcards.frame} of {wildcards.name}"
    shell:
        "dreamflow dream-frame {params.paths:q} --settings {params.settings:q}"
        " --threads {threads} -o {output.frame:q} 2> {log:q}"


# The start image of a chained frame: raw frame N and the dream of its predecessor, carried along
# the optical flow of the raw pair when blend.flow is on. The chain's first frame has none.
rule blend:
    input:
        unpack(blend_inputs),
    output:
        start=LAYOUT.blended,
    log:
        LAYOUT.log("blend/{frame}.{ext}"),
    group:
        cluster_only(chain_group)
    conda:
        "../../envs/dreamflow.yaml"
    params:
        settings=blend_settings,
        paths=blend_paths,
    message:
        "Blending frame {wildcards.frame} of {wildcards.name}"
    shell:
        "dreamflow blend {params.paths:q} --settings {params.settings:q}"
        " -o {output.start:q} 2> {log:q}"


# The optical flow of raw frame N back to N-1 and its reliability mask: depends on the raw frames
# only, so flow jobs run ahead of the dream chains, in parallel.
rule flow:
    input:
        unpack(flow_inputs),
    output:
        flow=LAYOUT.flow,
    log:
        LAYOUT.log("flow/{frame}"),
    group:
        cluster_only(flow_group)
    conda:
        "../../envs/dreamflow.yaml"
    params:
        method=lambda wildcards: PLAN[wildcards.name].flow_method,
        device=lambda wildcards: PLAN[wildcards.name].flow_device,
        # like the dream and blend settings: the writer's version, checked by the job
        written_by=DREAMFLOW_VERSION,
    message:
        "Optical flow of frame {wildcards.frame} of {wildcards.name}"
    shell:
        "dreamflow flow --previous-frame {input.previous_frame:q} --frame {input.frame:q}"
        " --method {params.method} --device {params.device} --written-by {params.written_by}"
        " -o {output.flow:q} 2> {log:q}"


# An overlap frame of a long chain: the old segment's dream fading into the new one's.
rule crossfade:
    input:
        unpack(crossfade_inputs),
    output:
        frame=LAYOUT.seam,
    log:
        LAYOUT.log("crossfade/{frame}.{ext}"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        weight=crossfade_weight,
        quality=lambda wildcards: PLAN[wildcards.name].settings["frames"]["jpg_quality"],
    message:
        "Crossfading frame {wildcards.frame} of {wildcards.name}"
    shell:
        "dreamflow crossfade {input.old:q} {input.new:q} --weight {params.weight}"
        " --jpg-quality {params.quality} -o {output.frame:q} 2> {log:q}"


# A video's sweep: its frame at one of the sweep's times, grabbed without extracting the video.
# The job checks the time against the probed length, known only now.
rule grab_frame:
    input:
        probe=LAYOUT.probe,
    output:
        frame=LAYOUT.sweep_frame,
    log:
        LAYOUT.log("grab/{at}s.{ext}"),
    wildcard_constraints:
        at=r"[0-9][0-9.e+-]*",
    conda:
        "../../envs/dreamflow.yaml"
    params:
        settings=lambda wildcards: PLAN[wildcards.name].frames_settings,
        key=lambda wildcards: f"config key inputs.{wildcards.name}.sweep.at",
    message:
        "Grabbing the frame at {wildcards.at} s of {wildcards.name}"
    shell:
        "dreamflow grab-frame --probe {input.probe:q} --at {wildcards.at}"
        " --settings {params.settings:q} --key {params.key:q} -o {output.frame:q} 2> {log:q}"


# A layer sweep: the image, or each of a video's grabbed frames, dreamed once per sweep item
# (jobs run in parallel).
rule sweep_layer:
    input:
        unpack(sweep_layer_inputs),
    output:
        image=LAYOUT.sweep_image,
    log:
        LAYOUT.log("sweep/{item}.{ext}"),
    conda:
        "../../envs/dreamflow.yaml"
    threads: PLAN.uniform_threads or dream_frame_threads
    params:
        settings=lambda wildcards: PLAN[wildcards.name].sweep[wildcards.item],
    message:
        "Dreaming {wildcards.name} with {wildcards.item}"
    shell:
        "dreamflow dream-frame --frame {input.frame:q} --number 1"
        " --settings {params.settings:q} --threads {threads} -o {output.image:q} 2> {log:q}"


# The sweep's contact sheet: every sweep image, labelled with its layers (and a video's time).
rule contact_sheet:
    input:
        images=sweep_images,
    output:
        sheet=report(
            LAYOUT.sweep_sheet,
            caption="../report/sweep.rst",
            category="{name}",
            subcategory="Layer sweep",
            labels={"input": "{name}", "figure": "contact sheet"},
        ),
    log:
        LAYOUT.log("contact_sheet"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        labels=lambda wildcards: PLAN[wildcards.name].sweep_labels,
        columns=lambda wildcards: PLAN[wildcards.name].sweep_columns,
    message:
        "Making the contact sheet of {wildcards.name}"
    shell:
        "dreamflow contact-sheet {input.images:q} --labels {params.labels:q}"
        " --columns {params.columns} -o {output.sheet:q} 2> {log:q}"
