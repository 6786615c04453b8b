"""Stop in one line on a Python older than the dependencies need.

Every package's ``__init__`` calls :func:`require_python` before anything
heavy is imported, so ``python -m fedper.main`` on an old interpreter says
what is wrong instead of failing on some later syntax or import. This module
must stay importable by old interpreters: no syntax newer than 3.6, and
annotations in quotes (they are never evaluated).
"""

import sys

MINIMUM = (3, 11)  # flwr 1.41 requires Python 3.11


def python_too_old(
    version: "tuple[int, ...] | None" = None, minimum: "tuple[int, int]" = MINIMUM
) -> "str | None":
    """The one-line error for ``version`` (default: this interpreter), or ``None``.

    Parameters
    ----------
    version : tuple of int, optional
        ``(major, minor, micro, ...)``, as ``sys.version_info``.
    minimum : tuple of int
        The oldest ``(major, minor)`` that works.
    """
    version = tuple(sys.version_info[:3]) if version is None else tuple(version)
    if version[:2] >= minimum:
        return None
    found = ".".join(str(part) for part in version[:3])
    return (
        f"error: this suite needs Python {minimum[0]}.{minimum[1]} or newer "
        f"(Flower 1.41 does); this is Python {found} ({sys.executable})"
    )


def require_python() -> None:
    """Exit with status 1 and the one-line error on a too old interpreter."""
    message = python_too_old()
    if message is not None:
        raise SystemExit(message)
