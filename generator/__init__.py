"""sgl-gen: compile an SGLang serving topology into launch artifacts."""

__version__ = "0.1.0"
