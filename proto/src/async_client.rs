//! An async client (feature `tokio`): one Unix socket connection shared by
//! many tasks, each with its own requests in flight.
//!
//! [`AsyncClient`] is cheap to clone; every clone uses the same connection.
//! A call encodes its request on the calling task, registers a `oneshot`
//! sender under the request id and hands the frame to a writer task, which
//! coalesces whatever frames are queued into one write. A reader task splits
//! the incoming byte stream into response frames and completes the sender
//! registered under each response's id, so answers may arrive in any order.
//!
//! Calls are cancel-safe: a dropped call future unregisters itself, and a
//! frame, once queued, is written whole (a half-written frame would corrupt
//! the stream for every other caller).
//!
//! When the connection fails or closes, every pending call fails with
//! [`ClientError::Io`], and so does every later call: connect again to
//! continue. A response that cannot be framed or decoded is treated the same
//! way (the stream can no longer be trusted), except that the pending calls
//! get the [`ErrorKind::Serialization`] error that says why.
//!
//! Keep the number of requests in flight reasonable: the daemon caps the
//! requests in flight per connection and stops reading beyond the cap; the
//! writer then waits (backpressure) while the reader keeps collecting answers.

use crate::client::{batch_answer, mismatch, single_answer, ClientError, ServerUid};
use crate::codec::{decode_response, RequestEncoder};
use crate::error::{ErrorKind, KmsError};
use crate::frame::{self, FrameDecoder, DEFAULT_MAX_FRAME};
use crate::types::*;
use bytes::BytesMut;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// Frames queued for the writer task before callers wait for room.
const WRITE_QUEUE: usize = 1024;

/// Bytes the writer coalesces into one write at most (a single larger frame
/// is still written whole).
const COALESCE_BYTES: usize = 256 * 1024;

/// What a pending call is completed with.
type Completion = Result<ResponseBody, ClientError>;

/// Why the connection is no longer usable; turned into a fresh
/// [`ClientError`] for every call it fails (`io::Error` is not `Clone`).
#[derive(Clone, Debug)]
enum Failure {
    Io(io::ErrorKind, String),
    Kms(KmsError),
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        Failure::Io(e.kind(), e.to_string())
    }

    fn to_error(&self) -> ClientError {
        match self {
            Failure::Io(kind, msg) => ClientError::Io(io::Error::new(*kind, msg.clone())),
            Failure::Kms(e) => ClientError::Kms(e.clone()),
        }
    }

    /// The error for calls made after the connection failed: always Io.
    fn closed_error(&self) -> ClientError {
        match self {
            Failure::Io(..) => self.to_error(),
            Failure::Kms(e) => ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("connection closed after a protocol error: {e}"),
            )),
        }
    }
}

/// State shared by the handles and the two I/O tasks.
#[derive(Default)]
struct Pending {
    /// Calls waiting for their answer, by request id.
    calls: HashMap<u64, oneshot::Sender<Completion>>,
    /// Set once, when the connection fails; no call is registered after.
    failed: Option<Failure>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock leaves the map consistent (every
        // operation on it is a single insert/remove/drain).
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection failed and fails every pending call.
    fn fail_all(&self, failure: Failure) {
        let calls = {
            let mut p = self.lock();
            if p.failed.is_none() {
                p.failed = Some(failure.clone());
            }
            std::mem::take(&mut p.calls)
        };
        for (_, tx) in calls {
            let _ = tx.send(Err(failure.to_error()));
        }
    }

    /// Completes the call registered under `id`; gives the body back when
    /// no call is registered under it.
    fn complete(&self, id: u64, body: ResponseBody) -> Option<ResponseBody> {
        let tx = self.lock().calls.remove(&id);
        match tx {
            Some(tx) => {
                // The caller may have gone away; its answer is dropped.
                let _ = tx.send(Ok(body));
                None
            }
            None => Some(body),
        }
    }
}

/// Owned by the handles; dropping the last handle stops both tasks.
struct Inner {
    shared: Arc<Shared>,
    frames: mpsc::Sender<Zeroizing<Vec<u8>>>,
    /// Request encoder. Held only while encoding (no await inside).
    encoder: Mutex<RequestEncoder>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer task ends when the frame channel closes (dropping its
        // write half shuts the socket's write side); the reader would wait
        // for the daemon to close, so stop it now.
        self.reader.abort();
    }
}

/// An async connection to kmsd, shared by clones. See the module docs.
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.inner.shared.lock();
        f.debug_struct("AsyncClient")
            .field("pending", &p.calls.len())
            .field("failed", &p.failed.is_some())
            .finish()
    }
}

