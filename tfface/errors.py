"""Exceptions raised for bad user input (files, images, tensors).

Every check on user input raises one of these with a message that says what was wrong and
what was expected, so that bad input never surfaces as a crash deep inside TensorFlow.
"""


class TffaceError(Exception):
    """Base class of the errors this package raises for bad input."""


class ModelFileError(TffaceError, ValueError):
    """A morphable-model or UV-3DMM file is missing, truncated or of the wrong layout."""


class InputError(TffaceError, ValueError):
    """An image or tensor argument has the wrong shape, dtype, range or content."""


class SolveError(TffaceError, ArithmeticError):
    """A least-squares system could not be solved to a finite result."""
