"""`lbrec certs`: the certificates of the TLS listener, and `--renew NAME` to order one now.

The list (also in `lbrec status`): every name lbrec orders over ACME (its state, issuer,
expiry, next renewal, consecutive failures and the CA's last error), the names refused (a
wildcard ACME cannot serve), and the operator's own certificates of ``tls.certificates``.
Never a key, a key's path, or the ACME account.

``--renew NAME`` orders a new certificate for NAME at once, whatever its schedule or back-off
(a person asked), through the proxy that serves this folder's challenges (`lbrec up`, or
`lbrec proxy` with this folder's backends.json). A running `lbrec up`/`watch`/`sync` sees the
new certificate within its certificate manager's poll and puts it into service with a pass;
without one, `lbrec apply` does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from ..adapters.cert_store import (
    operator_certificates,
    operator_names,
    read_held,
    read_records,
    write_status,
)
from ..adapters.workspace import Workspace
from ..core.certs import Due, RenewalPolicy, certificate_rows, wanted_names
from ..core.errors import UsageError
from ..core.spec import DesiredState
from .console import Out

__all__ = ["certificate_status", "certs_command", "print_certificates"]


def certificate_status(workspace: Workspace, desired: DesiredState) -> list[dict[str, Any]]:
    """Rows for `lbrec certs` and `lbrec status` (see core/certs.py certificate_rows), the
    operator's certificates after the obtained ones (``source``: acme or file)."""
    from ..runtime.certs import utc_now

    if desired.tls is None:
        return []
    folder = workspace.folder
    mine = operator_certificates(desired, folder)
    rows: list[dict[str, Any]] = []
    if desired.tls.acme is not None:
        wanted = wanted_names(desired, [n for c in mine for n in c.names])
        for row in certificate_rows(
            utc_now(), wanted, read_held(folder), read_records(folder), RenewalPolicy()
        ):
            rows.append({**row, "source": "acme"})
    for cert in mine:
        rows.append(
            {
                "name": cert.names[0],
                "state": "valid",
                "names": list(cert.names),
                "issuer": cert.issuer,
                "not_after": cert.not_after.isoformat(),
                "serial": cert.serial,
                "next_renewal": None,
                "failures": 0,
                "last_error": None,
                "retry_at": None,
                "source": "file",
            }
        )
    return rows


def print_certificates(rows: list[dict[str, Any]]) -> None:
    table = [["NAME", "STATE", "ISSUER", "EXPIRES", "NEXT RENEWAL", "LAST ERROR"]]
    for row in rows:
        next_renewal = row["next_renewal"] or ("(yours)" if row["source"] == "file" else "-")
        table.append(
            [
                row["name"],
                row["state"] + (f" ({row['failures']} failed)" if row["failures"] else ""),
                row["issuer"] or "-",
                (row["not_after"] or "-")[:19],
                next_renewal[:19],
                row["last_error"] or "-",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        cells = [cell.ljust(w) for cell, w in zip(r, widths, strict=False)]
        print("  ".join([*cells, r[-1]]).rstrip())


def certs_command(args: argparse.Namespace, workspace: Workspace, out: Out) -> int:
    desired = workspace.load()
    if args.renew is not None:
        return _renew(args.renew, args.lock_timeout, workspace, desired, out)
    rows = certificate_status(workspace, desired)
    if out.json:
        print(json.dumps({"certificates": rows}, indent=2))
        return 0
    if desired.tls is None:
        print("no tls: section in the desired state: no certificates")
        return 0
    if not rows:
        print("no certificates yet (no route names a host served over TLS)")
        return 0
    print_certificates(rows)
    return 0


def _renew(
    name: str, lock_timeout: float, workspace: Workspace, desired: DesiredState, out: Out
) -> int:
    from ..adapters.acme import AcmeClient
    from ..runtime.certs import obtain_now, utc_now

    if desired.tls is None or desired.tls.acme is None:
        raise UsageError("--renew: the desired state has no tls.acme: lbrec orders nothing")
    folder = workspace.folder
    wanted = wanted_names(desired, operator_names(desired, folder))
    if name not in wanted.names:
        raise UsageError(
            f"--renew {name}: not a name lbrec orders over ACME (one of: "
            f"{', '.join(wanted.names) or 'none'})"
        )
    held = read_held(folder).get(name)
    out.info(f"ordering a certificate for {name} from {desired.tls.acme.directory} ...")
    new, record = obtain_now(
        workspace,
        desired,
        Due(name, "renew" if held is not None else "issue", "asked for (lbrec certs --renew)"),
        AcmeClient(folder, desired.tls.acme),
        now=utc_now(),
        policy=RenewalPolicy(),
        lock_timeout=lock_timeout,
        held=held,
    )
    # the proxy's status page and /-/pool show the outcome at once (proxy/cert_view.py)
    rows = certificate_rows(utc_now(), wanted, read_held(folder), read_records(folder))
    with contextlib.suppress(OSError):
        write_status(folder, rows)
    if out.json:
        print(
            json.dumps(
                {
                    "ok": new is not None,
                    "name": name,
                    "issuer": new.issuer if new else None,
                    "not_after": new.not_after.isoformat() if new else None,
                    "error": None if new else record.last_error,
                }
            )
        )
    elif new is not None:
        print(
            f"{name}: new certificate by {new.issuer}, valid until {new.not_after.isoformat()}; "
            "a running `lbrec up`/`watch`/`sync` serves it after its next pass (or run "
            "`lbrec apply`)"
        )
    else:
        out.err(f"lbrec certs: {name}: {record.last_error}")
        if held is not None:
            out.err(f"  the certificate valid until {held.not_after.isoformat()} keeps serving")
    return 0 if new is not None else 1
