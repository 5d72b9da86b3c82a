"""Python side of scripts/schema-portability.sh.

Usage: interop.py GEN_DIR RESPONSES_FILE REQUESTS_OUT

GEN_DIR holds the Python code flatc generated from schema/kms.fbs (package
kms.v1). The program
  1. decodes RESPONSES_FILE, response frames written by the Rust encoder
     (`kms-interop write-responses`), and checks every field against the
     values in scripts/tools/interop.rs;
  2. builds the request frames that `kms-interop check-requests` expects and
     writes them to REQUESTS_OUT.
Frames are a little-endian u32 length followed by one flatbuffer.
Exits non-zero on any mismatch.
"""

import struct
import sys

gen_dir, responses_file, requests_out = sys.argv[1:4]
sys.path.insert(0, gen_dir)

import flatbuffers  # noqa: E402
from kms.v1 import (  # noqa: E402
    BatchItem,
    ContextEntry,
    CreateKeyResponse,
    DataKeySpec,
    DecryptResponse,
    DescribeKeyResponse,
    EnableKeyRotationRequest,
    EncryptRequest,
    EncryptResponse,
    GenerateDataKeyRequest,
    GenerateDataKeyResponse,
    GenerateDataKeyWithoutPlaintextResponse,
    GenerateRandomRequest,
    GenerateRandomResponse,
    GetKeyRotationStatusResponse,
    KeyState,
    ListKeysResponse,
    ListResourceTagsResponse,
    Operation,
    Origin,
    Output,
    ReEncryptRequest,
    ReEncryptResponse,
    Request,
    Response,
    ScheduleKeyDeletionRequest,
    Tag,
    TagResourceRequest,
)

PROTOCOL_VERSION = 1


def fail(msg):
    print(f"interop.py: {msg}", file=sys.stderr)
    sys.exit(1)


def expect(what, got, want):
    if got != want:
        fail(f"{what}: got {got!r}, expected {want!r}")


def split_frames(data):
    frames, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            fail("truncated length prefix")
        (n,) = struct.unpack_from("<I", data, i)
        i += 4
        if n == 0 or i + n > len(data):
            fail(f"bad frame length {n}")
        frames.append(bytearray(data[i : i + n]))
        i += n
    return frames


def ubytes(obj, field):
    """A [ubyte] field as bytes, without numpy."""
    n = getattr(obj, field + "Length")()
    return bytes(getattr(obj, field)(j) for j in range(n))


def union(table, cls):
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    return obj


# ------------------------------------------------------------------ responses


def check_metadata(what, m, enabled, state, origin, version):
    expect(what + ".key_id", m.KeyId(), b"k-1")
    expect(what + ".arn", m.Arn(), b"arn:aws:kms:us-east-1:000000000000:key/k-1")
    expect(what + ".creation_date", m.CreationDate(), 1_700_000_000)
    expect(what + ".enabled", m.Enabled(), enabled)
    expect(what + ".description", m.Description(), b"interop key")
    expect(what + ".key_state", m.KeyState(), state)
    expect(what + ".origin", m.Origin(), origin)
    expect(what + ".current_version", m.CurrentVersion(), version)


def check_error(what, e, name, message):
    if e is None:
        fail(f"{what}: no error")
    expect(what + ".name", e.Name(), name)
    expect(what + ".message", e.Message(), message)


