"""Hypothesis strategies for any protobuf request message, built from its descriptor, and a way to call
every method of a gRPC service with them (the fuzz tests of both services use this).

Strings lean towards what handlers parse (JSON bodies, names, references, paths), and towards the names of
objects the test made (`known`: a job id, a blob digest), so handlers get past their look-ups; numbers towards edges.

Never a hang: a unary call must answer in time; a server stream must end in time (or be refused), except a watch
listed in ENDLESS, which must send its first message (or be refused) in time and may then stay open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

#: examples per method: a few dozen in CI; TENSORFLEET_FUZZ_EXAMPLES=10000 for the long run
EXAMPLES = int(os.environ.get("TENSORFLEET_FUZZ_EXAMPLES", "25"))

#: a handled refusal: the request was understood well enough to be turned down with a reason
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}

#: server streams that follow live state until the caller hangs up: the first message (the current state or the
#: history so far) or a refusal must come in time. Every other server stream must end in time.
ENDLESS = {
    "tensorfleet.v1.ControllerService": frozenset({"WatchJob", "WatchJobs", "WatchAgents"}),
    "tensorfleet.v1.AgentService": frozenset({"StreamTelemetry", "WatchTask"}),
}
#: server streams that send a finite answer (a file, a blob) and end
FINITE = {
    "tensorfleet.v1.ControllerService": frozenset({"DownloadModel", "DownloadArtifact"}),
    "tensorfleet.v1.AgentService": frozenset({"GetBlob", "GetPeerBlob"}),
}

_json_scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
_spec_keys = st.sampled_from(
    ["name", "algorithm", "dataset", "hyperparameters", "num_workers", "epochs", "gpus", "priority", "max_retries",
     "timeout", "constraints", "sweep", "model_name", "cv", "script", "target", "dataset_params", "bogus"]
)  # fmt: skip
_spec_values = st.sampled_from(
    ["random_forest", "svm", "noop", "sleep", "torch_mlp", "script", "iris", "wine", "digits", "nope", "", None, 0,
     -1, 2**40, 1.5, float("inf"), True, [], {}, {"n_estimators": -3}, {"params": {"C": "float:1:0"}}]
)  # fmt: skip
_job_specs = st.dictionaries(_spec_keys, _spec_values | _json, max_size=6).map(json.dumps)
_names = st.sampled_from(
    ["", "iris", "iris-rf", "iris-rf:1", "iris-rf@production", "iris-rf:999", "a" * 300, "../../etc/passwd",
     "user:" + "0" * 64, "j00000000", "x:y@z", "production", "test_accuracy=0.9", "noop", "\x00", "名前"]
)  # fmt: skip


#: addresses a handler may dial: loopback or unparsable only, so no generated host name is ever resolved
_ADDRESSES = st.sampled_from(
    ["", "127.0.0.1:1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-5", "127.0.0.1", "127.0.0.1:abc", ":50051",
     "[::1]:1", "no port", "127.0.0.1:1:2", "\x00:1"]
)  # fmt: skip


def _string(field: FieldDescriptor, known: Sequence[str]) -> st.SearchStrategy[str]:
    if field.name in ("address", "master_addr", "endpoint", "url"):
        return _ADDRESSES
    if field.name.endswith("_json"):
        return _job_specs | _json.map(json.dumps) | st.text(max_size=40)
    names = _names | st.text(max_size=60)
    return st.sampled_from(list(known)) | names if known else names


#: offsets, sequence numbers, indexes and counts are mostly small: a third of the signed ints are
_small = st.integers(0, 1000)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=256),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, -1, 2**31 - 1]) | _small,
    FieldDescriptor.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, -1, 2**62]) | _small,
    FieldDescriptor.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
}


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _value(field: FieldDescriptor, depth: int, known: Sequence[str]) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string(field, known)
    if field.type == FieldDescriptor.TYPE_ENUM:
        # the declared values (UNSPECIFIED too) and numbers no version declares: both need a reasoned answer
        return st.sampled_from([v.number for v in field.enum_type.values] + [-1, 99])
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, depth + 1, known)
    return _SCALARS[field.type]


def message(descriptor: Descriptor, depth: int = 0, known: Sequence[str] = ()) -> st.SearchStrategy[Message]:
    """Messages of this type with any subset of fields set, nested messages to a depth of 3; string fields
    sometimes hold one of `known` (ids and digests of real objects)."""
    cls = message_factory.GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    if depth <= 3:
        for field in descriptor.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
                optional[field.name] = st.dictionaries(
                    _value(key, depth, known), _value(value, depth, known), max_size=3
                )
            elif _is_repeated(field):
                optional[field.name] = st.lists(_value(field, depth, known), max_size=3)
            else:
                optional[field.name] = _value(field, depth, known)

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            if isinstance(value, dict):
                target = getattr(msg, name)
                for k, v in value.items():
                    if isinstance(v, Message):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif _is_repeated(field):
                getattr(msg, name).extend(value)
            elif isinstance(value, Message):
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=optional).map(build)


def methods(service: ServiceDescriptor, skip: tuple[str, ...] = ()) -> Iterator[Any]:
    return (m for m in service.methods if m.name not in skip)


def call(
    channel: grpc.Channel,
    service: ServiceDescriptor,
    method: Any,
    request: Any,
    timeout: float,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """Call `method` with `request` (a list of messages for client streams) and return its status.

    Never a hang: the call must answer within `timeout` seconds. A server stream in FINITE is read to its end;
    one in ENDLESS (a watch) until its first message, then the caller hangs up (OK). DEADLINE_EXCEEDED fails
    the test, with which rule it broke; so does a server stream listed in neither (say which it is)."""
    path = f"/{service.full_name}/{method.name}"
    ser: Callable[[Any], bytes] = lambda m: m.SerializeToString()  # noqa: E731
    out_cls = message_factory.GetMessageClass(method.output_type)
    rule = "answer"
    if method.client_streaming and method.server_streaming:  # Tasks: watches on a stream, each answered in time
        bidi = channel.stream_stream(path, request_serializer=ser, response_deserializer=out_cls.FromString)
        rule = "first message or end (watches on a stream)"

        def target() -> None:
            responses = bidi(iter(request), timeout=timeout, metadata=metadata)
            try:
                next(responses, None)  # the first watch's first item, or the end once the requests had none
            finally:
                responses.cancel()

    elif method.client_streaming:
        rpc = channel.stream_unary(path, request_serializer=ser, response_deserializer=out_cls.FromString)
        target = lambda: rpc(iter(request), timeout=timeout, metadata=metadata)  # noqa: E731
    elif method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=ser, response_deserializer=out_cls.FromString)
        endless = method.name in ENDLESS.get(service.full_name, ())
        assert endless or method.name in FINITE.get(service.full_name, ()), (
            f"{service.full_name}.{method.name} is a server stream in neither ENDLESS nor FINITE: say which"
        )
        rule = "first message (a watch)" if endless else "end of its stream"

        def target() -> None:
            responses = stream(request, timeout=timeout, metadata=metadata)
            if endless:
                try:
                    next(responses, None)  # the first message, or the end; a refusal raises
                finally:
                    responses.cancel()  # the caller hangs up; a no-op once the stream has ended
            else:
                for _ in responses:
                    pass

    else:
        unary = channel.unary_unary(path, request_serializer=ser, response_deserializer=out_cls.FromString)
        target = lambda: unary(request, timeout=timeout, metadata=metadata)  # noqa: E731
    try:
        target()
    except grpc.RpcError as exc:
        code = exc.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            raise AssertionError(f"{method.name}: no {rule} within {timeout:g} s, a hang ({request!r:.300})") from None
        if code in REFUSALS:
            assert exc.details(), f"{method.name}: {code.name} without a message"
        return code  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
