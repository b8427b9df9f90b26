"""The one error type of seqkv_quality.

Every problem the user can fix (a missing file, a malformed header, a dump that does not belong to
the model, two dumps of different documents) is raised as QualityError with a message that names the
file and the mismatch. The CLI turns it into one line on stderr and exit code 2; anything else
escaping is a bug in this package.
"""


class QualityError(ValueError):
    """Invalid input: the message says which file and what is wrong with it."""