def check_batch(r):
    expect("batch length", r.BatchLength(), 10)
    items = [r.Batch(i) for i in range(r.BatchLength())]
    for i, o in enumerate(items[:9]):
        expect(f"item {i} output type", o.OutputType(), i + 1)
        if o.Error() is not None:
            fail(f"item {i} has an error")
    out = [o.Output() for o in items]

    x = union(out[0], CreateKeyResponse.CreateKeyResponse)
    check_metadata("CreateKey", x.Metadata(), True, KeyState.KeyState.Enabled, Origin.Origin.KMSD, 1)
    x = union(out[1], DescribeKeyResponse.DescribeKeyResponse)
    check_metadata(
        "DescribeKey", x.Metadata(), False, KeyState.KeyState.Disabled, Origin.Origin.EXTERNAL, 2
    )

    x = union(out[2], ListKeysResponse.ListKeysResponse)
    keys = [(x.Keys(i).KeyId(), x.Keys(i).Arn()) for i in range(x.KeysLength())]
    expect(
        "ListKeys.keys",
        keys,
        [(b"k-1", b"arn:aws:kms:us-east-1:000000000000:key/k-1"), (b"k-2", b"arn:aws:kms:us-east-1:000000000000:key/k-2")],
    )
    expect("ListKeys.next_marker", x.NextMarker(), b"k-2")
    expect("ListKeys.truncated", x.Truncated(), True)

    x = union(out[3], GenerateDataKeyResponse.GenerateDataKeyResponse)
    expect("GenerateDataKey.key_id", x.KeyId(), b"k-1")
    expect("GenerateDataKey.plaintext", ubytes(x, "Plaintext"), bytes(range(32)))
    expect("GenerateDataKey.ciphertext_blob", ubytes(x, "CiphertextBlob"), b"\xd0" * 8)

    x = union(out[4], GenerateDataKeyWithoutPlaintextResponse.GenerateDataKeyWithoutPlaintextResponse)
    expect("GenerateDataKeyWithoutPlaintext.key_id", x.KeyId(), b"k-1")
    expect("GenerateDataKeyWithoutPlaintext.ciphertext_blob", ubytes(x, "CiphertextBlob"), b"\xd1" * 8)

    x = union(out[5], EncryptResponse.EncryptResponse)
    expect("Encrypt.key_id", x.KeyId(), b"k-1")
    expect("Encrypt.ciphertext_blob", ubytes(x, "CiphertextBlob"), b"ciphertext")

    x = union(out[6], DecryptResponse.DecryptResponse)
    expect("Decrypt.key_id", x.KeyId(), b"k-1")
    expect("Decrypt.plaintext", ubytes(x, "Plaintext"), b"hello from rust")

    x = union(out[7], ReEncryptResponse.ReEncryptResponse)
    expect("ReEncrypt.source_key_id", x.SourceKeyId(), b"k-1")
    expect("ReEncrypt.key_id", x.KeyId(), b"k-2")
    expect("ReEncrypt.ciphertext_blob", ubytes(x, "CiphertextBlob"), b"\xe0\xe1")

    x = union(out[8], GenerateRandomResponse.GenerateRandomResponse)
    expect("GenerateRandom.plaintext", ubytes(x, "Plaintext"), b"\x07" * 16)

    expect("item 9 output type", items[9].OutputType(), Output.Output.NONE)
    check_error("item 9", items[9].Error(), b"NotFoundException", b"key k-9 does not exist")


def check_lifecycle(r):
    """1004: optional scalars set and absent, tags."""
    expect("lifecycle batch length", r.BatchLength(), 3)
    items = [r.Batch(i) for i in range(3)]
    for o, t in zip(
        items,
        (
            Output.Output.DescribeKeyResponse,
            Output.Output.GetKeyRotationStatusResponse,
            Output.Output.ListResourceTagsResponse,
        ),
    ):
        expect("lifecycle output type", o.OutputType(), t)
    m = union(items[0].Output(), DescribeKeyResponse.DescribeKeyResponse).Metadata()
    check_metadata("lifecycle", m, False, KeyState.KeyState.PendingDeletion, Origin.Origin.EXTERNAL, 1)
    expect("lifecycle.deletion_date", m.DeletionDate(), 1_700_604_800)
    expect("lifecycle.pending_deletion_window_in_days", m.PendingDeletionWindowInDays(), 7)
    expect("lifecycle.valid_to (absent)", m.ValidTo(), None)
    expect("lifecycle.expiration_model (absent)", m.ExpirationModel(), None)

    x = union(items[1].Output(), GetKeyRotationStatusResponse.GetKeyRotationStatusResponse)
    expect("GetKeyRotationStatus.key_id", x.KeyId(), b"k-1")
    expect("GetKeyRotationStatus.key_rotation_enabled", x.KeyRotationEnabled(), True)
    expect("GetKeyRotationStatus.rotation_period_in_days", x.RotationPeriodInDays(), 365)
    expect("GetKeyRotationStatus.next_rotation_date", x.NextRotationDate(), 1_731_536_000)
    expect("GetKeyRotationStatus.on_demand_rotation_start_date", x.OnDemandRotationStartDate(), None)

    x = union(items[2].Output(), ListResourceTagsResponse.ListResourceTagsResponse)
    tags = [(x.Tags(i).TagKey(), x.Tags(i).TagValue()) for i in range(x.TagsLength())]
    expect("ListResourceTags.tags", tags, [(b"team", b"pay"), (b"empty", b"")])
    expect("ListResourceTags.next_marker", x.NextMarker(), None)
    expect("ListResourceTags.truncated", x.Truncated(), False)


