"""EDGE. The files the front door's features name, checked when the desired-state file is
loaded (apply, diff, validate, watch), as check_certificates does for certificates: an htpasswd
file that is missing, unreadable or holds a refused hash (MD5-crypt, SHA1, plain), and a
maintenance or error page that is missing, too big or of an unknown type. A SpecError names the
field and the file: nothing is applied. Paths are relative to the desired-state file."""

from __future__ import annotations

from pathlib import Path

from ...proxy.access import HtpasswdError, load_htpasswd
from ...proxy.config import RouteFeatures
from ...proxy.pages import PageError, load_page
from ..core.errors import SpecError
from ..core.spec import DesiredState

__all__ = ["check_route_files"]


def _check(features: RouteFeatures, where: str, folder: Path, source: str) -> None:
    def refuse(field: str, err: Exception) -> SpecError:
        return SpecError(f"{source}: {where}{field}: {err}; nothing was applied")

    auth = features.auth
    if auth is not None and auth.basic is not None:
        try:
            load_htpasswd(folder / auth.basic.users_file)
        except HtpasswdError as err:
            raise refuse("auth.basic.users_file", err) from err
    pages: list[tuple[str, str]] = []
    if features.maintenance is not None and features.maintenance.page is not None:
        pages.append(("maintenance.page", features.maintenance.page))
    pages += [(f"error_pages.{s}", p) for s, p in sorted((features.error_pages or {}).items())]
    for field, page in pages:
        try:
            load_page(folder / page)
        except PageError as err:
            raise refuse(field, err) from err


def check_route_files(desired: DesiredState, folder: Path, *, source: str) -> None:
    """Every file of the top-level features and of each route's can be used."""
    _check(desired, "", folder, source)
    for index, route in enumerate(desired.routes):
        _check(route, f"routes[{index}].", folder, source)
