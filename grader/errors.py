"""The two kinds of failure the command line tells apart."""


class UserError(Exception):
    """A mistake in what the user asked for (a wrong name, a missing path): one line, exit code 2."""


class GraderError(Exception):
    """The grader itself is broken (not the submission): exit code 3."""
