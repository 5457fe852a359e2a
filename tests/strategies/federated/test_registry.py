"""The federated registry: the same methods as fed_opc's ``CONFIGS``, each served by the function that takes its config;
a config without a server side, a server side without a config, or a crossed pair fails when the registry is built."""

import pytest

from fed_opc.config import FALLBACKS
from fed_opc.unlearning.federated import CONFIGS, FedGAConfig, FedRLConfig
from strategies.federated.registry import METHODS, SERVERS, RegistryError, build_registry, get_method
from strategies.federated.rounds import serve_fed_ga, serve_fed_rl


def test_the_registry_names_fed_opcs_federated_methods_with_their_config_classes():
    assert list(METHODS) == list(CONFIGS)
    assert {name: m.config for name, m in METHODS.items()} == CONFIGS
    assert all(m.name == name for name, m in METHODS.items())
    # the methods whose protocol runs the requester's own local steps (on an edge federation they wait for it)
    assert {name for name, m in METHODS.items() if m.needs_requester} == {"fed_opc", "pga", "fed_ga", "fed_rl"}
    # a fallback serves a request whose requester stays offline: it must not need it
    assert all(not METHODS[name].needs_requester for name in FALLBACKS)


def test_an_unknown_name_lists_the_valid_ones():
    assert get_method("fed_rl").serve is serve_fed_rl
    with pytest.raises(KeyError, match="valid: fed_eraser, fed_finetune, fed_ga, fed_opc, fed_retrain, fed_rl, pga"):
        get_method("fed_nope")


def test_a_config_without_a_serve_function_fails_to_build():
    servers = {k: v for k, v in SERVERS.items() if k is not FedRLConfig}
    with pytest.raises(RegistryError, match=r"without a serve function: \['fed_rl'\]"):
        build_registry(CONFIGS, servers)


def test_a_serve_function_without_a_config_fails_to_build():
    configs = {k: v for k, v in CONFIGS.items() if k != "fed_ga"}
    with pytest.raises(RegistryError, match=r"without a method in CONFIGS: \['FedGAConfig'\]"):
        build_registry(configs, SERVERS)


def test_a_serve_function_registered_under_another_methods_config_fails_to_build():
    crossed = SERVERS | {FedGAConfig: (serve_fed_rl, True), FedRLConfig: (serve_fed_ga, True)}
    with pytest.raises(RegistryError, match="fed_ga: serve_fed_rl takes cfg: FedRLConfig, not FedGAConfig"):
        build_registry(CONFIGS, crossed)
