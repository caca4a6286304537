"""One taxonomy of the errors a user can fix; each face maps it to its own codes.

The library raises these; the web layer answers ``http_status`` with ``{"error": message}``, the CLI
prints the message (JSON under ``--json``) and exits with ``exit_code``. The message says what is wrong
and what to do (which step to run first, which values are allowed).
"""


class UserError(Exception):
    """Something the user can fix. Printed without a traceback; answered with ``http_status``."""

    http_status = 400
    exit_code = 2


class InvalidParameter(UserError):
    """A parameter has a wrong type, is out of range, unknown or missing."""


class NotFound(UserError):
    """A run, image, job, network or file that does not exist."""

    http_status = 404


class MissingStep(UserError):
    """An earlier step has not run yet (e.g. no projection to cluster): the message names it."""

    http_status = 409


class Conflict(UserError):
    """The request conflicts with the current state (e.g. a cluster whose images all have labels)."""

    http_status = 409


class Forbidden(UserError):
    """Refused: outside the allowed folders, another site, a missing protection header."""

    http_status = 403


class Unavailable(UserError):
    """A step or network that this installation cannot run (a missing optional package or weights)."""

    http_status = 409


class Cancelled(Exception):
    """A step stopped because a cancel was asked for; ``args[0]`` may hold the partial result
    (finished work is kept). Not an error: jobs end ``cancelled``, the CLI exits 130."""
