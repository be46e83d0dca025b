"""The targets layer: ``Plan`` -> ``{path: Artifact}``, one module per artifact family (README
"Architecture"). Imports generator.compile and the shared base; writes nothing (generator.write does).
"""
