"""Release exercises from solutions, self-check, and grade submissions (nbgrader)."""
