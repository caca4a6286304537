"""HTTP plumbing of the plugin: parameter validation, JSON bodies, errors as 4xx JSON.

Every route is a method wrapped by :func:`route`, which

* answers only the declared methods (405 with ``Allow`` otherwise);
* for state-changing routes (POST) requires the header ``X-NIPGBoard: 1`` and a JSON object body
  of at most ``max_body`` bytes, so that a cross-site form or a simple cross-origin request cannot
  trigger them (browsers add custom headers only to same-origin or CORS-approved requests); an
  ``Origin`` header, when sent, must name the same host as ``Host``, and ``Host`` must be an IP
  address, ``localhost``, this machine's name, TensorBoard's ``--host`` or a name listed in
  ``NIPGBOARD_ALLOWED_HOSTS`` (comma-separated; ``*`` allows any), which stops DNS-rebinding pages;
* turns :class:`HTTPError` and :class:`UserError` into ``{"error": message}`` with a 4xx status,
  and any other exception into a 500 whose body says only that the server failed (the traceback
  goes to the server log).

The validators below convert and check one value each (from a query string, where every value is a
string, or from a JSON body) and raise :class:`BadRequest` naming the parameter and what is wrong.
"""
import functools
import ipaddress
import json
import logging
import math
import os
import re
import socket
from urllib.parse import urlsplit

from tensorboard.backend import http_util
from werkzeug import wrappers

from .errors import UserError

logger = logging.getLogger("nipgboard")

CSRF_HEADER = "X-NIPGBoard"
DEFAULT_MAX_BODY = 1 << 20          # 1 MiB: every request body but label lists
LABELS_MAX_BODY = 8 << 20           # a label list for ~100k images
REQUIRED = object()


class HTTPError(UserError):
    """A request the client can fix; ``extra`` fields join the JSON error body."""

    def __init__(self, message, status=None, **extra):
        super().__init__(message)
        if status is not None:
            self.http_status = status
        self.extra = extra


class BadRequest(HTTPError):
    http_status = 400


class Forbidden(HTTPError):
    http_status = 403


class NotFound(HTTPError):
    http_status = 404


class Conflict(HTTPError):
    http_status = 409


# -- responses --------------------------------------------------------------------------------------
def _clean(obj):
    """JSON-able copy: numpy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
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


def allow_hosts(*names):
    """Also accept these host names in ``Host`` (e.g. TensorBoard's ``--host``)."""
    _extra_hosts.update(n.lower() for n in names if n)


def _hostname(host_port):
    host = (host_port or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
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
    host = request.headers.get("Host", "")
    if not host_allowed(host):
        raise Forbidden(f"requests that change data are refused for host {_hostname(host)!r}; "
                        "add it to NIPGBOARD_ALLOWED_HOSTS if you serve TensorBoard under that name")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != host.strip().lower():
            raise Forbidden("cross-origin requests may not change data")


def read_json_body(request, max_body):
    if request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"missing request header {CSRF_HEADER}: 1 (required on every request that changes data)")
    check_origin(request)
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
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
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
                if request.method not in allowed:
                    raise HTTPError(f"method {request.method} not allowed; use {', '.join(methods)}", status=405)
                if request.method == "POST":
                    params = read_json_body(request, max_body)
                else:
                    params = {}
                    for key in request.args:
                        values = request.args.getlist(key)
                        if len(values) > 1:
                            raise BadRequest(f"parameter {key!r} given {len(values)} times")
                        params[key] = values[0]
                return handler(self, request, params)
            except UserError as exc:
                headers = [("Allow", ", ".join(sorted(allowed)))] if exc.http_status == 405 else None
                return error_response(request, exc.http_status, str(exc), headers=headers,
                                      **getattr(exc, "extra", {}))
            except Exception:  # noqa: BLE001 - the traceback goes to the log, the client gets a plain 500
                logger.exception("nipgboard: %s %s failed", request.method, request.path)
                return error_response(request, 500, "internal error in the NIPGBoard plugin (see the server log)")

        app.methods = methods
        return app

    return decorate


# -- validators -------------------------------------------------------------------------------------
def check_keys(params, allowed):
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; expected one of: {', '.join(sorted(allowed))}")


def _get(params, name, default):
    value = params.get(name, default)
    if value is REQUIRED:
        raise BadRequest(f"parameter {name!r} is required")
    return value


def p_int(params, name, default=REQUIRED, lo=None, hi=None):
    value = _get(params, name, default)
    if value is None:
        return value
    if isinstance(value, bool):
        raise BadRequest(f"parameter {name!r} must be an integer, got {value!r}")
    if isinstance(value, str):
        if not re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
            raise BadRequest(f"parameter {name!r} must be an integer, got {value[:40]!r}")
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise BadRequest(f"parameter {name!r} must be an integer, got {type(value).__name__}")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise BadRequest(f"parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value


def p_float(params, name, default=REQUIRED, lo=None, hi=None):
    value = _get(params, name, default)
    if value is None:
        return value
    if isinstance(value, bool):
        raise BadRequest(f"parameter {name!r} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadRequest(f"parameter {name!r} must be a number, got {value[:40]!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"parameter {name!r} must be a finite number")
    value = float(value)
    if lo is not None and value < lo or hi is not None and value > hi:
        raise BadRequest(f"parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value


def p_bool(params, name, default=REQUIRED):
    value = _get(params, name, default)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes")
    raise BadRequest(f"parameter {name!r} must be true or false, got {str(value)[:40]!r}")


def p_str(params, name, default=REQUIRED, choices=None, pattern=None, max_len=200):
    value = _get(params, name, default)
    if value is None or (value is default and default is not REQUIRED):
        return value
    if not isinstance(value, str):
        raise BadRequest(f"parameter {name!r} must be a string")
    if len(value) > max_len:
        raise BadRequest(f"parameter {name!r} is too long ({len(value)} characters, limit {max_len})")
    if choices is not None and value not in choices:
        raise BadRequest(f"parameter {name!r} must be one of: {', '.join(choices)}; got {value[:40]!r}")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise BadRequest(f"parameter {name!r} has an invalid value {value[:40]!r}")
    if "\x00" in value:
        raise BadRequest(f"parameter {name!r} contains a NUL character")
    return value


MAX_LABEL_LENGTH = 100


def clean_label(value, name="label"):
    """A label: a non-empty string without control characters (None removes a label)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string or null, got {type(value).__name__}")
    label = value.strip()
    if not label:
        raise BadRequest(f"{name} is empty (use null to remove a label)")
    if len(label) > MAX_LABEL_LENGTH:
        raise BadRequest(f"{name} is too long ({len(label)} characters, limit {MAX_LABEL_LENGTH})")
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise BadRequest(f"{name} contains control characters")
    return label


def clean_id(value, name="id"):
    """An image id: a positive integer (an int in JSON, digits in a query string)."""
    return p_int({name: value}, name, lo=1, hi=2 ** 62)


def p_id_list(params, name, max_items=200_000):
    value = _get(params, name, REQUIRED)
    if not isinstance(value, list):
        raise BadRequest(f"parameter {name!r} must be a list of image ids")
    if not value:
        raise BadRequest(f"parameter {name!r} is empty")
    if len(value) > max_items:
        raise BadRequest(f"parameter {name!r} lists {len(value)} ids; at most {max_items} at once")
    return [clean_id(v, f"{name}[{i}]") for i, v in enumerate(value)]
