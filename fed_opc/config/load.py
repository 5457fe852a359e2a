"""Reading scenario YAML: a key given twice and the YAML 1.1 number forms that read unlike they look are refused;
``load_scenario`` reads a file and validates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fed_opc.config.scenario import Scenario
from fed_opc.config.validate import parse_scenario
from fed_opc.schema import ConfigError, UnsafeNumber, cut, show_key

# ----------------------------------------------------------------------------------------------------------------------
# reading the YAML: a key given twice and the YAML 1.1 number forms that read unlike they look are refused


class _DuplicateKey(Exception):
    def __init__(self, mapping: yaml.MappingNode, key: Any, lines: tuple[int, int]) -> None:
        super().__init__(key)
        self.mapping, self.key, self.lines = mapping, key, lines


class ScenarioLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping, at any depth (PyYAML keeps the last one
    silently), and reads an int or float that YAML 1.1 resolves unlike it looks (``010``: octal 8, ``1:02``: base 60,
    62, ``1_000``: separators dropped) as an ``UnsafeNumber``, which every schema field refuses. Keys brought in by a
    merge (``<<: *base``) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """Refuse a key written twice in ``node`` (merged keys aside), then build the mapping as ``SafeLoader`` does."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(node, key, (seen[key], line))
                seen[key] = line
            except TypeError:  # an unhashable key: the base class words that error
                continue
        return super().construct_mapping(node, deep=deep)


def _surprise(text: str, value: Any, octal: bool) -> UnsafeNumber | None:
    kinds = [k for k, hit in (("octal", octal), ("base-60", ":" in text), ("'_'-separated", "_" in text)) if hit]
    if not kinds:
        return None
    article = "an" if kinds[0] == "octal" else "a"
    return UnsafeNumber(
        text, f"{cut(text)} is {article} {', '.join(kinds)} number to YAML 1.1 (read as {value}); write plain decimal"
    )


def _construct_int(loader: ScenarioLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    digits = text.lstrip("+-")
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # more digits than Python turns into an int
        return UnsafeNumber(text, f"{cut(text)} is not a usable number ({len(digits)} digits)")
    # 010 and 0_5 are octal to YAML 1.1 (0x.. and 0b.. say their base, and 0 alone is zero)
    octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbB"
    return _surprise(text, value, octal) or value


def _construct_float(loader: ScenarioLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    return _surprise(text, value, False) or value  # .inf and .nan pass here: every float field refuses them


ScenarioLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
ScenarioLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _node_path(root: yaml.Node, target: yaml.Node) -> str | None:
    """The dotted field path of ``target`` in the node graph under ``root`` (anchors may share nodes: each once)."""
    stack, visited = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = show_key(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                stack.append((v, f"{path}.{name}" if path else name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))
    return None


def read_yaml(text: str, name: str) -> Any:
    """Parse scenario YAML text with ``ScenarioLoader``; every problem is a one-line ``ConfigError`` for file ``name``."""
    loader = ScenarioLoader(text)
    root = None
    try:
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except _DuplicateKey as d:
        parent = _node_path(root, d.mapping) if root is not None else None
        key = show_key(d.key)
        field_name = f"{parent}.{key}" if parent else key
        a, b = d.lines
        lines = f"lines {a} and {b}" if a != b else f"twice on line {a}"
        raise ConfigError(field_name, f"duplicate key ({lines})", name) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"not valid YAML: {where}{problem}", name) from None
    except RecursionError:
        raise ConfigError("", "not valid YAML: nested too deeply", name) from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp with month 13
        raise ConfigError("", f"not valid YAML: {e.__class__.__name__}: {str(e)[:200]}", name) from None
    finally:
        loader.dispose()


def load_scenario(path: str | Path, *, check_environment: bool = True) -> Scenario:
    """Read and validate a scenario YAML file (``ScenarioLoader``: ``yaml.safe_load`` without duplicate keys and
    without YAML 1.1's surprising numbers).
    """
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise ConfigError("", "no such file", name)
    if p.is_dir():
        raise ConfigError("", "is a directory, expected a scenario YAML file", name)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            "", f"cannot read: {e.__class__.__name__}: {getattr(e, 'strerror', None) or e}", name
        ) from None
    raw = read_yaml(text, name)
    if raw is None:
        raise ConfigError("", "empty file, expected a scenario mapping", name)
    return parse_scenario(raw, path=name, check_environment=check_environment)
