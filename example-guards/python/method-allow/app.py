"""method-allow: refuses requests whose method is not allowed on their route.

Configuration (JSON, the `config` table of the guard in vigil.toml):

    {
      "routes": {"/users/{id}": ["GET", "PUT"], "/login": ["POST"]},
      "default": ["GET"],        # methods allowed on routes not listed; absent: any method
      "status": 405,             # status of a refusal, 400-599
      "implicit_head": true      # HEAD is allowed wherever GET is
    }

A request is matched by its route template (as the proxy resolved it), then by its path.
"*" in a list allows every method. A refusal's reason lists the allowed methods, like the
`Allow` header of a 405.
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

# RFC 9110 token characters; methods are compared upper-case, as the proxy sends them.
METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")
MAX_ROUTES = 1000
FIELDS = ("routes", "default", "status", "implicit_head")


class Policy:
    """The checked configuration."""

    def __init__(self, routes, default, status, implicit_head):
        self.routes = routes
        self.default = default
        self.status = status
        self.implicit_head = implicit_head

    def allowed(self, route):
        """The methods allowed on `route`, or None when any method is."""
        methods = self.routes.get(route, self.default)
        if methods is None or "*" in methods:
            return None
        if self.implicit_head and "GET" in methods and "HEAD" not in methods:
            methods = methods + ["HEAD"]
        return methods


def methods(field, value):
    """Checks a list of methods, naming the field and the bad entry."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{field}: must be a non-empty list of methods")
    checked = []
    for i, method in enumerate(value):
        if not isinstance(method, str) or not (method == "*" or METHOD.match(method)):
            raise ValueError(f"{field}[{i}]: {json.dumps(method)} is not an HTTP method")
        checked.append(method if method == "*" else method.upper())
    return checked


def parse(text):
    """Parses and checks the configuration; errors name the field."""
    try:
        raw = json.loads(text or "{}")
    except ValueError as e:
        raise ValueError(f"config: not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("config: must be an object")
    for key in raw:
        if key not in FIELDS:
            raise ValueError(f"unknown field `{key}`, expected one of {', '.join(FIELDS)}")
    routes = raw.get("routes")
    if not isinstance(routes, dict) or not routes:
        raise ValueError("routes: required, an object of route -> list of methods")
    if len(routes) > MAX_ROUTES:
        raise ValueError(f"routes: at most {MAX_ROUTES} routes")
    for route in routes:
        if not route.startswith("/"):
            raise ValueError(f"routes.{route}: a route starts with /")
    checked = {route: methods(f"routes.{route}", value) for route, value in routes.items()}
    default = None
    if "default" in raw:
        default = methods("default", raw["default"])
    status = raw.get("status", 405)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ValueError(f"status: must be an integer from 400 to 599, not {json.dumps(status)}")
    implicit_head = raw.get("implicit_head", True)
    if not isinstance(implicit_head, bool):
        raise ValueError("implicit_head: must be true or false")
    return Policy(checked, default, status, implicit_head)


# Guest memory lives as long as one instance; init runs on every fresh one.
policy = None


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global policy
        try:
            policy = parse(config)
        except ValueError as e:
            raise Err(str(e))

    def on_request(self, req: types.Request) -> types.Verdict:
        route = req.route if req.route in policy.routes else req.path
        allowed = policy.allowed(route)
        if allowed is None or req.method in allowed:
            return types.Verdict_Allow()
        reason = f"method {req.method} not allowed on {route}; allow: {', '.join(allowed)}"
        return types.Verdict_Deny(types.Deny(policy.status, reason, None))

    def on_response(self, req: types.Request, resp: types.Response) -> None:
        pass
