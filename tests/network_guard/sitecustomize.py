"""Refuses every connection that would leave the machine, and records who tried.

On PYTHONPATH (with MSSL_NETWORK_LOG set) it guards a whole process, e.g. the app server in
the browser test; tests call `install` to guard their own process."""

from __future__ import annotations

import ipaddress
import os
import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like never leave the machine
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name: resolving it would already be outbound
        return False


def install(log_path: str, patch=setattr) -> None:
    """Refuse and log outbound connections; `patch` may be pytest's `monkeypatch.setattr`."""

    def guarded(method):
        def connect(self, address):
            if not _is_local(address):
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(f"{address!r}\n")
                raise ConnectionRefusedError(f"outbound connection to {address!r} refused by the test")
            return method(self, address)

        return connect

    patch(socket.socket, "connect", guarded(_connect))
    patch(socket.socket, "connect_ex", guarded(_connect_ex))


if os.environ.get("MSSL_NETWORK_LOG"):
    install(os.environ["MSSL_NETWORK_LOG"])
