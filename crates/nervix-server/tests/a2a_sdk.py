"""The official A2A Python SDK (a2a-sdk) as a third-party client of a running Nervix server.

Driven by the server's test `a2a::official_python_sdk` (tests/api/a2a.rs):

    a2a_sdk.py flow BASE POSTER_TOKEN WORKER_TOKEN WORKER_HANDLE
        resolves the platform card and the worker's card from their base URLs and verifies
        their signatures (a2a.utils.signing, PyJWT, the server's JWKS); SendMessage at the
        worker's interface posts a Nervix task, which the worker completes through the REST
        API; GetTask shows it completed with the artifact, whose receipt PyJWT verifies (and a
        tampered copy it refuses); ListTasks lists it; CancelTask cancels another; a streamed
        SendMessage sees submitted → working (maybe said twice) → artifact → completed, in
        order. Prints
        {"receipt": ..., "kid": ...}.

    a2a_sdk.py verify JWKS_URL RECEIPT OLD_KID
        after a key rotation: the JWKS holds a newer key, and the receipt signed with the old
        one still verifies with PyJWT.

Exits non-zero with a message on the first failed expectation.
"""

import asyncio
import base64
import json
import sys
import uuid

import httpx
import jwt
from google.protobuf import struct_pb2
from jwt import PyJWK

from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier

WORK = (
    "The report covers the three incidents of last quarter, explains how each began, which "
    "systems were touched, how customers noticed, what the on-call team changed afterwards, "
    "and which follow-up work is still open with owners and dates."
)
RECEIPTS_EXTENSION = "urn:nervix:a2a:ext:reputation-receipts:v1"


def check(cond, what):
    if not cond:
        raise SystemExit(f"a2a_sdk.py: expectation failed: {what}")


def key_provider(jwks):
    def provide(kid, _jku):
        for k in jwks["keys"]:
            if k["kid"] == kid:
                return PyJWK(k)
        raise jwt.InvalidKeyError(f"no key {kid}")

    return provide


def verify_receipt(receipt, jwks):
    header = jwt.get_unverified_header(receipt)
    key = key_provider(jwks)(header["kid"], None)
    return header["kid"], jwt.decode(receipt, key=key, algorithms=["EdDSA"])


def tampered(receipt):
    h, p, s = receipt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["reward_paid"] = "1000.00"
    forged = base64.urlsafe_b64encode(
        json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    ).rstrip(b"=")
    return f"{h}.{forged.decode()}.{s}"


def message(text, reward):
    meta = struct_pb2.Struct()
    meta.update(
        {"reward": reward, "capabilities": ["writing"], "complexity": "simple", "deadline": "2h"}
    )
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)]
        ),
        configuration=SendMessageConfiguration(return_immediately=True),
        metadata=meta,
    )


async def worker_does(http, base, token, task_id):
    auth = {"Authorization": f"Bearer {token}"}
    r = await http.post(
        f"{base}/v1/tasks/{task_id}/claim", json={"estimated_duration": 600}, headers=auth
    )
    check(r.status_code == 200, f"worker claims {task_id}: {r.status_code} {r.text}")
    return auth


async def worker_submits(http, base, auth, task_id):
    r = await http.post(
        f"{base}/v1/tasks/{task_id}/submit",
        json={"submission_data": {"content": WORK}},
        headers=auth,
    )
    check(r.status_code == 202, f"worker submits {task_id}: {r.status_code} {r.text}")


async def first(stream):
    async for event in stream:
        return event
    raise SystemExit("a2a_sdk.py: no response")


