"""The web layer's checks on their own: the Host rule against DNS rebinding, the JSON depth limit, and
`Param.clean`, which checks every parameter the same way from the shell, a query string or a JSON body."""
import json
import math
import socket

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from nipgboard_plugin import web
from nipgboard_plugin.errors import InvalidParameter, NotFound, Unavailable
from nipgboard_plugin.params import MAX_LIST_ITEMS, REQUIRED, Param, clean_all


# -- Host ---------------------------------------------------------------------------------------------------
@pytest.fixture
def no_extra_hosts(monkeypatch):
    """No NIPGBOARD_ALLOWED_HOSTS and no names added by a server in this process."""
    monkeypatch.delenv("NIPGBOARD_ALLOWED_HOSTS", raising=False)
    monkeypatch.setattr(web, "_extra_hosts", set())


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:6006", "10.1.2.3:80", "192.168.0.7",
    "[::1]", "[::1]:6006", "::1", "[fe80::1]:6006", "[2001:db8::5]",
    "localhost", "localhost:6006", "LOCALHOST:6006", "board.localhost", "a.b.localhost:6006",
])
def test_ip_addresses_and_localhost_are_allowed(no_extra_hosts, host):
    assert web.host_allowed(host) is True


def test_this_machines_own_name_is_allowed(no_extra_hosts):
    name = socket.gethostname()
    assert web.host_allowed(name) is True
    assert web.host_allowed(f"{name}:6006") is True
    assert web.host_allowed(name.upper()) is True


@pytest.mark.parametrize("host", [
    "", "   ", "evil.example", "evil.example:6006", "rebound.evil.example:6006",
    "127.0.0.1.evil.example",        # looks like an address, is a name an attacker controls
    "localhost.evil.example",        # starts like localhost
    "evillocalhost",                 # ends like localhost without the dot
    "[::1].evil.example",            # an address in brackets, then a name
    "[::1]evil:6006",
])
def test_unknown_names_are_refused(no_extra_hosts, host):
    assert web.host_allowed(host) is False


def test_allowed_hosts_from_the_environment(no_extra_hosts, monkeypatch):
    assert web.host_allowed("board.example:6006") is False
    monkeypatch.setenv("NIPGBOARD_ALLOWED_HOSTS", " Board.Example , other.example")
    assert web.host_allowed("board.example:6006") is True
    assert web.host_allowed("BOARD.EXAMPLE") is True          # names compare without case
    assert web.host_allowed("other.example") is True
    assert web.host_allowed("x.board.example") is False       # a listed name, not its subdomains
    assert web.host_allowed("evil.example") is False
    monkeypatch.setenv("NIPGBOARD_ALLOWED_HOSTS", "*")
    assert web.host_allowed("anything.example:6006") is True
    assert web.host_allowed("") is False                      # no Host at all is never a name
    monkeypatch.delenv("NIPGBOARD_ALLOWED_HOSTS")
    assert web.host_allowed("anything.example") is False


def test_names_added_by_the_server_are_allowed(no_extra_hosts):
    assert web.host_allowed("tb.internal:6006") is False
    web.allow_hosts("TB.internal", "", None)
    assert web.host_allowed("tb.internal:6006") is True
    assert web.host_allowed("other.internal") is False


# -- JSON depth ---------------------------------------------------------------------------------------------
def nested(depth, inner="1"):
    return ("[" * depth + inner + "]" * depth).encode()


def test_json_depth_limit_is_32():
    assert web.MAX_JSON_DEPTH == 32
    assert web._json_depth_ok(nested(32)) is True
    assert web._json_depth_ok(nested(33)) is False
    objects = lambda d: ('{"a":' * d + "1" + "}" * d).encode()  # noqa: E731
    assert web._json_depth_ok(objects(32)) is True
    assert web._json_depth_ok(objects(33)) is False
    mixed = ('{"a":[' * 16 + "1" + "]}" * 16).encode()              # 32 levels, arrays and objects
    assert web._json_depth_ok(mixed) is True
    assert web._json_depth_ok(b"[" + mixed + b"]") is False


def test_depth_is_the_deepest_point_not_the_number_of_brackets():
    siblings = "[" + ",".join(["[" * 31 + "1" + "]" * 31] * 5) + "]"   # 5 branches, each 32 deep
    assert web._json_depth_ok(siblings.encode()) is True
    assert web._json_depth_ok(b"[" + siblings.encode() + b"]") is False


