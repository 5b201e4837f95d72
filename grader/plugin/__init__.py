"""The grader's pytest plugin (grader.plugin.hooks), the session it keeps, and its reasons and records."""
