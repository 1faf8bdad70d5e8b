"""Portcullis's reference MCP server for conformance parity.

It implements the tools, resources and prompts that the MCP conformance
suite's server scenarios ask for (names and payloads are read from the
scenario definitions in @modelcontextprotocol/conformance 0.1.16 and
0.2.0-alpha.12), with the Python SDK (mcp 2.x), so that it passes every
server scenario it can when run directly. The parity runner then compares
those results with the same suite run through Portcullis.

Usage: server.py [PORT]   (Streamable HTTP on 127.0.0.1:PORT/mcp)
"""

from __future__ import annotations

import base64
import itertools
import json
import sys
from typing import Annotated, Any

import anyio
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY
from pydantic import Field
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from tasks_ext import TasksExtension

# A 1x1 red PNG and a tiny silent WAV: the suite only checks type and base64.
RED_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
SILENT_WAV = base64.b64encode(
    b"RIFF" + (36 + 8).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (8).to_bytes(4, "little") + bytes([128] * 8)
).decode()

JSON_SCHEMA_TOOL = "json_schema_2020_12_tool"
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    # SEP-2106 (2026-07-28): composition, conditional and $anchor keywords survive.
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


class MemoryEventStore(EventStore):
    """Keeps every event so a client can resume a stream with Last-Event-ID
    (needed for SSE polling, SEP-1699). Unbounded: a test server only."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream_id = next((s for e, s, _ in self._events if e == last_event_id), None)
        if stream_id is None:
            return None
        after = False
        for event_id, sid, message in list(self._events):
            if after and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id


server = MCPServer("portcullis-reference-server", version="1.0.0", extensions=[TasksExtension()])


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


# ---------------------------------------------------------------- tools


@server.tool(description="Returns a simple text response")
def test_simple_text() -> types.CallToolResult:
    return types.CallToolResult(content=[text("This is a simple text response for testing.")])


@server.tool(description="Returns a 1x1 PNG image")
def test_image_content() -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png")]
    )


@server.tool(description="Returns a short WAV clip")
def test_audio_content() -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.AudioContent(type="audio", data=SILENT_WAV, mime_type="audio/wav")]
    )


@server.tool(description="Returns an embedded text resource")
def test_embedded_resource() -> types.CallToolResult:
    resource = types.TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])


@server.tool(description="Returns text, image and resource content together")
def test_multiple_content_types() -> types.CallToolResult:
    resource = types.TextResourceContents(
        uri="test://mixed-content-resource",
        mime_type="application/json",
        text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
    )
    return types.CallToolResult(
        content=[
            text("Multiple content types test:"),
            types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png"),
            types.EmbeddedResource(type="resource", resource=resource),
        ]
    )


@server.tool(description="Sends three info log notifications while running")
async def test_tool_with_logging(ctx: Context) -> str:
    await ctx.info("Tool execution started")
    await anyio.sleep(0.05)
    await ctx.info("Tool processing data")
    await anyio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return "Tool with logging executed successfully"


@server.tool(description="A logging tool (2026-07-28 scenarios use this name)")
async def test_logging_tool(ctx: Context) -> str:
    return await test_tool_with_logging(ctx)


@server.tool(description="Always fails")
def test_error_handling() -> str:
    raise ToolError("This tool intentionally returns an error for testing")


@server.tool(description="Reports progress 0, 50, 100 of 100")
async def test_tool_with_progress(ctx: Context) -> str:
    for step in (0, 50, 100):
        await ctx.report_progress(step, 100, f"step {step}")
        if step < 100:
            await anyio.sleep(0.05)
    return "Tool with progress executed successfully"


@server.tool(description="Asks the client to sample an LLM")
async def test_sampling(prompt: str, ctx: Context) -> str:
    result = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=text(prompt))],
        max_tokens=100,
        related_request_id=ctx.request_id,
    )
    content = result.content
    answer = content.text if isinstance(content, types.TextContent) else str(content)
    return f"LLM response: {answer}"


async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)


@server.tool(description="Asks the user for a username and email")
async def test_elicitation(message: str, ctx: Context) -> str:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    result = await elicit(ctx, message, schema)
    return f"User response: <action: {result.action}, content: {json.dumps(result.content)}>"


@server.tool(description="Elicitation whose schema has defaults for every primitive type (SEP-1034)")
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Name", "default": "John Doe"},
            "age": {"type": "integer", "description": "Age", "default": 30},
            "score": {"type": "number", "description": "Score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "Status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verified", "default": True},
        },
    }
    result = await elicit(ctx, "Please review the defaults", schema)
    return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"


@server.tool(description="Elicitation with every enum variant (SEP-1330)")
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    titled = [("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")]
    choices = [("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice")]
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string", "oneOf": [{"const": c, "title": t} for c, t in titled]},
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array", "items": {"anyOf": [{"const": c, "title": t} for c, t in choices]}},
        },
    }
    result = await elicit(ctx, "Pick some options", schema)
    return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"


@server.tool(name=JSON_SCHEMA_TOOL, description="Tool with JSON Schema 2020-12 features")
def json_schema_2020_12_tool(
    name: str = "",
    address: dict[str, Any] | None = None,
    contactMethod: str | None = None,  # noqa: N803 (wire name)
    phone: str | None = None,
    email: str | None = None,
) -> str:
    return f"name={name} address={json.dumps(address)} contact={contactMethod} phone={phone} email={email}"


@server.tool(description="Ends the POST SSE stream mid-call; the answer comes on resumption (SEP-1699)")
async def test_reconnection(ctx: Context) -> str:
    await anyio.sleep(0.1)
    await ctx.close_sse_stream()
    await anyio.sleep(0.3)
    return "Reconnection test completed"


# ------------------------------------------- 2026-07-28 era (SEP-2322, 2575, 2243)


def needs_input(requests: dict[str, Any], state: str | None = None) -> types.InputRequiredResult:
    """An InputRequiredResult (SEP-2322); the SDK seals `requestState`, so a
    tampered echo is refused before the tool runs."""
    wire: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        wire["requestState"] = state
    return types.InputRequiredResult.model_validate(wire)


def ask(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def sample(prompt: str, max_tokens: int = 100) -> dict[str, Any]:
    message = {"role": "user", "content": {"type": "text", "text": prompt}}
    return {"method": "sampling/createMessage", "params": {"messages": [message], "maxTokens": max_tokens}}


ROOTS = {"method": "roots/list", "params": {}}


def answers(ctx: Context) -> dict[str, Any]:
    """The client's input responses as plain JSON, keyed as we asked."""
    raw = ctx.input_responses or {}
    return {k: (v.model_dump(by_alias=True, mode="json") if hasattr(v, "model_dump") else v) for k, v in raw.items()}


