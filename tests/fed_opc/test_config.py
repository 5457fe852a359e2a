"""Scenario schema: every scenario in scenarios/ loads; each class of violation names its field in one line."""

from pathlib import Path

import pytest
import yaml

from fed_opc.config import ConfigError, load_scenario, parse_scenario, scenario_to_dict

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))

BASE = {
    "name": "t",
    "seed": 0,
    "data": {"dataset": "synthetic", "num_clients": 10, "partition": {"kind": "dirichlet", "alpha": 0.5}},
    "federation": {"rounds": 5, "clients_per_round": 4, "backend": "inprocess"},
    "requests": [
        {"client": 7, "scope": "client", "round": 5},
        {"client": 3, "scope": "class", "classes": [0], "round": 5},
        {"client": 5, "scope": "samples", "fraction": 0.2, "round": 5},
        {"clients": "all", "scope": "class", "classes": [2, 5, 8], "round": 5},
    ],
}


def with_(path: str, value, base=None):
    """A copy of the base scenario with one dotted field set (``None``-valued DELETE removes it)."""
    raw = yaml.safe_load(yaml.safe_dump(base or BASE))
    node = raw
    keys = path.replace("]", "").replace("[", ".").split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    last = keys[-1]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


DELETE = object()


def err(raw) -> str:
    with pytest.raises(ConfigError) as e:
        parse_scenario(raw, path="x.yaml")
    text = str(e.value)
    assert "\n" not in text and text.startswith("x.yaml: ")
    return text


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_repo_scenario_loads(path):
    import torch

    needs_gpu = yaml.safe_load(path.read_text())["federation"].get("client_resources", {}).get("num_gpus", 0) > 0
    if needs_gpu and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU is visible"):
            load_scenario(path)
        sc = load_scenario(path, check_environment=False)  # everything but the machine is valid
    else:
        sc = load_scenario(path)
    assert sc.name == path.stem and sc.path == str(path)


def test_there_are_scenarios():
    assert SCENARIOS


def test_base_loads_and_roundtrips():
    sc = parse_scenario(BASE)
    assert sc.federation.rounds == 5 and sc.requests[3].clients == "all" and sc.request_ids()[1] == "r1"
    again = parse_scenario(scenario_to_dict(sc))
    assert again == sc


@pytest.mark.parametrize(
    "path,value,expected",
    [
        # unknown key
        ("data.partitoin", {}, "x.yaml: data.partitoin: unknown key (valid: "),
        ("federation.client_resources.gpus", 1, "federation.client_resources.gpus: unknown key"),
        # wrong type
        ("federation.rounds", "ten", "federation.rounds: expected int >= 1, got 'ten'"),
        ("federation.rounds", 2.5, "federation.rounds: expected int >= 1, got 2.5"),
        ("data.download", "yes", "data.download: expected true or false, got 'yes'"),
        ("seed", True, "seed: expected int >= 0, got true"),
        ("data.dataset", "imagenet", "data.dataset: expected one of cifar10, mnist, synthetic, got 'imagenet'"),
        ("requests", {"a": 1}, "requests: expected a list of a mapping, got a mapping"),
        # out of range
        ("federation.lr", -1, "federation.lr: expected float > 0, got -1"),
        ("federation.momentum", 1.0, "federation.momentum: expected float >= 0 and < 1, got 1.0"),
        ("data.partition.alpha", 0, "data.partition.alpha: expected float > 0, got 0"),
        ("requests.2.fraction", 1.5, "requests[2].fraction: expected float > 0 and <= 1, got 1.5"),
        # cross-field
        ("requests.0.client", 10, "requests[0].client: expected a client id in 0..9, got 10"),
        ("requests.1.classes.0", 12, "requests[1].classes[0]: expected a class id in 0..9, got 12"),
        ("requests.0.round", 6, "requests[0].round: expected int <= federation.rounds (5), got 6"),
        ("federation.clients_per_round", 11, "federation.clients_per_round: expected int <= data.num_clients (10)"),
        ("requests.1.classes", [], "requests[1].classes: scope class needs a non-empty list of classes"),
        ("requests.0.clients", "all", "requests[0].client: give exactly one of client"),
        (
            "data.partition.classes_per_client",
            2,
            "data.partition.classes_per_client: not used by partition kind dirichlet",
        ),
        ("requests.2.count", 3, "requests[2].fraction: scope samples needs exactly one of fraction or count"),
        # missing key
        ("name", DELETE, "x.yaml: name: missing required key"),
        ("requests.0.scope", DELETE, "requests[0].scope: missing required key"),
        # unknown method / attack
        (
            "unlearning",
            {"methods": ["no_such_method"]},
            "unlearning.methods[0]: unknown method 'no_such_method' (valid: ",
        ),
        ("unlearning", {"no_such_method": {}}, "unlearning.no_such_method: unknown key (valid: methods"),
        ("attacks.recovery", ["no_such_attack"], "attacks.recovery[0]: unknown attack 'no_such_attack' (valid: "),
        ("attacks.inversion.targets", ["nowhere"], "attacks.inversion.targets[0]: unknown attack 'nowhere'"),
        # bad names
        ("name", "a b/c", "name: expected a string matching"),
    ],
)
def test_violation_names_the_field(path, value, expected):
    assert expected in err(with_(path, value))


def test_gpu_requested_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    text = err(with_("federation.client_resources.num_gpus", 0.25))
    assert "federation.client_resources.num_gpus: expected 0 on this machine (no GPU is visible), got 0.25" in text


def test_data_root_without_dataset(tmp_path):
    raw = with_("data", {"dataset": "cifar10", "root": str(tmp_path), "num_clients": 10, "download": False})
    assert f"data.root: {tmp_path} holds no cifar10 (cifar-10-batches-py/) and data.download is false" in err(raw)
    raw["data"]["download"] = True
    parse_scenario(raw)  # with download allowed, a missing dataset is fetched later, not an error now


def test_top_level_not_a_mapping():
    assert "expected a mapping of scenario keys" in err([1, 2])


@pytest.mark.parametrize(
    "content,expected",
    [
        ("", "empty file"),
        ("name: [unclosed\n", "not valid YAML: line"),
        ("- 1\n- 2\n", "expected a mapping of scenario keys"),
        ("name: x\nbogus: 1\n", "bogus: unknown key"),
        ("!!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),  # safe_load refuses arbitrary objects
    ],
)
def test_file_level_errors(tmp_path, content, expected):
    p = tmp_path / "s.yaml"
    p.write_text(content)
    with pytest.raises(ConfigError, match=expected) as e:
        load_scenario(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_scenario(tmp_path)


def test_yaml_scientific_notation_is_a_float():
    assert parse_scenario(with_("federation.lr", "1e-3")).federation.lr == 0.001


# ---------------------------------------------------------------------------------------------------------------------
# legal-looking inputs that used to fail late, refused at load


def requests_(*entries):
    return with_("requests", list(entries))


@pytest.mark.parametrize(
    "raw,expected",
    [
        (with_("model.width", 10_000_000), "model.width: expected int >= 0 and <= 512, got 10000000"),
        (
            with_("model", {"arch": "resnet18", "width": 32}),
            "model.width: resnet18 has a fixed width of 64: expected 0 or 64, got 32",
        ),
        (
            with_("requests.0.id", "a" * 65),
            "requests[0].id: expected at most 64 characters, got '" + "a" * 65 + "' (65 characters)",
        ),
        (with_("requests.0.id", "../x"), "requests[0].id: expected a string matching [A-Za-z0-9][A-Za-z0-9_.-]*"),
        (with_("name", "n" * 65), "name: expected at most 64 characters"),
        (
            with_("data.synthetic", {"num_train": 1_000_000, "image_size": 32}),
            "data.synthetic.num_train: expected (num_train + num_test) x image_size^2 x channels <= 268435456, "
            "got 3073536000",  # (1,000,000 + 500) x 32 x 32 x 3
        ),
        (
            with_("attacks.recovery", ["fm"], with_("data.max_test_samples", 1)),
            "data.max_test_samples: expected int >= 2 (with attacks.recovery: half calibrates the attacks, the other "
            "half is the attacker's pool), got 1",
        ),
        (
            with_("attacks.recovery", ["fm"], with_("data.synthetic", {"num_test": 1})),
            "data.synthetic.num_test: expected int >= 2",
        ),
        # duplicate request ids: blamed on the later entry, not on requests[0]
        (
            requests_(
                {"client": 1, "scope": "client", "round": 5, "id": "a"},
                {"client": 2, "scope": "client", "round": 5},
                {"client": 3, "scope": "client", "round": 5, "id": "a"},
            ),
            "requests[2].id: duplicate request id 'a' (also requests[0].id)",
        ),
        (
            requests_(
                {"client": 1, "scope": "client", "round": 5},
                {"client": 2, "scope": "client", "round": 5, "id": "r0"},
            ),
            "requests[1].id: duplicate request id 'r0' (also the default id of requests[0])",
        ),
        (
            requests_(
                {"client": 1, "scope": "client", "round": 5, "id": "r1"},
                {"client": 2, "scope": "client", "round": 5},
            ),
            "requests[1]: its default id 'r1' is already requests[0].id; give this request an id",
        ),
        # forgetting every class, at once or over several requests
        (
            requests_({"clients": "all", "scope": "class", "classes": list(range(10)), "round": 5}),
            "requests[0].classes: forgets every class (0..9): nothing is left to retain",
        ),
        (
            requests_({"client": 4, "scope": "class", "classes": list(range(10)), "round": 5}),
            "requests[0].classes: forgets every class (0..9): use scope client to forget a client's data",
        ),
        (
            requests_(
                {"clients": "all", "scope": "class", "classes": [0, 1, 2, 3, 4], "round": 4},
                {"client": 4, "scope": "client", "round": 4},
                {"clients": "all", "scope": "class", "classes": [5, 6, 7, 8, 9], "round": 5},
            ),
            "requests[2].classes: with the requests before it, every class (0..9) is forgotten from every client: "
            "nothing is left to retain",
        ),
        # one client only, asking to be forgotten; or every client
        (
            with_(
                "requests",
                [{"client": 0, "scope": "client", "round": 5}],
                with_("data.num_clients", 1, with_("federation.clients_per_round", 1)),
            ),
            "requests[0].client: the only client (data.num_clients is 1) asks to forget all its data: nothing is left "
            "to retain or train on",
        ),
        (
            with_(
                "requests",
                [{"client": 1, "scope": "client", "round": 5}, {"client": 0, "scope": "client", "round": 5}],
                with_("data.num_clients", 2, with_("federation.clients_per_round", 1)),
            ),
            "requests[1].client: every client asks to forget all its data",
        ),
        (
            with_("unlearning", {"methods": ["opc", "retrain", "opc"]}),
            "unlearning.methods[2]: opc is listed twice (also methods[0])",
        ),
    ],
)
def test_late_failures_are_refused_at_load(raw, expected):
    assert expected in err(raw)


def test_one_client_may_forget_a_class():
    raw = with_(
        "requests",
        [{"client": 0, "scope": "class", "classes": [3], "round": 5}],
        with_("data.num_clients", 1, with_("federation.clients_per_round", 1)),
    )
    assert parse_scenario(raw).requests[0].classes == (3,)


def test_more_cpus_per_client_than_the_machine_has():
    import os

    cpus = os.cpu_count()
    raw = with_("federation.client_resources.num_cpus", cpus + 1)
    assert f"federation.client_resources.num_cpus: expected <= {cpus} (CPUs on this machine), got {cpus + 1}" in err(
        raw
    )
    assert (
        parse_scenario(with_("federation.client_resources.num_cpus", cpus)).federation.client_resources.num_cpus == cpus
    )
    # a cluster's CPUs are not this machine's: not checked
    parse_scenario(with_("federation.ray_address", "10.0.0.1:6379", raw))
