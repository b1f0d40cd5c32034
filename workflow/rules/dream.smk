# Dream one frame. With blending or zooming on, the previous dreamed frame is an input: an explicit
# DAG edge, so frames are dreamed in order and deleting frame k redoes k..end.
#
# The dream rules have no conda environment: their job is a stdlib-only client, and the model server
# runs under the Python that installed dreamflow whatever environment is active, so an environment
# would change nothing, while Snakemake expands every job's params to resolve one (6% of the dry run
# of a long video).


rule dream_frame:
    input:
        unpack(dream_frame_inputs),
    output:
        frame=f"{WORK}/{{name}}/dreamed/{{frame}}.{{ext}}",
    params:
        # few functions: Snakemake calls every input and params function once per job, which
        # dominates DAG building for long videos. The settings stay a param of their own: params
        # derived from input are left out of Snakemake's rerun-on-params-change check.
        settings=dream_frame_settings,
        paths=dream_frame_paths,
    threads: DREAM_JOB_THREADS
    log:
        f"{WORK}/{{name}}/logs/dream/{{frame}}.{{ext}}.log",
    message:
        "Dreaming frame {wildcards.frame} of {wildcards.name}"
    shell:
        "dreamflow dream-frame {params.paths:q} --number {wildcards.frame} --settings {params.settings:q}"
        " --threads {threads} -o {output.frame:q} 2> {log:q}"


# A layer sweep: the same image dreamed once per sweep item (jobs run in parallel).
rule sweep_layer:
    input:
        frame=lambda wildcards: extracted_frame(wildcards.name, 1),
        guide=guide_image,
        weights=weights_file,
    output:
        image=f"{RESULTS}/{{name}}/sweep/{{item}}.{{ext}}",
    params:
        settings=lambda wildcards: dream_job_settings(
            wildcards.name, layers=sweep_items(wildcards.name)[wildcards.item], layer_schedule=None),
    threads: DREAM_JOB_THREADS
    log:
        f"{WORK}/{{name}}/logs/sweep/{{item}}.{{ext}}.log",
    message:
        "Dreaming {wildcards.name} with {wildcards.item}"
    shell:
        "dreamflow dream-frame --frame {input.frame:q} --number 1 --settings {params.settings:q}"
        " --threads {threads} -o {output.image:q} 2> {log:q}"


# The sweep's contact sheet: every sweep image, labelled with its layers.
rule contact_sheet:
    input:
        images=sweep_images,
    output:
        sheet=f"{RESULTS}/{{name}}/{{name}}_sweep.png",
    params:
        labels=lambda wildcards: [terms_label(t) for t in sweep_items(wildcards.name).values()],
        columns=lambda wildcards: SETTINGS[wildcards.name]["sweep"]["columns"],
    log:
        f"{WORK}/{{name}}/logs/contact_sheet.log",
    message:
        "Making the contact sheet of {wildcards.name}"
    conda:
        "../../envs/dreamflow.yaml"
    shell:
        "dreamflow contact-sheet {input.images:q} --labels {params.labels:q} --columns {params.columns}"
        " -o {output.sheet:q} 2> {log:q}"
