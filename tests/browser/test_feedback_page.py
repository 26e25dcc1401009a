"""A student's feedback page in Chromium, opened from disk with the network cut off.

The page is what `course feedback` writes (`feedback_page.write_feedback`,
MathJax copied beside it), for a student whose answer and whose TA's comment
hold math, and whose answer also holds a ``<script>``, an ``<img onerror>``
and a MathJax ``\\href{javascript:…}``. Every request that is not a file:
URL is aborted. The math must be typeset (MathJax's output elements), the
hostile answer shown as text, and none of its scripts run.
Screenshot: artifacts/browser/feedback_page.png.
"""

from __future__ import annotations

from course_utils.grading import feedback, feedback_page

ATTACK = (
    "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    " $\\href{javascript:window.pwned=3}{click me}$ and the gradient "
    "$\\nabla_x f_c(x)$ </div><style>body{display:none}</style>"
)

STATE = """
() => ({
  mathjax: typeof window.MathJax,
  typeset: document.querySelectorAll('.MathJax, .MathJax_Display').length,
  pwned: typeof window.pwned,
  js_links: [...document.querySelectorAll('a[href]')].filter(
      a => !a.getAttribute('href').startsWith('#')).length,
  imgs: document.querySelectorAll('img').length,
  code_raw: document.querySelector('pre.answer').textContent.includes('\\\\href{'),
  error: document.body.innerText.includes('Math Processing Error'),
  visible: getComputedStyle(document.body).display !== 'none',
  text: document.body.innerText,
})
"""


def _page() -> feedback.NotebookFeedback:
    q1 = feedback.QuestionFeedback(
        "q1_tests", 2.0, False, 0.0, False,
        [feedback.Mistake("sign_flipped", 2)],
        f"def gradient_saliency(model, x, target):\n    # {ATTACK}\n    return -x",
        True, "Check which way you subtracted: $f(x) - f(x')$.",
    )
    q3 = feedback.QuestionFeedback(
        "q3_answer", 1.0, True, 0.5, True, [], ATTACK, False,
        "Good: the map is $\\partial f_c / \\partial x$. <b>see me</b>",
    )
    return feedback.NotebookFeedback(
        '<img src=x onerror=alert(1)>', "tiny", "tiny", "graded", [q1, q3],
        folder="student", timestamp="2025-01-31 23:59:00 UTC",
    )


def test_feedback_page_offline_typesets_math_and_runs_no_answer(
    browser, artifacts, tmp_path
):
    (path,) = feedback_page.write_feedback([_page()], tmp_path / "feedback")
    page = browser.new_page()
    blocked, errors = [], []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    try:
        page.goto(path.as_uri())
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0"
            " && document.querySelectorAll('.MathJax, .MathJax_Display').length >= 3",
            timeout=60_000,
        )
        state = page.evaluate(STATE)
        page.screenshot(path=str(artifacts / "feedback_page.png"), full_page=True)
    finally:
        page.close()
    assert state["mathjax"] == "object"
    # the answer's two formulas (the \href one without its link) and the comments'
    assert state["typeset"] >= 4, state
    assert not state["error"]
    assert state["pwned"] == "undefined", "a script of the answer ran"
    assert state["js_links"] == 0 and state["imgs"] == 0
    assert state["code_raw"], "code is shown as written, not typeset"
    assert state["visible"], "the answer's <style> applied"
    assert "<script>window.pwned = 1</script>" in state["text"]  # shown as text
    assert "sign flipped" in state["text"] and "Total: 0.5 / 3" in state["text"]
    assert blocked == [], f"the page asked the network for {blocked}"
    # MathJax probes for a web font with src:url(about:blank); the CSP refuses it
    probe = "Loading the font 'about:blank' violates"
    assert [e for e in errors if not e.startswith(probe)] == [], errors
