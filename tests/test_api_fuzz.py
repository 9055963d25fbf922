"""Schemathesis against the server's OpenAPI schema: hundreds of generated requests, valid and not, never a 5xx."""

from __future__ import annotations

from collections import Counter

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from people_support import Api

POSITIVE_PER_OPERATION = 14
NEGATIVE_PER_OPERATION = 10
STREAMS = ("/events",)  # endless text/event-stream answers: covered by the event stream tests


def test_generated_requests_never_get_a_server_error(start_server):
    server = start_server(env={"NBJOBS_WEBHOOK_HOSTS": "127.0.0.1"})  # fuzzed webhooks never leave this host
    auth = {"Authorization": f"Bearer {Api.admin(server).token}"}
    raw = httpx.get(server.url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = [op.ok() for op in schema.get_all_operations()]
    operations = [op for op in operations if not op.path.endswith(STREAMS)]
    assert len(operations) >= 20

    for operation in operations:
        for mode, count in (
            (GenerationMode.POSITIVE, POSITIVE_PER_OPERATION),
            (GenerationMode.NEGATIVE, NEGATIVE_PER_OPERATION),
        ):

            @settings(
                max_examples=count,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case):  # type: ignore[no-untyped-def]
                response = case.call(base_url=server.url, headers=auth, timeout=30)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} {case.as_curl_command()}\n{response.text[:300]}")

            send()

    total = sum(statuses.values())
    assert not failures, "\n\n".join(failures[:5])
    assert total >= 500, statuses
    assert any(400 <= s < 500 for s in statuses) and any(s < 300 for s in statuses), statuses
    assert httpx.get(server.url + "/api/health", headers=auth).status_code == 200  # still serving
