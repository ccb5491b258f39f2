"""Round-trip edits of desired-state.yaml: comments, blank lines and key order survive."""

from __future__ import annotations

import pytest

from lbrec.reconciler.core.edit import add_backend, init_document, remove_backend
from lbrec.reconciler.core.errors import SpecError, UsageError
from lbrec.reconciler.core.spec import BackendSpec, parse_spec

SRC = "desired-state.yaml"

FLOW = """\
# Production pool.
project: demo  # compose project

# traffic
listen: 127.0.0.1:8080
backends:
  # the canary first
  - {name: a, port: 9001, weight: 2}  # canary

  - {name: b, port: 9002, weight: 3}

# health settings below
health: {path: /health, rise: 2}  # probe
"""

BLOCK = """\
backends:
  - name: a   # the first
    port: 9001
    weight: 1
  - name: b
    port: 9002
    env:
      MODE: fast

# settings section
health:
  path: /health
"""

BLOCK_FLOW_ENV = """\
backends:
  - name: a
    port: 9001
    env: {X: '1'}

# settings section
health:
  path: /health
"""

LAST_KEY = """\
project: demo
backends:
  - {name: a, port: 9001}
# end of file
"""

EMPTY = """\
# header
backends: []

# after the list
health: {path: /health}
"""

LAYOUTS = {
    "flow": FLOW,
    "block": BLOCK,
    "block-flow-env": BLOCK_FLOW_ENV,
    "last-key": LAST_KEY,
    "empty": EMPTY,
}

NEW = BackendSpec(name="zz", port=9100, weight=4)


