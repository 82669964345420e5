"""The course's machinery: everything that is not the Transformer the chapters build.

The model wing is the rest of ``course_lib`` (``tokens`` ... ``llama``, ``lens``, with their data);
this package checks, grades and publishes it, and imports from the model wing only its shared helpers
(``files``, ``validate``, ``viz``). No module of the model wing imports this package (``tests/test_project.py``).

- ``checks/``: the exercise checkers, one module per chapter (``checks.ch03``), and their graded hints
  (``checks/hints/chNN.md``); ``checks.i18n`` makes them speak Korean (``checks.language("ko")``,
  ``checks/hints/ko/``).
- ``exercises``: makes ``exercises/`` from ``solutions/``; ``scorecard``: runs a copy of an exercise notebook
  and grades it.
- ``claims``: ``claim(...)``, the check that a number the prose states holds in the run.
- ``chapters``: the course map, the one list of chapters.
- ``doctor``: is this environment ready for the course?
- ``edition``: the Korean edition (``ko/``) kept in step with the English one, cell by cell.
- ``website``, ``webpages``: the course as a static website (``python3 course.py site``), both editions.
- ``cli``: the command line, ``python -m course_lib {check,make-exercises,doctor}``.
"""
