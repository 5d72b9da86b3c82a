// C++ side of scripts/schema-portability.sh.
//
// Usage: interop RESPONSES_FILE REQUESTS_OUT
//
// Compiled against the C++ code flatc generated from schema/kms.fbs
// (kms_generated.h) and the flatbuffers headers of the same version. It
//   1. verifies and decodes RESPONSES_FILE, response frames written by the
//      Rust encoder (`kms-interop write-responses`), checking every field
//      against the values in scripts/tools/interop.rs;
//   2. builds the request frames `kms-interop check-requests` expects and
//      writes them to REQUESTS_OUT.
// Frames are a little-endian u32 length followed by one flatbuffer.
// Exits non-zero on any mismatch.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "kms_generated.h"

using namespace kms::v1;

namespace {

[[noreturn]] void fail(const std::string &msg) {
  std::fprintf(stderr, "interop.cpp: %s\n", msg.c_str());
  std::exit(1);
}

void expect(bool ok, const std::string &what) {
  if (!ok) fail(what);
}

std::string str(const flatbuffers::String *s) { return s ? s->str() : std::string("<absent>"); }

std::vector<uint8_t> bytes(const flatbuffers::Vector<uint8_t> *v) {
  return v ? std::vector<uint8_t>(v->begin(), v->end()) : std::vector<uint8_t>();
}

void expect_str(const flatbuffers::String *got, const std::string &want, const std::string &what) {
  expect(got && got->str() == want, what + ": got \"" + str(got) + "\", expected \"" + want + "\"");
}

void expect_bytes(const flatbuffers::Vector<uint8_t> *got, const std::vector<uint8_t> &want,
                  const std::string &what) {
  expect(got && bytes(got) == want, what + ": bytes differ");
}

std::vector<std::vector<uint8_t>> split_frames(const std::vector<uint8_t> &data) {
  std::vector<std::vector<uint8_t>> frames;
  size_t i = 0;
  while (i < data.size()) {
    expect(i + 4 <= data.size(), "truncated length prefix");
    uint32_t n = uint32_t(data[i]) | uint32_t(data[i + 1]) << 8 | uint32_t(data[i + 2]) << 16 |
                 uint32_t(data[i + 3]) << 24;
    i += 4;
    expect(n != 0 && i + n <= data.size(), "bad frame length");
    frames.emplace_back(data.begin() + i, data.begin() + i + n);
    i += n;
  }
  return frames;
}

void check_metadata(const std::string &what, const KeyMetadata *m, bool enabled, KeyState state,
                    Origin origin, uint32_t version) {
  expect(m != nullptr, what + ": no metadata");
  expect_str(m->key_id(), "k-1", what + ".key_id");
  expect_str(m->arn(), "arn:aws:kms:us-east-1:000000000000:key/k-1", what + ".arn");
  expect(m->creation_date() == 1700000000, what + ".creation_date");
  expect(m->enabled() == enabled, what + ".enabled");
  expect_str(m->description(), "interop key", what + ".description");
  expect(m->key_state() == state, what + ".key_state");
  expect(m->origin() == origin, what + ".origin");
  expect(m->current_version() == version, what + ".current_version");
}

void check_error(const std::string &what, const Error *e, const std::string &name,
                 const std::string &message) {
  expect(e != nullptr, what + ": no error");
  expect_str(e->name(), name, what + ".name");
  expect_str(e->message(), message, what + ".message");
}

void check_batch(const Response *r) {
  const auto *batch = r->batch();
  expect(batch && batch->size() == 10, "batch of 10 outcomes");
  for (uint32_t i = 0; i < 9; i++) {
    expect(uint8_t(batch->Get(i)->output_type()) == i + 1, "item " + std::to_string(i) + " type");
    expect(batch->Get(i)->error() == nullptr, "item " + std::to_string(i) + " has an error");
  }

  auto ck = batch->Get(0)->output_as_CreateKeyResponse();
  expect(ck != nullptr, "CreateKey");
  check_metadata("CreateKey", ck->metadata(), true, KeyState_Enabled, Origin_KMSD, 1);
  auto dk = batch->Get(1)->output_as_DescribeKeyResponse();
  expect(dk != nullptr, "DescribeKey");
  check_metadata("DescribeKey", dk->metadata(), false, KeyState_Disabled, Origin_EXTERNAL, 2);

  auto lk = batch->Get(2)->output_as_ListKeysResponse();
  expect(lk && lk->keys() && lk->keys()->size() == 2, "ListKeys.keys");
  expect_str(lk->keys()->Get(0)->key_id(), "k-1", "ListKeys.keys[0].key_id");
  expect_str(lk->keys()->Get(0)->arn(), "arn:aws:kms:us-east-1:000000000000:key/k-1", "ListKeys.keys[0].arn");
  expect_str(lk->keys()->Get(1)->key_id(), "k-2", "ListKeys.keys[1].key_id");
  expect_str(lk->keys()->Get(1)->arn(), "arn:aws:kms:us-east-1:000000000000:key/k-2", "ListKeys.keys[1].arn");
  expect_str(lk->next_marker(), "k-2", "ListKeys.next_marker");
  expect(lk->truncated(), "ListKeys.truncated");

  std::vector<uint8_t> key32;
  for (int i = 0; i < 32; i++) key32.push_back(uint8_t(i));
  auto gdk = batch->Get(3)->output_as_GenerateDataKeyResponse();
  expect(gdk != nullptr, "GenerateDataKey");
  expect_str(gdk->key_id(), "k-1", "GenerateDataKey.key_id");
  expect_bytes(gdk->plaintext(), key32, "GenerateDataKey.plaintext");
  expect_bytes(gdk->ciphertext_blob(), std::vector<uint8_t>(8, 0xd0),
               "GenerateDataKey.ciphertext_blob");

  auto gdkw = batch->Get(4)->output_as_GenerateDataKeyWithoutPlaintextResponse();
  expect(gdkw != nullptr, "GenerateDataKeyWithoutPlaintext");
  expect_str(gdkw->key_id(), "k-1", "GenerateDataKeyWithoutPlaintext.key_id");
  expect_bytes(gdkw->ciphertext_blob(), std::vector<uint8_t>(8, 0xd1),
               "GenerateDataKeyWithoutPlaintext.ciphertext_blob");

  auto enc = batch->Get(5)->output_as_EncryptResponse();
  expect(enc != nullptr, "Encrypt");
  expect_str(enc->key_id(), "k-1", "Encrypt.key_id");
  const std::string ct = "ciphertext";
  expect_bytes(enc->ciphertext_blob(), std::vector<uint8_t>(ct.begin(), ct.end()),
               "Encrypt.ciphertext_blob");

  auto dec = batch->Get(6)->output_as_DecryptResponse();
  expect(dec != nullptr, "Decrypt");
  expect_str(dec->key_id(), "k-1", "Decrypt.key_id");
  const std::string pt = "hello from rust";
  expect_bytes(dec->plaintext(), std::vector<uint8_t>(pt.begin(), pt.end()), "Decrypt.plaintext");

  auto re = batch->Get(7)->output_as_ReEncryptResponse();
  expect(re != nullptr, "ReEncrypt");
  expect_str(re->source_key_id(), "k-1", "ReEncrypt.source_key_id");
  expect_str(re->key_id(), "k-2", "ReEncrypt.key_id");
  expect_bytes(re->ciphertext_blob(), {0xe0, 0xe1}, "ReEncrypt.ciphertext_blob");

  auto rnd = batch->Get(8)->output_as_GenerateRandomResponse();
  expect(rnd != nullptr, "GenerateRandom");
  expect_bytes(rnd->plaintext(), std::vector<uint8_t>(16, 7), "GenerateRandom.plaintext");

  expect(batch->Get(9)->output_type() == Output_NONE, "item 9 has no output");
  check_error("item 9", batch->Get(9)->error(), "NotFoundException", "key k-9 does not exist");
}

// 1004: optional scalars set and absent, tags.
void check_lifecycle(const Response *r) {
  const auto *batch = r->batch();
  expect(batch && batch->size() == 3, "lifecycle batch of 3 outcomes");
  auto dk = batch->Get(0)->output_as_DescribeKeyResponse();
  expect(dk != nullptr, "lifecycle DescribeKey");
  const KeyMetadata *m = dk->metadata();
  check_metadata("lifecycle", m, false, KeyState_PendingDeletion, Origin_EXTERNAL, 1);
  expect(m->deletion_date().has_value() && *m->deletion_date() == 1700604800,
         "lifecycle.deletion_date");
  expect(m->pending_deletion_window_in_days() == flatbuffers::Optional<uint32_t>(7),
         "lifecycle.pending_deletion_window_in_days");
  expect(!m->valid_to().has_value(), "lifecycle.valid_to is absent");
  expect(!m->expiration_model().has_value(), "lifecycle.expiration_model is absent");

  auto rs = batch->Get(1)->output_as_GetKeyRotationStatusResponse();
  expect(rs != nullptr, "GetKeyRotationStatus");
  expect_str(rs->key_id(), "k-1", "GetKeyRotationStatus.key_id");
  expect(rs->key_rotation_enabled(), "GetKeyRotationStatus.key_rotation_enabled");
  expect(rs->rotation_period_in_days() == flatbuffers::Optional<uint32_t>(365),
         "GetKeyRotationStatus.rotation_period_in_days");
  expect(rs->next_rotation_date() == flatbuffers::Optional<int64_t>(1731536000),
         "GetKeyRotationStatus.next_rotation_date");
  expect(!rs->on_demand_rotation_start_date().has_value(),
         "GetKeyRotationStatus.on_demand_rotation_start_date is absent");

  auto lt = batch->Get(2)->output_as_ListResourceTagsResponse();
  expect(lt && lt->tags() && lt->tags()->size() == 2, "ListResourceTags.tags");
  expect_str(lt->tags()->Get(0)->tag_key(), "team", "ListResourceTags.tags[0].tag_key");
  expect_str(lt->tags()->Get(0)->tag_value(), "pay", "ListResourceTags.tags[0].tag_value");
  expect_str(lt->tags()->Get(1)->tag_key(), "empty", "ListResourceTags.tags[1].tag_key");
  expect_str(lt->tags()->Get(1)->tag_value(), "", "ListResourceTags.tags[1].tag_value");
  expect(lt->next_marker() == nullptr && !lt->truncated(), "ListResourceTags: last page");
}

void check_responses(const char *path) {
  std::ifstream in(path, std::ios::binary);
  expect(bool(in), std::string("cannot read ") + path);
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto frames = split_frames(data);
  expect(frames.size() == 4, "4 response frames");

  std::vector<const Response *> rs;
  uint64_t id = 1001;
  for (auto &f : frames) {
    flatbuffers::Verifier v(f.data(), f.size());
    expect(v.VerifyBuffer<Response>(nullptr), "response frame fails verification");
    const Response *r = flatbuffers::GetRoot<Response>(f.data());
    expect(r->protocol_version() == 1, "protocol_version");
    expect(r->request_id() == id++, "request_id");
    rs.push_back(r);
  }
  check_batch(rs[0]);
  expect(rs[1]->outcome() == nullptr && rs[1]->batch() == nullptr, "frame 2 has only an error");
  check_error("frame 2", rs[1]->error(), "ValidationException", "unsupported protocol version 9");
  expect(rs[2]->error() == nullptr && rs[2]->outcome() != nullptr, "frame 3 has an outcome");
  expect(rs[2]->outcome()->output_type() == Output_NONE, "frame 3 has no output");
  check_error("frame 3", rs[2]->outcome()->error(), "DisabledException", "key k-1 is disabled");
  check_lifecycle(rs[3]);
}

// ------------------------------------------------------------------ requests

using Pairs = std::vector<std::pair<const char *, const char *>>;

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<ContextEntry>>> context(
    flatbuffers::FlatBufferBuilder &fbb, const Pairs &pairs) {
  std::vector<flatbuffers::Offset<ContextEntry>> entries;
  for (const auto &p : pairs) entries.push_back(CreateContextEntryDirect(fbb, p.first, p.second));
  return fbb.CreateVector(entries);
}

void append_frame(std::vector<uint8_t> &out, flatbuffers::FlatBufferBuilder &fbb) {
  uint32_t n = fbb.GetSize();
  for (int i = 0; i < 4; i++) out.push_back(uint8_t(n >> (8 * i)));
  out.insert(out.end(), fbb.GetBufferPointer(), fbb.GetBufferPointer() + n);
}

void write_requests(const char *path) {
  std::vector<uint8_t> out;
  {
    // 1001: a batch of GenerateRandom(32) and an Encrypt with a context.
    flatbuffers::FlatBufferBuilder fbb;
    auto random = CreateGenerateRandomRequest(fbb, 32);
    const std::string pt = "hello from another language";
    std::vector<uint8_t> plaintext(pt.begin(), pt.end());
    auto ctx = context(fbb, {{"tenant", "acme"}, {"purpose", "interop"}});
    auto encrypt = CreateEncryptRequest(fbb, fbb.CreateString("alias/interop"),
                                        fbb.CreateVector(plaintext), ctx);
    std::vector<flatbuffers::Offset<BatchItem>> items = {
        CreateBatchItem(fbb, Operation_GenerateRandomRequest, random.Union()),
        CreateBatchItem(fbb, Operation_EncryptRequest, encrypt.Union()),
    };
    auto batch = fbb.CreateVector(items);
    fbb.Finish(CreateRequest(fbb, 1, 1001, Operation_NONE, 0, batch));
    append_frame(out, fbb);
  }
  {
    // 1002: GenerateDataKey with key_spec AES_256 and a context.
    flatbuffers::FlatBufferBuilder fbb;
    auto ctx = context(fbb, {{"tenant", "acme"}});
    auto op = CreateGenerateDataKeyRequest(fbb, fbb.CreateString("alias/interop"), 0,
                                           DataKeySpec_AES_256, ctx);
    fbb.Finish(CreateRequest(fbb, 1, 1002, Operation_GenerateDataKeyRequest, op.Union()));
    append_frame(out, fbb);
  }
  {
    // 1003: ReEncrypt without a source key id or source context.
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<uint8_t> blob = {1, 2, 3, 255};
    auto ctx = context(fbb, {{"k", "v"}});
    auto op = CreateReEncryptRequest(fbb, fbb.CreateVector(blob), 0, 0,
                                     fbb.CreateString("alias/next"), ctx);
    fbb.Finish(CreateRequest(fbb, 1, 1003, Operation_ReEncryptRequest, op.Union()));
    append_frame(out, fbb);
  }
  {
    // 1004: ScheduleKeyDeletion with a window of 0 (a value, not absent),
    // EnableKeyRotation without a period (absent), TagResource.
    flatbuffers::FlatBufferBuilder fbb;
    auto key_id = fbb.CreateString("k-1");
    auto schedule =
        CreateScheduleKeyDeletionRequest(fbb, key_id, flatbuffers::Optional<uint32_t>(0));
    auto rotation = CreateEnableKeyRotationRequest(fbb, key_id);
    std::vector<flatbuffers::Offset<Tag>> tags = {CreateTagDirect(fbb, "team", "pay")};
    auto tag_resource = CreateTagResourceRequest(fbb, key_id, fbb.CreateVector(tags));
    std::vector<flatbuffers::Offset<BatchItem>> items = {
        CreateBatchItem(fbb, Operation_ScheduleKeyDeletionRequest, schedule.Union()),
        CreateBatchItem(fbb, Operation_EnableKeyRotationRequest, rotation.Union()),
        CreateBatchItem(fbb, Operation_TagResourceRequest, tag_resource.Union()),
    };
    auto batch = fbb.CreateVector(items);
    fbb.Finish(CreateRequest(fbb, 1, 1004, Operation_NONE, 0, batch));
    append_frame(out, fbb);
  }
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char *>(out.data()), std::streamsize(out.size()));
  expect(bool(f), std::string("cannot write ") + path);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 3) fail("usage: interop RESPONSES_FILE REQUESTS_OUT");
  check_responses(argv[1]);
  write_requests(argv[2]);
  std::printf("interop.cpp: %s checked; wrote %s\n", argv[1], argv[2]);
  return 0;
}