def check_responses(path):
    with open(path, "rb") as f:
        frames = split_frames(f.read())
    expect("response frames", len(frames), 4)
    rs = [Response.Response.GetRootAs(buf, 0) for buf in frames]
    for r, rid in zip(rs, (1001, 1002, 1003, 1004)):
        expect("protocol_version", r.ProtocolVersion(), PROTOCOL_VERSION)
        expect("request_id", r.RequestId(), rid)

    check_batch(rs[0])

    expect("frame 2 has no outcome", rs[1].Outcome(), None)
    check_error(
        "frame 2 error", rs[1].Error(), b"ValidationException", b"unsupported protocol version 9"
    )

    expect("frame 3 has no frame error", rs[2].Error(), None)
    outcome = rs[2].Outcome()
    if outcome is None:
        fail("frame 3 has no outcome")
    expect("frame 3 output type", outcome.OutputType(), Output.Output.NONE)
    check_error("frame 3 outcome", outcome.Error(), b"DisabledException", b"key k-1 is disabled")

    check_lifecycle(rs[3])


# ------------------------------------------------------------------- requests


def context(b, start_vector, pairs):
    entries = []
    for k, v in pairs:
        key, value = b.CreateString(k), b.CreateString(v)
        ContextEntry.ContextEntryStart(b)
        ContextEntry.ContextEntryAddKey(b, key)
        ContextEntry.ContextEntryAddValue(b, value)
        entries.append(ContextEntry.ContextEntryEnd(b))
    start_vector(b, len(entries))
    for e in reversed(entries):
        b.PrependUOffsetTRelative(e)
    return b.EndVector()


def finish_request(b, request_id, op_type=None, op=None, batch=None):
    Request.RequestStart(b)
    Request.RequestAddProtocolVersion(b, PROTOCOL_VERSION)
    Request.RequestAddRequestId(b, request_id)
    if op is not None:
        Request.RequestAddOperationType(b, op_type)
        Request.RequestAddOperation(b, op)
    if batch is not None:
        Request.RequestAddBatch(b, batch)
    b.Finish(Request.RequestEnd(b))
    buf = bytes(b.Output())
    return struct.pack("<I", len(buf)) + buf


def batch_request():
    """1001: a batch of GenerateRandom(32) and an Encrypt with a context."""
    b = flatbuffers.Builder(1024)
    GenerateRandomRequest.GenerateRandomRequestStart(b)
    GenerateRandomRequest.GenerateRandomRequestAddNumberOfBytes(b, 32)
    random = GenerateRandomRequest.GenerateRandomRequestEnd(b)

    key_id = b.CreateString("alias/interop")
    plaintext = b.CreateByteVector(b"hello from another language")
    ctx = context(
        b,
        EncryptRequest.EncryptRequestStartEncryptionContextVector,
        [("tenant", "acme"), ("purpose", "interop")],
    )
    EncryptRequest.EncryptRequestStart(b)
    EncryptRequest.EncryptRequestAddKeyId(b, key_id)
    EncryptRequest.EncryptRequestAddPlaintext(b, plaintext)
    EncryptRequest.EncryptRequestAddEncryptionContext(b, ctx)
    encrypt = EncryptRequest.EncryptRequestEnd(b)

    items = []
    for op_type, op in (
        (Operation.Operation.GenerateRandomRequest, random),
        (Operation.Operation.EncryptRequest, encrypt),
    ):
        BatchItem.BatchItemStart(b)
        BatchItem.BatchItemAddOperationType(b, op_type)
        BatchItem.BatchItemAddOperation(b, op)
        items.append(BatchItem.BatchItemEnd(b))
    Request.RequestStartBatchVector(b, len(items))
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    batch = b.EndVector()
    return finish_request(b, 1001, batch=batch)


