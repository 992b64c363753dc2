"""Post every case of the Messages door's kept hostile set to a server built from whatever
`tierroute` is on the path, and print how many ended 5xx or otherwise than the case allows.

The test (`test_hostile_messages.py`) asserts the set holds on this checkout; this census
measures code that may not hold, such as an older commit:

    git archive e14ef13 service | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/service:. .venv/bin/python -m tests.api.hostile_census --no-temperature

`--no-temperature` drops `temperature` from the base body and every case that is not about
it (code from before `temperature` travelled in the SDK's `extra_body` fails every request
that sends it, which would hide the other failures).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from typing import Any

import httpx2 as httpx

import tierroute
from tests.api.hostile_bodies import Hostile, hostile_bodies, send
from tests.api.test_hostile_messages import BASE, HEADERS, LIMIT, MESSAGES_CASES, PATH
from tests.helpers import make_settings, running_server
from tierroute.testing import StaticScorer


def _without_temperature(case: Hostile) -> Hostile:
    if case.name.startswith("temperature"):
        return case
    body = json.loads(case.body)
    body.pop("temperature", None)
    return dataclasses.replace(case, body=json.dumps(body).encode())


def cases(*, temperature: bool) -> tuple[dict[str, Any], list[Hostile]]:
    """The base body and the kept set, with or without `temperature`."""
    if temperature:
        return BASE, hostile_bodies(BASE, max_body_bytes=LIMIT) + MESSAGES_CASES
    base = {k: v for k, v in BASE.items() if k != "temperature"}
    own = [_without_temperature(c) for c in MESSAGES_CASES]
    return base, hostile_bodies(base, max_body_bytes=LIMIT) + own


async def census(*, temperature: bool) -> None:
    """Run every case against a fresh server and print the ones that did not end clean."""
    base, kept = cases(temperature=temperature)
    settings = make_settings(
        {"TIERROUTE_REPLAY_TIME_SCALE": "0", "TIERROUTE_HTTP_MAX_BODY_BYTES": str(LIMIT)}
    )
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with (
        running_server(settings, scorer=scorer, http=True) as served,
        httpx.AsyncClient(base_url=served.http_url, timeout=60) as client,
    ):
        ended = [(case, (await send(client, PATH, case, HEADERS)).status_code) for case in kept]
        answered = await client.post(PATH, content=json.dumps(base).encode(), headers=HEADERS)
    unclean = [(c, s) for c, s in ended if s >= 500 or s not in c.statuses]
    failed = [(c, s) for c, s in unclean if s >= 500]
    print(f"code: {tierroute.__file__}")
    print(f"cases {len(kept)}; 5xx {len(failed)}; other unexpected {len(unclean) - len(failed)}")
    for case, status in unclean:
        print(f"  {status} {case.name}")
    print(f"the base body afterwards: {answered.status_code}")


def main() -> None:
    """Parse the one flag and run the census."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-temperature", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    asyncio.run(census(temperature=not args.no_temperature))


if __name__ == "__main__":
    main()