def _comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def _top_keys(text: str) -> list[str]:
    return [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_add_then_remove_gives_back_the_same_bytes(layout: str) -> None:
    src = LAYOUTS[layout]
    added, status = add_backend(src, NEW, source=SRC)
    assert status == "added"
    assert parse_spec(added).backend("zz") == NEW
    back, name = remove_backend(added, "zz", source=SRC)
    assert name == "zz"
    assert back == src


@pytest.mark.parametrize("layout", LAYOUTS)
def test_add_keeps_comments_blank_lines_and_key_order(layout: str) -> None:
    src = LAYOUTS[layout]
    added, _ = add_backend(src, NEW, source=SRC)
    assert _comments(added) == _comments(src)
    assert _top_keys(added) == _top_keys(src)
    assert added.count("\n\n") == src.count("\n\n")
    # The new entry goes at the end of the list, before what followed the list in the file.
    lines = added.splitlines()
    new_line = next(i for i, line in enumerate(lines) if "zz" in line)
    for comment in ("# health settings below", "# settings section", "# after the list"):
        if comment in src:
            assert lines.index(comment) > new_line


def test_add_to_flow_list_appends_a_flow_entry_after_the_last() -> None:
    added, _ = add_backend(FLOW, NEW, source=SRC)
    assert added == FLOW.replace(
        "  - {name: b, port: 9002, weight: 3}\n",
        "  - {name: b, port: 9002, weight: 3}\n  - {name: zz, port: 9100, weight: 4}\n",
    )


def test_add_to_block_list_appends_a_block_entry() -> None:
    added, _ = add_backend(BLOCK, NEW, source=SRC)
    assert added == BLOCK.replace(
        "      MODE: fast\n",
        "      MODE: fast\n  - name: zz\n    port: 9100\n    weight: 4\n",
    )


def test_add_with_env_writes_it() -> None:
    spec = BackendSpec(name="e", port=9200, env={"A": "1"})
    added, _ = add_backend("backends: []\n", spec, source=SRC)
    assert added == "backends:\n  - {name: e, port: 9200, weight: 1, env: {A: '1'}}\n"
    assert parse_spec(added).backends == (spec,)


def test_add_with_an_image_and_replicas_writes_only_what_was_given() -> None:
    from lbrec.reconciler.core.spec import parse_backend_arg

    spec = parse_backend_arg("web:8000:5", image="registry.example/web:1.4.2", replicas=3)
    added, _ = add_backend("backends: []\n", spec, source=SRC)
    assert added == (
        "backends:\n  - {name: web, port: 8000, weight: 5, image: registry.example/web:1.4.2,"
        " replicas: 3}\n"
    )
    assert parse_spec(added).backends == (spec,)
    again, status = add_backend(added, parse_backend_arg("web:8000:5", replicas=3), source=SRC)
    assert (again, status) == (added, "unchanged")  # the image is kept when not given
    bumped, status = add_backend(
        added, parse_backend_arg("web:8000:5", image="registry.example/web:1.5.0"), source=SRC
    )
    assert status == "updated" and "web:1.5.0, replicas: 3}" in bumped


def test_add_updates_an_existing_name_in_place() -> None:
    updated, status = add_backend(FLOW, BackendSpec(name="a", port=9005, weight=7), source=SRC)
    assert status == "updated"
    assert updated == FLOW.replace(
        "{name: a, port: 9001, weight: 2}", "{name: a, port: 9005, weight: 7}"
    )
    state = parse_spec(updated)
    assert [(b.name, b.port, b.weight) for b in state.backends] == [
        ("a", 9005, 7),
        ("b", 9002, 3),
    ]


def test_add_updates_a_block_entry_and_keeps_its_env() -> None:
    updated, status = add_backend(BLOCK, BackendSpec(name="b", port=9002, weight=9), source=SRC)
    assert status == "updated"
    assert updated == BLOCK.replace("      MODE: fast\n", "      MODE: fast\n    weight: 9\n")
    assert parse_spec(updated).backend("b") == BackendSpec(
        name="b", port=9002, weight=9, env={"MODE": "fast"}
    )


def test_add_same_values_is_unchanged_and_returns_the_input() -> None:
    text, status = add_backend(FLOW, BackendSpec(name="b", port=9002, weight=3), source=SRC)
    assert status == "unchanged"
    assert text is FLOW
    implicit = "backends:\n  - {name: a, port: 9001}\n"  # weight defaults to 1
    assert add_backend(implicit, BackendSpec(name="a", port=9001), source=SRC) == (
        implicit,
        "unchanged",
    )


def test_add_to_a_flow_sequence_turns_it_into_a_block_list() -> None:
    text = "backends: [{name: a, port: 9001}]\nhealth: {path: /h}\n"
    added, _ = add_backend(text, NEW, source=SRC)
    assert added == (
        "backends:\n  - {name: a, port: 9001}\n  - {name: zz, port: 9100, weight: 4}\n"
        "health: {path: /h}\n"
    )


def test_add_when_backends_is_missing_or_null() -> None:
    for text in ("project: x  # p\n", "project: x  # p\nbackends:\n"):
        added, _ = add_backend(text, NEW, source=SRC)
        assert added.startswith("project: x  # p\n")
        assert parse_spec(added).backends == (NEW,)


@pytest.mark.parametrize("key", ["b", "9002"])
def test_remove_by_name_or_port(key: str) -> None:
    removed, name = remove_backend(FLOW, key, source=SRC)
    assert name == "b"
    assert [b.name for b in parse_spec(removed).backends] == ["a"]
    assert _comments(removed) == _comments(FLOW)
    assert _top_keys(removed) == _top_keys(FLOW)
    assert removed == FLOW.replace("  - {name: b, port: 9002, weight: 3}\n", "")


def test_remove_the_last_block_entry_keeps_the_comment_that_follows_the_list() -> None:
    removed, _ = remove_backend(BLOCK, "b", source=SRC)
    assert removed == (
        "backends:\n  - name: a   # the first\n    port: 9001\n    weight: 1\n"
        "\n# settings section\nhealth:\n  path: /health\n"
    )


def test_remove_the_first_entry_keeps_the_rest_and_its_comments() -> None:
    removed, name = remove_backend(FLOW, "a", source=SRC)
    assert name == "a"
    assert [b.name for b in parse_spec(removed).backends] == ["b"]
    assert "# canary" not in removed  # the removed entry's own end-of-line comment goes
    assert _comments(removed) == [c for c in _comments(FLOW) if c != "# canary"]
    assert _top_keys(removed) == _top_keys(FLOW)


def test_remove_the_only_entry_leaves_an_empty_list_and_the_comments_after_it() -> None:
    removed, _ = remove_backend(LAST_KEY, "a", source=SRC)
    assert removed == "project: demo\nbackends: []\n# end of file\n"
    assert parse_spec(removed).backends == ()


def test_remove_takes_the_first_match_by_port_only_for_ascii_digits() -> None:
    text = "backends:\n  - {name: a, port: 3}\n"
    with pytest.raises(UsageError):
        remove_backend(text, "\u0663", source=SRC)  # ARABIC-INDIC DIGIT THREE


def test_remove_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        remove_backend(FLOW, "nope", source=SRC)
    assert str(info.value) == f"remove: no backend named or on port 'nope' in {SRC}"
    assert info.value.hint == "backends are: a:9001, b:9002"
    assert info.value.exit_code == 2
    with pytest.raises(UsageError) as empty:
        remove_backend(EMPTY, "9001", source=SRC)
    assert empty.value.hint == "the file has no backends"


def test_init_new_file() -> None:
    text = init_document(
        None,
        [BackendSpec(name="x", port=9001), BackendSpec(name="y", port=9002, weight=0)],
        source=SRC,
    )
    assert text.startswith("# yaml-language-server: $schema=desired-state.schema.json\n# lbrec")
    assert text.endswith(
        "backends:\n  - {name: x, port: 9001, weight: 1}\n  - {name: y, port: 9002, weight: 0}\n"
    )
    assert [(b.name, b.weight) for b in parse_spec(text).backends] == [("x", 1), ("y", 0)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_replaces_backends_and_keeps_settings_and_comments(layout: str) -> None:
    src = LAYOUTS[layout]
    new = [BackendSpec(name="q", port=9301), BackendSpec(name="r", port=9302, weight=5)]
    text = init_document(src, new, source=SRC)
    state = parse_spec(text)
    assert state.backends == tuple(new)
    before = parse_spec(src)
    assert state.model_dump(exclude={"backends"}) == before.model_dump(exclude={"backends"})
    entry_comments = {"# canary", "# the first"}
    assert _comments(text) == [c for c in _comments(src) if c not in entry_comments]
    assert _top_keys(text) == _top_keys(src)
    # What followed the list still follows it.
    lines = text.splitlines()
    last_entry = max(i for i, line in enumerate(lines) if "r" in line and "9302" in line)
    for comment in ("# health settings below", "# settings section", "# end of file"):
        if comment in src:
            assert lines.index(comment) > last_entry


def test_init_flow_layout_exact_bytes() -> None:
    text = init_document(FLOW, [BackendSpec(name="q", port=9301)], source=SRC)
    assert text == (
        "# Production pool.\nproject: demo  # compose project\n\n# traffic\n"
        "listen: 127.0.0.1:8080\nbackends:\n  # the canary first\n"
        "  - {name: q, port: 9301, weight: 1}\n\n# health settings below\n"
        "health: {path: /health, rise: 2}  # probe\n"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("backends: [\n", "line 2 column 1"),
        ("a: b: c\n", "line 1 column 5"),
        ("backends:\n  - {name: a, port: 1\n", "line 3 column 1"),
    ],
)
@pytest.mark.parametrize("op", ["add", "remove", "init"])
def test_malformed_yaml_is_a_spec_error_with_line_and_column(
    text: str, where: str, op: str
) -> None:
    with pytest.raises(SpecError) as info:
        if op == "add":
            add_backend(text, NEW, source=SRC)
        elif op == "remove":
            remove_backend(text, "a", source=SRC)
        else:
            init_document(text, [NEW], source=SRC)
    assert str(info.value).startswith(f"{SRC}: {where}: malformed YAML: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1\n", f"{SRC}: the top level must be a mapping with a 'backends' list"),
        ("backends: 3\n", f"{SRC}: backends must be a list, got int"),
    ],
)
def test_wrong_shapes_are_spec_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        add_backend(text, NEW, source=SRC)
    assert str(info.value) == message
