"""Release exercises from solutions, self-check, and grade submissions (nbgrader).

The command line is `grading.cli` (`course release|check|grade|export|handout`).

Modules, by which side of the trust boundary they run on:

* in the student's kernel: `checks` (the test API exercise notebooks call),
  `harness` (the grader's cells after the student's);
* in the grader: `grade` (orchestration), `execute` (running a notebook under
  deadlines), `cells` (the cell loop), `kernels` (one interface over the four
  ways a kernel starts), `sandbox` (bubblewrap namespaces and cgroups), `mounts`
  (what a sandboxed kernel sees), `verify` (the
  verdict), `gradebook` (gradebook writes, CSV), `release`, `handout`,
  `static` (notes on student code);
* on a student's own machine: `selfcheck`, `forkserver` (forked kernels for
  `course check`);
* shared, pure: `withheld` (the modules that compute answers), `course` (paths
  and nbgrader's generator), `closed_form` (closed-form reference answers).
"""
