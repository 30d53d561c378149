"""Schemathesis hooks for .ci/schemathesis.

The OpenAPI document states every rule JSON Schema can express. A few request rules cannot be
expressed: they relate a value to the clock, to other values in the same body, or to
cryptography. The document describes them in words, and the server answers 422 when they are
broken. For schema-valid (positive) test cases only, these hooks make the generated body keep
those rules, so that `positive_data_acceptance` keeps checking everything else in the body:

- POST /v1/enroll: `public_key` must be a usable Ed25519 point (about half of all 32-byte
  strings are not); it becomes one of the valid keys below.
- POST /v1/tasks, POST /v1/workflows: `deadline` must be in the future; it becomes a time a
  month from now.
- POST /v1/tasks, POST /v1/workflows: `output_schema` must itself be a valid JSON Schema; one
  that is not becomes `{}`.
- POST /v1/tasks: `depends_on` must name tasks that exist and can still complete; it becomes
  empty.
- POST /v1/workflows: task keys must be unique and `depends_on` must name keys of the same
  workflow without a cycle; keys become `t0`, `t1`, ... and each task depends on the tasks
  before it that it named a key of, if any (which keeps the graph acyclic).
- The idempotent POSTs: a key used before with another body is 422 `idempotency_key_reused`;
  each case gets a fresh key.
- GET /v1/messages/history: exactly one of `with` and `channel` (a rule between two query
  parameters); with both, `channel` is dropped, with neither, `with` becomes the run's own
  handle (`admin`, its conversation with itself).

Negative test cases are left as generated: the server must refuse them whatever they hold.
The examples phase runs no hooks; the document's own examples keep these rules instead (a
deadline in 2099, a usable public key).
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta, timezone

import jsonschema_rs
import schemathesis

# Valid Ed25519 public keys (32 bytes, base64). Reusing one gives 409 `public_key_taken`,
# which a schema-valid request may get.
VALID_PUBLIC_KEYS = itertools.cycle(
    [
        "YcFOtkokyKhJjWSRtr/xEqSC/oZJKA1khARwt1wCvRc=",
        "po2D3zGiELEFcLM91uJOA0HymREIRUy73c77U/74V5M=",
        "FM96X6H27cJdz0ffGLstZqdmOp7A2wfGeC51wFubL40=",
        "3HBXdgmUXbBjLAodkdLqjb9//cabketTbOnVLzuKNSA=",
        "P5PRRtERjGXpLy8YSVosGwEWlJ1x0tbe8m128NSyR68=",
        "wxRWY+Ik4IIvDA5Sb+x/toe6feoEaSOpw79fFPhtRvs=",
        "MGSdlWbi9rL7S0llDbcgFRqJyybps7UpBQ6H1Pfyi3I=",
        "9Iz+3ZxDnLfxYr1s+tzdYeDAfGbn6k1V1pkgp4drm2w=",
        "8IgttnZDJd/ENtIskRhrgZzmYh5JcuMULr4f8stQvIg=",
        "IX++HTJV2kbfdrzxtBETtVxctNdOGbOP7hj9IDDjZ10=",
        "0OxN/11t6y8PyvXar7DAAw2cC1O42Rghs6i8MLmtnY8=",
        "fsyhIvmPkeJSGKudWYClzvE9Ebxzbs9QSC3qHvWv9VQ=",
        "A8/KePhEvGeeVz2X7vAeBt9KNlsbres/HDp/Ha+mfxg=",
        "1UZH5hry/DhFFCv2J2blAXCVkvGQrqaRaDDq7QlY9G8=",
        "gLvvkRsZQ5s0YBeIL87/uqSMHk5K0kpgxKcdRJwV8sE=",
        "hme/27XaoXv2CghGtSF7UZNictPmgor/g+xkuHCU4p8=",
    ]
)


def _future() -> str:
    return (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_positive(case) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _fix_task(task: dict) -> None:
    if isinstance(task.get("deadline"), str):
        task["deadline"] = _future()
    schema = task.get("output_schema")
    if isinstance(schema, dict) and not jsonschema_rs.meta.is_valid(schema):
        task["output_schema"] = {}


@schemathesis.hook
def map_case(ctx, case):
    if not _is_positive(case):
        return case
    if (case.method.upper(), case.operation.path) == ("GET", "/v1/messages/history"):
        query = case.query if isinstance(case.query, dict) else {}
        if "with" in query and "channel" in query:
            del query["channel"]
        elif "with" not in query and "channel" not in query:
            query["with"] = "admin"
        case.query = query
        return case
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            headers[name] = str(uuid.uuid4())
    if not isinstance(case.body, dict):
        return case
    body = case.body
    route = (case.method.upper(), case.operation.path)
    if route == ("POST", "/v1/enroll"):
        if isinstance(body.get("public_key"), str):
            body["public_key"] = next(VALID_PUBLIC_KEYS)
    elif route == ("POST", "/v1/tasks"):
        _fix_task(body)
        if isinstance(body.get("depends_on"), list):
            body["depends_on"] = []
    elif route == ("POST", "/v1/workflows"):
        tasks = body.get("tasks")
        if isinstance(tasks, list):
            old_keys = [t.get("key") if isinstance(t, dict) else None for t in tasks]
            for i, task in enumerate(tasks):
                if not isinstance(task, dict):
                    continue
                _fix_task(task)
                task["key"] = f"t{i}"
                named = task.get("depends_on")
                if isinstance(named, list):
                    task["depends_on"] = [
                        f"t{j}" for j in range(i) if old_keys[j] in named
                    ]
    return case
