# Report: the cross-task summary (with imported published results), noise-aware Pareto charts
# and tables per task, effective configs and environment, and the sample images of the tasks
# whose runs write them. Outputs flagged report(...) make up
# `snakemake --report results/report.html`; captions live in rules/captions/.
from peftbench.analysis.published import (
    configured_files,
    configured_folders,
)  # noqa: E402
from peftbench.report.pages import SAMPLE_TASKS  # noqa: E402


report: "captions/workflow.rst"


# The package code the report outputs depend on: a rule parameter, so editing it reruns them.
REPORT_CODE_HASH = codehash.code_hash(
    [
        Path(workflow.basedir) / "scripts" / f"{script}.py"
        for script in ["aggregate", "summary", "report_task", "report_samples"]
    ]
)
# config published: task -> folder of published result files. Every file is an input, so adding,
# editing or removing one reruns the report; a missing folder fails here, naming the key.
PUBLISHED_FOLDERS = configured_folders(config.get("published"))
PUBLISHED_FILES = configured_files(config.get("published"))


rule summary:
    input:
        results=[path for task in config["tasks"] for path in run_results(task)],
        published=PUBLISHED_FILES,
    output:
        parquet="results/summary.parquet",
        csv=report(
            "results/summary.csv",
            caption="captions/summary_csv.rst",
            category="Tables",
            labels={"table": "all runs (CSV download)"},
        ),
        html=report(
            "results/summary.html",
            caption="captions/summary.rst",
            category="Tables",
            labels={"table": "all runs"},
        ),
        environment=report(
            "results/environment.html",
            caption="captions/environment.rst",
            category="Environment",
            labels={"page": "library versions and hardware"},
        ),
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        published=PUBLISHED_FOLDERS,
        code=REPORT_CODE_HASH,
    script:
        "../scripts/summary.py"


rule report_task:
    input:
        summary="results/summary.parquet",
        results=lambda wildcards: run_results(wildcards.task),
        published=PUBLISHED_FILES,
    output:
        charts=report(
            "results/{task}/report/charts.html",
            caption="captions/charts.rst",
            category="Pareto frontiers",
            subcategory="{task}",
            labels={"chart": "0. all charts (interactive)"},
        ),
        memory=report(
            "results/{task}/report/quality_vs_memory.svg",
            caption="captions/memory.rst",
            category="Pareto frontiers",
            subcategory="{task}",
            labels={"chart": "1. quality vs training memory"},
        ),
        time=report(
            "results/{task}/report/quality_vs_time.svg",
            caption="captions/time.rst",
            category="Pareto frontiers",
            subcategory="{task}",
            labels={"chart": "2. quality vs training time"},
        ),
        params=report(
            "results/{task}/report/quality_vs_params.svg",
            caption="captions/params.rst",
            category="Pareto frontiers",
            subcategory="{task}",
            labels={"chart": "3. quality vs trainable parameters"},
        ),
        file_size=report(
            "results/{task}/report/quality_vs_file_size.svg",
            caption="captions/file_size.rst",
            category="Pareto frontiers",
            subcategory="{task}",
            labels={"chart": "4. quality vs adapter file size"},
        ),
        curves=report(
            "results/{task}/report/learning_curves.svg",
            caption="captions/curves.rst",
            category="Pareto frontiers",
            subcategory="{task}",
            labels={"chart": "5. learning curves"},
        ),
        memory_html="results/{task}/report/quality_vs_memory.html",
        memory_png="results/{task}/report/quality_vs_memory.png",
        time_html="results/{task}/report/quality_vs_time.html",
        time_png="results/{task}/report/quality_vs_time.png",
        params_html="results/{task}/report/quality_vs_params.html",
        params_png="results/{task}/report/quality_vs_params.png",
        file_size_html="results/{task}/report/quality_vs_file_size.html",
        file_size_png="results/{task}/report/quality_vs_file_size.png",
        curves_html="results/{task}/report/learning_curves.html",
        curves_png="results/{task}/report/learning_curves.png",
        frontier=report(
            "results/{task}/report/frontier.html",
            caption="captions/frontier.rst",
            category="Tables",
            labels={"table": "{task}: noise-aware frontiers"},
        ),
        frontier_csv="results/{task}/report/frontier.csv",
        configs=report(
            "results/{task}/report/configs.html",
            caption="captions/configs.rst",
            category="Configurations",
            labels={"page": "{task}: effective configs"},
        ),
    log:
        "logs/{task}/report.log",
    wildcard_constraints:
        task="|".join(config["tasks"]),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        published=PUBLISHED_FOLDERS,
        code=REPORT_CODE_HASH,
    script:
        "../scripts/report_task.py"


# Sample grids of every run of a task whose runs write one (samples.png next to result.json).
# A failed run has no samples.png, so the inputs are the result files and the grids are read
# when present. Built only when asked for: results/<task>/report/samples.html.
rule report_samples:
    input:
        results=lambda wildcards: run_results(wildcards.task),
    output:
        page=report(
            "results/{task}/report/samples.html",
            caption="captions/samples.rst",
            category="Samples",
            subcategory="{task}",
            labels={"page": "{task}: sample images of every run"},
        ),
    log:
        "logs/{task}/report_samples.log",
    wildcard_constraints:
        task="|".join(SAMPLE_TASKS),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        code=REPORT_CODE_HASH,
    script:
        "../scripts/report_samples.py"
