"""Grading a class: the run (run), the snapshots, resume key and ledger (store), the workers
(executors) and the exports (gradebook).

LAYOUTS names the downloads grader.batch.layouts reads: here, so that the command line offers them
without importing the readers at every start."""

LAYOUTS = ("folders", "canvas", "moodle", "classroom", "gradescope")
LAYOUT_CHOICES = ("auto", *LAYOUTS)
