"""What each job's process imports: a job pays seconds for every heavy library it loads.

Each check runs in a fresh interpreter (``sys.modules`` of the test process already holds
everything) and executes a script's own import statements, as Snakemake's ``script:`` does,
without running its body (which needs a ``snakemake`` object and real inputs).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
from paths import REPO

from peftbench.core import workflow
from peftbench.core.workflow import TRAINING_STACK, forbid_imports

#: Jobs that read result files only: torch-free by contract (``forbid_imports`` in each).
REPORT_SCRIPTS = ("aggregate", "report_task", "summary", "report_samples")


def script_imports(name: str) -> str:
    """The top-level import statements of ``scripts/<name>.py``, as source."""
    tree = ast.parse((REPO / "scripts" / f"{name}.py").read_text())
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports, f"scripts/{name}.py imports nothing?"
    return "\n".join(ast.unparse(node) for node in imports)


def loaded_after(code: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (
        code
        + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


# Every task spec, as the report jobs read them through the registry.
SPECS = "from peftbench.tasks import registry\nfor t in ('math', 'image'): registry.get(t)\n"


@pytest.mark.parametrize("name", REPORT_SCRIPTS)
def test_report_scripts_do_not_import_the_training_stack(name):
    loaded = loaded_after(script_imports(name) + "\n" + SPECS)
    assert not loaded & set(TRAINING_STACK), (
        f"scripts/{name}.py pulls {loaded & set(TRAINING_STACK)}"
    )
    # pandas is what these jobs are for: the probe really ran their imports.
    assert "pandas" in loaded or name == "report_samples"


@pytest.mark.parametrize("name", REPORT_SCRIPTS)
def test_report_scripts_forbid_the_training_stack_while_they_run(name):
    source = (REPO / "scripts" / f"{name}.py").read_text()
    call = f'forbid_imports("{name}")'
    assert call in source, f"scripts/{name}.py does not check its torch-free contract"
    # Before the first peftbench import other than the check itself: nothing loads torch first.
    first_import = (
        source.index("from peftbench.analysis") if "from peftbench.analysis" in source else None
    )
    assert first_import is None or source.index(call) < first_import


def test_prepare_data_is_light():
    # The embedded data of both tasks is generated without torch (0.2 s instead of 8 s a job);
    # hub datasets are loaded lazily, inside the task's data module.
    code = (
        script_imports("prepare_data")
        + "\n"
        + textwrap.dedent(
            """
        from peftbench.tasks import registry
        for task in ("math", "image"):
            registry.import_module(registry.get(task).data_module, task)
        """
        )
    )
    assert not loaded_after(code) & set(TRAINING_STACK)


@pytest.mark.slow
def test_math_training_job_does_not_import_diffusers():
    # The math job's script, its run module, and every import statement (lazy ones included) of
    # each peftbench module that brings in: what a math run can reach, without training.
    code = (
        script_imports("train_experiment")
        + "\n"
        + textwrap.dedent(
            """
        import ast, pathlib, sys
        from peftbench.tasks import registry
        registry.import_module(registry.get("math").run_module, "math")
        ours = [m for n, m in list(sys.modules.items()) if n.startswith("peftbench.")]
        for module in ours:
            for node in ast.walk(ast.parse(pathlib.Path(module.__file__).read_text())):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                    if getattr(node, "module", None) == "__future__":
                        continue
                    try:
                        exec(ast.unparse(node), {})
                    except ImportError:
                        pass  # an optional package (bitsandbytes) this machine lacks
        import transformers.models.llama.modeling_llama  # what AutoModelForCausalLM loads
        """
        )
    )
    loaded = loaded_after(code)
    assert {"torch", "transformers", "peft"} <= loaded  # the probe reached the training code
    assert "diffusers" not in loaded


def test_forbid_imports_refuses_a_package_and_its_submodules(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    forbid_imports("report_task", names=("peftbench_absent_pkg",))
    # The job's own message, not Python's "No module named": the check answered.
    with pytest.raises(ModuleNotFoundError, match="report_task job must not import 'peftbench_abs"):
        import peftbench_absent_pkg.sub  # noqa: F401
    assert importlib.util.find_spec("wave") is not None  # other packages are still found


def test_forbid_imports_fails_when_already_imported(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    with pytest.raises(RuntimeError, match="aggregate job must not import json"):
        forbid_imports("aggregate", names=("json",))
    assert not any(isinstance(f, workflow._Forbidden) for f in sys.meta_path)
