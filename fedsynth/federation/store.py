"""The rendezvous store of rank 0, listening only on the address the user gave.

``torch.distributed.TCPStore(host, port, is_master=True)`` ignores ``host``
when it listens: its server binds the wildcard address (``0.0.0.0`` / ``::``),
so the store is reachable on every interface of rank 0's machine. torch (the
version pinned in pyproject.toml) accepts a socket that is already listening
through ``master_listen_fd``; this module binds and listens on the rendezvous
address itself and hands torch that socket. It is the one place that works
around torch here; ``tests/test_store.py`` fails if the store ever listens on
the wildcard again.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from datetime import timedelta

log = logging.getLogger("fedsynth")

#: like torch's own listen backlog
_BACKLOG = 2048


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (the first address ``host`` resolves to that binds) and listening.

    ``OSError`` if none binds (e.g. the address is not one of this machine's,
    or the port is taken).
    """
    last: OSError | None = None
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        s = socket.socket(family, kind, proto)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch does (restart after TIME_WAIT)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(_BACKLOG)
            return s
        except OSError as e:
            s.close()
            last = e
    raise last or OSError(f"{host} resolves to no IPv4 or IPv6 address")


def host_store(host: str, port: int, world_size: int, timeout: timedelta):
    """Rank 0's ``TCPStore`` server (and client), listening on ``host:port`` only."""
    import torch.distributed as dist

    sock = listening_socket(host, port)
    bound = sock.getsockname()[0]
    if ipaddress.ip_address(bound).is_loopback and not _is_literal(host) and host.lower() != "localhost":
        log.warning("rendezvous: %s is %s (loopback) on this machine: the store listens there only, "
                    "so sites on other machines cannot reach it; give rank 0's network address", host, bound)
    try:
        # the libuv server adopts the descriptor (and closes it with the store)
        return dist.TCPStore(host, port, world_size, is_master=True, timeout=timeout,
                             wait_for_workers=False, master_listen_fd=sock.fileno(), use_libuv=True)
    except BaseException:
        sock.close()
        raise
    finally:
        if sock.fileno() != -1:
            sock.detach()  # torch owns it now; the Python object must not close it


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
