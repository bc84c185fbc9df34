"""Property-based tests of the chat server from its own OpenAPI schema: schemathesis generates valid and invalid
requests for every operation; none may get a 5xx. The real engine (a tiny random model) answers, replies capped at a
few tokens so that a few hundred requests take seconds."""
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from nanochat.batching import EngineSlots  # noqa: E402
from nanochat.engine import Engine  # noqa: E402
from nanochat.scripts.chat_web import byte_tokenizer, tiny_random_model  # noqa: E402
from nanochat.server import ServerConfig, create_app, serve_in_thread  # noqa: E402

EXAMPLES = 60  # per operation and generation mode: five operations, well under a minute on two CPU cores


TOK = byte_tokenizer()
APP = create_app(EngineSlots(Engine(tiny_random_model(TOK), TOK), slots=8, max_len=512), TOK,
                 ServerConfig(max_tokens_cap=8, max_queue=32))
schema = schemathesis.openapi.from_dict(APP.openapi())  # the schema the server publishes at /openapi.json


@pytest.fixture(scope="module")
def base_url():
    with serve_in_thread(APP) as url: yield url


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_makes_the_server_fail(case, base_url):
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:  # every refusal is JSON with a sentence in it
        assert response.json()["error"]["message"], "an error without a message"


def test_the_published_schema_is_the_apps(base_url):
    import httpx
    assert httpx.get(base_url + "/openapi.json").json() == APP.openapi()
