"""A small, in-memory server side of the tasks extension (SEP-2663) for the
reference server, enough for the conformance suite's `tasks-*` scenarios and
so for checking that Portcullis relays `tasks/get`, `tasks/update` and
`tasks/cancel` (with `Mcp-Name: <taskId>`) like any other message.

Task-supporting tools run in the background when the caller declared the
extension (for the session or in this request's `_meta`); otherwise they run
synchronously, except `failing_job`, which requires a task (-32021).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

from mcp_types import HEADER_MISMATCH, INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY, CallToolRequestParams, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict

from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError

TASKS = "io.modelcontextprotocol/tasks"
TTL_MS, POLL_MS = 300_000, 200
TASK_TOOLS = {"slow_compute", "failing_job", "protocol_error_job", "confirm_delete", "multi_input",
              "test_tool_with_task"}
REQUIRES_TASK = {"failing_job", "test_tool_with_task"}
TERMINAL = {"completed", "failed", "cancelled"}


class TaskParams(RequestParams):
    """`tasks/get|update|cancel` params; extra keys (inputResponses) kept."""

    model_config = ConfigDict(extra="allow")
    task_id: str | None = None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def text_result(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def elicit(message: str, field: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


class Task:
    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.status = "working"
        self.created = self.updated = now()
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.pending: dict[str, Any] = {}  # input requests still unanswered
        self.answers: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self.runner: asyncio.Task[None] | None = None

    def set(self, status: str, **fields: Any) -> None:
        if self.status in TERMINAL:
            return
        self.status, self.updated = status, now()
        for key, value in fields.items():
            setattr(self, key, value)

    def envelope(self) -> dict[str, Any]:
        return {"taskId": self.id, "status": self.status, "createdAt": self.created,
                "lastUpdatedAt": self.updated, "ttlMs": TTL_MS, "pollIntervalMs": POLL_MS}

    def detailed(self) -> dict[str, Any]:
        out = {"resultType": "complete", **self.envelope()}
        if self.status == "completed" and self.result is not None:
            out["result"] = self.result
        if self.status == "failed" and self.error is not None:
            out["error"] = self.error
        if self.status == "input_required":
            out["inputRequests"] = dict(self.pending)
        return out

    async def ask(self, requests: dict[str, Any]) -> dict[str, Any]:
        """Parks the task until every request is answered (tasks/update)."""
        self.pending.update(requests)
        self.set("input_required")
        while any(k not in self.answers for k in requests):
            self.changed.clear()
            await self.changed.wait()
        self.set("working")
        return {k: self.answers[k] for k in requests}


def declares_tasks(ctx: Any) -> bool:
    caps = ctx.session.client_capabilities
    if caps is not None and TASKS in (caps.extensions or {}):
        return True
    request_caps = (ctx.meta or {}).get("io.modelcontextprotocol/clientCapabilities") or {}
    return TASKS in (request_caps.get("extensions") or {})


def check_mcp_name(ctx: Any, task_id: str | None) -> None:
    """SEP-2663: tasks/get|update|cancel carry `Mcp-Name: <taskId>`; a
    mismatch (or, in the 2026-07-28 era, an absence) is -32020."""
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return
    name = headers.get("mcp-name")
    if name is None and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return
    if name != task_id:
        raise MCPError(code=HEADER_MISMATCH, message=f"Mcp-Name {name!r} does not match params.taskId {task_id!r}")


def missing_extension() -> MCPError:
    return MCPError(code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                    message=f"Client did not declare the {TASKS} extension",
                    data={"requiredCapabilities": {"extensions": {TASKS: {}}}})


async def run_tool(task: Task, name: str, args: dict[str, Any], gathered: dict[str, Any]) -> None:
    """The task-supporting tools' bodies."""
    if name == "slow_compute":
        seconds = float(args.get("seconds", 1))
        await asyncio.sleep(seconds)
        task.set("completed", result=text_result(f"computed {args.get('label', '')} in {seconds:g}s"))
    elif name == "failing_job":
        await asyncio.sleep(1)
        task.set("completed", result=text_result("failing_job failed on purpose", is_error=True))
    elif name == "protocol_error_job":
        await asyncio.sleep(0.2)
        task.set("failed", error={"code": -32603, "message": "protocol_error_job crashed on purpose"})
    elif name == "confirm_delete":
        answer = await task.ask({"confirm": elicit(f"Delete {args.get('path', 'it')}?", "confirm")})
        task.set("completed", result=text_result(f"delete confirmed: {answer['confirm']}"))
    elif name == "multi_input":
        answers = await task.ask({"first": elicit("First value?", "value"), "second": elicit("Second value?", "value")})
        task.set("completed", result=text_result(f"got {sorted(answers)}"))
    elif name == "test_tool_with_task":
        user = (gathered.get("user_name") or {}).get("content", {}).get("name", "unknown")
        await asyncio.sleep(0.2)
        task.set("completed", result=text_result(f"Hello, {user}! (from a task)"))


