"""HTTP plumbing of the plugin: request checks, JSON bodies, answers, errors as 4xx JSON.

Every route is a method wrapped by :func:`route`, which

* answers only the declared methods (405 with ``Allow`` otherwise);
* on **every** request checks ``Host``: it must be an IP address, ``localhost``, this machine's name,
  TensorBoard's ``--host`` or a name listed in ``NIPGBOARD_ALLOWED_HOSTS`` (comma-separated; ``*``
  allows any). A DNS-rebinding page reaches the server under its own name and is refused. An
  ``Origin`` header, where a browser sends one, must name the same host;
* for state-changing routes (POST) also requires the header ``X-NIPGBoard: 1`` and a JSON object body
  of at most ``max_body`` bytes, so that a cross-site form or a simple cross-origin request cannot
  trigger them (browsers add custom headers only to same-origin or CORS-approved requests);
* turns :class:`..errors.UserError` into ``{"error": message}`` with its status, and any other exception
  into a 500 whose body says only that the server failed (the traceback goes to the server log).

No error text in an answer names an absolute path of the server's machine: the answer's own error and every
field named ``error`` inside an answer (a failed job's, a step result's) show paths under the logdir
relative to it, and paths under another allowed folder (the plugin's ``allowed_roots``) as ``…/NAME/...``
with only the folder's last name.

Parameter values are checked by :mod:`.params`, the same declarations the CLI and the jobs use.
"""
import functools
import ipaddress
import json
import logging
import math
import os
import re
import socket
import threading
from urllib.parse import urlsplit

from tensorboard.backend import http_util
from werkzeug import wrappers

from .errors import Forbidden, InvalidParameter, UserError

logger = logging.getLogger("nipgboard")

CSRF_HEADER = "X-NIPGBoard"
DEFAULT_MAX_BODY = 1 << 20          # 1 MiB: every request body but label lists
LABELS_MAX_BODY = 8 << 20           # a label list for ~100k images
MAX_JSON_DEPTH = 32                 # deeper bodies are refused before they are parsed


class HTTPError(UserError):
    """An HTTP-only refusal (wrong method, body too large, not JSON), with its status."""

    def __init__(self, message, status=400, **extra):
        super().__init__(message)
        self.http_status = status
        self.extra = extra


# -- responses --------------------------------------------------------------------------------------
def _clean(obj):
    """JSON-able copy: numpy scalars and arrays to Python, NaN and infinities to None; every ``error`` text
    (a failed job's, a step's) with its server paths redacted."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): (redact(v) if k == "error" and isinstance(v, str) else _clean(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:  # numpy scalar or array
        return _clean(tolist())
    return str(obj)


def json_response(request, obj, code=200, headers=None, clean=True):
    """JSON answer; ``clean=False`` skips the conversion walk for large documents that hold only
    str, int, finite float, bool and None already (saves ~0.1 s per 100k values)."""
    body = json.dumps(_clean(obj) if clean else obj, separators=(",", ":"), allow_nan=False)
    return http_util.Respond(request, body, "application/json", code=code, headers=headers)


def error_response(request, code, message, headers=None, **extra):
    return json_response(request, dict(error=message, status=code, **extra), code=code, headers=headers)


def binary_response(request, data, content_type, headers=None, expires=0):
    return http_util.Respond(request, data, content_type, headers=headers, expires=expires)


# -- request checks ---------------------------------------------------------------------------------
_extra_hosts = set()
_redactions = {}        # absolute folder -> what error texts show instead ("" for the logdir itself)
_redaction_re = None
_redaction_lock = threading.Lock()    # several plugins (and tests) may register folders


def allow_hosts(*names):
    """Also accept these host names in ``Host`` (e.g. TensorBoard's ``--host``)."""
    _extra_hosts.update(n.lower() for n in names if n)


def _add_redaction(folder, shown):
    global _redaction_re
    for form in {str(folder), os.path.realpath(folder)}:
        form = form.rstrip("/")
        if form and form not in _redactions:
            _redactions[form] = shown
    # Longest first, so a folder inside another is shown by its own form; a prefix counts only at a path
    # boundary (/logdir is no prefix of /logdir2 or /logdir.old, but ends the sentence "in /logdir.").
    alternatives = "|".join(re.escape(f) for f in sorted(_redactions, key=len, reverse=True))
    _redaction_re = re.compile(f"({alternatives})(/|(?![\\w~-]|\\.[\\w.~-]))")


def redact_paths_under(logdir):
    """Error texts name paths under ``logdir`` relative to it (the server's layout stays private)."""
    with _redaction_lock:
        _add_redaction(logdir, "")


def redact_paths_in_roots(roots):
    """Error texts show paths in these allowed folders as ``…/NAME/rest`` (NAME: the folder's last name);
    the logdir (registered with :func:`redact_paths_under`) and folders inside it keep their relative form."""
    for root in roots or ():
        root = str(root)
        with _redaction_lock:
            if not any(root == d or root.startswith(d + "/") for d, shown in _redactions.items() if shown == ""):
                _add_redaction(root, "\u2026/" + (os.path.basename(root.rstrip("/")) or "root"))


def redact(message: str) -> str:
    if _redaction_re is None or not isinstance(message, str):
        return message

    def shown(match):
        folder, sep = match.group(1), match.group(2)
        where = _redactions.get(folder, "")
        if where == "":
            return "" if sep == "/" else "."
        return where + sep

    return _redaction_re.sub(shown, message)


def _hostname(host_port):
    host = (host_port or "").strip().lower()
    if host.startswith("["):  # [v6 address] with an optional :port and nothing else
        found = re.fullmatch(r"\[([^\]]*)\](:\d+)?", host)
        return found.group(1) if found else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header) -> bool:
    name = _hostname(host_header)
    if not name:
        return False
    env = {h.strip().lower() for h in os.environ.get("NIPGBOARD_ALLOWED_HOSTS", "").split(",") if h.strip()}
    if "*" in env or name in env or name in _extra_hosts:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if name == "localhost" or name.endswith(".localhost"):
        return True
    mine = {socket.gethostname().lower()}
    try:
        mine.add(socket.getfqdn().lower())
    except OSError:
        pass
    return name in mine


