# Dream one frame. When frames chain (blend or zoom), the previous dreamed frame is an input: an
# explicit DAG edge, so frames are dreamed in order and deleting frame k redoes k..end.
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
        "dreamflow dream-frame {params.paths:q} --number {wildcards.frame}"
        " --settings {params.settings:q} --threads {threads} -o {output.frame:q} 2> {log:q}"


# A layer sweep: the first frame dreamed once per sweep item (jobs run in parallel).
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


# The sweep's contact sheet: every sweep image, labelled with its layers.
rule contact_sheet:
    input:
        images=sweep_images,
    output:
        sheet=LAYOUT.sweep_sheet,
    log:
        LAYOUT.log("contact_sheet"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        labels=lambda wildcards: PLAN[wildcards.name].sweep_labels,
        columns=lambda wildcards: PLAN[wildcards.name].settings["sweep"]["columns"],
    message:
        "Making the contact sheet of {wildcards.name}"
    shell:
        "dreamflow contact-sheet {input.images:q} --labels {params.labels:q}"
        " --columns {params.columns} -o {output.sheet:q} 2> {log:q}"