def answered(ctx: Context, *keys: str) -> dict[str, Any] | None:
    got = answers(ctx)
    return got if all(isinstance(got.get(k), dict) for k in keys) else None


@server.tool(description="MRTR: asks for the user's name by elicitation")
def test_input_required_result_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    got = answered(ctx, "user_name")
    if got is None:
        return needs_input({"user_name": ask("What is your name?", "name")})
    name = (got["user_name"].get("content") or {}).get("name", "unknown")
    return types.CallToolResult(content=[text(f"Hello, {name}!")])


@server.tool(description="MRTR: asks the client to sample an LLM")
def test_input_required_result_sampling(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    got = answered(ctx, "capital_question")
    if got is None:
        return needs_input({"capital_question": sample("What is the capital of France?")})
    reply = got["capital_question"].get("content") or {}
    return types.CallToolResult(content=[text(f"LLM said: {reply.get('text', '')}")])


@server.tool(description="MRTR: asks for the client's roots")
def test_input_required_result_list_roots(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    got = answered(ctx, "client_roots")
    if got is None:
        return needs_input({"client_roots": ROOTS})
    uris = [r.get("uri", "") for r in got["client_roots"].get("roots", [])]
    return types.CallToolResult(content=[text(f"Roots: {', '.join(uris)}")])


@server.tool(description="MRTR: round-trips requestState")
def test_input_required_result_request_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    if answered(ctx, "confirm") is None or ctx.request_state != "confirm-pending":
        return needs_input({"confirm": ask("Please confirm", "ok", "boolean")}, "confirm-pending")
    return types.CallToolResult(content=[text("Confirmed: state-ok")])


@server.tool(description="MRTR: elicitation, sampling and roots in one round")
def test_input_required_result_multiple_inputs(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    keys = ("user_name", "greeting", "client_roots")
    if answered(ctx, *keys) is None:
        requests = {
            "user_name": ask("What is your name?", "name"),
            "greeting": sample("Generate a greeting", 50),
            "client_roots": ROOTS,
        }
        return needs_input(requests, "multi-pending")
    return types.CallToolResult(content=[text("All inputs received")])


@server.tool(description="MRTR: two rounds with evolving requestState")
def test_input_required_result_multi_round(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    if ctx.request_state == "round-2" and answered(ctx, "step2"):
        return types.CallToolResult(content=[text("Multi-round complete")])
    if ctx.request_state == "round-1" and answered(ctx, "step1"):
        return needs_input({"step2": ask("Step 2: What is your favorite color?", "color")}, "round-2")
    return needs_input({"step1": ask("Step 1: What is your name?", "name")}, "round-1")


@server.tool(description="MRTR: sealed requestState; a tampered echo is refused")
def test_input_required_result_tampered_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    if ctx.request_state == "sealed" and answered(ctx, "confirm"):
        return types.CallToolResult(content=[text("State verified")])
    return needs_input({"confirm": ask("Please confirm", "ok", "boolean")}, "sealed")


@server.tool(description="MRTR: only asks for what the client declared")
def test_input_required_result_capabilities(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    if answers(ctx):
        return types.CallToolResult(content=[text("Capabilities respected")])
    caps = ctx.client_capabilities
    requests: dict[str, Any] = {}
    if caps is not None and caps.sampling is not None:
        requests["question"] = sample("What is 2 + 2?")
    if caps is not None and caps.elicitation is not None:
        requests["user_name"] = ask("What is your name?", "name")
    if caps is not None and caps.roots is not None:
        requests["client_roots"] = ROOTS
    if not requests:
        return types.CallToolResult(content=[text("Client declared no input capability")])
    return needs_input(requests)


@server.prompt(description="MRTR on prompts/get")
def test_input_required_result_prompt(ctx: Context) -> list[Any] | types.InputRequiredResult:
    got = answered(ctx, "user_context")
    if got is None:
        return needs_input({"user_context": ask("What context should the prompt use?", "context")})
    context = (got["user_context"].get("content") or {}).get("context", "")
    return [UserMessage(text(f"Prompt with context: {context}"))]


@server.tool(description="Needs the sampling capability; refused with -32021 when undeclared (SEP-2575)")
def test_missing_capability(ctx: Context) -> str:
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="Client did not declare the sampling capability",
            data={"requiredCapabilities": {"sampling": {}}},
        )
    return "sampling capability present"


@server.tool(description="Echoes parameters that clients mirror into Mcp-Param-* headers (SEP-2243)")
def test_custom_headers(
    region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    priority: Annotated[int, Field(json_schema_extra={"x-mcp-header": "Priority"})] = 0,
) -> str:
    return f"region={region} priority={priority}"


_changes = itertools.count(1)


@server.tool(description="Adds a tool and announces it on subscriptions/listen streams (SEP-2575)")
async def test_trigger_tool_change(ctx: Context) -> str:
    name = f"dynamic_tool_{next(_changes)}"
    server.add_tool(lambda: "dynamic", name=name, description="A tool added at run time")
    await ctx.notify_tools_changed()
    return f"added {name}"


@server.tool(description="Adds a prompt and announces it on subscriptions/listen streams (SEP-2575)")
async def test_trigger_prompt_change(ctx: Context) -> str:
    name = f"dynamic_prompt_{next(_changes)}"
    server.add_prompt(Prompt.from_function(lambda: "dynamic", name=name, description="A prompt added at run time"))
    await ctx.notify_prompts_changed()
    return f"added {name}"


@server.tool(description="Counts slowly with progress and log notifications (for client resumption tests)")
async def slow_progress(ctx: Context, steps: int = 5, delay_ms: int = 200) -> str:
    for i in range(1, steps + 1):
        await anyio.sleep(delay_ms / 1000)
        await ctx.report_progress(i, steps, f"step {i}")
        await ctx.info(f"step {i} of {steps}")
    return f"counted to {steps}"


# --------------------------------------- tasks extension fixtures (SEP-2663)
# Run as tasks by tasks_ext.TasksExtension when the client declared the
# extension; these bodies are the synchronous fall-through.


@server.tool(description="Sync-only greeting")
def greet(name: str) -> str:
    return f"Hello, {name}!"


@server.tool(description="Task-supporting: sleeps `seconds`, then answers")
async def slow_compute(seconds: float = 1, label: str = "") -> str:
    await anyio.sleep(min(seconds, 5))
    return f"computed {label} in {seconds:g}s"


@server.tool(description="Task-required: always ends in a tool error")
def failing_job() -> str:
    raise ToolError("failing_job failed on purpose")


@server.tool(description="Task-supporting: crashes into a protocol error")
def protocol_error_job() -> str:
    raise MCPError(code=-32603, message="protocol_error_job crashed on purpose")


@server.tool(description="Task-supporting: asks for confirmation by elicitation")
def confirm_delete(path: str = "it") -> str:
    return f"delete of {path} needs a task to confirm"


@server.tool(description="Task-supporting: asks two questions at once")
def multi_input() -> str:
    return "multi_input needs a task"


@server.tool(description="Task-required: MRTR first, then a task")
def test_tool_with_task() -> str:
    return "test_tool_with_task needs a task"


# ---------------------------------------------------------------- resources


@server.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@server.resource("test://static-binary", name="static-binary", description="A static PNG", mime_type="image/png")
def static_binary() -> bytes:
    return base64.b64decode(RED_PIXEL_PNG)


@server.resource(
    "test://watched-resource", name="watched-resource", description="A resource to subscribe to", mime_type="text/plain"
)
def watched_resource() -> str:
    return "Watched resource content."


@server.resource(
    "test://template/{id}/data", name="template-data", description="A templated resource", mime_type="application/json"
)
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))


# ---------------------------------------------------------------- prompts


def user(content: types.ContentBlock) -> UserMessage:
    return UserMessage(content)


@server.prompt(description="A simple prompt without arguments")
def test_simple_prompt() -> list[UserMessage]:
    return [user(text("This is a simple prompt for testing."))]


@server.prompt(description="A prompt with two required arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    return [user(text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]


@server.prompt(description="A prompt that embeds a resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 (wire name)
    resource = types.TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        user(types.EmbeddedResource(type="resource", resource=resource)),
        user(text("Please process the embedded resource above.")),
    ]


@server.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list[UserMessage]:
    return [
        user(types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png")),
        user(text("Please analyze the image above.")),
    ]


@server.completion()
async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion:
    candidates = ["paris", "park", "party", "test", "testing"]
    values = [c for c in candidates if c.startswith(argument.value)]
    return types.Completion(values=values, total=len(values), has_more=False)


# ------------------------------------------------- handlers the SDK leaves out

low = server._lowlevel_server  # noqa: SLF001 (the SDK has no public hook for these)
subscribed: set[str] = set()
_list_tools = server._handle_list_tools  # noqa: SLF001


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    """The SDK derives input schemas from signatures; the 2020-12 scenario
    needs `$schema`, `$defs` and `additionalProperties` kept verbatim."""
    result = await _list_tools(ctx, params)
    for tool in result.tools:
        if tool.name == JSON_SCHEMA_TOOL:
            tool.input_schema = JSON_SCHEMA_2020_12
    return result


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscribed.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscribed.discard(str(params.uri))
    return types.EmptyResult()


low.add_request_handler("tools/list", types.PaginatedRequestParams, list_tools)
low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3110
    # Host/Origin checks: the dns-rebinding scenario expects a localhost
    # server to refuse foreign Host and Origin headers.
    # Any port: through Portcullis the Host header names the sidecar's port.
    local = ("localhost", "127.0.0.1", "[::1]")
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*local, *(f"{h}:*" for h in local)],
        allowed_origins=[f"http://{h}:*" for h in local] + [f"http://{h}" for h in local],
    )
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        event_store=MemoryEventStore(),
        retry_interval=500,
        transport_security=security,
    )


if __name__ == "__main__":
    main()
