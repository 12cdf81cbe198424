"""The report's sections, one module per section (or per group of related sections).

A section is a function that takes the :class:`~harness.report.sections.document.Report` being
built and appends blocks to it; :mod:`~harness.report.sections.document` holds the
:class:`~harness.report.sections.document.Report` itself and the helpers every section shares.
:func:`harness.report.build.write_report` calls the sections in order: ``overview`` and
``summary_section`` (:mod:`~harness.report.sections.summary`), ``status_section``,
``configurations_section`` and ``excluded_section`` (:mod:`~harness.report.sections.runs`),
``reward_section`` and ``frontier_section`` (:mod:`~harness.report.sections.reward`),
``tuning_section`` (:mod:`~harness.report.sections.tuning`), ``compute_section``
(:mod:`~harness.report.sections.compute`), ``cost_section`` (:mod:`~harness.report.sections.cost`),
``stability_section`` (:mod:`~harness.report.sections.stability`), ``comparisons_section``,
``crossovers_section`` and ``claims_section`` (:mod:`~harness.report.sections.comparisons`),
``ranking_section`` (:mod:`~harness.report.sections.ranking`) and ``method_section``
(:mod:`~harness.report.sections.method`).
"""
