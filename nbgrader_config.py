"""nbgrader settings for the Saliency Maps course; the course root is this repository.

Read by nbgrader's own tools (formgrader in JupyterLab, `nbgrader db …`,
`nbgrader generate_feedback`) and by `course release` / `course grade`, so the
two agree on where things live:

    solutions/<set>/<nb>.ipynb    instructor notebooks (answers, hidden tests)
    exercises/<set>/<nb>.ipynb    student notebooks, made by `course release`
    submitted/<student>/<set>/    collected submissions (`nbgrader collect` or copy)
    autograded/<student>/<set>/   graded copies, shown by formgrader
    gradebook.db                  nbgrader's SQLite gradebook

Grade with `course grade SET`, not with formgrader's "Autograde" button or
`nbgrader autograde`: those run student code without the sandbox and score
test cells by whether they raised, which a submission can fake.
"""

import os

c = get_config()  # noqa: F821  (provided by traitlets when nbgrader loads this file)

ROOT = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "saliency-maps"
c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "gradebook.db")
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.bak-*"]

# What students see in place of the instructor's answers.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Only for nbgrader's own executor (formgrader's buttons); `course grade` has its
# own per-cell deadline, memory cap and sandbox.
c.Execute.timeout = 60

# The exchange (nbgrader's release/fetch/submit between accounts) is not used:
# hand-outs are `course handout`, collection is a copy into submitted/. It is
# created here, inside the course, so formgrader shows no "exchange directory
# does not exist" banner.
c.Exchange.root = os.path.join(ROOT, ".exchange")
os.makedirs(c.Exchange.root, exist_ok=True)

# formgrader renders LaTeX with MathJax from this Jupyter server
# (jupyter-server-mathjax), not from a CDN: the course works offline. Our
# formgrade template (course_utils/grading/templates/formgrade) comes first and
# extends nbgrader's, which the second entry makes reachable as
# 'formgrade/index.html.j2'.
try:  # nbgrader's own templates folder, found as its generate_feedback finds it
    import nbgrader as _nbgrader

    _NBGRADER_TEMPLATES = os.path.join(
        os.path.dirname(_nbgrader.__file__), "server_extensions", "formgrader", "templates"
    )
except ImportError:  # nbgrader missing: nothing here renders a formgrader page
    _NBGRADER_TEMPLATES = None
if _NBGRADER_TEMPLATES and os.path.isdir(_NBGRADER_TEMPLATES):
    _TEMPLATES = os.path.join(ROOT, "course_utils", "grading", "templates")
    c.HTMLExporter.extra_template_basedirs = [_TEMPLATES, _NBGRADER_TEMPLATES]
    c.HTMLExporter.extra_template_paths = [_NBGRADER_TEMPLATES]
