"""Which `Host` headers the HTTP ports answer: a defence against DNS rebinding.

A web page on another site can make a browser resolve its own name to 127.0.0.1 and then read
what the sidecar answers there (the token-less console, `/readyz`, `/metrics`, OFREP) — the
browser believes it is talking to the page's site, and only the `Host` header still names it.
So a request is answered only when its `Host` is an IP address (a rebinding page cannot make
the browser send one of those for its own name; kubelet probes and Prometheus send the pod's
IP), `localhost` or a `*.localhost` name, or a name the operator listed (`--allowed-hosts`).
Anything else is 421 Misdirected Request (decision 1332).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def allowed_names(configured: str, hosts: Iterable[str]) -> frozenset[str]:
    """The names answered besides IP addresses and `localhost`: the comma-separated
    `--allowed-hosts` and the listeners' own `--host` values when they are names."""
    names = {n.strip().lower().rstrip(".") for n in configured.split(",") if n.strip()}
    names.update(h.lower().rstrip(".") for h in hosts if h and not _is_ip(h))
    return frozenset(names)


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request whose `Host` is `header` may be answered (no header: a client that
    is not a browser; every browser sends one)."""
    if not header:
        return True
    host = _without_port(header.strip()).lower().rstrip(".")
    if _is_ip(host) or host == "localhost" or host.endswith(".localhost"):
        return True
    return host in names


def _without_port(header: str) -> str:
    if header.startswith("["):  # [::1]:8016
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header  # a bare IPv6 address, or no port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
