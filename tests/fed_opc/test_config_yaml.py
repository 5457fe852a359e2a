"""Reading scenario YAML: duplicate keys, YAML 1.1 numbers that read unlike they look, non-finite numbers, and error
lines that stay short whatever the value.
"""

from pathlib import Path

import pytest

from fed_opc.config import ConfigError, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[2]

# a small valid scenario, one key per line so that the tests below can name line numbers
SCENARIO = """\
name: t
seed: 0
data:
  dataset: synthetic
  num_clients: 4
  synthetic: {num_train: 40, num_test: 10, num_classes: 4, image_size: 8}
federation:
  rounds: 3
  clients_per_round: 2
  lr: 0.05
  backend: inprocess
requests:
  - {client: 1, scope: client, round: 2}
unlearning:
  methods: [fed_opc]
  fed_opc: {max_rounds: 1}
"""


def load_text(tmp_path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_scenario(p)


def error_of(tmp_path, text: str) -> str:
    """The error line, without the file name (checked here: it starts every line)."""
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, text)
    line = str(e.value)
    prefix = f"{tmp_path / 's.yaml'}: "
    assert "\n" not in line and line.startswith(prefix), line
    return line[len(prefix) :]


def test_the_base_loads(tmp_path):
    sc = load_text(tmp_path, SCENARIO)
    assert sc.federation.lr == 0.05 and sc.requests[0].client == 1


# ---------------------------------------------------------------------------------------------------------------------
# duplicate keys, at any depth, with the lines of both


@pytest.mark.parametrize(
    "text,expected",
    [
        # two requests blocks: PyYAML alone keeps the second and drops the first request silently
        (
            SCENARIO + "requests:\n  - {client: 2, scope: client, round: 3}\n",
            "requests: duplicate key (lines 12 and 17)",
        ),
        # two federation blocks: the error used to blame a value the user never wrote
        (SCENARIO + "federation:\n  rounds: 4\n", "federation: duplicate key (lines 7 and 17)"),
        (SCENARIO.replace("  lr: 0.05\n", "  lr: 0.05\n  lr: 0.5\n"), "federation.lr: duplicate key (lines 10 and 11)"),
        (
            SCENARIO.replace("round: 2}", "round: 2, round: 3}"),
            "requests[0].round: duplicate key (twice on line 13)",
        ),
        (
            SCENARIO.replace("num_train: 40,", "num_train: 40, num_train: 50,"),
            "data.synthetic.num_train: duplicate key (twice on line 6)",
        ),
        (
            SCENARIO.replace(
                "  fed_opc: {max_rounds: 1}\n", "  fed_opc: {max_rounds: 1}\n  fed_opc: {max_rounds: 2}\n"
            ),
            "unlearning.fed_opc: duplicate key (lines 16 and 17)",
        ),
        # the same key spelled two ways is still one key
        (SCENARIO.replace("seed: 0\n", "seed: 0\n'seed': 1\n"), "seed: duplicate key (lines 2 and 3)"),
    ],
)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, text, expected):
    assert error_of(tmp_path, text) == expected


def test_a_merge_key_may_be_overridden(tmp_path):
    text = SCENARIO.replace(
        "federation:\n  rounds: 3\n", "defaults: &fed {rounds: 2, lr: 0.1}\nfederation:\n  <<: *fed\n  rounds: 3\n"
    )
    # the merge is allowed and its keys overridable; the anchor's own top-level key is then unknown, as any key is
    assert error_of(tmp_path, text).startswith("defaults: unknown key")
    text = SCENARIO.replace(
        "federation:\n  rounds: 3\n", "federation:\n  <<: {rounds: 2, momentum: 0.5}\n  rounds: 3\n"
    )
    fed = load_text(tmp_path, text).federation
    assert (fed.rounds, fed.momentum, fed.lr) == (3, 0.5, 0.05)


