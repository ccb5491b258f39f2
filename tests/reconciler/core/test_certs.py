"""core/certs.py: which names ACME orders, which challenge, when each is due (renewal at two
thirds, ARI, jitter, back-off with Retry-After), and the certificates the pool lists."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbrec.reconciler.core.certs import (
    HeldCertificate,
    NameRecord,
    RenewalPolicy,
    Wanted,
    after_failure,
    after_success,
    ari_due,
    backoff_delay,
    certificate_rows,
    choose_challenge,
    plan_certificates,
    renewal_time,
    wanted_names,
    with_ari,
)
from lbrec.reconciler.core.plan import plan
from lbrec.reconciler.core.render import render_pool
from lbrec.reconciler.core.spec import parse_spec
from lbrec.reconciler.core.state import Observed

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

SAMPLE = """
listen: 0.0.0.0:80
tls:
  listen: 0.0.0.0:443
  acme:
    email: ops@example.com
routes:
  - {host: shop.example.com, backends: [web]}
  - {host: shop.example.com, path: /api/, backends: [api]}
  - {host: "admin.example.com:8443", backends: [web], tls: required}
  - {host: plain.example.com, backends: [web], tls: "off"}
  - {path: /fallback/, backends: [web]}
backends:
  - {name: web, port: 8000}
  - {name: api, port: 8100}
