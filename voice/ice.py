"""The one patch of aioice's host-candidate gathering (process-wide, idempotent per mode).

aioice leaves 127.0.0.1 out of its host candidates, so a peer on a loopback-only host has none.

    loopback_candidates(only=True)   the server: offer 127.0.0.1 and nothing else (no LAN address)
    loopback_candidates(only=False)  the client: add 127.0.0.1 to the usual addresses
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"


def loopback_candidates(only: bool) -> None:
    """Patch `aioice.ice.get_host_addresses` to offer the loopback address (see module doc)."""
    import aioice.ice  # noqa: PLC0415 - aiortc's dependency, imported with the peer code

    current = aioice.ice.get_host_addresses
    if getattr(current, "_parley_loopback", None) in (only, True):
        return  # this mode (or loopback-only, which already includes it) is in place

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = True, **kw: object) -> list[str]:
        if only:
            return [LOOPBACK] if use_ipv4 else []
        addrs = current(use_ipv4=use_ipv4, use_ipv6=use_ipv6, **kw)
        return [*addrs, LOOPBACK] if use_ipv4 and LOOPBACK not in addrs else addrs

    get_host_addresses._parley_loopback = only  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses
