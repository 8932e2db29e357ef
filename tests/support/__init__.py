"""What the tests share besides fixtures, one concept per module.

- :mod:`~tests.support.waiting`: ``wait_until``, the bounded poll every wait uses;
- :mod:`~tests.support.services`: the private Redis server and throwaway PostgreSQL databases;
- :mod:`~tests.support.apps`: the test app built fresh on a test database (``make_app``);
- :mod:`~tests.support.records`: the test app's rows, seeded and read back;
- :mod:`~tests.support.processes`: ``flask`` commands forked from a server that imported them;
- :mod:`~tests.support.workers`: RQ workers in process (``drain``) and as subprocesses;
- :mod:`~tests.support.csv_files`: CSV files for the CSV tasks;
- :mod:`~tests.support.dashboard`: a test client of the dashboard, query counting, bulk runs;
- :mod:`~tests.support.browser`: the live server and screenshots of the browser tests.

``conftest.py`` files only turn these into fixtures.
"""

from __future__ import annotations

from pathlib import Path

#: The repository: the working directory of every subprocess the tests start.
ROOT = Path(__file__).resolve().parents[2]