"""


def held(name: str = "shop.example.com", days: float = 90, serial: str = "1a") -> HeldCertificate:
    return HeldCertificate(
        name=name,
        cert=f".lbrec/certs/{name}/{serial}.pem",
        key=f".lbrec/certs/{name}/{serial}.key",
        names=(name,),
        not_before=T0,
        not_after=T0 + days * DAY,
        issuer="Test CA",
        serial=serial,
    )


# -- which names ---------------------------------------------------------------------------
def test_wanted_names_every_tls_host_once_without_its_port() -> None:
    desired = parse_spec(SAMPLE)
    assert wanted_names(desired) == Wanted(("shop.example.com", "admin.example.com"))


def test_wanted_names_skip_what_an_operator_certificate_covers() -> None:
    desired = parse_spec(SAMPLE)
    assert wanted_names(desired, ["*.example.com"]).names == ()
    assert wanted_names(desired, ["admin.example.com"]).names == ("shop.example.com",)


def test_without_acme_nothing_is_ordered() -> None:
    desired = parse_spec(SAMPLE.replace("  acme:\n    email: ops@example.com\n", ""))
    assert wanted_names(desired) == Wanted(())


def test_a_wildcard_is_refused_naming_its_route_unless_covered() -> None:
    text = SAMPLE.replace("plain.example.com", "'*.apps.example.com'").replace(
        'tls: "off"', "tls: auto"
    )
    desired = parse_spec(text)
    wanted = wanted_names(desired)
    assert "*.apps.example.com" not in wanted.names
    assert len(wanted.refused) == 1
    refusal = wanted.refused[0]
    assert refusal.route == 3 and "routes[3].host" in refusal.message
    assert "DNS-01" in refusal.message and "tls.certificates" in refusal.message
    assert wanted_names(desired, ["*.apps.example.com"]).refused == ()


@given(
    hosts=st.lists(
        st.tuples(
            st.sampled_from(["a.example.com", "b.example.com", "*.example.com", "c.test"]),
            st.sampled_from(["auto", "required", "off"]),
        ),
        max_size=6,
        unique_by=lambda h: h[0],
    ),
    covered=st.lists(st.sampled_from(["a.example.com", "*.example.com", "x.test"]), max_size=2),
)
def test_wanted_names_properties(hosts: list[tuple[str, str]], covered: list[str]) -> None:
    routes = "".join(f"  - {{host: '{h}', backends: [web], tls: '{t}'}}\n" for h, t in hosts)
    empty = "  []\n"
    desired = parse_spec(
        "tls:\n  listen: 127.0.0.1:8443\n  acme: {email: a@example.com}\n"
        f"routes:\n{routes or empty}backends:\n  - {{name: web, port: 8000}}\n"
    )
    wanted = wanted_names(desired, covered)
    for name in wanted.names:
        assert not name.startswith("*.")  # exact names only
        assert not any(c == name or (c.startswith("*.") and name.endswith(c[1:])) for c in covered)
        assert any(h == name and t != "off" for h, t in hosts)
    assert len(set(wanted.names)) == len(wanted.names)


# -- when -----------------------------------------------------------------------------------
def test_renewal_at_two_thirds_less_a_small_stable_jitter() -> None:
    cert = held(days=90)
    at = renewal_time(cert)
    assert T0 + 60 * DAY - 4.5 * DAY <= at <= T0 + 60 * DAY
    assert renewal_time(cert) == at  # the same at every restart
    assert renewal_time(held(days=90, serial="2b")) != at  # not the same for every certificate


@given(
    days=st.floats(min_value=0.01, max_value=3650),
    serial=st.text("0123456789abcdef", min_size=1, max_size=20),
)
def test_renewal_is_always_inside_the_lifetime(days: float, serial: str) -> None:
    cert = held(days=days, serial=serial)
    at = renewal_time(cert)
    life = cert.lifetime
    assert cert.not_before + life * (2 / 3 - 0.05) - dt.timedelta(seconds=1) <= at
    assert at <= cert.not_before + life * (2 / 3) + dt.timedelta(seconds=1)
    assert at < cert.not_after


def test_the_cas_renewal_window_only_brings_it_earlier() -> None:
    cert = held(days=90)
    early = with_ari(NameRecord(), cert.serial, (T0 + 10 * DAY, T0 + 12 * DAY), T0)
    assert T0 + 10 * DAY <= renewal_time(cert, early) <= T0 + 12 * DAY
    late = with_ari(NameRecord(), cert.serial, (T0 + 80 * DAY, T0 + 82 * DAY), T0)
    assert renewal_time(cert, late) == renewal_time(cert)
    other = with_ari(NameRecord(), "ffff", (T0 + 10 * DAY, T0 + 12 * DAY), T0)
    assert renewal_time(cert, other) == renewal_time(cert)  # about another certificate


def test_ari_is_asked_again_after_retry_after_never_for_an_expired_one() -> None:
    cert = held(days=90)
    assert ari_due(cert, None, T0)
    record = with_ari(NameRecord(), cert.serial, None, T0, retry_after=3600)
    assert not ari_due(cert, record, T0 + dt.timedelta(minutes=59))
    assert ari_due(cert, record, T0 + dt.timedelta(minutes=61))
    assert not ari_due(cert, None, T0 + 91 * DAY)


def test_backoff_doubles_from_five_minutes_to_six_hours() -> None:
    assert [backoff_delay(n) for n in range(1, 5)] == [300, 600, 1200, 2400]
    assert backoff_delay(20) == 6 * 3600
    assert backoff_delay(1, retry_after=7200) == 7200  # the CA's Retry-After wins


@given(
    failures=st.integers(min_value=0, max_value=200),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e7),
)
def test_backoff_properties(failures: int, retry_after: float | None) -> None:
    policy = RenewalPolicy()
    delay = backoff_delay(failures, policy, retry_after=retry_after)
    assert delay >= (retry_after or 0)
    assert delay <= max(policy.max_backoff, retry_after or 0)
    assert backoff_delay(failures + 1, policy) >= backoff_delay(failures, policy)


def test_plan_a_new_name_now_a_valid_one_later_an_expired_one_now() -> None:
    now = T0 + DAY
    cert = held("a.example.com")
    result = plan_certificates(now, ["a.example.com", "b.example.com"], {cert.name: cert}, {})
    assert [(d.name, d.kind) for d in result.due] == [("b.example.com", "issue")]
    assert result.next_at == renewal_time(cert)
    late = plan_certificates(T0 + 100 * DAY, ["a.example.com"], {cert.name: cert}, {})
    assert [(d.kind, d.why) for d in late.due] == [("renew", "expired")]


def test_a_certificate_that_does_not_cover_its_name_is_replaced() -> None:
    cert = held("a.example.com")
    result = plan_certificates(T0 + DAY, ["b.example.com"], {"b.example.com": cert}, {})
    assert [(d.kind, d.why) for d in result.due] == [("renew", "it does not cover the name")]


def test_a_certificate_of_another_acme_directory_is_replaced_at_once() -> None:
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    production = "https://acme-v02.api.letsencrypt.org/directory"
    record = after_success(NameRecord(), T0, staging)
    cert = held("a.example.com")
    args = (T0 + DAY, ["a.example.com"], {cert.name: cert}, {cert.name: record})
    assert plan_certificates(*args, directory=staging).due == ()
    due = plan_certificates(*args, directory=production).due
    assert [(d.kind, d.why) for d in due] == [("renew", "another ACME directory issued it")]


def test_a_failed_name_waits_its_backoff() -> None:
    record = after_failure(NameRecord(), T0, "urn:ietf:params:acme:error:connection :: refused")
    assert record.failures == 1 and record.retry_at == T0 + dt.timedelta(seconds=300)
    result = plan_certificates(T0 + dt.timedelta(seconds=299), ["a.test"], {}, {"a.test": record})
    assert result.due == () and result.next_at == record.retry_at
    assert plan_certificates(T0 + dt.timedelta(seconds=300), ["a.test"], {}, {"a.test": record}).due
    again = after_failure(record, T0 + dt.timedelta(seconds=300), "again", retry_after=3600)
    assert again.failures == 2 and again.retry_at == T0 + dt.timedelta(seconds=300 + 3600)
    assert after_success(again, T0) == NameRecord(last_attempt=T0)


@given(
    offset=st.floats(min_value=-1e7, max_value=1e7),
    failures=st.integers(min_value=1, max_value=30),
    with_cert=st.booleans(),
)
def test_never_due_before_the_backoff_ends(offset: float, failures: int, with_cert: bool) -> None:
    record = NameRecord(failures=failures, retry_at=T0 + dt.timedelta(days=200))
    now = T0 + dt.timedelta(days=200) + dt.timedelta(seconds=offset)
    held_certs = {"a.test": held("a.test")} if with_cert else {}
    result = plan_certificates(now, ["a.test"], held_certs, {"a.test": record})
    if now < record.retry_at:  # type: ignore[operator]
        assert result.due == ()
        assert result.next_at is not None and result.next_at >= record.retry_at  # type: ignore[operator]


# -- which challenge --------------------------------------------------------------------------
BOTH = ("http-01", "tls-alpn-01", "dns-01")


def test_the_operator_picks_the_challenge() -> None:
    pick = choose_challenge("tls-alpn-01", BOTH, listen="0.0.0.0:80", tls_listen="0.0.0.0:443")
    assert pick == "tls-alpn-01"
    assert (
        choose_challenge("tls-alpn-01", ("http-01",), listen="0.0.0.0:80", tls_listen="0:443")
        is None
    )


def test_auto_prefers_http01_and_turns_to_tls_alpn01_when_port_80_cannot_be_reached() -> None:
    assert choose_challenge("auto", BOTH, listen="0.0.0.0:80", tls_listen="0.0.0.0:443") == (
        "http-01"
    )
    assert (
        choose_challenge("auto", BOTH, listen="127.0.0.1:8080", tls_listen="0.0.0.0:443")
        == "tls-alpn-01"
    )
    failed = NameRecord(failures=1, failed_challenge="http-01")
    assert (
        choose_challenge("auto", BOTH, listen="0.0.0.0:80", tls_listen="0.0.0.0:443", record=failed)
        == "tls-alpn-01"
    )
    assert choose_challenge("auto", ("dns-01",), listen="0.0.0.0:80", tls_listen="[::]:443") is None


# -- what the pool lists, what the plan says --------------------------------------------------
def test_the_pool_lists_obtained_certificates_after_the_operators_by_name() -> None:
    desired = parse_spec(SAMPLE)
    certs = (held("shop.example.com"), held("admin.example.com"), held("gone.example.com"))
    tls = render_pool(desired, certificates=certs).tls
    assert tls is not None
    assert [c.cert for c in tls.certificates] == [
        "../.lbrec/certs/admin.example.com/1a.pem",
        "../.lbrec/certs/shop.example.com/1a.pem",
    ]  # gone.example.com: no route serves it any more
    assert tls.acme_dir == "../.lbrec/acme"
    no_acme = parse_spec(SAMPLE.replace("  acme:\n    email: ops@example.com\n", ""))
    tls_without = render_pool(no_acme, certificates=certs).tls
    assert tls_without is not None and tls_without.certificates == ()


def test_a_new_certificate_is_a_pool_change_in_the_plan() -> None:
    from lbrec.reconciler.core.labels import BuildInfo

    desired = parse_spec(SAMPLE)
    build = BuildInfo(base_image=None, context_digest="x")
    before = render_pool(desired, instances={})
    after = render_pool(desired, instances={}, certificates=(held(),))
    the_plan = plan(desired, Observed(pool=before), build=build, target_pool=after)
    assert any(s.startswith("tls.certificates") for s in the_plan.settings_changed)
    assert after.generation != before.generation


def test_status_rows_show_names_issuer_expiry_next_renewal_and_the_cas_error() -> None:
    desired = parse_spec(SAMPLE)
    wanted = wanted_names(desired)
    cert = held("shop.example.com")
    failing = after_failure(NameRecord(), T0, "urn:ietf:params:acme:error:rateLimited :: slow down")
    rows = certificate_rows(
        T0 + DAY, wanted, {cert.name: cert}, {"admin.example.com": failing}, RenewalPolicy()
    )
    by_name = {r["name"]: r for r in rows}
    assert by_name["shop.example.com"]["state"] == "valid"
    assert by_name["shop.example.com"]["issuer"] == "Test CA"
    assert by_name["shop.example.com"]["next_renewal"] == renewal_time(cert).isoformat()
    assert by_name["admin.example.com"]["state"] == "failing"
    assert "rateLimited" in str(by_name["admin.example.com"]["last_error"])
    assert not any("key" in field for row in rows for field in row)


@pytest.mark.parametrize("mode", ["auto", "http-01", "tls-alpn-01"])
def test_the_issues_sample_stays_valid_with_each_challenge(mode: str) -> None:
    text = SAMPLE.replace(
        "email: ops@example.com", f"email: ops@example.com\n    challenge: {mode}"
    )
    tls = parse_spec(text).tls
    assert tls is not None and tls.acme is not None and tls.acme.challenge == mode
