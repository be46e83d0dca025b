"""The options every command that reaches the SSH hosts takes (deploy, diff, status, logs,
restart, down, check), and what they become (``ssh_settings``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from generator.cli.common import format_option


def ssh_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--hosts", "hosts", metavar="A,B",
                     help="Only these hosts (inventory names), comma-separated."),
        click.option("--ssh-config", type=click.Path(dir_okay=False),
                     help="SSH client config to use instead of ~/.ssh/config."),
        click.option("--known-hosts", type=click.Path(dir_okay=False),
                     help="Known-hosts file (default: the ssh config's UserKnownHostsFile, "
                          "else ~/.ssh/known_hosts)."),
        click.option("--accept-new-host-keys", is_flag=True,
                     help="Accept and record the key of a host not in known_hosts "
                          "(a changed key is always refused)."),
        click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=10,
                     show_default=True, help="Seconds to wait for each SSH connection."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def accept_sglang_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--accept-sglang-version", is_flag=True,
                        help="Hosts whose python has another SGLang than the version the "
                             "topology was validated against: a warning instead of an "
                             "error.")(f)


def output_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--format text|json`` (old spelling ``--output``, which still works)."""
    return format_option()(f)


def ssh_settings(kw: dict[str, Any]) -> tuple[Any, tuple[str, ...]]:
    from generator.deploy import SshOptions

    hosts = kw.pop("hosts", None)
    only = tuple(h.strip() for h in hosts.split(",") if h.strip()) if hosts else ()
    return SshOptions(ssh_config=kw.pop("ssh_config"), known_hosts=kw.pop("known_hosts"),
                      accept_new_host_keys=kw.pop("accept_new_host_keys"),
                      connect_timeout=kw.pop("connect_timeout")), only
