"""The official OpenAI Python SDK, unchanged, against a Cocoon client (run by tests/openai_sdk.rs).

Environment: COCOON_API (a funded client's base URL, ending in /v1), COCOON_BROKE_API (a client
with no money), COCOON_MODEL. Prints one line per check; exits non-zero at the first failure.
"""

import os
import sys

import openai

API = os.environ["COCOON_API"]
BROKE_API = os.environ["COCOON_BROKE_API"]
MODEL = os.environ["COCOON_MODEL"]

# No retries: a refusal must surface as the SDK's own exception at once.
client = openai.OpenAI(base_url=API, api_key="unused", max_retries=0, timeout=60)
broke = openai.OpenAI(base_url=BROKE_API, api_key="unused", max_retries=0, timeout=60)


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


completion = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=4
)
check("chat", isinstance(completion.choices[0].message.content, str), completion)
check("chat usage", completion.usage.completion_tokens > 0, completion.usage)
check("chat _request_id", bool(completion._request_id), completion._request_id)

stream = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "hello"}],
    max_tokens=4,
    stream=True,
    stream_options={"include_usage": True},
)
text = ""
usage = None
for chunk in stream:
    for choice in chunk.choices:
        text += choice.delta.content or ""
    usage = chunk.usage or usage
check("stream", len(text) > 0, text)
check("stream usage", usage is not None and usage.completion_tokens > 0, usage)

legacy = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3)
check("completions", isinstance(legacy.choices[0].text, str), legacy)

model = client.models.retrieve(MODEL)
check("models.retrieve", model.id == MODEL and model.created > 0, model)
listed = [m.id for m in client.models.list()]
check("models.list", MODEL in listed, listed)
def refused(name, exception, call, holds):
    """Checks that `call` raises the SDK's `exception` and that `holds(error)`."""
    try:
        call()
    except exception as error:
        check(name, holds(error), error)
        return
    check(name, False, f"no {exception.__name__}")


def ask(api=client, **fields):
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    return lambda: api.chat.completions.create(**{**request, **fields})


refused(
    "models.retrieve unknown",
    openai.NotFoundError,
    lambda: client.models.retrieve("no-such-model"),
    lambda error: error.code == "model_not_found",
)
refused(
    "bad temperature names its param, with a request id",
    openai.BadRequestError,
    ask(temperature=5),
    lambda error: error.param == "temperature" and bool(error.request_id),
)
# The synthetic engine honours no tools: refused by name, never silently dropped.
refused(
    "unsupported tools name their param",
    openai.BadRequestError,
    ask(tools=[{"type": "function", "function": {"name": "get_weather"}}]),
    lambda error: error.param == "tools",
)
refused(
    "context length",
    openai.BadRequestError,
    ask(max_tokens=100000),
    lambda error: error.code == "context_length_exceeded",
)
refused(
    "quota is a RateLimitError",
    openai.RateLimitError,
    ask(api=broke, max_tokens=4),
    lambda error: error.code == "insufficient_quota",
)

print("all checks passed", flush=True)