/// Unregisters a call when its future is dropped before it was answered.
struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // A no-op when the reader (or a failure) already took the sender.
        self.shared.lock().calls.remove(&self.id);
    }
}

impl AsyncClient {
    /// Connects to the daemon's socket. Must be called within a tokio
    /// runtime: it spawns the connection's reader and writer tasks.
    ///
    /// On the default socket path the daemon must run as the caller's uid
    /// or root, as for the blocking client
    /// ([`crate::client::Client::connect`]).
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<AsyncClient> {
        let path = path.as_ref();
        AsyncClient::connect_expecting(path, ServerUid::default_for(path)).await
    }

    /// Connects and checks, before anything is sent, that the server runs
    /// as `expected` (SO_PEERCRED; see
    /// [`crate::client::Client::connect_expecting`]). Must be called within
    /// a tokio runtime.
    pub async fn connect_expecting(
        path: impl AsRef<Path>,
        expected: ServerUid,
    ) -> io::Result<AsyncClient> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).await?;
        if expected != ServerUid::Any {
            crate::peer::check_uid(stream.peer_cred()?.uid(), path, expected)?;
        }
        Ok(AsyncClient::from_stream(stream))
    }

    /// Wraps a connected stream (within a tokio runtime).
    pub fn from_stream(stream: UnixStream) -> AsyncClient {
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared::default());
        let (frames, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_loop(wr, rx, shared.clone()));
        let reader = tokio::spawn(read_loop(rd, shared.clone()));
        AsyncClient {
            inner: Arc::new(Inner {
                shared,
                frames,
                encoder: Mutex::new(RequestEncoder::with_capacity(4096)),
                next_id: AtomicU64::new(1),
                reader,
            }),
        }
    }

    /// Whether the connection has failed (every call will fail).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.lock().failed.is_some()
    }

    /// Sends `body` and waits for the response to it.
    async fn request(&self, body: RequestBody<'_>) -> Result<ResponseBody, ClientError> {
        let inner = &*self.inner;
        let request_id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        // Encode first: the request's borrows end here. The frame may hold
        // plaintext (Encrypt), hence Zeroizing, allocated at its final size
        // (a vector that grows frees its old block unzeroed); the encoder
        // never grows while it holds a request and zeroes itself after.
        let frame = {
            let mut encoder = inner.encoder.lock().unwrap_or_else(|p| p.into_inner());
            encoder.encode(&Request { request_id, body }, |payload| {
                let mut out = Zeroizing::new(Vec::with_capacity(frame::LEN_PREFIX + payload.len()));
                frame::write_frame(&mut out, payload);
                out
            })
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut p = inner.shared.lock();
            if let Some(f) = &p.failed {
                return Err(f.closed_error());
            }
            p.calls.insert(request_id, tx);
        }
        let _registration = Registration {
            shared: &inner.shared,
            id: request_id,
        };
        if inner.frames.send(frame).await.is_err() {
            // The writer task is gone, which happens only after a failure.
            let failure = inner.shared.lock().failed.clone();
            return Err(failure
                .unwrap_or_else(|| {
                    Failure::Io(io::ErrorKind::BrokenPipe, "connection closed".into())
                })
                .closed_error());
        }
        match rx.await {
            Ok(completion) => completion,
            // The sender was dropped without an answer: only on shutdown.
            Err(_) => Err(ClientError::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed before the answer arrived",
            ))),
        }
    }

    /// Sends one operation and waits for its answer. Any number of calls may
    /// be in flight at once, from any number of tasks.
    pub async fn call(&self, op: Operation<'_>) -> Result<Output, ClientError> {
        single_answer(self.request(RequestBody::Single(Ok(op))).await?)
    }

    /// Sends a batch and waits for its answers, item by item.
    pub async fn batch(&self, ops: Vec<Operation<'_>>) -> Result<Vec<Outcome>, ClientError> {
        let n = ops.len();
        let body = RequestBody::Batch(ops.into_iter().map(Ok).collect());
        batch_answer(self.request(body).await?, n)
    }

    /// CreateKey.
    pub async fn create_key(&self, description: &str) -> Result<KeyMetadata, ClientError> {
        match self
            .call(Operation::CreateKey(CreateKey {
                description,
                ..Default::default()
            }))
            .await?
        {
            Output::CreateKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// DescribeKey.
    pub async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, ClientError> {
        match self
            .call(Operation::DescribeKey(DescribeKey {
                key_id,
                ..DescribeKey::default()
            }))
            .await?
        {
            Output::DescribeKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// ListKeys, one page.
    pub async fn list_keys(
        &self,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeysOutput, ClientError> {
        match self
            .call(Operation::ListKeys(ListKeys { limit, marker }))
            .await?
        {
            Output::ListKeys(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// GenerateDataKey of `number_of_bytes` bytes.
    pub async fn generate_data_key(
        &self,
        key_id: &str,
        number_of_bytes: u32,
        context: &[(&str, &str)],
    ) -> Result<GenerateDataKeyOutput, ClientError> {
        match self
            .call(Operation::GenerateDataKey(GenerateDataKey {
                key_id,
                number_of_bytes: Some(number_of_bytes),
                key_spec: None,
                context: context.to_vec(),
                ..GenerateDataKey::default()
            }))
            .await?
        {
            Output::GenerateDataKey(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Encrypt.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &[(&str, &str)],
    ) -> Result<EncryptOutput, ClientError> {
        match self
            .call(Operation::Encrypt(Encrypt {
                key_id,
                plaintext,
                context: context.to_vec(),
                ..Encrypt::default()
            }))
            .await?
        {
            Output::Encrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Decrypt.
    pub async fn decrypt(
        &self,
        ciphertext_blob: &[u8],
        key_id: Option<&str>,
        context: &[(&str, &str)],
    ) -> Result<DecryptOutput, ClientError> {
        match self
            .call(Operation::Decrypt(Decrypt {
                ciphertext_blob,
                key_id,
                context: context.to_vec(),
                ..Decrypt::default()
            }))
            .await?
        {
            Output::Decrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// GetStatus (kmsd's own; administrators only): uptime, version and
    /// every metric the daemon keeps.
    pub async fn get_status(&self) -> Result<GetStatusOutput, ClientError> {
        match self.call(Operation::GetStatus(GetStatus)).await? {
            Output::GetStatus(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// WhoAmI: the identity the daemon sees for this connection (what key
    /// policies and grants decide on).
    pub async fn who_am_i(&self) -> Result<WhoAmIOutput, ClientError> {
        match self.call(Operation::WhoAmI(WhoAmI)).await? {
            Output::WhoAmI(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// GenerateRandom.
    pub async fn generate_random(&self, number_of_bytes: u32) -> Result<SecretBytes, ClientError> {
        match self
            .call(Operation::GenerateRandom(GenerateRandom {
                number_of_bytes,
            }))
            .await?
        {
            Output::GenerateRandom(o) => Ok(o.plaintext),
            _ => Err(mismatch()),
        }
    }

    /// CreateKey with every field of the request: description, origin (`Kmsd`, `Hsm`, or `External`: the key waits for ImportKeyMaterial) and tags.
    pub async fn create_key_with(&self, req: CreateKey<'_>) -> Result<KeyMetadata, ClientError> {
        match self.call(Operation::CreateKey(req)).await? {
            Output::CreateKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// UpdateKeyDescription.
    pub async fn update_key_description(
        &self,
        key_id: &str,
        description: &str,
    ) -> Result<(), ClientError> {
        match self
            .call(Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id,
                description,
            }))
            .await?
        {
            Output::UpdateKeyDescription => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// TagResource: adds the tags, or changes the value of a tag key the key has.
    pub async fn tag_resource(&self, key_id: &str, tags: &[Tag<'_>]) -> Result<(), ClientError> {
        match self
            .call(Operation::TagResource(TagResource {
                key_id,
                tags: tags.to_vec(),
            }))
            .await?
        {
            Output::TagResource => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// UntagResource.
    pub async fn untag_resource(&self, key_id: &str, tag_keys: &[&str]) -> Result<(), ClientError> {
        match self
            .call(Operation::UntagResource(UntagResource {
                key_id,
                tag_keys: tag_keys.to_vec(),
            }))
            .await?
        {
            Output::UntagResource => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// ListResourceTags, one page (`limit` 0 for the default, 50).
    pub async fn list_resource_tags(
        &self,
        key_id: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListResourceTagsOutput, ClientError> {
        match self
            .call(Operation::ListResourceTags(ListResourceTags {
                key_id,
                limit,
                marker,
            }))
            .await?
        {
            Output::ListResourceTags(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// CreateAlias.
    pub async fn create_alias(
        &self,
        alias_name: &str,
        target_key_id: &str,
    ) -> Result<(), ClientError> {
        match self
            .call(Operation::CreateAlias(CreateAlias {
                alias_name,
                target_key_id,
            }))
            .await?
        {
            Output::CreateAlias => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// UpdateAlias.
    pub async fn update_alias(
        &self,
        alias_name: &str,
        target_key_id: &str,
    ) -> Result<(), ClientError> {
        match self
            .call(Operation::UpdateAlias(UpdateAlias {
                alias_name,
                target_key_id,
            }))
            .await?
        {
            Output::UpdateAlias => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DeleteAlias.
    pub async fn delete_alias(&self, alias_name: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::DeleteAlias(DeleteAlias { alias_name }))
            .await?
        {
            Output::DeleteAlias => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// ListAliases, one page: every alias, or a key's (`limit` 0 for the default, 100).
    pub async fn list_aliases(
        &self,
        key_id: Option<&str>,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListAliasesOutput, ClientError> {
        match self
            .call(Operation::ListAliases(ListAliases {
                key_id,
                limit,
                marker,
            }))
            .await?
        {
            Output::ListAliases(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// EnableKey.
    pub async fn enable_key(&self, key_id: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::EnableKey(EnableKey { key_id }))
            .await?
        {
            Output::EnableKey => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DisableKey.
    pub async fn disable_key(&self, key_id: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::DisableKey(DisableKey { key_id }))
            .await?
        {
            Output::DisableKey => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// ScheduleKeyDeletion (`None`: the default waiting period, 30 days).
    pub async fn schedule_key_deletion(
        &self,
        key_id: &str,
        pending_window_in_days: Option<u32>,
    ) -> Result<ScheduleKeyDeletionOutput, ClientError> {
        match self
            .call(Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id,
                pending_window_in_days,
            }))
            .await?
        {
            Output::ScheduleKeyDeletion(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// CancelKeyDeletion (the key is Disabled afterwards).
    pub async fn cancel_key_deletion(
        &self,
        key_id: &str,
    ) -> Result<CancelKeyDeletionOutput, ClientError> {
        match self
            .call(Operation::CancelKeyDeletion(CancelKeyDeletion { key_id }))
            .await?
        {
            Output::CancelKeyDeletion(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// EnableKeyRotation (`None`: the default period, 365 days).
    pub async fn enable_key_rotation(
        &self,
        key_id: &str,
        rotation_period_in_days: Option<u32>,
    ) -> Result<(), ClientError> {
        match self
            .call(Operation::EnableKeyRotation(EnableKeyRotation {
                key_id,
                rotation_period_in_days,
            }))
            .await?
        {
            Output::EnableKeyRotation => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DisableKeyRotation.
    pub async fn disable_key_rotation(&self, key_id: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::DisableKeyRotation(DisableKeyRotation { key_id }))
            .await?
        {
            Output::DisableKeyRotation => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// GetKeyRotationStatus.
    pub async fn get_key_rotation_status(
        &self,
        key_id: &str,
    ) -> Result<GetKeyRotationStatusOutput, ClientError> {
        match self
            .call(Operation::GetKeyRotationStatus(GetKeyRotationStatus {
                key_id,
            }))
            .await?
        {
            Output::GetKeyRotationStatus(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// RotateKeyOnDemand.
    pub async fn rotate_key_on_demand(
        &self,
        key_id: &str,
    ) -> Result<RotateKeyOnDemandOutput, ClientError> {
        match self
            .call(Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id }))
            .await?
        {
            Output::RotateKeyOnDemand(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ListKeyRotations, one page (`limit` 0 for the default, 100).
    pub async fn list_key_rotations(
        &self,
        key_id: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeyRotationsOutput, ClientError> {
        match self
            .call(Operation::ListKeyRotations(ListKeyRotations {
                key_id,
                limit,
                marker,
            }))
            .await?
        {
            Output::ListKeyRotations(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// GetParametersForImport: a wrapping public key (DER SubjectPublicKeyInfo) and an import token.
    pub async fn get_parameters_for_import(
        &self,
        key_id: &str,
        wrapping_algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<GetParametersForImportOutput, ClientError> {
        match self
            .call(Operation::GetParametersForImport(GetParametersForImport {
                key_id,
                wrapping_algorithm,
                wrapping_key_spec,
            }))
            .await?
        {
            Output::GetParametersForImport(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ImportKeyMaterial: the request carries the import token, the wrapped material, and when it expires.
    pub async fn import_key_material(&self, req: ImportKeyMaterial<'_>) -> Result<(), ClientError> {
        match self.call(Operation::ImportKeyMaterial(req)).await? {
            Output::ImportKeyMaterial => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DeleteImportedKeyMaterial.
    pub async fn delete_imported_key_material(&self, key_id: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::DeleteImportedKeyMaterial(
                DeleteImportedKeyMaterial { key_id },
            ))
            .await?
        {
            Output::DeleteImportedKeyMaterial => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DescribeKey with every field of the request (grant tokens).
    pub async fn describe_key_with(
        &self,
        req: DescribeKey<'_>,
    ) -> Result<KeyMetadata, ClientError> {
        match self.call(Operation::DescribeKey(req)).await? {
            Output::DescribeKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// GenerateDataKey with every field of the request: number of bytes or key spec, context, grant tokens, dry run.
    pub async fn generate_data_key_with(
        &self,
        req: GenerateDataKey<'_>,
    ) -> Result<GenerateDataKeyOutput, ClientError> {
        match self.call(Operation::GenerateDataKey(req)).await? {
            Output::GenerateDataKey(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// GenerateDataKeyWithoutPlaintext, with every field of the request.
    pub async fn generate_data_key_without_plaintext(
        &self,
        req: GenerateDataKey<'_>,
    ) -> Result<GenerateDataKeyWithoutPlaintextOutput, ClientError> {
        match self
            .call(Operation::GenerateDataKeyWithoutPlaintext(req))
            .await?
        {
            Output::GenerateDataKeyWithoutPlaintext(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Encrypt with every field of the request (grant tokens, dry run).
    pub async fn encrypt_with(&self, req: Encrypt<'_>) -> Result<EncryptOutput, ClientError> {
        match self.call(Operation::Encrypt(req)).await? {
            Output::Encrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Decrypt with every field of the request (grant tokens, dry run).
    pub async fn decrypt_with(&self, req: Decrypt<'_>) -> Result<DecryptOutput, ClientError> {
        match self.call(Operation::Decrypt(req)).await? {
            Output::Decrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ReEncrypt: the blob's plaintext under another key, without it leaving the daemon.
    pub async fn re_encrypt(&self, req: ReEncrypt<'_>) -> Result<ReEncryptOutput, ClientError> {
        match self.call(Operation::ReEncrypt(req)).await? {
            Output::ReEncrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// PutKeyPolicy: replaces the key's policy (named `default`), with the lockout safety check.
    pub async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::PutKeyPolicy(PutKeyPolicy {
                key_id,
                policy,
                ..PutKeyPolicy::default()
            }))
            .await?
        {
            Output::PutKeyPolicy => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// PutKeyPolicy with every field of the request (policy name, bypass of the lockout safety check).
    pub async fn put_key_policy_with(&self, req: PutKeyPolicy<'_>) -> Result<(), ClientError> {
        match self.call(Operation::PutKeyPolicy(req)).await? {
            Output::PutKeyPolicy => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// GetKeyPolicy (`policy_name` `None`: `default`).
    pub async fn get_key_policy(
        &self,
        key_id: &str,
        policy_name: Option<&str>,
    ) -> Result<GetKeyPolicyOutput, ClientError> {
        match self
            .call(Operation::GetKeyPolicy(GetKeyPolicy {
                key_id,
                policy_name,
            }))
            .await?
        {
            Output::GetKeyPolicy(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ListKeyPolicies, one page (`limit` 0 for the default, 100).
    pub async fn list_key_policies(
        &self,
        key_id: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeyPoliciesOutput, ClientError> {
        match self
            .call(Operation::ListKeyPolicies(ListKeyPolicies {
                key_id,
                limit,
                marker,
            }))
            .await?
        {
            Output::ListKeyPolicies(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// CreateGrant: the request carries the grantee, the operations, constraints, name, grant tokens and dry run.
    pub async fn create_grant(
        &self,
        req: CreateGrant<'_>,
    ) -> Result<CreateGrantOutput, ClientError> {
        match self.call(Operation::CreateGrant(req)).await? {
            Output::CreateGrant(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ListGrants, one page of a key's grants (`limit` 0 for the default, 50), optionally only one grant or one grantee's.
    pub async fn list_grants(&self, req: ListGrants<'_>) -> Result<ListGrantsOutput, ClientError> {
        match self.call(Operation::ListGrants(req)).await? {
            Output::ListGrants(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// ListRetirableGrants, one page of the grants `retiring_principal` may retire (`limit` 0 for the default, 50).
    pub async fn list_retirable_grants(
        &self,
        retiring_principal: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListGrantsOutput, ClientError> {
        match self
            .call(Operation::ListRetirableGrants(ListRetirableGrants {
                retiring_principal,
                limit,
                marker,
            }))
            .await?
        {
            Output::ListRetirableGrants(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// RetireGrant: the grant named by its token, or by key and grant id.
    pub async fn retire_grant(&self, req: RetireGrant<'_>) -> Result<(), ClientError> {
        match self.call(Operation::RetireGrant(req)).await? {
            Output::RetireGrant => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// VerifyAuditSeals (kmsd's own, administrators only): which of
    /// `seals` are valid, and the audit chain's head.
    pub async fn verify_audit_seals(
        &self,
        seals: Vec<AuditSeal>,
    ) -> Result<VerifyAuditSealsOutput, ClientError> {
        match self
            .call(Operation::VerifyAuditSeals(VerifyAuditSeals { seals }))
            .await?
        {
            Output::VerifyAuditSeals(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// RevokeGrant.
    pub async fn revoke_grant(&self, key_id: &str, grant_id: &str) -> Result<(), ClientError> {
        match self
            .call(Operation::RevokeGrant(RevokeGrant {
                key_id,
                grant_id,
                dry_run: false,
            }))
            .await?
        {
            Output::RevokeGrant => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// RevokeGrant with every field of the request (dry run).
    pub async fn revoke_grant_with(&self, req: RevokeGrant<'_>) -> Result<(), ClientError> {
        match self.call(Operation::RevokeGrant(req)).await? {
            Output::RevokeGrant => Ok(()),
            _ => Err(mismatch()),
        }
    }
}

/// Writes queued frames, coalescing what is queued into one write. Ends when
/// every handle is gone (the channel closes) or a write fails.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Zeroizing<Vec<u8>>>,
    shared: Arc<Shared>,
) {
    let mut buf = Zeroizing::new(Vec::with_capacity(64 * 1024));
    while let Some(frame) = rx.recv().await {
        // Grow without leaving a copy of the requests behind.
        frame::reserve_zeroizing(&mut buf, frame.len());
        buf.extend_from_slice(&frame);
        drop(frame);
        while buf.len() < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(frame) => {
                    frame::reserve_zeroizing(&mut buf, frame.len());
                    buf.extend_from_slice(&frame);
                }
                Err(_) => break,
            }
        }
        let res = wr.write_all(&buf).await;
        // Zero what was written (it may hold plaintext) before reuse.
        zeroize::Zeroize::zeroize(&mut *buf);
        if let Err(e) = res {
            shared.fail_all(Failure::from_io(&e));
            return;
        }
    }
    // All handles dropped: shut the write side so the daemon sees EOF.
    let _ = wr.shutdown().await;
}

/// Reads response frames and completes the calls they answer. Ends on EOF,
/// a read error or a response that cannot be decoded, failing every pending
/// call.
async fn read_loop(mut rd: OwnedReadHalf, shared: Arc<Shared>) {
    let failure = read_responses(&mut rd, &shared).await;
    shared.fail_all(failure);
}

async fn read_responses(rd: &mut OwnedReadHalf, shared: &Shared) -> Failure {
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    // Responses may carry plaintext (Decrypt, GenerateDataKey).
    // Wiped when dropped: the reader task is aborted when the last handle
    // goes, possibly holding part of an answer.
    let mut rbuf = frame::WipeOnDrop(BytesMut::with_capacity(64 * 1024));
    let rbuf = &mut rbuf.0;
    let failure = loop {
        match decoder.decode(rbuf) {
            Ok(Some(frame)) => {
                // The frame may hold plaintext: it zeroes itself when
                // dropped, right after decoding.
                let resp = decode_response(&frame, decoder.max_frame());
                drop(frame);
                match resp {
                    Ok(resp) => {
                        let Some(body) = shared.complete(resp.request_id, resp.body) else {
                            continue;
                        };
                        match body {
                            // A frame-level error for a request the daemon
                            // could not read (id 0, or an id we never sent):
                            // it answers some call we cannot name, so the
                            // connection's state is unknown.
                            ResponseBody::Error(e) => break Failure::Kms(e),
                            // The answer to a call that gave up: dropped.
                            _ => continue,
                        }
                    }
                    Err(e) => break Failure::Kms(e),
                }
            }
            Ok(None) => {}
            Err(e) => break Failure::Kms(KmsError::new(ErrorKind::Serialization, e.to_string())),
        }
        // Grows without leaving an unzeroed copy behind (never `reserve`).
        frame::make_room(rbuf, 16 * 1024, 64 * 1024);
        match rd.read_buf(rbuf).await {
            Ok(0) => {
                break Failure::Io(
                    io::ErrorKind::UnexpectedEof,
                    "daemon closed the connection".into(),
                )
            }
            Ok(_) => {}
            Err(e) => break Failure::from_io(&e),
        }
    };
    failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_request, encode_response, DecodeLimits};
    use crate::frame::write_frame;
    use flatbuffers::FlatBufferBuilder;
    use tokio::net::UnixListener;

    /// How the fake server behaves.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Collects `n` requests, then answers them in reverse order.
        Reverse(usize),
        /// Reads one request, then closes the connection without answering.
        CloseAfterOne,
        /// Answers every request at once with a frame that is not a valid
        /// flatbuffer.
        Garbage,
    }

    /// The answer the fake daemon gives to `op`; echoes what it can so that
    /// tests can check each caller got its own answer.
    fn answer(op: &Operation<'_>) -> Outcome {
        match op {
            Operation::Encrypt(e) => {
                if e.key_id == "missing" {
                    return Err(KmsError::new(ErrorKind::NotFound, "no such key"));
                }
                let mut blob = e.key_id.as_bytes().to_vec();
                blob.push(b':');
                blob.extend(e.plaintext.iter().rev());
                Ok(Output::Encrypt(EncryptOutput {
                    key_id: e.key_id.to_owned(),
                    ciphertext_blob: blob,
                }))
            }
            Operation::DescribeKey(d) => {
                if d.key_id == "missing" {
                    return Err(KmsError::new(ErrorKind::NotFound, "no such key"));
                }
                Ok(Output::DescribeKey(KeyMetadata {
                    key_id: d.key_id.to_owned(),
                    arn: format!("arn:aws:kms:us-east-1:000000000000:key/{}", d.key_id),
                    enabled: true,
                    ..Default::default()
                }))
            }
            Operation::GenerateRandom(g) => Ok(Output::GenerateRandom(GenerateRandomOutput {
                plaintext: SecretBytes::new(vec![7; g.number_of_bytes as usize]),
            })),
            other => Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                format!("fake does not do {}", other.name()),
            )),
        }
    }

    fn respond(frame: &[u8]) -> Response {
        let req = decode_request(frame, &DecodeLimits::default()).expect("valid request");
        let body = match req.body {
            RequestBody::Single(op) => ResponseBody::Single(op.and_then(|op| answer(&op))),
            RequestBody::Batch(items) => ResponseBody::Batch(
                items
                    .into_iter()
                    .map(|op| op.and_then(|op| answer(&op)))
                    .collect(),
            ),
        };
        Response {
            request_id: req.request_id,
            body,
        }
    }

    /// Starts a fake daemon serving one connection; returns the socket path
    /// (inside the returned tempdir).
    async fn fake_server(mode: Mode) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let decoder = FrameDecoder::default();
            let mut rbuf = BytesMut::new();
            let mut held = Vec::new();
            let mut fbb = FlatBufferBuilder::new();
            loop {
                while let Some(frame) = decoder.decode(&mut rbuf).unwrap() {
                    match mode {
                        Mode::CloseAfterOne => return,
                        Mode::Garbage => {
                            let mut out = Vec::new();
                            write_frame(&mut out, b"definitely not a flatbuffer");
                            s.write_all(&out).await.unwrap();
                        }
                        Mode::Reverse(n) => {
                            held.push(respond(&frame));
                            if held.len() == n {
                                let mut out = Vec::new();
                                for resp in held.drain(..).rev() {
                                    encode_response(&mut fbb, &resp, &mut out);
                                }
                                s.write_all(&out).await.unwrap();
                            }
                        }
                    }
                }
                if s.read_buf(&mut rbuf).await.unwrap() == 0 {
                    return;
                }
            }
        });
        (dir, path)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_share_one_connection_and_get_their_own_answers() {
        const N: usize = 64;
        let (_dir, path) = fake_server(Mode::Reverse(N)).await;
        let client = AsyncClient::connect(&path).await.unwrap();
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move {
                    let key = format!("key-{i}");
                    let pt = format!("plaintext {i}");
                    let out = c.encrypt(&key, pt.as_bytes(), &[("i", "x")]).await.unwrap();
                    assert_eq!(out.key_id, key);
                    let mut want = format!("{key}:").into_bytes();
                    want.extend(pt.bytes().rev());
                    assert_eq!(out.ciphertext_blob, want);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!client.is_closed());
    }

    #[tokio::test]
    async fn out_of_order_answers_on_one_task() {
        let (_dir, path) = fake_server(Mode::Reverse(3)).await;
        let c = AsyncClient::connect(&path).await.unwrap();
        let (a, b, r) = tokio::join!(
            c.describe_key("a"),
            c.describe_key("missing"),
            c.generate_random(5)
        );
        assert_eq!(a.unwrap().key_id, "a");
        let err = b.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::NotFound));
        assert_eq!(r.unwrap().expose(), &[7; 5]);
    }

    #[tokio::test]
    async fn batch_answers_item_by_item() {
        let (_dir, path) = fake_server(Mode::Reverse(2)).await;
        let c = AsyncClient::connect(&path).await.unwrap();
        let ops = vec![
            Operation::DescribeKey(DescribeKey {
                key_id: "k1",
                ..Default::default()
            }),
            Operation::DescribeKey(DescribeKey {
                key_id: "missing",
                ..Default::default()
            }),
            Operation::GenerateRandom(GenerateRandom { number_of_bytes: 3 }),
        ];
        let (batch, single) = tokio::join!(c.batch(ops), c.describe_key("k2"));
        let items = batch.unwrap();
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Ok(Output::DescribeKey(m)) if m.key_id == "k1"));
        assert!(matches!(&items[1], Err(e) if e.kind == ErrorKind::NotFound));
        assert!(matches!(&items[2], Ok(Output::GenerateRandom(r)) if r.plaintext.len() == 3));
        assert_eq!(single.unwrap().key_id, "k2");
    }

    #[tokio::test]
    async fn connection_loss_fails_pending_and_later_calls_with_io() {
        let (_dir, path) = fake_server(Mode::CloseAfterOne).await;
        let c = AsyncClient::connect(&path).await.unwrap();
        let (a, b) = tokio::join!(c.describe_key("a"), c.describe_key("b"));
        assert!(matches!(a, Err(ClientError::Io(_))), "{a:?}");
        assert!(matches!(b, Err(ClientError::Io(_))), "{b:?}");
        assert!(c.is_closed());
        let later = c.generate_random(1).await;
        assert!(matches!(later, Err(ClientError::Io(_))), "{later:?}");
    }

    #[tokio::test]
    async fn undecodable_response_fails_with_serialization_then_io() {
        let (_dir, path) = fake_server(Mode::Garbage).await;
        let c = AsyncClient::connect(&path).await.unwrap();
        let err = c.describe_key("a").await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::Serialization), "{err:?}");
        let later = c.describe_key("a").await;
        assert!(matches!(later, Err(ClientError::Io(_))), "{later:?}");
    }

    #[tokio::test]
    async fn a_cancelled_call_does_not_disturb_the_others() {
        let (_dir, path) = fake_server(Mode::Reverse(2)).await;
        let c = AsyncClient::connect(&path).await.unwrap();
        // Sent, then given up on before the (held back) answer arrives.
        let gave_up = tokio::select! {
            biased;
            r = c.describe_key("abandoned") => Some(r),
            _ = async {
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
            } => None,
        };
        assert!(gave_up.is_none(), "{gave_up:?}");
        assert_eq!(c.inner.shared.lock().calls.len(), 0, "unregistered on drop");
        // The second request releases both answers; the first is dropped.
        assert_eq!(c.describe_key("kept").await.unwrap().key_id, "kept");
        assert!(!c.is_closed());
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AsyncClient::connect(dir.path().join("nope.sock"))
            .await
            .is_err());
    }
}
