"""Every assignment's tests run with the grader's plugin: fixtures, markers and reports."""

pytest_plugins = ["grader.plugin.hooks"]
