"""The conformance kit: the definition of a correct nbdb backend.

Run it against a server with ``pytest --pyargs nbdb.conformance --nbdb-url=URL``
(see :mod:`nbdb.conformance.plugin`). Every test uses the public API only,
so any backend found through the ``nbdb.backends`` entry points can be checked.
"""
