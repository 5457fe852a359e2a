"""Scenario YAML -> nested frozen dataclasses, validated once at load.

``load_scenario(path)`` is the only place that reads raw YAML. It rejects duplicate keys, YAML 1.1 number forms that
read unlike they look (``010``, ``1:02``, ``1_000``), unknown keys, missing keys, wrong types, out-of-range values and
inconsistent settings with a ``ConfigError`` whose text is one line naming the file and the dotted field, e.g.
``scenarios/x.yaml: requests[1].classes[0]: expected a class id in 0..9, got 12``. What only the data can tell (a class
the requester does not hold, a count above its data) is checked by ``fed_opc.data.scenario_data.prepare``. Every key
and rule is documented in docs/scenarios.md.

Modules: ``scenario`` (the dataclasses, ``scenario_to_dict``), ``validate`` (``parse_scenario`` and the cross-field
checks) and ``load`` (the YAML reader, ``load_scenario``); every name is importable from ``fed_opc.config``.
"""

from fed_opc.config.load import ScenarioLoader, load_scenario, read_yaml
from fed_opc.config.scenario import (
    FALLBACKS,
    NAME_MAX,
    NAME_META,
    NAME_PATTERN,
    PARTITION_KEYS,
    SYNTHETIC_MAX_VALUES,
    WIDTH_MAX,
    AttacksConfig,
    ClientResources,
    DataConfig,
    FaultsConfig,
    FaultSpec,
    FederationConfig,
    InversionConfig,
    ModelConfig,
    OutputConfig,
    PartitionConfig,
    RequestConfig,
    Scenario,
    SyntheticConfig,
    UnlearningConfig,
    scenario_to_dict,
)
from fed_opc.config.validate import min_test_samples, parse_scenario
from fed_opc.schema import ConfigError

__all__ = [
    "ConfigError",
    "ScenarioLoader",
    "Scenario",
    "load_scenario",
    "parse_scenario",
    "scenario_to_dict",
    "FALLBACKS",
    "NAME_MAX",
    "NAME_META",
    "NAME_PATTERN",
    "PARTITION_KEYS",
    "SYNTHETIC_MAX_VALUES",
    "WIDTH_MAX",
    "AttacksConfig",
    "ClientResources",
    "DataConfig",
    "FaultsConfig",
    "FaultSpec",
    "FederationConfig",
    "InversionConfig",
    "ModelConfig",
    "OutputConfig",
    "PartitionConfig",
    "RequestConfig",
    "SyntheticConfig",
    "UnlearningConfig",
    "read_yaml",
    "min_test_samples",
]
