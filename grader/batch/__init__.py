"""Grading a class: the run (run), who it grades now (plan), the snapshots, resume key and ledger
(store), the workers (executors; where: the local pool or Ray), what it shows while it runs
(progress), what it ends with (outcomes) and the exports (gradebook).

LAYOUTS names the downloads grader.batch.layouts reads: here, so that the command line offers them
without importing the readers at every start."""

LAYOUTS = ("folders", "canvas", "moodle", "classroom", "gradescope")
LAYOUT_CHOICES = ("auto", *LAYOUTS)