def test_brackets_inside_strings_do_not_count():
    assert web._json_depth_ok(b'{"label": "' + b"[" * 100 + b'{' * 100 + b'"}') is True
    # an escaped quote does not end the string: the brackets after it are still text
    assert web._json_depth_ok(b'["a\\"' + b"[" * 100 + b'", 1]') is True
    # an escaped backslash does not escape the quote after it: the string ends, the brackets count
    assert web._json_depth_ok(b'["a\\\\", ' + nested(32) + b"]") is False
    assert web._json_depth_ok(b'["a\\\\", ' + nested(31) + b"]") is True


def request(body):
    """A real werkzeug request as the plugin receives it: a POST with a JSON body and the header."""
    return Request(EnvironBuilder(method="POST", data=body, content_type="application/json",
                                  headers={web.CSRF_HEADER: "1"}).get_environ())


def test_a_deep_body_is_refused_before_it_is_parsed():
    with pytest.raises(InvalidParameter, match="nests deeper than 32 levels"):
        web.read_json_body(request(b'{"a": ' + nested(40) + b"}"), 1 << 20)
    # 100,000 levels would exhaust Python's parser; refused just the same, without parsing
    with pytest.raises(InvalidParameter, match="nests deeper than 32 levels"):
        web.read_json_body(request(nested(100_000)), 1 << 20)
    assert web.read_json_body(request(b'{"a": ' + nested(31) + b"}"), 1 << 20) == {"a": json.loads(nested(31))}


# -- Param.clean ---------------------------------------------------------------------------------------------
N = Param("n", "int", 5, 1, 100)


@pytest.mark.parametrize("given,expected", [
    ("12", 12), (" 12 ", 12), ("+7", 7), (12, 12), (12.0, 12), (None, 5), ("100", 100), ("1", 1)])
def test_int_values(given, expected):
    value = N.clean(given)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("given", ["1.5", "1e3", "12abc", "", " ", "0x10", 1.5, True, False, "0", "101", "-3",
                                   [12], {"n": 1}, "9" * 19])
def test_int_refusals(given):
    with pytest.raises(InvalidParameter, match="'n'"):
        N.clean(given)


def test_a_required_parameter_must_be_given():
    p = Param("network", "str", REQUIRED)
    assert p.required and p.describe()["required"] is True and p.describe()["default"] is None
    for missing in (None, REQUIRED):
        with pytest.raises(InvalidParameter, match="'network' is required"):
            p.clean(missing)
    assert p.clean("x") == "x"


@pytest.mark.parametrize("given,expected", [
    ("true", True), ("TRUE", True), ("yes", True), ("1", True), (True, True),
    ("false", False), ("0", False), ("No", False), (False, False)])
def test_bool_values(given, expected):
    assert Param("all", "bool", False).clean(given) is expected


@pytest.mark.parametrize("given", ["maybe", "", "2", "on", 1, 0, 1.0, ["true"]])
def test_bool_refusals(given):
    with pytest.raises(InvalidParameter, match="true or false"):
        Param("all", "bool", False).clean(given)


F = Param("threshold", "float", 0.3, 0.0, 2.0)


@pytest.mark.parametrize("given,expected", [("0.5", 0.5), (" 1.25 ", 1.25), ("2", 2.0), (1, 1.0), (0, 0.0),
                                            (None, 0.3)])
def test_float_values(given, expected):
    value = F.clean(given)
    assert value == expected and type(value) is float


@pytest.mark.parametrize("given", ["nan", "NaN", "inf", "-inf", "infinity", float("nan"), math.inf, "2.5", -0.1,
                                   "abc", "", True, [0.5]])
def test_float_refusals(given):
    with pytest.raises(InvalidParameter, match="'threshold'"):
        F.clean(given)


def test_choice():
    p = Param("graph", "choice", "mst", choices=("mst", "knn"))
    assert p.clean("knn") == "knn" and p.clean(None) == "mst"
    for bad in ("KNN", "kn", "", 1, ["knn"]):
        with pytest.raises(InvalidParameter, match="'graph'"):
            p.clean(bad)


def test_int_with_choices():
    p = Param("tile", "int", 64, 16, 256, choices=(32, 64, 128))
    assert p.clean("128") == 128
    with pytest.raises(InvalidParameter, match="one of: 32, 64, 128; got 65"):
        p.clean("65")