def check_origin(request):
    """Refuse requests under a host name this server does not answer to, and cross-site ones."""
    host = request.headers.get("Host", "")
    if not host_allowed(host):
        raise Forbidden(f"requests are refused for host {_hostname(host)[:100]!r}; add it to "
                        "NIPGBOARD_ALLOWED_HOSTS if you serve TensorBoard under that name")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != host.strip().lower():
            raise Forbidden("cross-origin requests are refused")


def _json_depth_ok(raw: bytes) -> bool:
    """Whether no array or object in ``raw`` nests deeper than MAX_JSON_DEPTH (strings skipped)."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:     # backslash
                escaped = True
            elif byte == 0x22:     # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def read_json_body(request, max_body):
    if request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"missing request header {CSRF_HEADER}: 1 (required on every request that changes data)")
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json":
        raise HTTPError(f"the body must be JSON (Content-Type: application/json), not {ctype or 'none'!r}",
                        status=415)
    length = request.content_length
    if length is not None and length > max_body:
        raise HTTPError(f"request body too large ({length} bytes, limit {max_body})", status=413)
    raw = request.stream.read(max_body + 1)
    if len(raw) > max_body:
        raise HTTPError(f"request body too large (limit {max_body} bytes)", status=413)
    if not _json_depth_ok(raw):
        raise InvalidParameter(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidParameter(f"malformed JSON body: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidParameter("the JSON body must be an object")
    return data


def route(methods=("GET",), max_body=DEFAULT_MAX_BODY):
    """Wrap ``handler(self, request, params)`` as a werkzeug app.

    ``params`` is the query string (GET) or the JSON body (POST) as a dict.
    """
    methods = tuple(m.upper() for m in methods)
    allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())

    def decorate(handler):
        @functools.wraps(handler)
        @wrappers.Request.application
        def app(self, request):
            try:
                check_origin(request)
                if request.method not in allowed:
                    raise HTTPError(f"method {request.method} not allowed; use {', '.join(methods)}", status=405)
                if request.method == "POST":
                    params = read_json_body(request, max_body)
                else:
                    params = {}
                    for key in request.args:
                        values = request.args.getlist(key)
                        if len(values) > 1:
                            raise InvalidParameter(f"parameter {key!r} given {len(values)} times")
                        params[key] = values[0]
                return handler(self, request, params)
            except UserError as exc:
                headers = [("Allow", ", ".join(sorted(allowed)))] if exc.http_status == 405 else None
                return error_response(request, exc.http_status, redact(str(exc)), headers=headers,
                                      **getattr(exc, "extra", {}))
            except Exception:  # noqa: BLE001 - the traceback goes to the log, the client gets a plain 500
                logger.exception("nipgboard: %s %s failed", request.method, request.path)
                return error_response(request, 500, "internal error in the NIPGBoard plugin (see the server log)")

        app.methods = methods
        return app

    return decorate
