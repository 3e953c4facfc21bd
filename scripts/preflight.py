"""Snakemake entry point (rule preflight): every pre-flight check of one task's selected
experiments, in the training environment, before any of its training jobs starts.

A launcher without torch checked only what needs neither torch nor peft while building the DAG;
this job runs all of it (:func:`peftbench.core.task_checks.check_task`, the model-level check on
a meta-device model included), with the same messages. A launcher with torch ran the same checks
already, and the job finds their verdicts kept (peftbench.core.preflight_cache) when it runs in
the same environment. A problem fails the job, its message (naming file and field) in the log;
otherwise ``results/<task>/preflight.json`` records what was checked, and with which library
versions: this job's own.
"""

import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

# A local run hands the job to the workflow's worker, which has the training stack imported
# already (peftbench/core/worker.py); without one, delegate returns and the job runs here.
from peftbench.core.worker import delegate  # noqa: E402

delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file

from peftbench.core import configfile, preflight_cache  # noqa: E402
from peftbench.core.config import ConfigError  # noqa: E402
from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.task_checks import check_task  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
task = sm.wildcards.task
# Each config file's own content, as the DAG build read it: messages name the file of a value.
files = {path: configfile.load_config_file(path) for path in sm.params.config_files}
try:
    checked = check_task(task, sm.config, files, workers=sm.threads)
except ConfigError as exc:
    sys.exit(f"peftbench: {task}: {exc}")
record = {
    "task": task,
    "experiments": checked,
    "python": platform.python_version(),
    "libraries": preflight_cache.library_versions(),
}
with atomic_path(sm.output[0]) as tmp:
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
print(f"{task}: {len(checked)} experiments passed every pre-flight check")
