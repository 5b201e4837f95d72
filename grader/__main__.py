"""`python -m grader` is the `grade` command."""

from grader.cli import run

if __name__ == "__main__":
    run()
