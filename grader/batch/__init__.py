"""Grading a class: the run (run), the snapshots, resume key and ledger (store), the workers
(executors) and the exports (gradebook)."""
