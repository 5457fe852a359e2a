"""Property: a randomly mutated shipped scenario either loads, or is refused with one line that names the file and a
field. Nothing else (a TypeError, a KeyError, a traceback of PyYAML or of a dataclass) may escape the loader.

The mutations are seeded, so a failure names a mutation that can be replayed: ``mutate(raw, Random(i))``.
"""

import copy
import random
from pathlib import Path

import pytest
import yaml

from fed_opc.config import ConfigError, Scenario, load_scenario

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))

# values a user could type by mistake in any field, of every YAML type
ODD_VALUES = [
    -1,
    0,
    1,
    2**70,
    0.5,
    -0.0,
    float("inf"),
    float("nan"),
    "x",
    "",
    "0_5",
    "1:02",
    "010",
    "Infinity",
    None,
    True,
    [],
    [1, 2],
    {},
    {"kind": "nope"},
    "y" * 5000,
]


def leaves(node, path=()):
    """Every (path, value) in a parsed YAML tree, mappings and lists included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, path + (i,))


def parent_of(raw, path):
    node = raw
    for p in path[:-1]:
        node = node[p]
    return node


def mutate(raw: dict, rng: random.Random) -> dict:
    """One to three random edits: a value replaced, a key dropped or added, a list item copied."""
    raw = copy.deepcopy(raw)
    for _ in range(rng.randint(1, 3)):
        spots = [p for p, _ in leaves(raw) if p]
        path = rng.choice(spots)
        parent, key = parent_of(raw, path), path[-1]
        op = rng.choice(["value", "value", "value", "drop", "add", "copy"])
        if op == "value":
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif op == "drop":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[rng.choice(["extra", "lr", "rounds", "kind", "id", "client"])] = rng.choice(ODD_VALUES[:12])
        elif op == "copy" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return raw


@pytest.mark.parametrize("scenario", SHIPPED, ids=lambda p: p.stem)
def test_mutated_scenarios_load_or_name_a_field(tmp_path, scenario):
    base = yaml.safe_load(scenario.read_text())
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(60):
        raw = mutate(base, random.Random(f"{scenario.stem}/{i}"))
        p = tmp_path / f"m{i}.yaml"
        p.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        try:
            sc = load_scenario(p, check_environment=False)
        except ConfigError as e:
            text = str(e)
            assert "\n" not in text and len(text) <= 1000, (i, text[:200])
            assert text.startswith(f"{p}: "), (i, text[:200])
            assert e.field, (i, text[:200])  # a field is named, not only the file
            outcomes["refused"] += 1
        else:
            assert isinstance(sc, Scenario)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0  # the mutations do reach the validation


def test_a_copied_top_level_block_is_a_duplicate_key(tmp_path):
    text = (REPO / "scenarios" / "mnist_quick.yaml").read_text()
    p = tmp_path / "dup.yaml"
    p.write_text(text + "\nseed: 3\n")
    first = text.splitlines().index("seed: 0") + 1
    last = len((text + "\n").splitlines()) + 1
    with pytest.raises(ConfigError) as e:
        load_scenario(p, check_environment=False)
    assert str(e.value) == f"{p}: seed: duplicate key (lines {first} and {last})"
