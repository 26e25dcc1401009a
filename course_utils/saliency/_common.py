"""Transitional alias of `core`, `checks` and `baselines` (issue 18).

Kept only until `course_utils.sanity` and notebook 07 import from the public
modules; delete it then. New code imports `saliency.core`, `saliency.checks`
or `saliency.baselines`.
"""

from .baselines import *
from .checks import *
from .core import *
