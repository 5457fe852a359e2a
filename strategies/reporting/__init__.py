"""Reading a finished run: the report of one run directory, the summary over seeds, the comparison of runs.

Nothing here trains or imports Flower; every module reads ``results.json`` / ``summary.json`` content only.

- ``values.py``: what a value is (a number or a ``{"mean", "std", "n"}`` summary leaf), how it prints (``fmt``,
  ``kind_of``, ``unit_of``), where it sits (``dig``, ``lookup``), the order of methods, ``metrics.csv``;
- ``document.py``: the blocks of a report (Heading, Para, Bullets, Table, Image) and their Markdown / HTML renderers;
- ``tables.py``: the report's tables (headline, diagnostics, requests, UA per request, recovery, inversion);
- ``plots.py``: the report's figures and the helpers every figure uses;
- ``depth.py``: forgetting depth (gaps to retraining, verdicts) and its report section and figure;
- ``edge.py``: the edge federation's tables and figures;
- ``report.py``: the report of one run (``write_report``; ``python -m strategies.reporting RUN_DIR``);
- ``summary.py``: the multi-seed summary (``write_summary``; ``python -m strategies.reporting.summary DIR``);
- ``compare.py``: runs side by side (``scripts/compare.py RUN_DIR [RUN_DIR ...]``).
"""
