//! A blocking client: one Unix socket connection, many requests in flight.
//!
//! `send_*` queue a request and return its id; `recv` flushes what is queued
//! and returns the next response, whichever request it answers (the daemon
//! may answer out of order). `call` and `batch` are the one-request forms.
//! Keep the number of unanswered requests bounded (the daemon caps requests
//! in flight per connection and stops reading beyond that); a window of a few
//! hundred is plenty to saturate it.

use crate::codec::{decode_response, RequestEncoder};
use crate::error::{ErrorKind, KmsError};
use crate::frame::{self, write_frame, FrameDecoder, DEFAULT_MAX_FRAME};
use crate::peer::check_server;
pub use crate::peer::{default_socket_path, ServerUid, UnexpectedServer};
use crate::types::*;
use bytes::BytesMut;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// What can go wrong for a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or closed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The daemon answered with an error.
    #[error("{0}")]
    Kms(#[from] KmsError),
}

impl ClientError {
    /// The exception kind, when the daemon answered with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Kms(e) => Some(e.kind),
            ClientError::Io(_) => None,
        }
    }
}

/// A blocking connection to kmsd.
pub struct Client {
    stream: UnixStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    decoder: FrameDecoder,
    encoder: RequestEncoder,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon's socket. On the default socket path
    /// ([`default_socket_path`]) the daemon must run as the caller's uid or
    /// root ([`ServerUid::default_for`]); see [`Client::connect_expecting`].
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        let path = path.as_ref();
        Client::connect_expecting(path, ServerUid::default_for(path))
    }

    /// Connects to the daemon's socket and checks, before anything is sent,
    /// that the server runs as `expected` (SO_PEERCRED of the connection).
    /// A server of another uid is an [`UnexpectedServer`] error of kind
    /// `PermissionDenied`, and the connection is closed.
    pub fn connect_expecting(path: impl AsRef<Path>, expected: ServerUid) -> io::Result<Client> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)?;
        check_server(&stream, path, expected)?;
        Ok(Client::from_stream(stream))
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: UnixStream) -> Client {
        Client {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: Vec::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            encoder: RequestEncoder::with_capacity(4096),
            next_id: 1,
        }
    }

    /// The underlying stream (e.g. to set timeouts).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    fn queue(&mut self, body: RequestBody<'_>) -> u64 {
        let request_id = self.next_id;
        self.next_id += 1;
        let wbuf = &mut self.wbuf;
        self.encoder
            .encode(&Request { request_id, body }, |payload| {
                // Queued requests may carry plaintext: grow without leaving
                // a copy.
                frame::reserve_zeroizing(wbuf, frame::LEN_PREFIX + payload.len());
                write_frame(wbuf, payload);
            });
        request_id
    }

    /// Queues one operation; returns its request id.
    pub fn send(&mut self, op: Operation<'_>) -> u64 {
        self.queue(RequestBody::Single(Ok(op)))
    }

    /// Queues a batch; returns its request id.
    pub fn send_batch(&mut self, ops: Vec<Operation<'_>>) -> u64 {
        self.queue(RequestBody::Batch(ops.into_iter().map(Ok).collect()))
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let written = self.stream.write_all(&self.wbuf);
            // Requests carry plaintext: zero them once sent (or failed).
            frame::zero(&mut self.wbuf);
            self.wbuf.clear();
            written?;
        }
        Ok(())
    }

    /// Flushes, then waits for the next response.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        self.flush()?;
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                // The frame zeroes itself (answers carry plaintext) once
                // decoded into an owned response.
                Ok(Some(frame)) => {
                    return Ok(decode_response(&frame, self.decoder.max_frame())?);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(KmsError::new(ErrorKind::Serialization, e.to_string()).into());
                }
            }
            // Grows without leaving an unzeroed copy behind (never
            // `reserve`); the resize below stays within the capacity.
            frame::make_room(&mut self.rbuf, 16 * 1024, 64 * 1024);
            let start = self.rbuf.len();
            let want = self.rbuf.capacity();
            self.rbuf.resize(want, 0);
            let n = self.stream.read(&mut self.rbuf[start..]);
            let n = match n {
                Ok(n) => n,
                // A signal handled by the caller's process is not an error
                // of the connection (as `write_all` retries it too).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.rbuf.truncate(start);
                    continue;
                }
                Err(e) => {
                    self.rbuf.truncate(start);
                    return Err(e.into());
                }
            };
            self.rbuf.truncate(start + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "daemon closed the connection",
                )
                .into());
            }
        }
    }

    fn recv_for(&mut self, id: u64) -> Result<ResponseBody, ClientError> {
        let resp = self.recv()?;
        if resp.request_id != id {
            if let ResponseBody::Error(e) = resp.body {
                return Err(e.into());
            }
            return Err(KmsError::new(
                ErrorKind::Serialization,
                format!("expected response {id}, got {}", resp.request_id),
            )
            .into());
        }
        Ok(resp.body)
    }

    /// Sends one operation and waits for its answer. Use on a connection
    /// with nothing else in flight.
    pub fn call(&mut self, op: Operation<'_>) -> Result<Output, ClientError> {
        let id = self.send(op);
        single_answer(self.recv_for(id)?)
    }

    /// Sends a batch and waits for its answers, item by item. Use on a
    /// connection with nothing else in flight.
    pub fn batch(&mut self, ops: Vec<Operation<'_>>) -> Result<Vec<Outcome>, ClientError> {
        let n = ops.len();
        let id = self.send_batch(ops);
        batch_answer(self.recv_for(id)?, n)
    }

    /// CreateKey.
    pub fn create_key(&mut self, description: &str) -> Result<KeyMetadata, ClientError> {
        self.create_key_with_origin(description, Origin::Kmsd)
    }

    /// CreateKey with an origin: `Kmsd` (material made by kmsd, wrapped by
    /// the root of trust) or `Hsm` (generated in the HSM, never leaving it).
    pub fn create_key_with_origin(
        &mut self,
        description: &str,
        origin: Origin,
    ) -> Result<KeyMetadata, ClientError> {
        match self.call(Operation::CreateKey(CreateKey {
            description,
            origin,
            ..Default::default()
        }))? {
            Output::CreateKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// DescribeKey.
    pub fn describe_key(&mut self, key_id: &str) -> Result<KeyMetadata, ClientError> {
        match self.call(Operation::DescribeKey(DescribeKey {
            key_id,
            ..DescribeKey::default()
        }))? {
            Output::DescribeKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// ListKeys, one page.
    pub fn list_keys(
        &mut self,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeysOutput, ClientError> {
        match self.call(Operation::ListKeys(ListKeys { limit, marker }))? {
            Output::ListKeys(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// GenerateDataKey of `number_of_bytes` bytes.
    pub fn generate_data_key(
        &mut self,
        key_id: &str,
        number_of_bytes: u32,
        context: &[(&str, &str)],
    ) -> Result<GenerateDataKeyOutput, ClientError> {
        match self.call(Operation::GenerateDataKey(GenerateDataKey {
            key_id,
            number_of_bytes: Some(number_of_bytes),
            key_spec: None,
            context: context.to_vec(),
            ..GenerateDataKey::default()
        }))? {
            Output::GenerateDataKey(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Encrypt.
    pub fn encrypt(
        &mut self,
        key_id: &str,
        plaintext: &[u8],
        context: &[(&str, &str)],
    ) -> Result<EncryptOutput, ClientError> {
        match self.call(Operation::Encrypt(Encrypt {
            key_id,
            plaintext,
            context: context.to_vec(),
            ..Encrypt::default()
        }))? {
            Output::Encrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Decrypt.
    pub fn decrypt(
        &mut self,
        ciphertext_blob: &[u8],
        key_id: Option<&str>,
        context: &[(&str, &str)],
    ) -> Result<DecryptOutput, ClientError> {
        match self.call(Operation::Decrypt(Decrypt {
            ciphertext_blob,
            key_id,
            context: context.to_vec(),
            ..Decrypt::default()
        }))? {
            Output::Decrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// GetStatus (kmsd's own; administrators only): uptime, version and
    /// every metric the daemon keeps.
    pub fn get_status(&mut self) -> Result<GetStatusOutput, ClientError> {
        match self.call(Operation::GetStatus(GetStatus))? {
            Output::GetStatus(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// WhoAmI: the identity the daemon sees for this connection (what key
    /// policies and grants decide on).
    pub fn who_am_i(&mut self) -> Result<WhoAmIOutput, ClientError> {
        match self.call(Operation::WhoAmI(WhoAmI))? {
            Output::WhoAmI(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// GenerateRandom.
    pub fn generate_random(&mut self, number_of_bytes: u32) -> Result<SecretBytes, ClientError> {
        match self.call(Operation::GenerateRandom(GenerateRandom {
            number_of_bytes,
        }))? {
            Output::GenerateRandom(o) => Ok(o.plaintext),
            _ => Err(mismatch()),
        }
    }

    /// CreateKey with every field of the request: description, origin (`Kmsd`, `Hsm`, or `External`: the key waits for ImportKeyMaterial) and tags.
    pub fn create_key_with(&mut self, req: CreateKey<'_>) -> Result<KeyMetadata, ClientError> {
        match self.call(Operation::CreateKey(req))? {
            Output::CreateKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// UpdateKeyDescription.
    pub fn update_key_description(
        &mut self,
        key_id: &str,
        description: &str,
    ) -> Result<(), ClientError> {
        match self.call(Operation::UpdateKeyDescription(UpdateKeyDescription {
            key_id,
            description,
        }))? {
            Output::UpdateKeyDescription => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// TagResource: adds the tags, or changes the value of a tag key the key has.
    pub fn tag_resource(&mut self, key_id: &str, tags: &[Tag<'_>]) -> Result<(), ClientError> {
        match self.call(Operation::TagResource(TagResource {
            key_id,
            tags: tags.to_vec(),
        }))? {
            Output::TagResource => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// UntagResource.
    pub fn untag_resource(&mut self, key_id: &str, tag_keys: &[&str]) -> Result<(), ClientError> {
        match self.call(Operation::UntagResource(UntagResource {
            key_id,
            tag_keys: tag_keys.to_vec(),
        }))? {
            Output::UntagResource => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// ListResourceTags, one page (`limit` 0 for the default, 50).
    pub fn list_resource_tags(
        &mut self,
        key_id: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListResourceTagsOutput, ClientError> {
        match self.call(Operation::ListResourceTags(ListResourceTags {
            key_id,
            limit,
            marker,
        }))? {
            Output::ListResourceTags(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// CreateAlias.
    pub fn create_alias(
        &mut self,
        alias_name: &str,
        target_key_id: &str,
    ) -> Result<(), ClientError> {
        match self.call(Operation::CreateAlias(CreateAlias {
            alias_name,
            target_key_id,
        }))? {
            Output::CreateAlias => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// UpdateAlias.
    pub fn update_alias(
        &mut self,
        alias_name: &str,
        target_key_id: &str,
    ) -> Result<(), ClientError> {
        match self.call(Operation::UpdateAlias(UpdateAlias {
            alias_name,
            target_key_id,
        }))? {
            Output::UpdateAlias => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DeleteAlias.
    pub fn delete_alias(&mut self, alias_name: &str) -> Result<(), ClientError> {
        match self.call(Operation::DeleteAlias(DeleteAlias { alias_name }))? {
            Output::DeleteAlias => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// ListAliases, one page: every alias, or a key's (`limit` 0 for the default, 100).
    pub fn list_aliases(
        &mut self,
        key_id: Option<&str>,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListAliasesOutput, ClientError> {
        match self.call(Operation::ListAliases(ListAliases {
            key_id,
            limit,
            marker,
        }))? {
            Output::ListAliases(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// EnableKey.
    pub fn enable_key(&mut self, key_id: &str) -> Result<(), ClientError> {
        match self.call(Operation::EnableKey(EnableKey { key_id }))? {
            Output::EnableKey => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DisableKey.
    pub fn disable_key(&mut self, key_id: &str) -> Result<(), ClientError> {
        match self.call(Operation::DisableKey(DisableKey { key_id }))? {
            Output::DisableKey => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// ScheduleKeyDeletion (`None`: the default waiting period, 30 days).
    pub fn schedule_key_deletion(
        &mut self,
        key_id: &str,
        pending_window_in_days: Option<u32>,
    ) -> Result<ScheduleKeyDeletionOutput, ClientError> {
        match self.call(Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
            key_id,
            pending_window_in_days,
        }))? {
            Output::ScheduleKeyDeletion(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// CancelKeyDeletion (the key is Disabled afterwards).
    pub fn cancel_key_deletion(
        &mut self,
        key_id: &str,
    ) -> Result<CancelKeyDeletionOutput, ClientError> {
        match self.call(Operation::CancelKeyDeletion(CancelKeyDeletion { key_id }))? {
            Output::CancelKeyDeletion(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// EnableKeyRotation (`None`: the default period, 365 days).
    pub fn enable_key_rotation(
        &mut self,
        key_id: &str,
        rotation_period_in_days: Option<u32>,
    ) -> Result<(), ClientError> {
        match self.call(Operation::EnableKeyRotation(EnableKeyRotation {
            key_id,
            rotation_period_in_days,
        }))? {
            Output::EnableKeyRotation => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DisableKeyRotation.
    pub fn disable_key_rotation(&mut self, key_id: &str) -> Result<(), ClientError> {
        match self.call(Operation::DisableKeyRotation(DisableKeyRotation { key_id }))? {
            Output::DisableKeyRotation => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// GetKeyRotationStatus.
    pub fn get_key_rotation_status(
        &mut self,
        key_id: &str,
    ) -> Result<GetKeyRotationStatusOutput, ClientError> {
        match self.call(Operation::GetKeyRotationStatus(GetKeyRotationStatus {
            key_id,
        }))? {
            Output::GetKeyRotationStatus(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// RotateKeyOnDemand.
    pub fn rotate_key_on_demand(
        &mut self,
        key_id: &str,
    ) -> Result<RotateKeyOnDemandOutput, ClientError> {
        match self.call(Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id }))? {
            Output::RotateKeyOnDemand(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ListKeyRotations, one page (`limit` 0 for the default, 100).
    pub fn list_key_rotations(
        &mut self,
        key_id: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeyRotationsOutput, ClientError> {
        match self.call(Operation::ListKeyRotations(ListKeyRotations {
            key_id,
            limit,
            marker,
        }))? {
            Output::ListKeyRotations(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// GetParametersForImport: a wrapping public key (DER SubjectPublicKeyInfo) and an import token.
    pub fn get_parameters_for_import(
        &mut self,
        key_id: &str,
        wrapping_algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<GetParametersForImportOutput, ClientError> {
        match self.call(Operation::GetParametersForImport(GetParametersForImport {
            key_id,
            wrapping_algorithm,
            wrapping_key_spec,
        }))? {
            Output::GetParametersForImport(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ImportKeyMaterial: the request carries the import token, the wrapped material, and when it expires.
    pub fn import_key_material(&mut self, req: ImportKeyMaterial<'_>) -> Result<(), ClientError> {
        match self.call(Operation::ImportKeyMaterial(req))? {
            Output::ImportKeyMaterial => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DeleteImportedKeyMaterial.
    pub fn delete_imported_key_material(&mut self, key_id: &str) -> Result<(), ClientError> {
        match self.call(Operation::DeleteImportedKeyMaterial(
            DeleteImportedKeyMaterial { key_id },
        ))? {
            Output::DeleteImportedKeyMaterial => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// DescribeKey with every field of the request (grant tokens).
    pub fn describe_key_with(&mut self, req: DescribeKey<'_>) -> Result<KeyMetadata, ClientError> {
        match self.call(Operation::DescribeKey(req))? {
            Output::DescribeKey(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }

    /// GenerateDataKey with every field of the request: number of bytes or key spec, context, grant tokens, dry run.
    pub fn generate_data_key_with(
        &mut self,
        req: GenerateDataKey<'_>,
    ) -> Result<GenerateDataKeyOutput, ClientError> {
        match self.call(Operation::GenerateDataKey(req))? {
            Output::GenerateDataKey(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// GenerateDataKeyWithoutPlaintext, with every field of the request.
    pub fn generate_data_key_without_plaintext(
        &mut self,
        req: GenerateDataKey<'_>,
    ) -> Result<GenerateDataKeyWithoutPlaintextOutput, ClientError> {
        match self.call(Operation::GenerateDataKeyWithoutPlaintext(req))? {
            Output::GenerateDataKeyWithoutPlaintext(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Encrypt with every field of the request (grant tokens, dry run).
    pub fn encrypt_with(&mut self, req: Encrypt<'_>) -> Result<EncryptOutput, ClientError> {
        match self.call(Operation::Encrypt(req))? {
            Output::Encrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Decrypt with every field of the request (grant tokens, dry run).
    pub fn decrypt_with(&mut self, req: Decrypt<'_>) -> Result<DecryptOutput, ClientError> {
        match self.call(Operation::Decrypt(req))? {
            Output::Decrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ReEncrypt: the blob's plaintext under another key, without it leaving the daemon.
    pub fn re_encrypt(&mut self, req: ReEncrypt<'_>) -> Result<ReEncryptOutput, ClientError> {
        match self.call(Operation::ReEncrypt(req))? {
            Output::ReEncrypt(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// PutKeyPolicy: replaces the key's policy (named `default`), with the lockout safety check.
    pub fn put_key_policy(&mut self, key_id: &str, policy: &str) -> Result<(), ClientError> {
        match self.call(Operation::PutKeyPolicy(PutKeyPolicy {
            key_id,
            policy,
            ..PutKeyPolicy::default()
        }))? {
            Output::PutKeyPolicy => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// PutKeyPolicy with every field of the request (policy name, bypass of the lockout safety check).
    pub fn put_key_policy_with(&mut self, req: PutKeyPolicy<'_>) -> Result<(), ClientError> {
        match self.call(Operation::PutKeyPolicy(req))? {
            Output::PutKeyPolicy => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// GetKeyPolicy (`policy_name` `None`: `default`).
    pub fn get_key_policy(
        &mut self,
        key_id: &str,
        policy_name: Option<&str>,
    ) -> Result<GetKeyPolicyOutput, ClientError> {
        match self.call(Operation::GetKeyPolicy(GetKeyPolicy {
            key_id,
            policy_name,
        }))? {
            Output::GetKeyPolicy(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ListKeyPolicies, one page (`limit` 0 for the default, 100).
    pub fn list_key_policies(
        &mut self,
        key_id: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeyPoliciesOutput, ClientError> {
        match self.call(Operation::ListKeyPolicies(ListKeyPolicies {
            key_id,
            limit,
            marker,
        }))? {
            Output::ListKeyPolicies(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// CreateGrant: the request carries the grantee, the operations, constraints, name, grant tokens and dry run.
    pub fn create_grant(&mut self, req: CreateGrant<'_>) -> Result<CreateGrantOutput, ClientError> {
        match self.call(Operation::CreateGrant(req))? {
            Output::CreateGrant(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// ListGrants, one page of a key's grants (`limit` 0 for the default, 50), optionally only one grant or one grantee's.
    pub fn list_grants(&mut self, req: ListGrants<'_>) -> Result<ListGrantsOutput, ClientError> {
        match self.call(Operation::ListGrants(req))? {
            Output::ListGrants(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// ListRetirableGrants, one page of the grants `retiring_principal` may retire (`limit` 0 for the default, 50).
    pub fn list_retirable_grants(
        &mut self,
        retiring_principal: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListGrantsOutput, ClientError> {
        match self.call(Operation::ListRetirableGrants(ListRetirableGrants {
            retiring_principal,
            limit,
            marker,
        }))? {
            Output::ListRetirableGrants(l) => Ok(l),
            _ => Err(mismatch()),
        }
    }

    /// RetireGrant: the grant named by its token, or by key and grant id.
    pub fn retire_grant(&mut self, req: RetireGrant<'_>) -> Result<(), ClientError> {
        match self.call(Operation::RetireGrant(req))? {
            Output::RetireGrant => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// VerifyAuditSeals (kmsd's own, administrators only): which of
    /// `seals` are valid, and the audit chain's head.
    pub fn verify_audit_seals(
        &mut self,
        seals: Vec<AuditSeal>,
    ) -> Result<VerifyAuditSealsOutput, ClientError> {
        match self.call(Operation::VerifyAuditSeals(VerifyAuditSeals { seals }))? {
            Output::VerifyAuditSeals(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// RevokeGrant.
    pub fn revoke_grant(&mut self, key_id: &str, grant_id: &str) -> Result<(), ClientError> {
        match self.call(Operation::RevokeGrant(RevokeGrant {
            key_id,
            grant_id,
            dry_run: false,
        }))? {
            Output::RevokeGrant => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// RevokeGrant with every field of the request (dry run).
    pub fn revoke_grant_with(&mut self, req: RevokeGrant<'_>) -> Result<(), ClientError> {
        match self.call(Operation::RevokeGrant(req))? {
            Output::RevokeGrant => Ok(()),
            _ => Err(mismatch()),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Unsent requests and unread answers may hold plaintext (the
        // encoder zeroes itself).
        frame::zero(&mut self.wbuf);
        frame::wipe(&mut self.rbuf);
    }
}

/// An answer of the wrong operation.
pub(crate) fn mismatch() -> ClientError {
    KmsError::new(ErrorKind::Serialization, "answer of the wrong operation").into()
}

/// The output of a single-operation request's answer.
pub(crate) fn single_answer(body: ResponseBody) -> Result<Output, ClientError> {
    match body {
        ResponseBody::Single(outcome) => Ok(outcome?),
        ResponseBody::Error(e) => Err(e.into()),
        ResponseBody::Batch(_) => {
            Err(KmsError::new(ErrorKind::Serialization, "batch answer to a single request").into())
        }
    }
}

/// The outcomes of a batch's answer, which must have one per item.
pub(crate) fn batch_answer(body: ResponseBody, items: usize) -> Result<Vec<Outcome>, ClientError> {
    match body {
        ResponseBody::Batch(outcomes) if outcomes.len() == items => Ok(outcomes),
        ResponseBody::Error(e) => Err(e.into()),
        _ => Err(KmsError::new(ErrorKind::Serialization, "answer does not match the batch").into()),
    }
}
