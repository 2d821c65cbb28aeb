"""Schemathesis checks of scripts/fuzz-api.sh, besides the built-in ones.

A schema-valid configuration can still break a rule that spans values (the
OpenAPI document's description lists them: `listen_port` equal to its key,
one network per hostname, upstreams inside their network, ...), which JSON
Schema cannot state; the server answers those with 422. The built-in
`positive_data_acceptance` check cannot tell them apart, so for the two
config operations tests/support/schemathesis.toml lets it accept 422, and
`rejected_only_for_rules_spanning_values` below takes over: a 422 to
schema-valid data passes only if every problem the server names is one of
those rules. Any other problem (a value refused for its own form) means the
document is looser than the server, and fails the run.

`every_operation_answered_2xx` fails the run if an operation never
succeeded, e.g. if no generated configuration was ever applied.
"""

import re

import schemathesis

# The server's messages for the rules that span values (src/validate/).
RULES_SPANNING_VALUES = [
    re.compile(p)
    for p in [
        r"^listen_port \d+ must equal the network's key \d+$",
        r"^network \d+ has the same private key$",
        r"^this peer's key is the network's own public key$",
        r" is listed twice$",
        r"^allowed IP \S+ is also given to peer \S+$",
        r" is inside the gateway's own bridge subnet \S+$",
        r"^upstream \S+ is not inside the network \(no address or peer allowed IP covers it\)$",
        r"^\d+ distinct upstreams; at most \d+ \(--max-upstreams, GATEWAY_MAX_UPSTREAMS raises it\)$",
        # The caps on list lengths are options of the daemon (--max-peers ...).
        r"^\d+ [a-zA-Z ]+; at most \d+ \(--max-[a-z-]+, GATEWAY_MAX_[A-Z_]+ raises it\)$",
        r"^the same URL is given twice \(e\.g\. with and without a trailing '/'\)$",
        r" is already served by (network \d+|a --custom-forwarding); a hostname may be in only one network$",
        r"^proxy_protocol is only for https:// and tcp:// entries ",
        r"^port \d+ is already used by .+; a port may be used once$",
        # allow/deny: the host bits must be zero, which a pattern cannot tie
        # to the prefix length (docs/operating.md, "Fuzzed from its own document").
        r"^\S+ has host bits set; the network is \S+$",
        # The key's scheme, proxy_protocol and a connection limit together.
        r"^connection limits on an https:// route with proxy_protocol are not supported ",
    ]
]

CONFIG_OPERATIONS = {"post_config", "patch_config"}


def _operation_id(case):
    return case.operation.definition.raw.get("operationId")


@schemathesis.check
def rejected_only_for_rules_spanning_values(ctx, response, case):
    if response.status_code != 422 or _operation_id(case) not in CONFIG_OPERATIONS:
        return None
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    details = response.json().get("details") or []
    other = [d for d in details if not any(p.search(d.get("message", "")) for p in RULES_SPANNING_VALUES)]
    if other or not details:
        named = "; ".join(f"{d.get('path')}: {d.get('message')}" for d in other) or "no details"
        raise AssertionError(f"A schema-valid configuration was refused for a value's own form: {named}")
    return None


@schemathesis.check
class every_operation_answered_2xx:
    def __init__(self):
        self.tested = set()
        self.succeeded = set()

    def after_response(self, ctx, response, case):
        self.tested.add(case.operation.label)
        if 200 <= response.status_code < 300:
            self.succeeded.add(case.operation.label)

    def after_run(self, ctx):
        never = sorted(self.tested - self.succeeded)
        if never:
            raise AssertionError("never answered 2xx: " + ", ".join(never))
