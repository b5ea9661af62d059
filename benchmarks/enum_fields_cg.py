"""Instructions per object of validating enumerated fields, two checkouts in turns, under callgrind.

The hot path that reading a newer schema's enum value (nbdb.models.enums) must not slow: objects
built from plain text (an ACL, a router policy and a port: five enum fields in all), ``replace()``
of two of them, ``encode`` of two, and a ``decode_each`` of ACL records. No store: the model layer
alone, where an enum's schema acts (a first design wrapped it, and cost +0.8 % and +1.5 %)::

    python benchmarks/enum_fields_cg.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

from abrun import ab_parser, callgrind_ab

WORKER = r"""
import operator, sys, uuid
from nbdb import codec
from nbdb.models import ACL, LogicalRouterPolicy, LogicalSwitchPort
from nbdb.spi import Record

count = int(sys.argv[1])
switch, router = uuid.uuid4(), uuid.uuid4()

def build():
    for i in range(count):
        ACL(switch=switch, direction="to-lport", priority=100, match="ip4", action="allow-related", severity="info")
        LogicalRouterPolicy(router=router, priority=i % 30000, match="ip4", action="reroute", nexthop="10.0.0.1")
        LogicalSwitchPort(switch=switch, name=f"p{i}", type="router")

acl = ACL(switch=switch, direction="to-lport", priority=100, match="ip4", action="allow-related", severity="info")
policy = LogicalRouterPolicy(router=router, priority=1, match="ip4", action="reroute", nexthop="10.0.0.1")

def replace():
    for i in range(count):
        acl.replace(priority=i % 30000, action="drop")
        policy.replace(priority=i % 30000)

def encode():
    for _ in range(count):
        codec.encode(acl)
        codec.encode(policy)

records = [Record("ACL", acl.id, None, v + 1, codec.encode(acl), None) for v in range(count)]

def decode():
    codec.decode_each(ACL, records)

for phase in (build, replace, encode, decode):
    phase()  # warmed, outside collection
for phase in (build, replace, encode, decode):
    operator.call(phase)
"""

PHASES = ("build ACL+policy+port", "replace ACL+policy", "encode ACL+policy", "decode_each ACL")


def main() -> None:
    args = ab_parser(__doc__, 2000).parse_args()
    callgrind_ab(args, WORKER, PHASES, lambda _: [str(args.count)], what="iteration")


if __name__ == "__main__":
    main()