async def flow(base, poster_token, worker_token, worker_handle):
    plain = httpx.AsyncClient(timeout=30)
    jwks = (await plain.get(f"{base}/.well-known/jwks.json")).json()
    verifier = create_signature_verifier(key_provider(jwks), ["EdDSA"])

    # Cards, resolved from their base URLs, signatures verified by the SDK's own verifier.
    platform_card = await A2ACardResolver(plain, base).get_agent_card(
        signature_verifier=verifier
    )
    check(platform_card.name == "Nervix", "platform card name")
    check(platform_card.supported_interfaces[0].url == f"{base}/a2a", "platform interface")
    check(platform_card.supported_interfaces[0].protocol_version == "1.0", "version 1.0")
    check(platform_card.capabilities.streaming, "streaming")
    agent_base = f"{base}/a2a/agents/{worker_handle}"
    agent_card = await A2ACardResolver(plain, agent_base).get_agent_card(
        signature_verifier=verifier
    )
    check(agent_card.supported_interfaces[0].url == agent_base, "agent interface")
    ext = agent_card.capabilities.extensions[0]
    check(ext.uri == RECEIPTS_EXTENSION and not ext.required, "receipts extension")
    check(ext.params["agentHandle"] == worker_handle, "extension names the agent")
    forged = type(agent_card)()
    forged.CopyFrom(agent_card)
    forged.name = "Someone else"
    try:
        verifier(forged)
        raise SystemExit("a2a_sdk.py: a changed card verified")
    except InvalidSignaturesError:
        pass

    http = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {poster_token}"})
    agent = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(agent_card)
    platform = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(
        platform_card
    )

    # SendMessage at the worker's interface → a Nervix task; the worker completes it.
    sent = await first(agent.send_message(message("Write the incident report", "4.00")))
    task = sent.task
    check(task.status.state == TaskState.TASK_STATE_SUBMITTED, f"submitted: {task.status}")
    r = await http.get(f"{base}/v1/tasks/{task.id}")
    check(r.status_code == 200 and r.json()["title"] == "Write the incident report", r.text)
    auth = await worker_does(plain, base, worker_token, task.id)
    await worker_submits(plain, base, auth, task.id)

    # Working until the receipt is issued (a moment after the acceptance), with no artifact.
    done = await agent.get_task(GetTaskRequest(id=task.id))
    for _ in range(200):
        if done.status.state != TaskState.TASK_STATE_WORKING:
            break
        check(not done.artifacts, f"no artifact before the receipt: {done}")
        await asyncio.sleep(0.05)
        done = await agent.get_task(GetTaskRequest(id=task.id))
    check(done.status.state == TaskState.TASK_STATE_COMPLETED, f"completed: {done.status}")
    parts = done.artifacts[0].parts
    check(parts[0].text == WORK, "the artifact holds the work")
    quality = parts[1].data.struct_value
    receipt = quality["receipt"]
    check(quality["qualityScore"] >= 60, "quality score in the artifact")

    # The receipt: PyJWT verifies it with the JWKS; a changed one it refuses.
    kid, claims = verify_receipt(receipt, jwks)
    check(claims["task"]["id"] == task.id, "receipt task")
    check(claims["agent"]["handle"] == worker_handle, "receipt agent")
    check(claims["reward_paid"] == "4.00", "receipt reward")
    check(claims["reputation_after"]["level"], "receipt reputation")
    try:
        verify_receipt(tampered(receipt), jwks)
        raise SystemExit("a2a_sdk.py: a tampered receipt verified")
    except jwt.InvalidSignatureError:
        pass

    listed = await platform.list_tasks(ListTasksRequest())
    check(task.id in [t.id for t in listed.tasks], "ListTasks lists it")

    other = (await first(platform.send_message(message("Another report", "2.00")))).task
    cancelled = await platform.cancel_task(CancelTaskRequest(id=other.id))
    check(cancelled.status.state == TaskState.TASK_STATE_CANCELED, "cancelled")

    # Streaming: the state changes arrive in order.
    streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(
        platform_card
    )
    seen = []
    events = asyncio.Queue()

    async def follow():
        async for ev in streaming.send_message(message("Write the streamed report", "3.00")):
            await events.put(ev)
        await events.put(None)

    follower = asyncio.create_task(follow())

    async def next_event():
        return await asyncio.wait_for(events.get(), 20)

    ev = await next_event()
    streamed = ev.task
    seen.append(TaskState.Name(streamed.status.state))
    auth = await worker_does(plain, base, worker_token, streamed.id)
    ev = await next_event()
    seen.append(TaskState.Name(ev.status_update.status.state))
    await worker_submits(plain, base, auth, streamed.id)
    while (ev := await next_event()) is not None:
        if ev.HasField("artifact_update"):
            seen.append("ARTIFACT")
        elif ev.HasField("status_update"):
            state = TaskState.Name(ev.status_update.status.state)
            # Working is said again when the work is accepted and its receipt not yet issued.
            if state != seen[-1]:
                seen.append(state)
    await follower
    check(
        seen
        == ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "ARTIFACT", "TASK_STATE_COMPLETED"],
        f"stream order: {seen}",
    )
    print(json.dumps({"receipt": receipt, "kid": kid, "stream": seen}))


async def verify_after_rotation(jwks_url, receipt, old_kid):
    jwks = httpx.get(jwks_url).json()
    kids = [k["kid"] for k in jwks["keys"]]
    check(len(kids) >= 2 and kids[0] != old_kid, f"a newer key signs now: {kids}")
    kid, claims = verify_receipt(receipt, jwks)
    check(kid == old_kid, "the receipt names its old key")
    try:
        verify_receipt(tampered(receipt), jwks)
        raise SystemExit("a2a_sdk.py: a tampered receipt verified")
    except jwt.InvalidSignatureError:
        pass
    print(json.dumps({"verified": True, "kid": kid, "task": claims["task"]["id"]}))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "flow":
        asyncio.run(flow(*args))
    elif mode == "verify":
        asyncio.run(verify_after_rotation(*args))
    else:
        raise SystemExit(f"unknown mode {mode}")
