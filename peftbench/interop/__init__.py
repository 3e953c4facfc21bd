"""Two-way interoperability with the Hugging Face PEFT method-comparison suite.

:mod:`~peftbench.interop.suite_import` copies the suite's experiment folders into this
workflow's experiments layout (``peftbench import-experiments``);
:mod:`~peftbench.interop.suite_export` writes this workflow's run results in the suite's result
layout (``peftbench export --format hf-method-comparison``), which the suite's app and this
workflow's own published-results importer (:mod:`peftbench.analysis.published`) read.
"""
