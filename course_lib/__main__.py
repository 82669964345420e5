"""``python -m course_lib {check,make-exercises,doctor} ...``: the course's commands, in :mod:`course_lib.course.cli`."""
import sys

from .course.cli import main

if __name__ == "__main__":
    sys.exit(main())