class TasksExtension(Extension):
    identifier = TASKS

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._ids = itertools.count(1)

    def methods(self) -> list[MethodBinding]:
        return [MethodBinding("tasks/get", TaskParams, self.get),
                MethodBinding("tasks/update", TaskParams, self.update),
                MethodBinding("tasks/cancel", TaskParams, self.cancel)]

    def lookup(self, ctx: Any, params: TaskParams) -> Task:
        if not declares_tasks(ctx):
            raise missing_extension()
        check_mcp_name(ctx, params.task_id)
        task = self.tasks.get(params.task_id or "")
        if task is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown taskId {params.task_id!r}")
        return task

    async def get(self, ctx: Any, params: TaskParams) -> dict[str, Any]:
        return self.lookup(ctx, params).detailed()

    async def update(self, ctx: Any, params: TaskParams) -> dict[str, Any]:
        task = self.lookup(ctx, params)
        responses = (params.model_extra or {}).get("inputResponses") or {}
        if not isinstance(responses, dict):
            raise MCPError(code=INVALID_PARAMS, message="inputResponses must be an object")
        for key, value in responses.items():
            if key in task.pending:
                task.answers[key] = value
                del task.pending[key]
        task.changed.set()
        return {"resultType": "complete"}

    async def cancel(self, ctx: Any, params: TaskParams) -> dict[str, Any]:
        task = self.lookup(ctx, params)
        if task.status not in TERMINAL:
            task.set("cancelled")
            if task.runner is not None:
                task.runner.cancel()
        return {"resultType": "complete"}

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: Any, call_next: Any) -> Any:
        if params.name not in TASK_TOOLS:
            return await call_next(ctx)
        if not declares_tasks(ctx):
            if params.name in REQUIRES_TASK:
                raise missing_extension()
            return await call_next(ctx)  # falls through to the synchronous tool
        gathered: dict[str, Any] = {}
        if params.name == "test_tool_with_task":
            # MRTR first (SEP-2322), then escalate to a task on the final round.
            gathered = {k: _plain(v) for k, v in (params.input_responses or {}).items()}
            if "user_name" not in gathered:
                return {"resultType": "input_required",
                        "inputRequests": {"user_name": elicit("What is your name?", "name")}}
        task = Task(f"task-{next(self._ids)}")
        self.tasks[task.id] = task  # stored before answering: durable create
        task.runner = asyncio.get_running_loop().create_task(self._run(task, params, gathered))
        return {"resultType": "task", **task.envelope()}

    async def _run(self, task: Task, params: CallToolRequestParams, gathered: dict[str, Any]) -> None:
        try:
            await run_tool(task, params.name, params.arguments or {}, gathered)
        except asyncio.CancelledError:
            task.set("cancelled")
        except Exception as exc:  # a crash is a protocol-level failure of the task
            task.set("failed", error={"code": -32603, "message": str(exc)})


def _plain(value: Any) -> Any:
    return value.model_dump(by_alias=True, mode="json") if hasattr(value, "model_dump") else value
