"""The developer tools: what helps someone write a plugin or maintain this repository.

It owns the generated documentation pages and their check (:mod:`~harness.devkit.docs`:
``python -m harness.devkit.docs --check``), the plugin package that ``rlhf-harness new-plugin``
writes (:mod:`~harness.devkit.scaffold`) and the small Hugging Face-format assets of
``suites/hf-example.yaml`` (:mod:`~harness.devkit.hf_example`). It may import anything of
``harness`` below the command line: the public API, the models (:mod:`harness.models`), the
engine (:mod:`harness.engine`), the suite files (:mod:`harness.suite`) and the reports
(:mod:`harness.report`). Nothing in ``harness`` imports it but the command line
(:mod:`harness.cli`). This ``__init__`` imports nothing: import the modules.
"""
