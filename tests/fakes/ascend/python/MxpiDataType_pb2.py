"""Test fake of MindX SDK's ``MxpiDataType_pb2`` (package ``MxTools``).

Built from the vendor's documented API and samples, not from the SDK itself: only the
tensor messages the samples use. The classes are real protobuf messages, so field types
are checked (``dataStr`` must be bytes), and they live in a private descriptor pool so
they never clash with other protobuf users (onnx, MindSpore) in one process.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REPEATED

# (message, [(field, number, type, label, message type name or None)])
_MESSAGES = [
    ("MxpiTensor", [
        ("deviceId", 1, _FIELD.TYPE_UINT32, _OPTIONAL, None),
        ("memType", 2, _FIELD.TYPE_INT32, _OPTIONAL, None),
        ("tensorDataPtr", 3, _FIELD.TYPE_UINT64, _OPTIONAL, None),
        ("tensorDataSize", 4, _FIELD.TYPE_INT32, _OPTIONAL, None),
        ("freeFunc", 5, _FIELD.TYPE_UINT64, _OPTIONAL, None),
        ("tensorShape", 6, _FIELD.TYPE_INT32, _REPEATED, None),
        ("dataStr", 7, _FIELD.TYPE_BYTES, _OPTIONAL, None),
        ("tensorDataType", 8, _FIELD.TYPE_INT32, _OPTIONAL, None),
    ]),
    ("MxpiTensorPackage", [
        ("tensorVec", 2, _FIELD.TYPE_MESSAGE, _REPEATED, ".MxTools.MxpiTensor"),
    ]),
    ("MxpiTensorPackageList", [
        ("tensorPackageVec", 1, _FIELD.TYPE_MESSAGE, _REPEATED, ".MxTools.MxpiTensorPackage"),
    ]),
]


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="MxpiDataType.proto", package="MxTools", syntax="proto3")
    for message_name, fields in _MESSAGES:
        message = proto.message_type.add(name=message_name)
        for name, number, kind, label, type_name in fields:
            field = message.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
    return proto


_POOL = descriptor_pool.DescriptorPool()
DESCRIPTOR = _POOL.Add(_file_proto())

MxpiTensor = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("MxTools.MxpiTensor"))
MxpiTensorPackage = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("MxTools.MxpiTensorPackage"))
MxpiTensorPackageList = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("MxTools.MxpiTensorPackageList"))
