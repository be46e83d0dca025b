"""The compile layer: topology file -> ``Topology`` -> ``Plan``, pure stages (README "Architecture").

Imports only generator.errors, generator.paths, this package and the stdlib-only generator.rehearsal.
"""