# ---------------------------------------------------------------------------------------------------------------------
# YAML 1.1 numbers and non-finite numbers


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("client: 1,", "client: 010,", "requests[0].client: 010 is an octal number to YAML 1.1 (read as 8)"),
        ("round: 2}", "round: 1:02}", "requests[0].round: 1:02 is a base-60 number to YAML 1.1 (read as 62)"),
        ("lr: 0.05", "lr: 0_5", "federation.lr: 0_5 is an octal, '_'-separated number to YAML 1.1 (read as 5)"),
        ("rounds: 3", "rounds: 1_0", "federation.rounds: 1_0 is a '_'-separated number to YAML 1.1 (read as 10)"),
        ("lr: 0.05", "lr: 0.0_5", "federation.lr: 0.0_5 is a '_'-separated number to YAML 1.1 (read as 0.05)"),
        ("lr: 0.05", "lr: 1:30.0", "federation.lr: 1:30.0 is a base-60 number to YAML 1.1 (read as 90.0)"),
        ("name: t", "name: 0123", "name: 0123 is an octal number to YAML 1.1 (read as 83)"),
    ],
)
def test_yaml11_number_surprises_are_refused(tmp_path, old, new, expected):
    assert error_of(tmp_path, SCENARIO.replace(old, new)) == expected + "; write plain decimal"


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("lr: 0.05", "lr: .inf", "federation.lr: expected float > 0, got inf (not a finite number)"),
        ("lr: 0.05", "lr: 1e400", "federation.lr: expected float > 0, got inf (not a finite number)"),
        ("lr: 0.05", "lr: 1.0e+400", "federation.lr: expected float > 0, got inf (not a finite number)"),
        ("lr: 0.05", "lr: -.inf", "federation.lr: expected float > 0, got -inf (not a finite number)"),
        ("lr: 0.05", 'lr: "Infinity"', "federation.lr: expected float > 0, got 'Infinity'"),
        ("lr: 0.05", 'lr: "0_5"', "federation.lr: expected float > 0, got '0_5'"),
        ("lr: 0.05", "lr: .nan", "federation.lr: expected float > 0, got nan (not a finite number)"),
        (
            "lr: 0.05",
            "lr: 1" + "0" * 400,
            "federation.lr: expected float > 0, got a 401-digit int (not a finite number)",
        ),
        ("lr: 0.05", "lr: 0.05\n  weight_decay: .inf", "federation.weight_decay: expected float >= 0, got inf"),
        ("lr: 0.05", "lr: 0.05\n  local_epochs: .inf", "federation.local_epochs: expected float > 0, got inf"),
        ("{max_rounds: 1}", "{max_rounds: 1, lambda: .inf}", "unlearning.fed_opc.lambda: expected float > 0, got inf"),
        ("rounds: 3", "rounds: .inf", "federation.rounds: expected int >= 1, got inf"),
        ("rounds: 3", "rounds: " + "9" * 30, "federation.rounds: expected int >= 1, got " + "9" * 30),
        ("rounds: 3", "rounds: " + "9" * 5000, "federation.rounds: " + "9" * 77 + "... is not a usable number"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, old, new, expected):
    assert error_of(tmp_path, SCENARIO.replace(old, new)).startswith(expected)


@pytest.mark.parametrize(
    "old,new,field,value",
    [
        ("lr: 0.05", "lr: 1e-3", "lr", 0.001),
        ("lr: 0.05", 'lr: "1e-3"', "lr", 0.001),
        ("lr: 0.05", "lr: 5.0e-2", "lr", 0.05),
        ("lr: 0.05", "lr: 1", "lr", 1.0),
        ("rounds: 3", "rounds: +3", "rounds", 3),
        ("rounds: 3", "rounds: 0x3", "rounds", 3),  # a base YAML names is not a surprise
    ],
)
def test_ordinary_numbers_load(tmp_path, old, new, field, value):
    assert getattr(load_text(tmp_path, SCENARIO.replace(old, new)).federation, field) == value


def test_numeric_text_for_floats_is_plain_decimal():
    base = {"name": "t", "data": {"dataset": "synthetic"}, "federation": {"backend": "inprocess"}}
    for text in ("0_5", "Infinity", "inf", "nan", "1e400", "0x10", " ", "1e-3e4"):
        with pytest.raises(ConfigError, match="federation.lr: expected float > 0, got"):
            parse_scenario(base | {"federation": {"lr": text}})
    assert parse_scenario(base | {"federation": {"lr": "2.5e-1"}}).federation.lr == 0.25


# ---------------------------------------------------------------------------------------------------------------------
# huge or multi-line values are cut in the one error line


def test_a_huge_value_is_cut(tmp_path):
    line = error_of(tmp_path, SCENARIO.replace("name: t", "name: '" + "a b" * 400_000 + "'"))
    assert line == "name: expected at most 64 characters, got '" + "a b" * 26 + "a ...' (1200000 characters)"


def test_a_huge_key_is_cut(tmp_path):
    line = error_of(tmp_path, SCENARIO + "k" * 1000 + ": 1\n")  # YAML allows plain keys of up to 1024 characters
    assert line.startswith("'" + "k" * 80 + "...' (1000 characters): unknown key (valid: ")
    assert len(line) < 300


def test_a_multi_line_value_stays_on_one_line(tmp_path):
    line = error_of(tmp_path, SCENARIO.replace("methods: [fed_opc]", 'methods: ["a\\nb"]'))
    assert line.startswith("unlearning.methods[0]: unknown method 'a\\nb' (valid: ")


def test_a_bad_timestamp_or_deep_nesting_is_one_line(tmp_path):
    assert error_of(tmp_path, SCENARIO.replace("name: t", "name: 2001-13-45")) == (
        "not valid YAML: ValueError: month must be in 1..12"
    )
    assert error_of(tmp_path, SCENARIO.replace("seed: 0", "seed: " + "[" * 5000 + "]" * 5000)) == (
        "not valid YAML: nested too deeply"
    )
