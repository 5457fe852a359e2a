"""Load: 1,000 clients for 5 rounds, and 10 requests firing in the same round, all served."""

import json

from fed_opc.config import parse_scenario
from strategies.run import simulate
from tests.helpers import tiny


def test_thousand_clients_and_ten_simultaneous_requests(tmp_path):
    raw = tiny(name="load", **{"federation.rounds": 5, "data.num_clients": 1000, "federation.clients_per_round": 10})
    raw["data"]["synthetic"] |= {"num_train": 4000, "num_test": 200}
    raw["requests"] = [{"id": f"r{c}", "client": c, "scope": "client", "round": 5} for c in range(0, 1000, 100)]
    raw["unlearning"] = {"methods": ["fed_opc", "fed_retrain"], "fed_opc": {"max_rounds": 2, "protocol": "two_phase"}}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    assert [x["round"] for x in r.results["pretrain"]["rounds"]] == [1, 2, 3, 4, 5]
    assert len(r.results["requests"]) == 10 and all(q["status"] == "done" for q in r.results["requests"])
    ledger = json.loads((tmp_path / "run" / "checkpoints" / "ledger.json").read_text())["requests"]
    assert all(e["methods"] == {"fed_opc": "done", "fed_retrain": "done"} for e in ledger.values())
    served = {d["request"] for d in r.results["methods"]["fed_opc"]["diagnostics"]["unlearning_rounds"] if d["served"]}
    assert served == {f"r{c}" for c in range(0, 1000, 100)}
