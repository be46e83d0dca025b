"""Compatibility re-export: README documents ``generator.client.get_model_url``; the helpers live in
generator/bridges/client.py."""

from generator.bridges.client import *  # noqa: F403
