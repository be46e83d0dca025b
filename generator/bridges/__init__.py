"""Bridges to the RL frameworks: importers (their configs -> topologies), exports (a plan -> their
arguments) and the client helpers a trainer calls."""