def generate_data_key_request():
    """1002: GenerateDataKey with key_spec AES_256 and a context."""
    b = flatbuffers.Builder(256)
    key_id = b.CreateString("alias/interop")
    ctx = context(
        b,
        GenerateDataKeyRequest.GenerateDataKeyRequestStartEncryptionContextVector,
        [("tenant", "acme")],
    )
    GenerateDataKeyRequest.GenerateDataKeyRequestStart(b)
    GenerateDataKeyRequest.GenerateDataKeyRequestAddKeyId(b, key_id)
    GenerateDataKeyRequest.GenerateDataKeyRequestAddKeySpec(b, DataKeySpec.DataKeySpec.AES_256)
    GenerateDataKeyRequest.GenerateDataKeyRequestAddEncryptionContext(b, ctx)
    op = GenerateDataKeyRequest.GenerateDataKeyRequestEnd(b)
    return finish_request(b, 1002, Operation.Operation.GenerateDataKeyRequest, op)


def re_encrypt_request():
    """1003: ReEncrypt without a source key id or source context."""
    b = flatbuffers.Builder(256)
    blob = b.CreateByteVector(bytes([1, 2, 3, 255]))
    dest = b.CreateString("alias/next")
    ctx = context(
        b,
        ReEncryptRequest.ReEncryptRequestStartDestinationEncryptionContextVector,
        [("k", "v")],
    )
    ReEncryptRequest.ReEncryptRequestStart(b)
    ReEncryptRequest.ReEncryptRequestAddCiphertextBlob(b, blob)
    ReEncryptRequest.ReEncryptRequestAddDestinationKeyId(b, dest)
    ReEncryptRequest.ReEncryptRequestAddDestinationEncryptionContext(b, ctx)
    op = ReEncryptRequest.ReEncryptRequestEnd(b)
    return finish_request(b, 1003, Operation.Operation.ReEncryptRequest, op)


def lifecycle_request():
    """1004: ScheduleKeyDeletion with a window of 0 (a value, not absent),
    EnableKeyRotation without a period (absent), TagResource."""
    b = flatbuffers.Builder(256)
    key_id = b.CreateString("k-1")
    ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequestStart(b)
    ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequestAddKeyId(b, key_id)
    ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequestAddPendingWindowInDays(b, 0)
    schedule = ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequestEnd(b)
    EnableKeyRotationRequest.EnableKeyRotationRequestStart(b)
    EnableKeyRotationRequest.EnableKeyRotationRequestAddKeyId(b, key_id)
    rotation = EnableKeyRotationRequest.EnableKeyRotationRequestEnd(b)
    tag_key, tag_value = b.CreateString("team"), b.CreateString("pay")
    Tag.TagStart(b)
    Tag.TagAddTagKey(b, tag_key)
    Tag.TagAddTagValue(b, tag_value)
    tag = Tag.TagEnd(b)
    TagResourceRequest.TagResourceRequestStartTagsVector(b, 1)
    b.PrependUOffsetTRelative(tag)
    tags = b.EndVector()
    TagResourceRequest.TagResourceRequestStart(b)
    TagResourceRequest.TagResourceRequestAddKeyId(b, key_id)
    TagResourceRequest.TagResourceRequestAddTags(b, tags)
    tag_resource = TagResourceRequest.TagResourceRequestEnd(b)
    items = []
    for op_type, op in (
        (Operation.Operation.ScheduleKeyDeletionRequest, schedule),
        (Operation.Operation.EnableKeyRotationRequest, rotation),
        (Operation.Operation.TagResourceRequest, tag_resource),
    ):
        BatchItem.BatchItemStart(b)
        BatchItem.BatchItemAddOperationType(b, op_type)
        BatchItem.BatchItemAddOperation(b, op)
        items.append(BatchItem.BatchItemEnd(b))
    Request.RequestStartBatchVector(b, len(items))
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    return finish_request(b, 1004, batch=b.EndVector())


check_responses(responses_file)
with open(requests_out, "wb") as f:
    f.write(
        batch_request() + generate_data_key_request() + re_encrypt_request() + lifecycle_request()
    )
print(f"interop.py: {responses_file} checked; wrote {requests_out}")
