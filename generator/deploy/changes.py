"""What a deploy changes: per unit an action, per host the files to write, remove and keep."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UnitAction:
    host: str
    unit: str
    kind: str
    action: str  # start | restart | stop | none
    reason: str
    url: str = ""
    state: str = ""  # running / dead / stopped before the deploy
    stop_with: str = ""  # the supervisor that runs it now (restart/stop), when it is another


@dataclass
class Changes:
    units: list[UnitAction] = field(default_factory=list)
    upload: dict[str, list[str]] = field(default_factory=dict)  # host -> relpaths
    chmod: dict[str, list[str]] = field(default_factory=dict)
    remove: dict[str, list[str]] = field(default_factory=dict)  # only files sgl-gen wrote
    keep: dict[str, list[str]] = field(default_factory=dict)  # not sgl-gen's: never touched
    adopt: dict[str, list[str]] = field(default_factory=dict)  # --adopt: identical, now owned
    refused: dict[str, list[str]] = field(default_factory=dict)  # why a deploy must not go on
    install: dict[str, list[str]] = field(default_factory=dict)  # systemd unit files to write
    uninstall: dict[str, list[str]] = field(default_factory=dict)  # and to remove (sgl-gen's)
    enable: dict[str, list[str]] = field(default_factory=dict)  # systemd units to enable
    reload: dict[str, bool] = field(default_factory=dict)  # a daemon-reload is due anyway
    disable: dict[str, list[str]] = field(default_factory=dict)  # kept unit files: disabled

    def of(self, host: str, action: str, kind: str | None = None) -> list[str]:
        return [a.unit for a in self.units if a.host == host and a.action == action
                and (kind is None or a.kind == kind)]

    def noop(self) -> bool:
        return not any(a.action != "none" for a in self.units) and not any(
            any(d.values()) for d in (self.upload, self.chmod, self.remove, self.adopt,
                                      self.install, self.uninstall, self.enable, self.reload,
                                      self.disable))