def test_strings_and_paths():
    s = Param("name", "str", None, max_len=10)
    assert s.clean("  abc ") == "  abc "            # kept as given: a label's own rule strips it
    for bad in ("x" * 11, "a\x00b", "\ud800", 5):
        with pytest.raises(InvalidParameter, match="'name'"):
            s.clean(bad)
    path = Param("images", "path", None)
    assert path.clean("/d/" + "x" * 4000) == "/d/" + "x" * 4000
    with pytest.raises(InvalidParameter, match="too long"):
        path.clean("/" + "x" * 4096)


@pytest.mark.parametrize("ptype,given,expected", [
    ("int_list", "5, 10,15", [5, 10, 15]),
    ("int_list", [5, "10"], [5, 10]),
    ("float_list", "0.1,0.5", [0.1, 0.5]),
    ("choice_list", "a,b", ["a", "b"]),
    ("choice_list", " c ,, a ", ["c", "a"]),        # blanks between commas are dropped
    ("choice_list", ["b"], ["b"]),
])
def test_lists_from_query_text_and_json(ptype, given, expected):
    p = Param("grid", ptype, None, 0, 50, choices=("a", "b", "c") if ptype == "choice_list" else None)
    assert p.clean(given) == expected


@pytest.mark.parametrize("ptype,given,match", [
    ("int_list", "5,100", "between 0 and 50"),
    ("int_list", "5,x", "integer"),
    ("float_list", "0.1,nan", "finite"),
    ("choice_list", "a,d", "one of"),
    ("int_list", "", "list of 1 to"),
    ("int_list", ",", "list of 1 to"),
    ("int_list", [], "list of 1 to"),
    ("int_list", ",".join(["1"] * (MAX_LIST_ITEMS + 1)), f"list of 1 to {MAX_LIST_ITEMS}"),
    ("int_list", 5, "list of"),
])
def test_list_refusals(ptype, given, match):
    p = Param("grid", ptype, None, 0, 50, choices=("a", "b", "c") if ptype == "choice_list" else None)
    with pytest.raises(InvalidParameter, match=match):
        p.clean(given)


def test_min_items():
    p = Param("networks", "choice_list", None, choices=("a", "b", "c"), min_items=2)
    assert p.clean("a,b") == ["a", "b"]
    with pytest.raises(InvalidParameter, match="list of 2 to"):
        p.clean("a")
    assert p.clean(None) is None                    # not given: the default


def test_networks():
    p = Param("networks", "networks", None)
    assert p.clean("efficientnet_lite0,mobilenet_v2") == ["efficientnet_lite0", "mobilenet_v2"]
    assert p.clean(["mobilenet_v2"]) == ["mobilenet_v2"]
    with pytest.raises(InvalidParameter, match="lists a network twice"):
        p.clean("mobilenet_v2, mobilenet_v2")
    with pytest.raises(NotFound, match="unknown network 'nosuchnet'; known networks: .*efficientnet_lite0"):
        p.clean("mobilenet_v2,nosuchnet")
    with pytest.raises(InvalidParameter, match="network id"):
        p.clean("../x")
    one = Param("network", "network", REQUIRED)
    assert one.clean("efficientnet_lite0") == "efficientnet_lite0"
    with pytest.raises(Unavailable, match="vgg16 is not available here"):  # Keras is not installed here
        one.clean("vgg16")


def test_object():
    p = Param("cluster", "object", None, cli=False)
    assert p.clean({"network": "x"}) == {"network": "x"}
    with pytest.raises(InvalidParameter, match="must be an object"):
        p.clean([1])


def test_clean_all_refuses_unknown_names_and_server_only_parameters_on_the_web():
    declared = (N, Param("out", "path", None, web=False))
    assert clean_all(declared, {"n": "7"}) == {"n": 7}
    assert clean_all(declared, {"n": "7", "out": "/tmp/x.csv"}, face="cli") == {"n": 7, "out": "/tmp/x.csv"}
    with pytest.raises(InvalidParameter, match="unknown parameter 'out'"):
        clean_all(declared, {"out": "/tmp/x.csv"})
    with pytest.raises(InvalidParameter, match="unknown parameter 'command'"):
        clean_all(declared, {"n": 1, "command": "rm -rf /"})
