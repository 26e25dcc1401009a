"""Release exercises from solutions, self-check, and grade submissions (nbgrader).

The command line is `grading.cli` (`course release|check|collect|grade|export|
report|handout`).

Modules, by which side of the trust boundary they run on (each one sentence):

* in the student's kernel (the grader's process never imports them; a test
  checks it): `checks` (the test API exercise notebooks call, and its tamper
  tripwire), `cases` (the models and inputs of test cases), `harness` (the
  grader's hidden cases, run after the student's cells; the grader imports it
  only for the cell's source, and it imports `checks` only when it runs),
  `references` (the references a test cell names, which import their module
  on the first call), `hints` (what a failed visible test says),
  `alternatives` (the reference under the usual wrong choices, for the
  hints), `invariants` (properties a right answer has, checked without the
  reference);
* shared and pure, imported on both sides: `records` (the record format:
  writing it, and loading it with size and depth caps), `compare` (comparing
  answers with expected values), `mistakes` (the kinds of mistake a wrong
  answer makes, their ids and words), `withheld` (the modules that compute answers),
  `closed_form` (closed-form reference answers), `atomic` (atomic file
  writes), `sanitize` (every student-controlled string made safe to show);
* in the grader, in the order one submission meets them: `grade`
  (orchestration), `discover` (student folders, links, the submitted
  notebook), `plan` (the reference run and the hidden checks it plans),
  `notebooks` (reading and merging notebooks), `static` (the bounded review of
  student code), `execute` (one notebook run: connect, cells, records,
  clean-up), `cells` (the cell loop and its statuses), `kernels` (one interface
  over the four ways a kernel starts), `sandbox` (bubblewrap), `mounts` (what a
  sandboxed kernel sees), `cgroups` (the tree's memory, process and CPU caps),
  `seccomp` (the system-call filter), `cpus` (which CPUs each worker gets),
  `verify` (the verdict from the records), `outcome` (statuses and results),
  `score` (points per question), `formgrader` (what the manual grader may see),
  `publish` (reports, the CSV, the summary), `gradebook` (the nbgrader
  gradebook and CSV files), `statuses` (our tables in it: statuses, times,
  mistakes);
* for the instructor's other commands: `release`, `handout`, `course` (paths
  and nbgrader's generator), `report` (the class report: `report_charts`,
  `report_page`);
* on a student's own machine: `selfcheck` (`course check`), `forkserver`
  (forked kernels for it).
"""
