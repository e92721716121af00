"""{{name}}: a Vigil guard. It limits each client to `per_minute` requests (bursts of up to
`burst`) with the host's rate limiter, and refuses the rest with 429 and `Retry-After`.

The `guard` world of wit/guard.wit: `init` refuses a configuration by raising `Err(message)`;
a `result` import such as `state.rate` raises `Err` with its error value.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import state, types

from policy import parse_config

# An instance serves many requests of many clients: only the configuration lives here (`init`
# runs on every fresh instance), per-client data lives in the host's state.
limit = None


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global limit
        try:
            limit = parse_config(config)
        except ValueError as e:
            raise Err(str(e)) from None
        # Only the client's key is read: no header field needs copying into the guard.
        state.reads_headers([])

    def on_request(self, req: types.Request) -> types.Verdict:
        try:
            state.rate(req.client.key, limit.per_minute / 60, limit.burst)
            return types.Verdict_Allow()
        except Err as wait:
            reason = f"more than {limit.per_minute} requests a minute"
            return types.Verdict_Deny(types.Deny(429, reason, limit.retry_after_secs(wait.value)))

    def on_response(self, req: types.Request, resp: types.Response) -> None:
        pass
