"""Deprecated path: the record contract moved to `revlib.core.records`; plug-ins import it from `revlib.tasks`.

Kept for one release so task families written against the old layout keep loading, with a warning naming the new
path.
"""

import warnings

from revlib.core.records import *  # noqa: F401,F403
from revlib.core.records import Record  # noqa: F401

warnings.warn("revlib.records is deprecated and will be removed in the next release: import Record from revlib.tasks "
              "(or revlib.core.records)", DeprecationWarning, stacklevel=2)
