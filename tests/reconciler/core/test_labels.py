"""The label contract and the config hash: what makes a container stale, and why."""

from __future__ import annotations

from typing import Any

import pytest

from lbrec.reconciler.core.labels import (
    BACKEND,
    CONFIG_HASH,
    MANAGED,
    PROJECT,
    REVISION,
    ROLE,
    TRACKED,
    BuildInfo,
    backend_labels,
    canonical_hash,
    changed_fields,
    container_fields,
)
from lbrec.reconciler.core.spec import BackendSpec, DesiredState

BUILD = BuildInfo(base_image=None, context_digest="d" * 64)


def _desired(backend: BackendSpec, **settings: object) -> DesiredState:
    return DesiredState.model_validate({**settings, "backends": [backend.model_dump()]})


def _hash(backend: BackendSpec, build: BuildInfo = BUILD, **settings: object) -> str:
    return backend_labels(backend, _desired(backend, **settings), build)[CONFIG_HASH]


BASE = BackendSpec(name="web", port=9001, weight=2, env={"A": "1", "B": "2"})


def test_canonical_hash_ignores_key_order_but_not_values() -> None:
    assert canonical_hash({"a": 1, "b": {"x": 1, "y": 2}}) == canonical_hash(
        {"b": {"y": 2, "x": 1}, "a": 1}
    )
    assert canonical_hash({"a": 1}) != canonical_hash({"a": 2})
    assert canonical_hash({"a": "1"}) != canonical_hash({"a": 1})
    assert len(canonical_hash({})) == 64


def test_hash_is_stable_across_env_key_order() -> None:
    reordered = BASE.model_copy(update={"env": {"B": "2", "A": "1"}})
    assert list(reordered.env) != list(BASE.env)
    assert _hash(reordered) == _hash(BASE)
    assert backend_labels(reordered, _desired(reordered), BUILD) == backend_labels(
        BASE, _desired(BASE), BUILD
    )


def test_hash_is_deterministic_across_calls() -> None:
    assert _hash(BASE) == _hash(BASE.model_copy())
    assert len(_hash(BASE)) == 16


@pytest.mark.parametrize(
    ("field", "backend", "build", "settings"),
    [
        ("port", BASE.model_copy(update={"port": 9005}), BUILD, {}),
        ("env", BASE.model_copy(update={"env": {"A": "1", "B": "3"}}), BUILD, {}),
        ("env", BASE.model_copy(update={"env": {"A": "1"}}), BUILD, {}),
        ("image", BASE, BuildInfo(base_image="python:3.13-slim", context_digest="d" * 64), {}),
        ("build", BASE, BuildInfo(base_image=None, context_digest="e" * 64), {}),
        ("health_path", BASE, BUILD, {"health": {"path": "/ready"}}),
        ("publish_host", BASE, BUILD, {"publish_host": "0.0.0.0"}),
    ],
)
def test_hash_changes_on_container_settings(
    field: str, backend: BackendSpec, build: BuildInfo, settings: dict[str, object]
) -> None:
    assert field in TRACKED
    assert _hash(backend, build, **settings) != _hash(BASE)
    old = backend_labels(BASE, _desired(BASE), BUILD)
    new_fields = container_fields(backend, _desired(backend, **settings), build)
    reasons = changed_fields(old, new_fields)
    assert [r.split(" ")[0] for r in reasons] == [field]


@pytest.mark.parametrize(
    ("backend", "settings"),
    [
        (BASE.model_copy(update={"weight": 0}), {}),
        (BASE.model_copy(update={"weight": 1000}), {}),
        (BASE, {"health": {"interval": 9.0, "rise": 5}}),
        (BASE, {"listen": "127.0.0.1:7000", "admin": "127.0.0.1:7001"}),
        (BASE, {"proxy": {"passive": {"max_fails": 0}}}),
    ],
)
def test_hash_unchanged_on_weight_and_proxy_only_settings(
    backend: BackendSpec, settings: dict[str, Any]
) -> None:
    assert _hash(backend, **settings) == _hash(BASE)


def test_labels_mark_project_role_and_backend() -> None:
    labels = backend_labels(BASE, _desired(BASE, project="shop"), BUILD)
    assert labels[MANAGED] == "true"
    assert labels[PROJECT] == "shop"
    assert labels[ROLE] == "backend"
    assert labels[BACKEND] == "web"
    assert REVISION not in labels
    assert {k for k in labels if k.startswith("lbrec.field.")} == {
        f"lbrec.field.{name}" for name in TRACKED
    }
    assert all(isinstance(v, str) for v in labels.values())


def test_revision_label_is_not_part_of_the_hash() -> None:
    desired = _desired(BASE)
    with_rev = backend_labels(BASE, desired, BUILD, revision="abc123")
    assert with_rev[REVISION] == "abc123"
    assert with_rev[CONFIG_HASH] == backend_labels(BASE, desired, BUILD)[CONFIG_HASH]


def test_changed_fields_reads_like_a_diff() -> None:
    old = backend_labels(BASE, _desired(BASE), BUILD)
    moved = BASE.model_copy(update={"port": 9005})
    new_build = BuildInfo(base_image="python:3.13-slim", context_digest="e" * 64)
    fields = container_fields(moved, _desired(moved, health={"path": "/ready"}), new_build)
    assert changed_fields(old, fields) == [
        "port 9001 -> 9005",
        "image (Dockerfile default) -> python:3.13-slim",
        "build dddddddddddd -> eeeeeeeeeeee",
        "health_path /health -> /ready",
    ]


def test_changed_fields_empty_when_nothing_changed() -> None:
    labels = backend_labels(BASE, _desired(BASE), BUILD)
    assert changed_fields(labels, container_fields(BASE, _desired(BASE), BUILD)) == []


def test_changed_fields_on_a_container_without_field_labels() -> None:
    fields = container_fields(BASE, _desired(BASE), BUILD)
    reasons = changed_fields({CONFIG_HASH: "old"}, fields)
    assert reasons[0] == "port (unset) -> 9001"
    assert len(reasons) == len(TRACKED)
