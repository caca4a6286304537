"""Errors a user can fix: the message says what is missing or what to run first."""


class UserError(Exception):
    """Printed without a traceback by the CLI and answered by the plugin with ``http_status``."""

    http_status = 400
