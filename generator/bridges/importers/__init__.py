"""Importers: configurations of the RL frameworks in the seeds -> sgl-gen topologies."""
