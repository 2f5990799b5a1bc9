"""Whether the studio may start as asked: reachable from other machines needs a login,
or an explicit --open-studio. Pure and cheap (no gradio, no torch), so app.py asks it first."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost",)
OPEN_STUDIO_FLAG = "--open-studio"
WAYS_OUT = (
    "Either require a login with --auth USER:PASSWORD (repeat it for more people), or pass "
    f"{OPEN_STUDIO_FLAG} to accept that anyone who can reach the studio can render on its "
    "GPU and read every output."
)
SPACE_WAYS_OUT = (
    "On a Hugging Face Space, add the secret STUDIO_AUTH=user:password (several as "
    "user:password,user2:password2), or set the variable STUDIO_OPEN=1 to accept that anyone "
    "who can open the Space can render on its GPU and read every output."
)


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = address.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an interface address: others may reach it


def sharing_refusal(
    *, listen: str, share: bool, logins: int, open_studio: bool, space: bool = False
) -> str | None:
    """Why the studio must not start as asked (None: it may). Without logins, a public link
    or an address other machines can reach needs `open_studio`."""
    if logins > 0 or open_studio:
        return None
    if share:
        why = "--share makes a public gradio.live link"
    elif not is_loopback(listen):
        why = f"--listen {listen} can be reached from other machines"
    else:
        return None
    ways = SPACE_WAYS_OUT if space else WAYS_OUT
    return f"Not starting an open studio: {why}, and no --auth login is set. {ways}"
