"""The ``Authorization`` header of sgl-gen's own calls to a router started with ``--api-key``.

The code is in generator/hostagent.py (it runs on the hosts too, where the key is read the way
the router's unit script reads it); this module is the generator's side of it, for local.py and
deploy.py. See hostagent.py's docstring for how the key is read and where it travels.
"""

from __future__ import annotations

from generator.hostagent import api_key_env, router_api_key, router_auth

__all__ = ["api_key_env", "router_api_key", "router_auth"]
