"""The official OpenAI Python SDK, unchanged, against a Cocoon client whose worker runs the real
embedded model (run by tests/openai_sdk.rs): what agent frameworks and structured-output apps send.

Environment: COCOON_API (a funded client's base URL, ending in /v1), COCOON_MODEL. Prints one line
per check; exits non-zero at the first failure.
"""

import json
import os
import sys

import openai
from pydantic import BaseModel

API = os.environ["COCOON_API"]
MODEL = os.environ["COCOON_MODEL"]

client = openai.OpenAI(base_url=API, api_key="unused", max_retries=0, timeout=120)


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]

# A forced call: a valid call of that function, its arguments matching the schema.
forced = client.chat.completions.create(
    model=MODEL,
    messages=ASK_WEATHER,
    tools=[WEATHER],
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    max_tokens=48,
    temperature=0,
)
calls = forced.choices[0].message.tool_calls or []
check("forced tool call", len(calls) == 1 and calls[0].function.name == "get_weather", forced)
arguments = json.loads(calls[0].function.arguments)
check("tool arguments match the schema", isinstance(arguments.get("city"), str) and set(arguments) == {"city"}, arguments)
check("finish_reason tool_calls", forced.choices[0].finish_reason == "tool_calls", forced.choices[0])

# `none`: text, no call.
plain = client.chat.completions.create(
    model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="none", max_tokens=8, temperature=0
)
check("tool_choice none", not plain.choices[0].message.tool_calls and isinstance(plain.choices[0].message.content, str), plain)

# The same forced call, streamed: the SDK assembles the deltas.
stream = client.chat.completions.create(
    model=MODEL,
    messages=ASK_WEATHER,
    tools=[WEATHER],
    tool_choice="required",
    max_tokens=48,
    temperature=0,
    stream=True,
)
name, streamed_arguments = "", ""
for chunk in stream:
    for choice in chunk.choices:
        for call in choice.delta.tool_calls or []:
            name += call.function.name or ""
            streamed_arguments += call.function.arguments or ""
check("streamed tool call", name == "get_weather" and isinstance(json.loads(streamed_arguments).get("city"), str), (name, streamed_arguments))


# Structured output through the SDK's own parse(): a strict json_schema from a pydantic model.
class City(BaseModel):
    name: str
    country: str


parsed = client.chat.completions.parse(
    model=MODEL,
    messages=[{"role": "user", "content": "Name a city in France."}],
    response_format=City,
    max_tokens=48,
    temperature=0,
)
city = parsed.choices[0].message.parsed
check("chat.completions.parse", isinstance(city, City), parsed)

# Log-probabilities.
with_logprobs = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
)
content = with_logprobs.choices[0].logprobs.content
check("logprobs", len(content) > 0 and all(t.logprob <= 0 and len(t.top_logprobs) <= 3 for t in content), content)
check("the greedy token is the most likely", all(t.top_logprobs[0].token == t.token for t in content), content)

# n choices, billed as such.
one = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=3, temperature=1, seed=1)
three = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=3, temperature=1, seed=1, n=3)
check("n=3 answers three choices", len(three.choices) == 3, three)
check("n=3 is billed for every choice", three.usage.completion_tokens > one.usage.completion_tokens, (one.usage, three.usage))

# What the engine cannot do is refused by name.
try:
    client.completions.create(model=MODEL, prompt="hi", max_tokens=3, suffix="!")
    check("suffix refused", False, "no BadRequestError")
except openai.BadRequestError as error:
    check("suffix refused by name", error.param == "suffix", error)

print("all checks passed", flush=True)
