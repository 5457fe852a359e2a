"""``Cost``: zero, addition, metered exchanges, checkpoint round trip and the results.json block."""

from strategies.cost import Cost


def test_zero_and_addition_field_by_field():
    a = Cost(rounds=1, client_samples=10, bytes_up=3, bytes_down=4, server_storage_bytes=5, messages=2, failures=1)
    assert Cost() + a == a
    assert a + a == Cost(2, 20, 6, 8, 10, 4, 2)


def test_metered_reads_the_exchange_keys_only():
    meter = {"bytes_down": 24, "bytes_up": 16, "client_samples": 20, "messages": 2, "failures": 1, "stragglers": 3}
    assert Cost.metered(meter, rounds=2) == Cost(rounds=2, client_samples=20, bytes_up=16, bytes_down=24, messages=2,
                                                 failures=1)  # fmt: skip
    assert Cost.metered({}) == Cost()


def test_checkpoint_dict_round_trip_ignores_other_keys():
    c = Cost(rounds=3, client_samples=7, server_storage_bytes=9)
    d = c.to_dict()
    assert list(d) == ["rounds", "client_samples", "bytes_up", "bytes_down", "server_storage_bytes", "messages",
                       "failures"]  # fmt: skip
    assert Cost.from_dict(d | {"wall_s": 1.5}) == c
    assert Cost.from_dict({"rounds": 2}) == Cost(rounds=2)


def test_results_block_per_setting():
    c = Cost(rounds=2, client_samples=5, bytes_up=1, bytes_down=2, server_storage_bytes=3, messages=4, failures=1)
    fed = {"rounds": 2, "client_samples": 5, "bytes_up": 1, "bytes_down": 2, "server_storage_bytes": 3, "failures": 1}
    assert c.results("federated") == fed
    assert list(c.results("federated")) == list(fed)
    assert Cost(client_samples=8).results("centralized") == {
        "rounds": 0,
        "client_samples": 8,
        "bytes_up": 0,
        "bytes_down": 0,
        "server_storage_bytes": 0,
    }
