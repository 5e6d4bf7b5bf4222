"""Value checks every layer shares, for values from outside (a request, a form, a record).

`bool` is a subclass of `int` in Python, so `True` passes `isinstance(value, int)`: a count, an index or
a seed given as `True` is a mistake to refuse, not the number 1.
"""

from __future__ import annotations

import numpy as np


def is_whole_number(value) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
