"""The engine: what turns a suite's run specs into finished runs in a run store.

It owns the plugin host that finds algorithms, tasks and the rest by entry point
(:mod:`~harness.engine.plugins`), the simulated annotator that labels the shared preference data
(:mod:`~harness.engine.annotator`), one run stage by stage (:mod:`~harness.engine.runner`), the
executors that run many (:mod:`~harness.engine.executors`: local children or Ray), memory plans
(:mod:`~harness.engine.memory`), tuning (:mod:`~harness.engine.tuning`), the run store
(:mod:`~harness.engine.store`), tracking (:mod:`~harness.engine.tracking`), re-running a recorded
run (:mod:`~harness.engine.reproduce`) and the description of a registered name that
``rlhf-harness show`` prints (:mod:`~harness.engine.describe`). It may import the public API (the
modules at the top of ``harness``, :mod:`harness.tasks`, :mod:`harness.testing`), the models
(:mod:`harness.models`) and the suite files (:mod:`harness.suite`); never the reports
(:mod:`harness.report`), the developer tools (:mod:`harness.devkit`) or the command line
(:mod:`harness.cli`), which sit above it. This ``__init__`` imports nothing: import the modules.
"""
