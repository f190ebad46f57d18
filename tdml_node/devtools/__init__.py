"""Development-only tools: Byzantine behaviours for test networks, and generators of reference docs.

Nothing here is imported by an honest node's code path; the ``--dev``
wiring installs a behaviour's seams, and the doc generators are run by hand
or by tests.
"""
