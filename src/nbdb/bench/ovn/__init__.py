"""The OVN scale sweep: one logical switch holding N ports, through nbdb, the ``ovs`` IDL and ovsdbapp.

The shape of a provider network or a busy node's switch: every port is a
member of its switch's ``ports`` set, so a client whose cost grows with the
set's size falls behind as N grows. :mod:`.wire` populates and writes with
plain RFC 7047 messages; :mod:`.idl` is the raw ``ovs`` IDL baseline (cold
load, transactions of 100, following another writer); :mod:`.ovsdbapp` is
Neutron's client library (``lsp_add``, ``lsp_set_addresses``, ``lsp_del``).
"""
